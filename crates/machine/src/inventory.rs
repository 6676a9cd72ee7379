//! The machine's hardware inventory, from sysfs (the kernel's copy of the SMBIOS tables, the
//! firmware, the network interfaces, the TPM), the disk scan, and the TPM's endorsement key
//! (`tpm`). Reading is split from where it reads, so the tests give it a tree shaped like
//! /sys.

use std::fs;
use std::path::Path;

use manifest::inventory::{
    chassis_kind, Board, Chassis, Cpu, Disk, Firmware, Inventory, Nic, System, Tpm,
};

use crate::layout::DiskFacts;

/// The EFI global variable GUID, for SecureBoot.
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// This machine's inventory: `disks` from the disk scan, the CPU and memory as the caller
/// measured them (sysinfo), the rest from /sys and the TPM.
pub fn collect(disks: &[DiskFacts], cpu: Cpu, memory_bytes: u64) -> Inventory {
    let mut inv = from_tree(Path::new("/sys"));
    inv.disks = disks.iter().map(disk).collect();
    inv.cpu = cpu;
    inv.memory_bytes = memory_bytes;
    if let Some(t) = &mut inv.tpm {
        if t.version == "2.0" {
            match crate::tpm::Tpm::open().and_then(|mut tpm| tpm.identity()) {
                Ok(id) => {
                    t.ek_sha256 = id.ek_sha256();
                    t.ek_public = util::hex::encode(&id.ek_modulus);
                    t.activation_name = util::hex::encode(&id.activation_name);
                }
                Err(e) => t.ek_error = Some(e.to_string()),
            }
        }
    }
    inv
}

fn disk(d: &DiskFacts) -> Disk {
    Disk {
        path: d.path.clone(),
        model: d.model.clone(),
        serial: d.serial.clone(),
        size: d.size,
        transport: d.transport.clone(),
        rotational: d.rotational,
        removable: d.removable,
    }
}

