//! How a host with a given layout starts: from an ESP by UEFI, from a BIOS boot partition
//! (GPT type EF02, where GRUB for i386-pc embeds its core image) by legacy BIOS, or either
//! (disko's hybrid gpt-bios-compat shape has both). And which disks GRUB goes to: disko's
//! GPT table sets `boot.loader.grub.devices` to the `device` of every disk holding an EF02
//! partition, so the installed system's boot loader step names those paths.

use serde::Serialize;

use super::{DiskContent, Layout};
use crate::profile::ESP_TYPE_GUID;

/// The BIOS boot partition's GPT type GUID (sgdisk's EF02).
pub const BIOS_BOOT_TYPE_GUID: &str = "21686148-6449-6E6F-744E-656564454649";

/// The firmware boot modes a layout can start under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BootSupport {
    pub uefi: bool,
    pub bios: bool,
}

impl BootSupport {
    /// As the plan and the inventory say it.
    pub fn describe(self) -> &'static str {
        match (self.uefi, self.bios) {
            (true, true) => "UEFI or legacy BIOS",
            (false, true) => "legacy BIOS",
            _ => "UEFI",
        }
    }
}

/// A disk GRUB is installed to: the layout's disk and the path the host's configuration
/// names it by (its disko `device`), if the layout says one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubDisk {
    pub disk: String,
    pub configured: Option<String>,
}

impl Layout {
    /// A layout with a BIOS boot partition starts by BIOS; one with an ESP, or with neither
    /// (nothing says otherwise, and every host before BIOS hosts was UEFI), by UEFI.
    pub fn boot_support(&self) -> BootSupport {
        let has = |guid: &str| {
            self.devices.disks.iter().any(|d| match &d.content {
                DiskContent::Gpt { partitions } => partitions
                    .iter()
                    .any(|p| p.type_guid.eq_ignore_ascii_case(guid)),
                DiskContent::Whole { .. } => false,
            })
        };
        let bios = has(BIOS_BOOT_TYPE_GUID);
        BootSupport {
            uefi: has(ESP_TYPE_GUID) || !bios,
            bios,
        }
    }

    /// The disks holding a BIOS boot partition, in layout order.
    pub fn grub_disks(&self) -> Vec<GrubDisk> {
        self.devices
            .disks
            .iter()
            .filter(|d| match &d.content {
                DiskContent::Gpt { partitions } => partitions
                    .iter()
                    .any(|p| p.type_guid.eq_ignore_ascii_case(BIOS_BOOT_TYPE_GUID)),
                DiskContent::Whole { .. } => false,
            })
            .map(|d| GrubDisk {
                disk: d.name.clone(),
                configured: d.device.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::disko;

    fn layout(partitions: &str) -> super::Layout {
        let json = format!(
            r#"{{"disk": {{"main": {{"type": "disk", "device": "/dev/sda",
                "content": {{"type": "gpt", "partitions": {{ {partitions} }} }} }} }} }}"#
        );
        disko::parse(&json, "test.json", crate::profile::DiskRules::default()).unwrap()
    }

    const ROOT: &str = r#""root": {"size": "100%", "content": {"type": "filesystem", "format": "ext4", "mountpoint": "/"}}"#;
    const ESP: &str = r#""ESP": {"type": "EF00", "size": "256M", "content": {"type": "filesystem", "format": "vfat", "mountpoint": "/boot"}}"#;
    const BIOS: &str = r#""boot": {"type": "EF02", "size": "1M"}"#;

    #[test]
    fn the_partitions_say_how_a_host_starts() {
        let uefi = layout(&format!("{ESP}, {ROOT}"));
        assert_eq!(uefi.boot_support().describe(), "UEFI");
        assert!(uefi.grub_disks().is_empty());
        let bios = layout(&format!("{BIOS}, {ROOT}"));
        assert_eq!(bios.boot_support().describe(), "legacy BIOS");
        assert_eq!(
            bios.grub_disks(),
            vec![super::GrubDisk {
                disk: "main".into(),
                configured: Some("/dev/sda".into())
            }]
        );
        let hybrid = layout(&format!("{BIOS}, {ESP}, {ROOT}"));
        assert_eq!(hybrid.boot_support().describe(), "UEFI or legacy BIOS");
        // Neither: as every host was before BIOS hosts, UEFI.
        assert_eq!(layout(ROOT).boot_support().describe(), "UEFI");
    }
}
