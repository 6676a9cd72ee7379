//! Checks on the output path before anything is written.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use util::mountinfo::{parse_mountinfo, swap_paths};

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
    let mounts = parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    if let Some(m) = mounts.iter().find(|m| holds(&m.dev)) {
        return Err(format!(
            "{} is in use: a file system on it is mounted at {}; unmount it first (nothing was written)",
            out.display(),
            m.mount_point
        ));
    }
    for dev in swap_paths(&fs::read_to_string("/proc/swaps").unwrap_or_default()) {
        if let Ok(m) = fs::metadata(&dev) {
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
    Ok(())
}

/// Refuses an output path that cannot take this kind of output: an existing directory for
/// an image file (a usb or iso image is one file), or anything but a directory for a site.
pub fn check_kind(out: &Path, format: crate::options::OutputFormat) -> Result<(), String> {
    use crate::options::OutputFormat;
    let meta = fs::metadata(out);
    match format {
        OutputFormat::Usb | OutputFormat::Iso if meta.as_ref().is_ok_and(|m| m.is_dir()) => {
            Err(format!(
                "-o {}: is a directory; name the image file to write, e.g. {}/usb.img (or use --format cache for a site); nothing was written",
                out.display(),
                out.display()
            ))
        }
        OutputFormat::Cache | OutputFormat::Netboot | OutputFormat::Kexec
            if meta.as_ref().is_ok_and(|m| !m.is_dir()) =>
        {
            Err(format!(
                "-o {}: exists and is not a directory; a --format {} output is a directory (nothing was written)",
                out.display(),
                format.name()
            ))
        }
        _ => Ok(()),
    }
}
