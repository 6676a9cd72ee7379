//! The target's ESP, written natively: formatted FAT32 with fatfs (no mkfs.vfat needed, and
//! it works on a kernel without vfat), and, where the kernel cannot mount FAT, filled from a
//! tmpfs staged at its mount point with our own FAT32 writer.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use fatfs::{FatType, FormatVolumeOptions};
use media::slice::Slice;
use util::size::human;

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

/// The FAT volume ID a layout gives as `XXXX-XXXX` (what `/dev/disk/by-uuid/` shows), or a
/// random one.
pub fn volume_id(uuid: Option<&str>) -> io::Result<u32> {
    match uuid {
        Some(u) => u32::from_str_radix(&u.replace('-', ""), 16)
            .map_err(|_| io::Error::other(format!("{u:?} is not a FAT volume ID (XXXX-XXXX)"))),
        None => Ok(media::ids::random_uuid()?.as_fields().0),
    }
}

/// Where an ESP goes: `len` bytes at `start` of `file` (the whole disk, or the ESP's own
/// device such as an md array), `block`-byte sectors; its label and volume ID.
#[derive(Debug, Clone)]
pub struct EspSpot {
    pub start: u64,
    pub len: u64,
    pub block: u64,
    pub label: String,
    pub volume_id: u32,
}

/// Formats the ESP at `at` of `disk` as FAT32 with fatfs.
pub fn format_esp(disk: &File, at: &EspSpot) -> io::Result<()> {
    let EspSpot {
        start,
        len,
        block,
        ref label,
        volume_id,
    } = *at;
    let opts = FormatVolumeOptions::new()
        .fat_type(FatType::Fat32)
        .bytes_per_sector(block as u16)
        .bytes_per_cluster(esp_cluster_bytes(len, block)?)
        .volume_label(media::fat32::volume_label(label))
        .volume_id(volume_id);
    fatfs::format_volume(Slice::new(disk.try_clone()?, start, len), opts)
        .map_err(|e| io::Error::new(e.kind(), format!("writing FAT32: {e}")))?;
    // Written through the whole disk, the file system sits in the disk's page cache; the
    // partition's device has a cache of its own and reads the disk itself when mounted. Until
    // this flush, the kernel saw the zeros the wipe left ("bogus number of reserved sectors").
    disk.sync_data()
        .map_err(|e| io::Error::new(e.kind(), format!("flushing the new FAT32: {e}")))
}

/// Whether the running kernel can mount FAT (loading the module if it can).
pub fn vfat_available() -> bool {
    if crate::bootloader::kernel_has("vfat") {
        return true;
    }
    let _ = std::process::Command::new(
        crate::format::tool("modprobe").unwrap_or_else(|_| "modprobe".into()),
    )
    .arg("vfat")
    .output();
    crate::bootloader::kernel_has("vfat")
}

/// Writes the files staged in `dir` (a tmpfs at the ESP's mount point) into the ESP as a fresh
/// FAT32 volume, with `timestamp` on every entry.
pub fn write_staged(disk: &File, esp: &EspSpot, dir: &Path, timestamp: u64) -> io::Result<()> {
    let mut tree = media::fat32::Tree::new();
    add_tree(&mut tree, dir, "")?;
    let g = media::fat32::geometry_for(&tree, esp.len).ok_or_else(|| {
        io::Error::other(format!(
            "the boot files do not fit the {} ESP",
            human(esp.len)
        ))
    })?;
    let opts = media::fat32::VolumeOptions {
        label: esp.label.to_uppercase(),
        volume_id: esp.volume_id,
        hidden_sectors: (esp.start / 512) as u32,
        timestamp,
    };
    media::fat32::write(disk, esp.start, &g, &tree, &opts, &mut |_| {})?;
    disk.sync_data()
}

fn add_tree(tree: &mut media::fat32::Tree, dir: &Path, prefix: &str) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(e.path())?;
        if meta.is_dir() {
            tree.add_dir(&path);
            add_tree(tree, &e.path(), &path)?;
        } else if meta.is_file() {
            tree.add_file(
                &path,
                media::fat32::Source::File {
                    path: e.path(),
                    size: meta.len(),
                },
            );
        } else {
            return Err(io::Error::other(format!(
                "/boot/{path} is neither a file nor a directory; FAT cannot hold it"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_clusters_leave_fat32_enough_of_them() {
        assert_eq!(esp_cluster_bytes(1 << 30, 512).unwrap(), 4096);
        assert_eq!(esp_cluster_bytes(100 << 20, 512).unwrap(), 1024);
        assert!(esp_cluster_bytes(16 << 20, 512).is_err());
        assert!(esp_cluster_bytes(100 << 20, 4096).is_err());
    }
}
