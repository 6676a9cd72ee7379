//! Identify: who is this machine? The SMBIOS type 1 (System Information) serial and UUID, read
//! from the firmware's tables with smbios-lib, with sysfs's DMI attributes as the fallback,
//! then the device tree's `serial-number` (boards without SMBIOS), and the MAC addresses of
//! its network interfaces for the report. Junk serials count as none, from every source.

use std::fs;
use std::path::Path;

use serde::Serialize;

use manifest::serial;

/// What identifies the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The normalised serial, or `None` if the firmware has none or only a placeholder.
    pub serial: Option<String>,
    /// What the firmware said, before normalisation (for the report).
    pub raw_serial: Option<String>,
    /// Why `raw_serial` was not accepted as a serial.
    pub serial_rejected: Option<String>,
    pub uuid: Option<String>,
    /// Where the serial came from: `smbios`, `sysfs` or `devicetree`.
    pub source: Option<&'static str>,
    /// `interface=mac`, physical interfaces only.
    pub macs: Vec<String>,
}

/// The serial and UUID as one source reports them.
pub struct Raw {
    pub serial: Option<String>,
    pub uuid: Option<String>,
}

/// SMBIOS System Information from the firmware tables (/sys/firmware/dmi/tables).
pub fn from_smbios() -> Option<Raw> {
    let data = smbioslib::table_load_from_device().ok()?;
    data.find_map(|sys: smbioslib::SMBiosSystemInformation| {
        Some(Raw {
            serial: sys.serial_number().to_utf8_lossy(),
            uuid: match sys.uuid() {
                Some(smbioslib::SystemUuidData::Uuid(u)) => Some(u.to_string().to_lowercase()),
                _ => None,
            },
        })
    })
}

/// The kernel's copy of the same fields (root only for the serial).
pub fn from_sysfs(dmi: &Path) -> Option<Raw> {
    let read = |f: &str| fs::read_to_string(dmi.join(f)).ok();
    let serial = read("product_serial");
    let uuid = read("product_uuid").map(|u| u.trim().to_lowercase());
    (serial.is_some() || uuid.is_some()).then_some(Raw { serial, uuid })
}

/// The device tree's `serial-number` under `base` (normally /sys/firmware/devicetree/base):
/// the identity of boards whose firmware has no SMBIOS. A string property: its bytes up to the
/// first NUL, at most 256 of them.
pub fn from_devicetree(base: &Path) -> Option<Raw> {
    let bytes = fs::read(base.join("serial-number")).ok()?;
    let value = bytes.split(|b| *b == 0).next().unwrap_or_default();
    let value = &value[..value.len().min(256)];
    Some(Raw {
        serial: Some(String::from_utf8_lossy(value).into_owned()),
        uuid: None,
    })
}

/// MAC addresses of the interfaces under `net` (normally /sys/class/net), skipping loopback
/// and virtual ones.
pub fn macs(net: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(net) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Physical interfaces have a device link; lo, bridges and tunnels do not.
        if !e.path().join("device").exists() {
            continue;
        }
        if let Ok(mac) = fs::read_to_string(e.path().join("address")) {
            out.push(format!("{name}={}", mac.trim()));
        }
    }
    out.sort();
    out
}

