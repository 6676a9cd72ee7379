//! The firmware's next boot: after an install (or on finding the host already installed),
//! the installed disk's ESP is made the one-time next boot (`BootNext`), so a machine whose
//! stick is still in, with the firmware's order putting the stick first, boots the installed
//! system instead of the installer again. Written through efivarfs as the UEFI specification
//! lays out a load option (§3.1.3) with a hard-drive media device path (§10.3.5.1); the
//! encoding is pure and unit-tested, the firmware is tested in the VM.
//!
//! And the marker that says a disk holds a host installed from a fleet: the GPT's disk GUID,
//! derived from the fleet, the host and the layout's disk name (`media::ids::install_marker`),
//! read back here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// The EFI global variable GUID (Boot####, BootNext, BootOrder).
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const ATTRIBUTES: u32 = 0x7;
/// LOAD_OPTION_ACTIVE.
const ACTIVE: u32 = 0x1;
/// What firmware boots from an ESP when no entry names a loader: the removable-media path,
/// which systemd-boot and GRUB install on every ESP they set up. Its name is the machine's
/// architecture's (the UEFI spec's BOOTX64.EFI, BOOTAA64.EFI): the installer's own, as it
/// runs natively.
pub const FALLBACK_LOADER: &str = if cfg!(target_arch = "aarch64") {
    "\\EFI\\BOOT\\BOOTAA64.EFI"
} else {
    "\\EFI\\BOOT\\BOOTX64.EFI"
};

/// An ESP as the firmware finds it: by its GPT partition's GUID, number, start and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspLocation {
    pub number: u32,
    pub first_lba: u64,
    pub sectors: u64,
    pub part_guid: Uuid,
}

/// What the installer reads of a disk's GPT: its disk GUID and its first ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptView {
    pub disk_guid: Uuid,
    pub esp: Option<EspLocation>,
}

/// The GPT of `disk` (with `block`-byte sectors), or `None` when it has none.
/// Whether shim started this boot: it leaves its runtime copies of the MOK list and of the
/// SBAT level (`MokListRT`, `SbatLevelRT`, under shim's GUID) for the OS. shim also extends
/// PCR 7 (with the SBAT level, and under Secure Boot with the certificates it verified by),
/// so PCR 7 now is not what it will be when the installed system boots without shim.
/// Whether this boot came through UEFI (the kernel then shows /sys/firmware/efi); false
/// under a legacy BIOS (or a CSM).
pub fn booted_uefi() -> bool {
    Path::new("/sys/firmware/efi").is_dir()
}

pub fn booted_through_shim() -> bool {
    ["MokListRT", "SbatLevelRT"].iter().any(|v| {
        Path::new(EFIVARS)
            .join(format!("{v}-605dab50-e046-4300-abb6-3dd810dd8b23"))
            .exists()
    })
}

pub fn read_gpt(disk: &Path, block: u64) -> io::Result<Option<GptView>> {
    let size = match block {
        4096 => gpt::disk::LogicalBlockSize::Lb4096,
        _ => gpt::disk::LogicalBlockSize::Lb512,
    };
    let file = File::open(disk)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", disk.display())))?;
    let Ok(g) = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(size)
        .open_from_device(file)
    else {
        return Ok(None);
    };
    let esp = g
        .partitions()
        .iter()
        .filter(|(_, p)| {
            p.part_type_guid
                .guid
                .to_string()
                .eq_ignore_ascii_case(manifest::profile::ESP_TYPE_GUID)
        })
        .map(|(n, p)| EspLocation {
            number: *n,
            first_lba: p.first_lba,
            sectors: p.last_lba + 1 - p.first_lba,
            part_guid: Uuid::from_bytes(*p.part_guid.as_bytes()),
        })
        .next();
    Ok(Some(GptView {
        disk_guid: Uuid::from_bytes(*g.guid().as_bytes()),
        esp,
    }))
}

