//! Making file systems with the environment's own mkfs, called by absolute path (busybox
//! applets of the same name must not answer instead). The ESP is made natively: `esp`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use manifest::profile::Filesystem;

use crate::graph::Make;

/// Where the installer environments keep their tools: Debian's /usr/sbin first, NixOS's
/// system profile after.
const TOOL_DIRS: &[&str] = &[
    "/usr/sbin",
    "/sbin",
    "/usr/bin",
    "/bin",
    "/run/current-system/sw/bin",
];

/// The absolute path of a system tool, or an error that says what to install.
pub fn tool(name: &str) -> io::Result<PathBuf> {
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    TOOL_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(path_dirs)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name} is not in this installer environment ({}); add the package that provides it", TOOL_DIRS.join(", ")),
            )
        })
}

/// Runs a tool to completion; its output is kept for the error message only.
pub fn run(program: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running {}: {e}", program.display())))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    Err(io::Error::other(format!(
        "{} {} failed ({}): {}",
        program.display(),
        args.join(" "),
        out.status,
        said.trim()
    )))
}

/// Makes the file system (or swap) `m` on `node`, with the label and UUID the plan gives it
/// and the layout's extra arguments. vfat is made natively (`esp`), not here.
pub fn mkfs(m: &Make, node: &Path) -> io::Result<()> {
    let dev = node
        .to_str()
        .ok_or_else(|| io::Error::other("device path is not UTF-8"))?
        .to_string();
    let mut args: Vec<String> = Vec::new();
    let (program, force) = match m.format {
        Filesystem::Ext4 => ("mkfs.ext4", "-F"),
        Filesystem::Btrfs => ("mkfs.btrfs", "-f"),
        Filesystem::Xfs => ("mkfs.xfs", "-f"),
        Filesystem::Swap => ("mkswap", "-f"),
        Filesystem::Vfat | Filesystem::None => return Ok(()),
    };
    if m.format != Filesystem::Swap {
        args.push("-q".into());
    }
    args.push(force.into());
    if let Some(l) = &m.label {
        args.extend(["-L".into(), l.clone()]);
    }
    if let Some(u) = &m.uuid {
        match m.format {
            Filesystem::Xfs => args.extend(["-m".into(), format!("uuid={u}")]),
            _ => args.extend(["-U".into(), u.clone()]),
        }
    }
    args.extend(m.extra_args.iter().cloned());
    args.push(dev);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&tool(program)?, &args)
}