/// Combines the sources, in order (SMBIOS, sysfs, the device tree): the first that has a
/// serial wins; junk serials are kept for the report but never used.
pub fn combine(sources: Vec<(&'static str, Option<Raw>)>, macs: Vec<String>) -> Identity {
    let mut id = Identity {
        serial: None,
        raw_serial: None,
        serial_rejected: None,
        uuid: None,
        source: None,
        macs,
    };
    for (name, raw) in sources {
        let Some(raw) = raw else { continue };
        if id.uuid.is_none() {
            id.uuid = raw.uuid.filter(|u| !u.is_empty());
        }
        if id.source.is_some() {
            continue;
        }
        if let Some(s) = raw.serial {
            let normal = serial::normalise(&s);
            id.raw_serial = Some(s);
            id.source = Some(name);
            match serial::junk_reason(&normal) {
                None => id.serial = Some(normal),
                Some(why) => id.serial_rejected = Some(why),
            }
        }
    }
    id
}

/// Identifies this machine.
pub fn identify() -> Identity {
    combine(
        vec![
            ("smbios", from_smbios()),
            ("sysfs", from_sysfs(Path::new("/sys/class/dmi/id"))),
            (
                "devicetree",
                from_devicetree(Path::new("/sys/firmware/devicetree/base")),
            ),
        ],
        macs(Path::new("/sys/class/net")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(serial: &str, uuid: &str) -> Option<Raw> {
        Some(Raw {
            serial: Some(serial.into()),
            uuid: Some(uuid.into()),
        })
    }

    #[test]
    fn smbios_first_then_sysfs() {
        let id = combine(
            vec![
                ("smbios", raw(" PF3ABC12\0", "u1")),
                ("sysfs", raw("OTHER", "u2")),
            ],
            vec![],
        );
        assert_eq!(id.serial.as_deref(), Some("PF3ABC12"));
        assert_eq!(
            (id.source, id.uuid.as_deref()),
            (Some("smbios"), Some("u1"))
        );
        let id = combine(
            vec![("smbios", None), ("sysfs", raw("SYS-123", "u2"))],
            vec![],
        );
        assert_eq!(
            (id.serial.as_deref(), id.source),
            (Some("SYS-123"), Some("sysfs"))
        );
    }

    #[test]
    fn junk_is_no_serial() {
        let id = combine(
            vec![
                ("smbios", raw("To Be Filled By O.E.M.", "u")),
                ("sysfs", raw("ignored", "")),
            ],
            vec![],
        );
        assert_eq!(id.serial, None);
        assert!(id.serial_rejected.unwrap().contains("placeholder"));
        assert_eq!(id.raw_serial.as_deref(), Some("To Be Filled By O.E.M."));
    }

    #[test]
    fn sysfs_files() {
        let dir = std::env::temp_dir().join(format!("dmi-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("product_serial"), "ABC-123\n").unwrap();
        fs::write(
            dir.join("product_uuid"),
            "1B4E28BA-2FA1-11D2-883F-0016D3CCA427\n",
        )
        .unwrap();
        let id = combine(vec![("smbios", None), ("sysfs", from_sysfs(&dir))], vec![]);
        assert_eq!(id.serial.as_deref(), Some("ABC-123"));
        assert_eq!(
            id.uuid.as_deref(),
            Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_device_tree_serves_boards_without_smbios_with_the_same_junk_rules() {
        let dir = std::env::temp_dir().join(format!("dt-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let sources = |dir: &Path| {
            vec![
                ("smbios", None),
                ("sysfs", None),
                ("devicetree", from_devicetree(dir)),
            ]
        };
        // A string property ends in NUL (and what follows it is not the serial).
        fs::write(dir.join("serial-number"), b"10000000a1b2c3d4\0junk").unwrap();
        let id = combine(sources(&dir), vec![]);
        assert_eq!(
            (id.serial.as_deref(), id.source, id.uuid),
            (Some("10000000a1b2c3d4"), Some("devicetree"), None)
        );
        // SMBIOS, where a board has it, comes first.
        let mut first = sources(&dir);
        first[0].1 = raw("PF3ABC12", "u1");
        assert_eq!(combine(first, vec![]).source, Some("smbios"));
        // A placeholder is no serial here either.
        fs::write(dir.join("serial-number"), b"0000000000000000\0").unwrap();
        let id = combine(sources(&dir), vec![]);
        assert_eq!((id.serial, id.source), (None, Some("devicetree")));
        assert!(id.serial_rejected.is_some());
        // No property, no source.
        fs::remove_file(dir.join("serial-number")).unwrap();
        assert_eq!(combine(sources(&dir), vec![]).source, None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