/// An EFI_LOAD_OPTION that boots `loader` from the ESP `esp`, shown as `description`.
pub fn load_option(description: &str, esp: &EspLocation, loader: &str) -> Vec<u8> {
    let ucs2 = |s: &str| -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(|c| c.to_le_bytes())
            .collect()
    };
    let mut path = Vec::new();
    // Hard drive media path: type 4, subtype 1, 42 bytes.
    path.extend([4u8, 1]);
    path.extend(42u16.to_le_bytes());
    path.extend(esp.number.to_le_bytes());
    path.extend(esp.first_lba.to_le_bytes());
    path.extend(esp.sectors.to_le_bytes());
    path.extend(esp.part_guid.to_bytes_le());
    path.extend([0x02, 0x02]); // a GPT partition, signed by its GUID
                               // File path: type 4, subtype 4, the loader's path in UCS-2.
    let file = ucs2(loader);
    path.extend([4u8, 4]);
    path.extend((4 + file.len() as u16).to_le_bytes());
    path.extend(file);
    // End of the whole path.
    path.extend([0x7f, 0xff, 4, 0]);

    let mut out = Vec::new();
    out.extend(ACTIVE.to_le_bytes());
    out.extend((path.len() as u16).to_le_bytes());
    out.extend(ucs2(description));
    out.extend(path);
    out
}

fn var(name: &str) -> PathBuf {
    Path::new(EFIVARS).join(format!("{name}-{GLOBAL}"))
}

/// Makes `option` a Boot#### entry (the existing one with the same bytes, else the first free
/// number) and the firmware's next boot. Returns the entry's name (`Boot0003`).
pub fn boot_next(option: &[u8]) -> io::Result<String> {
    if !Path::new(EFIVARS).is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{EFIVARS} is not there: not booted in UEFI mode, or efivarfs is not mounted"),
        ));
    }
    let mut used = Vec::new();
    let mut same = None;
    for e in fs::read_dir(EFIVARS)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        let Some(hex) = name
            .strip_suffix(&format!("-{GLOBAL}"))
            .and_then(|n| n.strip_prefix("Boot"))
            .filter(|h| h.len() == 4)
        else {
            continue;
        };
        let Ok(n) = u16::from_str_radix(hex, 16) else {
            continue;
        };
        used.push(n);
        // The first four bytes are the variable's attributes.
        if fs::read(var(&format!("Boot{hex}"))).is_ok_and(|d| d.get(4..) == Some(option)) {
            same = Some(n);
        }
    }
    let n = match same {
        Some(n) => n,
        None => {
            let n = (0..=u16::MAX)
                .find(|n| !used.contains(n))
                .ok_or_else(|| io::Error::other("every Boot#### number is taken"))?;
            write_var(&format!("Boot{n:04X}"), option)?;
            n
        }
    };
    write_var("BootNext", &n.to_le_bytes())?;
    Ok(format!("Boot{n:04X}"))
}

/// Writes an EFI variable in one write (efivarfs takes nothing else), attributes first;
/// an existing one is made mutable first (efivarfs marks them immutable).
fn write_var(name: &str, data: &[u8]) -> io::Result<()> {
    write_var_at(&var(name), name, ATTRIBUTES, data)
}

fn write_var_at(path: &Path, name: &str, attributes: u32, data: &[u8]) -> io::Result<()> {
    let on = |e: io::Error| io::Error::new(e.kind(), format!("writing EFI variable {name}: {e}"));
    if path.exists() {
        clear_immutable(path).map_err(on)?;
    }
    let mut bytes = attributes.to_le_bytes().to_vec();
    bytes.extend(data);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(on)
}

/// The Secure Boot key variables, in the order they are enrolled (PK last: it ends setup
/// mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVar {
    Db,
    Kek,
    Pk,
}

