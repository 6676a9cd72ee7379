//! USB images: a GPT disk (protective MBR, primary and backup tables) with an ESP and a
//! payload partition, each a FAT32 volume written by [`crate::fat32`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use uuid::Uuid;

use crate::fat32::{self, Geometry, Tree, VolumeOptions};
use crate::gpt::{self, GptPartition};

/// The payload partition's type GUID: ours, so the installer finds the payload on any disk.
pub const PAYLOAD_TYPE_GUID: &str = "ED140608-3A53-493D-9175-A012CF428C95";
/// The payload partition's GPT name.
pub const PAYLOAD_PART_NAME: &str = "autoinstall-payload";
/// The payload file system's label.
pub const PAYLOAD_FS_LABEL: &str = "AIPAYLOAD";
/// The ESP's GPT name and file system label.
pub const ESP_PART_NAME: &str = "autoinstall-boot";
pub const ESP_FS_LABEL: &str = "AIBOOT";
pub use manifest::profile::ESP_TYPE_GUID;

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
/// Room left on the payload for the reports installers write back.
pub const REPORT_ROOM: u64 = 16 * MIB;

/// Where everything goes on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub disk_bytes: u64,
    pub esp_start: u64,
    pub esp: Geometry,
    pub payload_start: u64,
    pub payload: Geometry,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("the image needs {needed} bytes ({}), but --size gives {given} ({}); use at least --size {}M", human(*.needed), human(*.given), .needed.div_ceil(MIB))]
    TooSmall { needed: u64, given: u64 },
}

fn human(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

fn round_mib(b: u64) -> u64 {
    b.div_ceil(MIB) * MIB
}

/// Plans the disk: 1 MiB for the protective MBR and primary GPT, the ESP, the payload, and
/// 1 MiB for the backup GPT. With `size`, the payload grows to fill the disk.
pub fn plan(esp: &Tree, payload: &Tree, size: Option<u64>) -> Result<Layout, LayoutError> {
    let esp_geo = fat32::min_geometry(esp, 2 * MIB);
    let esp_bytes = round_mib(esp_geo.bytes());
    let esp_geo = fat32::geometry_for(esp, esp_bytes).expect("a rounded-up volume still fits");
    let payload_min = round_mib(fat32::min_geometry(payload, REPORT_ROOM).bytes());
    let needed = MIB + esp_bytes + payload_min + MIB;
    let disk_bytes = match size {
        Some(s) if s < needed => return Err(LayoutError::TooSmall { needed, given: s }),
        Some(s) => s / SECTOR * SECTOR,
        None => needed,
    };
    let payload_bytes = (disk_bytes - MIB - esp_bytes - MIB) / MIB * MIB;
    let payload_geo =
        fat32::geometry_for(payload, payload_bytes).expect("the payload fits the planned size");
    Ok(Layout {
        disk_bytes,
        esp_start: MIB,
        esp: esp_geo,
        payload_start: MIB + esp_bytes,
        payload: payload_geo,
    })
}

/// Identifiers of one image.
pub struct Ids {
    pub disk: Uuid,
    pub esp: Uuid,
    pub payload: Uuid,
    pub esp_volume: u32,
    pub payload_volume: u32,
    pub timestamp: u64,
}

/// Writes the image to `out` (a regular file, sized here, or a block device of at least
/// `layout.disk_bytes`). The partition table is written last and the old one wiped first, so
/// an interrupted write never leaves a stick that looks bootable.
pub fn write(
    out: &mut File,
    layout: &Layout,
    esp: &Tree,
    payload: &Tree,
    ids: &Ids,
    bios: Option<&crate::bios::BiosBoot>,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let is_file = out.metadata()?.is_file();
    if is_file {
        // Grown by the writes themselves, in ascending order: ext4 writes a file that grows
        // at its end three times faster than holes punched into a pre-sized one. And only
        // truncated if it has contents: ext4 flushes a file truncated to zero when it is
        // closed (its guard for the truncate-and-rewrite pattern), a quarter second here.
        if out.metadata()?.len() > 0 {
            out.set_len(0)?;
        }
    } else {
        let zeros = vec![0u8; MIB as usize];
        out.write_all_at(&zeros, 0)?;
        out.write_all_at(&zeros, layout.disk_bytes - MIB)?;
    }
    let esp_opts = VolumeOptions {
        label: ESP_FS_LABEL.into(),
        volume_id: ids.esp_volume,
        hidden_sectors: (layout.esp_start / SECTOR) as u32,
        timestamp: ids.timestamp,
    };
    fat32::write(out, layout.esp_start, &layout.esp, esp, &esp_opts, progress)?;
    let payload_opts = VolumeOptions {
        label: PAYLOAD_FS_LABEL.into(),
        volume_id: ids.payload_volume,
        hidden_sectors: (layout.payload_start / SECTOR) as u32,
        timestamp: ids.timestamp,
    };
    fat32::write(
        out,
        layout.payload_start,
        &layout.payload,
        payload,
        &payload_opts,
        progress,
    )?;
    if is_file {
        out.set_len(layout.disk_bytes)?;
    }
    write_gpt(out, layout, ids)?;
    if let Some(b) = bios {
        b.install(out)?;
    }
    // A stick is pulled right after: flush it. An image file is left to the page cache, as
    // cp and tar leave theirs; it is copied to a stick afterwards anyway.
    if !is_file {
        out.sync_all()?;
    }
    Ok(())
}

fn write_gpt(out: &mut File, layout: &Layout, ids: &Ids) -> io::Result<()> {
    let guid = |g: &str| Uuid::parse_str(g).expect("a constant GUID");
    let part =
        |number, ty: &str, guid_: Uuid, start: u64, geo: &Geometry, name: &str| GptPartition {
            number,
            type_guid: guid(ty),
            guid: guid_,
            first_lba: start / SECTOR,
            last_lba: (start + round_mib(geo.bytes())) / SECTOR - 1,
            name: name.to_string(),
        };
    let parts = [
        part(
            1,
            ESP_TYPE_GUID,
            ids.esp,
            layout.esp_start,
            &layout.esp,
            ESP_PART_NAME,
        ),
        part(
            2,
            PAYLOAD_TYPE_GUID,
            ids.payload,
            layout.payload_start,
            &layout.payload,
            PAYLOAD_PART_NAME,
        ),
    ];
    gpt::write(out, layout.disk_bytes, SECTOR, ids.disk, &parts)
}
