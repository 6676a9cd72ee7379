//! Making file systems: the ESP natively with fatfs (no mkfs.vfat needed, and it works on a
//! kernel without vfat), everything else with the environment's own mkfs, called by absolute
//! path (busybox applets of the same name must not answer instead).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use fatfs::{FatType, FormatVolumeOptions};
use manifest::profile::Format;
use media::read::Slice;

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

/// The FAT volume label: the partition label, upper-cased, cut to the 11 bytes FAT allows.
fn fat_label(label: &str) -> [u8; 11] {
    let mut out = [b' '; 11];
    for (o, c) in out.iter_mut().zip(
        label
            .bytes()
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'),
    ) {
        *o = c.to_ascii_uppercase();
    }
    out
}

/// The largest cluster (up to 4 KiB) that still leaves FAT32 its 65,525 clusters: UEFI decides
/// the FAT type by cluster count, and the ESP must be FAT32.
fn esp_cluster_bytes(len: u64, block: u64) -> io::Result<u32> {
    [4096u32, 2048, 1024, 512]
        .into_iter()
        .find(|c| *c as u64 >= block && len / *c as u64 > 66_000)
        .ok_or_else(|| {
            io::Error::other(format!(
                "an ESP of {len} bytes is too small for FAT32 (at least 33 MiB)"
            ))
        })
}

/// Formats the ESP at `start..start+len` of `disk` (`block`-byte sectors) as FAT32 with fatfs.
pub fn format_esp(disk: &File, start: u64, len: u64, block: u64, label: &str) -> io::Result<()> {
    let opts = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .bytes_per_sector(block as u16)
        .bytes_per_cluster(esp_cluster_bytes(len, block)?)
        .volume_label(fat_label(label))
        .volume_id(crate::ids::random_uuid()?.as_fields().0);
    fatfs::format_volume(Slice::new(disk.try_clone()?, start, len), opts)
        .map_err(|e| io::Error::new(e.kind(), format!("writing FAT32: {e}")))?;
    // Written through the whole disk, the file system sits in the disk's page cache; the
    // partition's device has a cache of its own and reads the disk itself when mounted. Until
    // this flush, the kernel saw the zeros the wipe left ("bogus number of reserved sectors").
    disk.sync_data()
        .map_err(|e| io::Error::new(e.kind(), format!("flushing the new FAT32: {e}")))
}

/// Makes the file system `format` on the partition node `node`, labelled `label`.
pub fn mkfs(format: Format, node: &Path, label: &str) -> io::Result<()> {
    let dev = node
        .to_str()
        .ok_or_else(|| io::Error::other("device path is not UTF-8"))?;
    match format {
        Format::Ext4 => run(&tool("mkfs.ext4")?, &["-q", "-F", "-L", label, dev]),
        Format::Btrfs => run(&tool("mkfs.btrfs")?, &["-q", "-f", "-L", label, dev]),
        Format::Xfs => run(&tool("mkfs.xfs")?, &["-q", "-f", "-L", label, dev]),
        Format::Swap => run(&tool("mkswap")?, &["-L", label, dev]),
        Format::Vfat | Format::None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat_labels_are_upper_case_and_cut_to_eleven_bytes() {
        assert_eq!(&fat_label("ESP"), b"ESP        ");
        assert_eq!(&fat_label("boot partition 1"), b"BOOTPARTITI");
    }

    #[test]
    fn esp_clusters_leave_fat32_enough_of_them() {
        assert_eq!(esp_cluster_bytes(1 << 30, 512).unwrap(), 4096);
        assert_eq!(esp_cluster_bytes(100 << 20, 512).unwrap(), 1024);
        assert!(esp_cluster_bytes(16 << 20, 512).is_err());
        assert!(esp_cluster_bytes(100 << 20, 4096).is_err());
    }
}