impl KeyVar {
    pub fn name(self) -> &'static str {
        match self {
            KeyVar::Db => "db",
            KeyVar::Kek => "KEK",
            KeyVar::Pk => "PK",
        }
    }

    fn path(self) -> PathBuf {
        // db is under the image security database's GUID, PK and KEK the global one.
        let guid = match self {
            KeyVar::Db => "d719b2cb-3d3a-4596-a3bc-dad00e67656f",
            KeyVar::Kek | KeyVar::Pk => GLOBAL,
        };
        Path::new(EFIVARS).join(format!("{}-{guid}", self.name()))
    }
}

/// Whether the firmware is in setup mode (no platform key: keys may be enrolled); none when
/// it does not say (no UEFI, no Secure Boot support).
pub fn setup_mode() -> Option<bool> {
    let bytes = fs::read(var("SetupMode")).ok()?;
    // Four bytes of attributes, then the value.
    bytes.get(4).map(|v| *v == 1)
}

/// Writes a signed EFI signature list (`auth`, as sign-efi-sig-list makes it) to Secure Boot
/// key variable `which`, as a time-based authenticated write; the firmware checks it.
pub fn enrol_key(which: KeyVar, auth: &[u8]) -> io::Result<()> {
    // NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS
    const AUTHENTICATED: u32 = 0x27;
    write_var_at(&which.path(), which.name(), AUTHENTICATED, auth)
}

fn clear_immutable(path: &Path) -> io::Result<()> {
    const FS_IMMUTABLE_FL: libc::c_int = 0x10;
    let get = nix::request_code_read!(b'f', 1, std::mem::size_of::<libc::c_long>());
    let set = nix::request_code_write!(b'f', 2, std::mem::size_of::<libc::c_long>());
    let f = File::open(path)?;
    let mut flags: libc::c_int = 0;
    // SAFETY: both requests take a pointer to an int the kernel reads or writes; the fd is
    // open for as long as `f` lives.
    if unsafe { libc::ioctl(f.as_raw_fd(), get as _, &mut flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & FS_IMMUTABLE_FL == 0 {
        return Ok(());
    }
    flags &= !FS_IMMUTABLE_FL;
    // SAFETY: as above.
    if unsafe { libc::ioctl(f.as_raw_fd(), set as _, &flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_option_as_the_specification_lays_it_out() {
        let esp = EspLocation {
            number: 1,
            first_lba: 2048,
            sectors: 524288,
            part_guid: Uuid::parse_str("01234567-89ab-cdef-0123-456789abcdef").unwrap(),
        };
        let o = load_option("NixOS", &esp, "\\EFI\\BOOT\\BOOTX64.EFI");
        // Attributes: active.
        assert_eq!(&o[0..4], &[1, 0, 0, 0]);
        // The device path list: 42 (HD) + 4 + 2 * 22 (the 21 characters and a NUL) + 4 (end).
        let list = u16::from_le_bytes([o[4], o[5]]) as usize;
        assert_eq!(list, 42 + 4 + 44 + 4);
        // "NixOS\0" in UCS-2.
        assert_eq!(&o[6..18], b"N\0i\0x\0O\0S\0\0\0");
        let hd = &o[18..60];
        assert_eq!(&hd[0..4], &[4, 1, 42, 0]);
        assert_eq!(u32::from_le_bytes(hd[4..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(hd[8..16].try_into().unwrap()), 2048);
        assert_eq!(u64::from_le_bytes(hd[16..24].try_into().unwrap()), 524288);
        // The GUID in EFI's byte order: the first three fields little-endian.
        assert_eq!(
            &hd[24..40],
            &[
                0x67, 0x45, 0x23, 0x01, 0xab, 0x89, 0xef, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ]
        );
        assert_eq!(&hd[40..42], &[2, 2]);
        let file = &o[60..60 + 48];
        assert_eq!(&file[0..4], &[4, 4, 48, 0]);
        assert_eq!(&file[4..8], b"\\\0E\0");
        assert_eq!(&file[46..48], &[0, 0]);
        assert_eq!(&o[108..], &[0x7f, 0xff, 4, 0]);
        assert_eq!(o.len(), 18 + list);
    }
}
