//! Partitioning a disk for the plan: the old signatures wiped (the disk's first and last MiB,
//! and both ends of every new partition, where old file systems and RAID members would show
//! through), a fresh GPT with the plan's names and type GUIDs (the one writer,
//! `media::gpt`), the kernel told (BLKRRPART, else BLKPG) and the partition nodes awaited.

use std::io;
use std::path::PathBuf;

use media::gpt::GptPartition;
use media::ids::random_uuid;
use uuid::Uuid;

use crate::blockdev::{LockedDisk, PartSpan};
use crate::graph::PartitionPlan;

const MIB: u64 = 1 << 20;

/// Partitions `disk` as `parts` say, its GPT's disk GUID `disk_guid`, and returns the
/// partition nodes in `parts` order. The disk must still be the size and sector size it was
/// planned for (`planned_bytes`, `planned_block`): a disk swapped between the plan and now is
/// refused.
pub fn partition(
    disk: &LockedDisk,
    parts: &[PartitionPlan],
    planned_bytes: u64,
    planned_block: u64,
    disk_guid: Uuid,
) -> io::Result<Vec<PathBuf>> {
    let size = disk.size()?;
    let block = disk.logical_block_size()?;
    if size != planned_bytes || block != planned_block {
        return Err(io::Error::other(format!(
            "the disk changed since it was planned ({size} bytes, {block}-byte sectors now); run again"
        )));
    }
    disk.forget_partitions()?;
    disk.wipe_signatures()?;
    for p in parts {
        let (start, len) = (p.first_lba * block, p.bytes);
        disk.wipe(start, MIB.min(len))?;
        disk.wipe(start + len.saturating_sub(MIB), MIB.min(len))?;
    }
    let table = parts
        .iter()
        .map(|p| {
            Ok(GptPartition {
                number: p.number,
                type_guid: Uuid::parse_str(&p.type_guid).map_err(|e| {
                    io::Error::other(format!(
                        "partition {} ({}): type GUID {:?} is invalid: {e}",
                        p.number, p.label, p.type_guid
                    ))
                })?,
                guid: random_uuid()?,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                name: p.label.clone(),
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    media::gpt::write(disk.file(), size, block, disk_guid, &table)?;
    disk.file().sync_data()?;
    let spans: Vec<PartSpan> = parts
        .iter()
        .map(|p| PartSpan {
            number: p.number,
            start: p.first_lba * block,
            len: p.bytes,
        })
        .collect();
    disk.reread(&spans)
}
