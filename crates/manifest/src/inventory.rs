//! A machine's hardware inventory, as the installer collects it on every boot
//! (`machine::inventory`) and puts it in its report, and as `mkinstaller reports` reads it
//! back from sticks and sites. Every field is optional on reading: a report from another
//! version of the installer, or from firmware that leaves fields out, still reads.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Inventory {
    /// SMBIOS System Information (type 1).
    pub system: System,
    /// SMBIOS Baseboard (type 2).
    pub board: Board,
    /// SMBIOS System Enclosure (type 3).
    pub chassis: Chassis,
    pub firmware: Firmware,
    pub cpu: Cpu,
    pub memory_bytes: u64,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// None: no TPM.
    pub tpm: Option<Tpm>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct System {
    pub manufacturer: String,
    pub product: String,
    pub version: String,
    pub serial: String,
    pub uuid: String,
    pub sku: String,
    pub family: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Board {
    pub manufacturer: String,
    pub product: String,
    pub version: String,
    pub serial: String,
    pub asset_tag: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Chassis {
    pub manufacturer: String,
    /// The SMBIOS enclosure type by name (`desktop`, `notebook`, `rack mount chassis`…).
    pub kind: String,
    pub serial: String,
    pub asset_tag: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Firmware {
    pub vendor: String,
    pub version: String,
    pub date: String,
    /// `uefi` or `bios`: how this boot started.
    pub boot_mode: String,
    /// None: not known (BIOS boot, or the variable is missing).
    pub secure_boot: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cpu {
    pub model: String,
    /// Logical CPUs the kernel sees.
    pub threads: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    pub path: String,
    pub model: String,
    pub serial: String,
    pub size: u64,
    pub transport: String,
    pub rotational: bool,
    pub removable: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    pub driver: String,
    /// Carrier detected (a cable in, a link up); None when the interface is down.
    pub link: Option<bool>,
    pub speed_mbps: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tpm {
    /// `2.0`, or `1.2`.
    pub version: String,
    /// The SHA-256 of the endorsement key's public part (its RSA modulus, as TPM2
    /// CreatePrimary with the TCG's default EK template gives it), hex; empty when it could
    /// not be read.
    pub ek_sha256: String,
    /// The endorsement key's RSA modulus, hex (empty when not read): with the activation
    /// key's name, what hosts.toml's `tpm` takes to seal the host's secrets to this TPM.
    pub ek_public: String,
    /// The name of the activation key the TPM derives in its endorsement hierarchy, hex.
    pub activation_name: String,
    /// Why the key could not be read, if it could not.
    pub ek_error: Option<String>,
}

impl Inventory {
    /// One line for tables: `QEMU Standard PC (Q35), 2 threads, 1.0 GiB, 2 disks, TPM 2.0`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let name = [self.system.manufacturer.trim(), self.system.product.trim()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        if !name.is_empty() {
            parts.push(name);
        }
        if self.cpu.threads > 0 {
            parts.push(format!("{} threads", self.cpu.threads));
        }
        if self.memory_bytes > 0 {
            parts.push(util::size::human(self.memory_bytes));
        }
        if !self.disks.is_empty() {
            let total: u64 = self.disks.iter().map(|d| d.size).sum();
            parts.push(format!(
                "{} disk{} ({})",
                self.disks.len(),
                if self.disks.len() == 1 { "" } else { "s" },
                util::size::human(total)
            ));
        }
        if let Some(t) = &self.tpm {
            parts.push(format!("TPM {}", t.version));
        }
        parts.join(", ")
    }
}

/// The SMBIOS enclosure type's name (DMTF DSP0134, 7.4.1).
pub fn chassis_kind(code: u8) -> &'static str {
    match code & 0x7f {
        1 => "other",
        3 => "desktop",
        4 => "low profile desktop",
        5 => "pizza box",
        6 => "mini tower",
        7 => "tower",
        8 => "portable",
        9 => "laptop",
        10 => "notebook",
        11 => "hand held",
        12 => "docking station",
        13 => "all in one",
        14 => "sub notebook",
        15 => "space-saving",
        16 => "lunch box",
        17 => "main server chassis",
        18 => "expansion chassis",
        19 => "sub chassis",
        20 => "bus expansion chassis",
        21 => "peripheral chassis",
        22 => "raid chassis",
        23 => "rack mount chassis",
        24 => "sealed-case pc",
        25 => "multi-system chassis",
        26 => "compact pci",
        27 => "advanced tca",
        28 => "blade",
        29 => "blade enclosure",
        30 => "tablet",
        31 => "convertible",
        32 => "detachable",
        33 => "iot gateway",
        34 => "embedded pc",
        35 => "mini pc",
        36 => "stick pc",
        _ => "unknown",
    }
}