/// Everything but the disks, the CPU, the memory and the TPM's key, from the tree `sys`.
pub fn from_tree(sys: &Path) -> Inventory {
    let dmi = sys.join("class/dmi/id");
    let read = |f: &str| {
        fs::read_to_string(dmi.join(f))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let efi = sys.join("firmware/efi");
    Inventory {
        system: System {
            manufacturer: read("sys_vendor"),
            product: read("product_name"),
            version: read("product_version"),
            serial: read("product_serial"),
            uuid: read("product_uuid").to_lowercase(),
            sku: read("product_sku"),
            family: read("product_family"),
        },
        board: Board {
            manufacturer: read("board_vendor"),
            product: read("board_name"),
            version: read("board_version"),
            serial: read("board_serial"),
            asset_tag: read("board_asset_tag"),
        },
        chassis: Chassis {
            manufacturer: read("chassis_vendor"),
            kind: read("chassis_type")
                .parse::<u8>()
                .map(chassis_kind)
                .unwrap_or("")
                .to_string(),
            serial: read("chassis_serial"),
            asset_tag: read("chassis_asset_tag"),
        },
        firmware: Firmware {
            vendor: read("bios_vendor"),
            version: read("bios_version"),
            date: read("bios_date"),
            boot_mode: if efi.is_dir() { "uefi" } else { "bios" }.into(),
            secure_boot: secure_boot(&efi.join("efivars")),
        },
        cpu: Cpu::default(),
        memory_bytes: 0,
        disks: Vec::new(),
        nics: nics(&sys.join("class/net")),
        tpm: tpm(&sys.join("class/tpm")),
    }
}

/// SecureBoot: four bytes of attributes, then one byte, 1 when on.
fn secure_boot(efivars: &Path) -> Option<bool> {
    let data = fs::read(efivars.join(format!("SecureBoot-{GLOBAL}"))).ok()?;
    data.get(4).map(|b| *b == 1)
}

/// Physical interfaces (those with a device), sorted by name.
fn nics(net: &Path) -> Vec<Nic> {
    let Ok(entries) = fs::read_dir(net) else {
        return Vec::new();
    };
    let mut out: Vec<Nic> = entries
        .flatten()
        .filter(|e| e.path().join("device").exists())
        .map(|e| {
            let p = e.path();
            let read = |f: &str| fs::read_to_string(p.join(f)).map(|s| s.trim().to_string());
            Nic {
                name: e.file_name().to_string_lossy().into_owned(),
                mac: read("address").unwrap_or_default(),
                driver: fs::read_link(p.join("device/driver"))
                    .ok()
                    .and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .unwrap_or_default(),
                // Reading carrier fails while the interface is down.
                link: read("carrier").ok().map(|c| c == "1"),
                speed_mbps: read("speed")
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|s| *s > 0)
                    .map(|s| s as u32),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn tpm(class: &Path) -> Option<Tpm> {
    let dev = class.join("tpm0");
    if !dev.exists() {
        return None;
    }
    let major = fs::read_to_string(dev.join("tpm_version_major"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    Some(Tpm {
        version: match major.as_str() {
            "2" => "2.0".into(),
            "1" => "1.2".into(),
            _ => "unknown".into(),
        },
        ek_sha256: String::new(),
        ek_public: String::new(),
        activation_name: String::new(),
        ek_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_tree_shaped_like_sys_and_proc() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        let dmi = sys.join("class/dmi/id");
        fs::create_dir_all(&dmi).unwrap();
        for (f, v) in [
            ("sys_vendor", "QEMU\n"),
            ("product_name", "Standard PC (Q35 + ICH9, 2009)\n"),
            ("product_serial", "DEMO-SN-0001\n"),
            ("product_uuid", "0A1B2C3D-0000-0000-0000-000000000000\n"),
            ("board_vendor", "Canonical"),
            ("chassis_type", "23\n"),
            ("bios_vendor", "EDK II\n"),
            ("bios_version", "0.0.0\n"),
        ] {
            fs::write(dmi.join(f), v).unwrap();
        }
        let efivars = sys.join("firmware/efi/efivars");
        fs::create_dir_all(&efivars).unwrap();
        fs::write(
            efivars.join(format!("SecureBoot-{GLOBAL}")),
            [6, 0, 0, 0, 1],
        )
        .unwrap();
        let eth = sys.join("class/net/eth0");
        fs::create_dir_all(eth.join("device")).unwrap();
        fs::create_dir_all(sys.join("bus/virtio/drivers/virtio_net")).unwrap();
        std::os::unix::fs::symlink(
            sys.join("bus/virtio/drivers/virtio_net"),
            eth.join("device/driver"),
        )
        .unwrap();
        fs::write(eth.join("address"), "52:54:00:12:34:56\n").unwrap();
        fs::write(eth.join("carrier"), "1\n").unwrap();
        fs::write(eth.join("speed"), "-1\n").unwrap();
        fs::create_dir_all(sys.join("class/net/lo")).unwrap();
        fs::create_dir_all(sys.join("class/tpm/tpm0")).unwrap();
        fs::write(sys.join("class/tpm/tpm0/tpm_version_major"), "2\n").unwrap();
        let inv = from_tree(&sys);
        assert_eq!(inv.system.manufacturer, "QEMU");
        assert_eq!(inv.system.serial, "DEMO-SN-0001");
        assert_eq!(inv.system.uuid, "0a1b2c3d-0000-0000-0000-000000000000");
        assert_eq!(inv.board.manufacturer, "Canonical");
        assert_eq!(inv.chassis.kind, "rack mount chassis");
        assert_eq!(inv.firmware.boot_mode, "uefi");
        assert_eq!(inv.firmware.secure_boot, Some(true));
        assert_eq!(inv.nics.len(), 1, "lo is not a NIC");
        let n = &inv.nics[0];
        assert_eq!(
            (
                n.name.as_str(),
                n.mac.as_str(),
                n.driver.as_str(),
                n.link,
                n.speed_mbps
            ),
            ("eth0", "52:54:00:12:34:56", "virtio_net", Some(true), None)
        );
        assert_eq!(inv.tpm.as_ref().unwrap().version, "2.0");
        assert_eq!(
            inv.summary(),
            "QEMU Standard PC (Q35 + ICH9, 2009), TPM 2.0"
        );

        // A BIOS boot: no EFI, no Secure Boot state.
        fs::remove_dir_all(sys.join("firmware")).unwrap();
        let inv = from_tree(&sys);
        assert_eq!(
            (inv.firmware.boot_mode.as_str(), inv.firmware.secure_boot),
            ("bios", None)
        );
    }
}
