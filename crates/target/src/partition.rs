//! Writing the planned partition table: a GPT (primary and backup) with the plan's labels and
//! Discoverable Partitions type GUIDs, and the protective MBR the `gpt` crate leaves to us.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

use gpt::disk::LogicalBlockSize;
use gpt::partition_types::{OperatingSystem, Type};
use uuid::Uuid;

use crate::plan::PartitionPlan;

/// Writes a fresh GPT describing `parts` onto `disk` (a whole disk of `disk_bytes` with
/// `block`-byte logical sectors), then the protective MBR. Returns each partition's unique
/// GUID in `parts` order. Anything that was there before is replaced.
pub fn write_gpt(
    disk: &File,
    disk_bytes: u64,
    block: u64,
    parts: &[PartitionPlan],
) -> io::Result<Vec<Uuid>> {
    let to_io = |e: gpt::GptError| io::Error::other(format!("writing the GPT: {e}"));
    let lb = match block {
        512 => LogicalBlockSize::Lb512,
        4096 => LogicalBlockSize::Lb4096,
        other => {
            return Err(io::Error::other(format!(
                "the disk has {other}-byte logical sectors; only 512 and 4096 are supported"
            )))
        }
    };
    let mut handle = disk.try_clone()?;
    handle.seek(SeekFrom::Start(0))?;
    let mut gpt = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .change_partition_count(true)
        .create_from_device(&mut handle, Some(crate::ids::random_uuid()?))
        .map_err(to_io)?;
    let mut table = BTreeMap::new();
    let mut guids = Vec::new();
    for p in parts {
        let guid = crate::ids::random_uuid()?;
        let part_type_guid = Uuid::parse_str(&p.type_guid).map_err(|e| {
            io::Error::other(format!(
                "partition {} ({}): type GUID {:?} is invalid: {e}",
                p.number, p.label, p.type_guid
            ))
        })?;
        table.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: Type {
                    guid: part_type_guid,
                    os: OperatingSystem::None,
                },
                part_guid: guid,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: 0,
                name: p.label.clone(),
            },
        );
        guids.push(guid);
    }
    gpt.update_partitions(table).map_err(to_io)?;
    gpt.write().map_err(to_io)?;
    media::usb::write_protective_mbr(disk, disk_bytes, block)?;
    handle.flush()?;
    disk.sync_data()?;
    Ok(guids)
}
