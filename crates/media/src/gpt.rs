//! The one GPT writer, for installer images and for the disks the installer partitions: a
//! fresh table (primary and backup, written by the `gpt` crate) and the protective MBR the
//! crate leaves to its caller.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use ::gpt::disk::LogicalBlockSize;
use ::gpt::partition_types::{OperatingSystem, Type};
use uuid::Uuid;

/// One partition as the table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// 1-based entry number.
    pub number: u32,
    pub type_guid: Uuid,
    pub guid: Uuid,
    /// First and last (inclusive) logical block.
    pub first_lba: u64,
    pub last_lba: u64,
    /// The partition's name (what `/dev/disk/by-partlabel/` shows).
    pub name: String,
}

/// The gpt crate's name for a logical sector size; it knows only 512 and 4096.
fn logical_block_size(block: u64) -> io::Result<LogicalBlockSize> {
    match block {
        512 => Ok(LogicalBlockSize::Lb512),
        4096 => Ok(LogicalBlockSize::Lb4096),
        other => Err(io::Error::other(format!(
            "the disk has {other}-byte logical sectors; only 512 and 4096 are supported"
        ))),
    }
}

/// Writes a fresh GPT describing `parts` onto `disk` (a whole disk or an image of
/// `disk_bytes` with `block`-byte logical sectors), with disk GUID `disk_guid`, then the
/// protective MBR, and flushes it. Anything that was there before is replaced.
pub fn write(
    disk: &File,
    disk_bytes: u64,
    block: u64,
    disk_guid: Uuid,
    parts: &[GptPartition],
) -> io::Result<()> {
    let to_io = |e: ::gpt::GptError| io::Error::other(format!("writing the partition table: {e}"));
    let lb = logical_block_size(block)?;
    let mut handle = disk.try_clone()?;
    handle.seek(SeekFrom::Start(0))?;
    let mut gpt = ::gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .change_partition_count(true)
        .create_from_device(&mut handle, Some(disk_guid))
        .map_err(to_io)?;
    let table: BTreeMap<u32, ::gpt::partition::Partition> = parts
        .iter()
        .map(|p| {
            let entry = ::gpt::partition::Partition {
                part_type_guid: Type {
                    guid: p.type_guid,
                    os: OperatingSystem::None,
                },
                part_guid: p.guid,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: 0,
                name: p.name.clone(),
            };
            (p.number, entry)
        })
        .collect();
    gpt.update_partitions(table).map_err(to_io)?;
    gpt.write().map_err(to_io)?;
    write_protective_mbr(disk, disk_bytes, block)?;
    handle.flush()
}

/// Changes the disk GUID of the GPT on `disk` (both headers, their checksums recomputed),
/// leaving the partitions as they are: the installer marks a disk as holding a host only
/// once the install has completed.
pub fn set_disk_guid(disk: &File, block: u64, disk_guid: Uuid) -> io::Result<()> {
    let to_io = |e: ::gpt::GptError| io::Error::other(format!("updating the partition table: {e}"));
    let lb = logical_block_size(block)?;
    let mut handle = disk.try_clone()?;
    handle.seek(SeekFrom::Start(0))?;
    let mut gpt = ::gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .change_partition_count(true)
        .open_from_device(&mut handle)
        .map_err(to_io)?;
    // The headers are made again from the GUID when the partitions are set: the same ones.
    let parts = gpt.take_partitions();
    gpt.update_guid(Some(disk_guid));
    gpt.update_partitions(parts).map_err(to_io)?;
    gpt.write_inplace().map_err(to_io)?;
    drop(gpt);
    handle.flush()?;
    disk.sync_data()
}

/// gpt leaves the protective MBR to us: one partition of type 0xEE over the whole disk (as
/// far as 32-bit sector numbers reach), in sector 0.
fn write_protective_mbr(out: &File, disk_bytes: u64, block: u64) -> io::Result<()> {
    let sectors = (disk_bytes / block - 1).min(u32::MAX as u64) as u32;
    let mbr = ::gpt::mbr::ProtectiveMBR::with_lb_size(sectors);
    out.write_all_at(&mbr.to_bytes(), 0)
}
