//! An installer image (a USB image file, a stick, or an ISO) opened for reading: its GPT and
//! partitions found by type, and its payload, whichever medium holds it.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::isoread::{self, IsoPayload};
use crate::read::{DirPayload, FatPayload, Payload};
pub use crate::slice::Extent;
use crate::usb::{ESP_TYPE_GUID, PAYLOAD_TYPE_GUID};
use crate::verify::Opener;

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// An installer image (or stick) opened for reading.
pub struct Image {
    pub path: PathBuf,
    pub disk_bytes: u64,
    pub esp: Extent,
    pub payload: Extent,
    /// The GPT's disk GUID and the two partitions' GUIDs.
    pub guids: [uuid::Uuid; 3],
}

impl Image {
    /// Opens an image file or device and finds its ESP and payload partitions.
    pub fn open(path: &Path) -> io::Result<Image> {
        let mut file =
            File::open(path).map_err(|e| other(format!("opening {}: {e}", path.display())))?;
        let disk_bytes = file.seek(SeekFrom::End(0))?;
        file.seek(SeekFrom::Start(0))?;
        let disk = ::gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(::gpt::disk::LogicalBlockSize::Lb512)
            .open_from_device(file)
            .map_err(|e| {
                other(format!(
                    "{}: no valid GPT partition table ({e}); is this an installer image?",
                    path.display()
                ))
            })?;
        let find = |guid: &str, what: &str| {
            disk.partitions()
                .values()
                .find(|p| p.part_type_guid.guid.to_string().eq_ignore_ascii_case(guid))
                .map(|p| {
                    let e = Extent {
                        start: p.first_lba * 512,
                        len: (p.last_lba + 1 - p.first_lba) * 512,
                    };
                    (e, p.part_guid)
                })
                .ok_or_else(|| {
                    other(format!(
                        "{}: no {what} partition (type {guid}); is this an installer image?",
                        path.display()
                    ))
                })
        };
        let (esp, esp_guid) = find(ESP_TYPE_GUID, "EFI system")?;
        let (payload, payload_guid) = find(PAYLOAD_TYPE_GUID, "payload")?;
        Ok(Image {
            path: path.to_path_buf(),
            disk_bytes,
            esp,
            payload,
            guids: [*disk.guid(), esp_guid, payload_guid],
        })
    }

    /// The FAT file system of one of the image's partitions.
    pub fn fat(&self, extent: Extent) -> io::Result<FatPayload> {
        FatPayload::open(&self.path, extent)
    }
}

/// The payload of an installer image: the FAT payload partition of a USB image (or stick), the
/// ISO 9660 volume of an ISO, or a payload directory.
pub fn open_payload(path: &Path) -> io::Result<Box<dyn Payload>> {
    if path.is_dir() {
        // A `--format cache` site, or a payload tree copied off a stick.
        return Ok(Box::new(DirPayload(path.to_path_buf())));
    }
    match Image::open(path) {
        Ok(img) => Ok(Box::new(img.fat(img.payload)?)),
        Err(_) if isoread::is_iso(path) => Ok(Box::new(IsoPayload::open(path)?)),
        Err(e) => Err(e),
    }
}

/// An image by its path, opened once per worker (see [`Opener`]).
pub struct ImagePath(pub PathBuf);

impl Opener for ImagePath {
    fn open(&self) -> io::Result<Box<dyn Payload + '_>> {
        open_payload(&self.0)
    }

    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

/// The boot loader on an image's ESP, for `inspect`: the signed chain (shim and GRUB, which
/// boot with Secure Boot on) or systemd-boot; none if the image has no ESP.
pub fn boot_loader(path: &Path) -> Option<&'static str> {
    let boot = removable_loaders(path)?;
    Some(
        if boot.iter().any(|n| {
            let n = n.to_ascii_lowercase();
            n.starts_with("grub") && n.ends_with(".efi")
        }) {
            "shim and GRUB, signed (boots with Secure Boot on)"
        } else {
            "systemd-boot (Secure Boot must be off)"
        },
    )
}

/// The files of an image's `EFI/BOOT`, where the firmware looks for a removable medium's loader.
fn removable_loaders(path: &Path) -> Option<Vec<String>> {
    let img = Image::open(path).ok()?;
    let esp = img.fat(img.esp).ok()?;
    esp.list("EFI/BOOT").ok()
}

/// The architectures whose machines boot the image (`EFI/BOOT/BOOTX64.EFI`: x86-64), as Nix
/// names their platforms; empty without an ESP.
pub fn boot_platforms(path: &Path) -> Vec<&'static str> {
    let boot = removable_loaders(path).unwrap_or_default();
    crate::esp::Arch::ALL
        .into_iter()
        .filter(|a| {
            let want = format!("BOOT{}.EFI", a.efi());
            boot.iter().any(|n| n.eq_ignore_ascii_case(&want))
        })
        .map(|a| a.nix_platform())
        .collect()
}

/// The installer's kernel command line on an image's ESP (`options` of its loader entry),
/// if the image has one: what `inspect` shows.
pub fn kernel_options(path: &Path) -> Option<String> {
    let img = Image::open(path).ok()?;
    let esp = img.fat(img.esp).ok()?;
    let entry = esp.read_capped(crate::esp::LOADER_ENTRY, 64 << 10).ok()?;
    String::from_utf8_lossy(&entry)
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .map(|o| o.trim().to_string())
}
