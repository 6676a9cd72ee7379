//! Checks on the output path before anything is written.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Refuses a block device that has a mounted file system on it or on one of its partitions,
/// or that backs active swap.
pub fn check_not_in_use(out: &Path) -> Result<(), String> {
    let Ok(meta) = fs::metadata(out) else {
        return Ok(());
    };
    if !meta.file_type().is_block_device() {
        return Ok(());
    }
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let sys = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let holds = |mm: &str| {
        fs::canonicalize(format!("/sys/dev/block/{mm}"))
            .map(|p| p.starts_with(&sys))
            .unwrap_or(false)
    };
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() > 4 && holds(fields[2]) {
            return Err(format!(
                "{} is in use: a file system on it is mounted at {}; unmount it first (nothing was written)",
                out.display(),
                fields[4]
            ));
        }
    }
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    for line in swaps.lines().skip(1) {
        if let Some(dev) = line.split_whitespace().next() {
            if let Ok(m) = fs::metadata(dev) {
                let mm = format!(
                    "{}:{}",
                    nix::sys::stat::major(m.rdev()),
                    nix::sys::stat::minor(m.rdev())
                );
                if m.file_type().is_block_device() && holds(&mm) {
                    return Err(format!(
                        "{} is in use as swap ({dev}); swapoff first (nothing was written)",
                        out.display()
                    ));
                }
            }
        }
    }
    Ok(())
}
