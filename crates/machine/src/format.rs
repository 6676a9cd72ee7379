//! Making file systems with the environment's own mkfs, called by absolute path (busybox
//! applets of the same name must not answer instead). The ESP is made natively: `esp`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use manifest::profile::Filesystem;

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

/// Makes the file system `format` on the partition node `node`, labelled `label`.
pub fn mkfs(format: Filesystem, node: &Path, label: &str) -> io::Result<()> {
    let dev = node
        .to_str()
        .ok_or_else(|| io::Error::other("device path is not UTF-8"))?;
    match format {
        Filesystem::Ext4 => run(&tool("mkfs.ext4")?, &["-q", "-F", "-L", label, dev]),
        Filesystem::Btrfs => run(&tool("mkfs.btrfs")?, &["-q", "-f", "-L", label, dev]),
        Filesystem::Xfs => run(&tool("mkfs.xfs")?, &["-q", "-f", "-L", label, dev]),
        Filesystem::Swap => run(&tool("mkswap")?, &["-L", label, dev]),
        Filesystem::Vfat | Filesystem::None => Ok(()),
    }
}
