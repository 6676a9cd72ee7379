//! A host's storage as a device graph, in disko's model: disks (each a GPT with partitions,
//! or one content on the whole disk), mdadm arrays over partitions or disks, LVM volume
//! groups over physical volumes, LUKS2 containers, and the file systems, swap and tmpfs
//! mounts on top. Both disko layouts (`disko`) and installer profiles (`profile`) become one
//! of these; the manifest carries it, the installer plans it onto the machine's disks
//! (`machine::layout`) and builds it bottom-up. Everything here is pure.

use serde::{Deserialize, Serialize};

use crate::profile::{DiskRules, Filesystem};

mod boot;
mod check;
pub use boot::{BootSupport, GrubDisk, BIOS_BOOT_TYPE_GUID};
pub use check::{check_name, check_uuid};

/// A resolved layout: where it came from, the rules that choose disks for it when the
/// layout does not name them (or names devices the machine lacks), and the devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// The profile's name, or the disko file's.
    pub name: String,
    pub description: String,
    pub source: LayoutSource,
    pub rules: DiskRules,
    pub devices: Devices,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayoutSource {
    /// An installer profile (installer-profiles/*.toml).
    Profile,
    /// A disko `disko.devices` tree (a file, or a flake host's configuration).
    Disko,
}

/// The device graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// In name order: the order in which disks are matched to the machine's.
    pub disks: Vec<Disk>,
    pub mdadm: Vec<MdArray>,
    pub lvm_vgs: Vec<VolumeGroup>,
    pub nodev: Vec<Nodev>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub name: String,
    /// The device the layout names (`/dev/disk/by-id/…`), used when the machine has it.
    pub device: Option<String>,
    pub content: DiskContent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DiskContent {
    /// A GPT; partitions in creation order (disko's priority, then name), numbered from 1.
    Gpt { partitions: Vec<Partition> },
    /// One content on the whole disk (an md member, a LUKS container, a PV…).
    Whole { content: Content },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// The layout's name for it (disko's attribute name).
    pub name: String,
    /// The GPT partition name: what `/dev/disk/by-partlabel/` shows.
    pub label: String,
    pub type_guid: String,
    /// Where it starts, in bytes from the disk's start; `None`: after the one before.
    pub start: Option<u64>,
    pub size: Extent,
    pub content: Content,
}

/// How far a partition reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Extent {
    /// This many bytes (rounded up to whole MiB when laid out).
    Bytes(u64),
    /// To the end of the disk, leaving `reserve` bytes there (0: the rest of the disk).
    ToEnd { reserve: u64 },
    /// Up to this byte of the disk (sgdisk's absolute end).
    EndAt(u64),
}

/// What a partition, a disk, an array, a LUKS container or a logical volume holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Content {
    /// Nothing: left unformatted.
    None,
    Filesystem(Fs),
    Swap(Swap),
    Luks(Box<Luks>),
    /// A physical volume of this volume group.
    LvmPv {
        vg: String,
    },
    /// A member of this md array.
    Mdraid {
        name: String,
    },
}

/// A file system. btrfs carries its subvolumes; each may be mounted on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fs {
    pub format: Filesystem,
    pub mountpoint: Option<String>,
    pub mount_options: Vec<String>,
    pub subvolumes: Vec<Subvol>,
    /// Made with this label (`-L`): what `/dev/disk/by-label/` shows.
    pub label: Option<String>,
    /// Made with this UUID (ext4, btrfs, xfs: a UUID; vfat: its volume ID `XXXX-XXXX`).
    pub uuid: Option<String>,
    /// More arguments for mkfs.
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subvol {
    /// Its path in the file system, relative (`root`, `home/alice`).
    pub name: String,
    pub mountpoint: Option<String>,
    pub mount_options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swap {
    pub label: Option<String>,
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Luks {
    /// The mapper name: `/dev/mapper/<name>` once open.
    pub name: String,
    /// Where the installed system's initrd reads the key (`settings.keyFile`), if a file.
    pub key_file: Option<String>,
    pub allow_discards: bool,
    pub extra_format_args: Vec<String>,
    pub extra_open_args: Vec<String>,
    /// The LUKS header's UUID, when the host's configuration names it (`/dev/disk/by-uuid/`).
    pub uuid: Option<String>,
    /// Unlocked at boot by the machine's TPM2 (the host's `crypttabExtraOpts` say
    /// `tpm2-device=`): the installer enrols it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm2: Option<Tpm2>,
    pub content: Content,
}

/// A TPM2 enrolment: the volume's key sealed by the TPM to these PCRs' values at install
/// (systemd-cryptenroll's `systemd-tpm2` token, which systemd-cryptsetup opens at boot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tpm2 {
    /// PCR indices, 0 to 23 (default: 7, the Secure Boot state).
    pub pcrs: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MdArray {
    /// `/dev/md/<name>`.
    pub name: String,
    pub level: u32,
    /// The superblock version (`1.2`, `1.0` for an ESP the firmware reads as plain FAT…).
    pub metadata: String,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeGroup {
    pub name: String,
    /// In creation order (disko's priority, then name).
    pub lvs: Vec<LogicalVolume>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalVolume {
    pub name: String,
    pub size: LvSize,
    pub content: Content,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LvSize {
    Bytes(u64),
    /// `N%VG`, `N%FREE`, `N%PVS` (a bare `N%` is of the volume group, as lvcreate reads it).
    Percent {
        percent: u32,
        of: PercentOf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PercentOf {
    Vg,
    Free,
    Pvs,
}

/// A mount with no device: tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nodev {
    pub mountpoint: String,
    pub fs_type: String,
    pub mount_options: Vec<String>,
}

/// Where a content sits: on a partition, a whole disk, an array, a LUKS container or a
/// logical volume. The installer turns it into a device path once the device exists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Holder {
    Partition { disk: String, partition: String },
    Disk { disk: String },
    Md { name: String },
    Luks { name: String },
    Lv { vg: String, lv: String },
}

impl Holder {
    /// The device path the installed system knows it by (`/dev/md/root`, `/dev/mapper/x`,
    /// `/dev/pool/root`); partitions and disks have none that does not depend on the machine.
    pub fn stable_path(&self) -> Option<String> {
        match self {
            Holder::Md { name } => Some(format!("/dev/md/{name}")),
            Holder::Luks { name } => Some(format!("/dev/mapper/{name}")),
            Holder::Lv { vg, lv } => Some(format!("/dev/{vg}/{lv}")),
            Holder::Partition { .. } | Holder::Disk { .. } => None,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Partition { disk, partition } => {
                write!(f, "partition {partition} of disk {disk}")
            }
            Holder::Disk { disk } => write!(f, "disk {disk}"),
            Holder::Md { name } => write!(f, "/dev/md/{name}"),
            Holder::Luks { name } => write!(f, "/dev/mapper/{name}"),
            Holder::Lv { vg, lv } => write!(f, "/dev/{vg}/{lv}"),
        }
    }
}

/// One mount of the installed system, as the layout makes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub mountpoint: String,
    /// `None` for a tmpfs.
    pub holder: Option<Holder>,
    pub format: Option<Filesystem>,
    pub fs_type: String,
    pub options: Vec<String>,
    /// The btrfs subvolume mounted here.
    pub subvol: Option<String>,
}

impl Devices {
    /// Every content with where it sits, outermost first (a LUKS container before what is
    /// in it), in the graph's order: disks, arrays, volume groups.
    pub fn contents(&self) -> Vec<(Holder, &Content)> {
        fn walk<'a>(h: Holder, c: &'a Content, out: &mut Vec<(Holder, &'a Content)>) {
            out.push((h, c));
            if let Content::Luks(l) = c {
                walk(
                    Holder::Luks {
                        name: l.name.clone(),
                    },
                    &l.content,
                    out,
                );
            }
        }
        let mut out = Vec::new();
        for d in &self.disks {
            match &d.content {
                DiskContent::Gpt { partitions } => {
                    for p in partitions {
                        let h = Holder::Partition {
                            disk: d.name.clone(),
                            partition: p.name.clone(),
                        };
                        walk(h, &p.content, &mut out);
                    }
                }
                DiskContent::Whole { content } => walk(
                    Holder::Disk {
                        disk: d.name.clone(),
                    },
                    content,
                    &mut out,
                ),
            }
        }
        for m in &self.mdadm {
            let h = Holder::Md {
                name: m.name.clone(),
            };
            walk(h, &m.content, &mut out);
        }
        for vg in &self.lvm_vgs {
            for lv in &vg.lvs {
                let h = Holder::Lv {
                    vg: vg.name.clone(),
                    lv: lv.name.clone(),
                };
                walk(h, &lv.content, &mut out);
            }
        }
        out
    }

    /// The partition `name` of disk `disk`.
    pub fn partition(&self, disk: &str, name: &str) -> Option<&Partition> {
        self.disks
            .iter()
            .filter(|d| d.name == disk)
            .find_map(|d| match &d.content {
                DiskContent::Gpt { partitions } => partitions.iter().find(|p| p.name == name),
                DiskContent::Whole { .. } => None,
            })
    }

    /// The members of md array `name` and the physical volumes of volume group `vg`.
    pub fn members(&self, of: &Content) -> Vec<Holder> {
        self.contents()
            .into_iter()
            .filter(|(_, c)| match (c, of) {
                (Content::Mdraid { name }, Content::Mdraid { name: want }) => name == want,
                (Content::LvmPv { vg }, Content::LvmPv { vg: want }) => vg == want,
                _ => false,
            })
            .map(|(h, _)| h)
            .collect()
    }

    /// Every mount of the installed system, parents before children (`/` before `/boot`).
    pub fn mounts(&self) -> Vec<Mount> {
        let mut out = Vec::new();
        for (h, c) in self.contents() {
            match c {
                Content::Filesystem(fs) => {
                    let fs_type = fs.format.fs_type().unwrap_or("none").to_string();
                    if let Some(m) = &fs.mountpoint {
                        out.push(Mount {
                            mountpoint: m.clone(),
                            holder: Some(h.clone()),
                            format: Some(fs.format),
                            fs_type: fs_type.clone(),
                            options: fs.mount_options.clone(),
                            subvol: None,
                        });
                    }
                    for sv in &fs.subvolumes {
                        if let Some(m) = &sv.mountpoint {
                            out.push(Mount {
                                mountpoint: m.clone(),
                                holder: Some(h.clone()),
                                format: Some(fs.format),
                                fs_type: fs_type.clone(),
                                options: sv.mount_options.clone(),
                                subvol: Some(sv.name.clone()),
                            });
                        }
                    }
                }
                Content::Swap(_)
                | Content::None
                | Content::Luks(_)
                | Content::LvmPv { .. }
                | Content::Mdraid { .. } => {}
            }
        }
        for n in &self.nodev {
            out.push(Mount {
                mountpoint: n.mountpoint.clone(),
                holder: None,
                format: None,
                fs_type: n.fs_type.clone(),
                options: n.mount_options.clone(),
                subvol: None,
            });
        }
        out.sort_by_key(|m| {
            (
                m.mountpoint.trim_end_matches('/').matches('/').count(),
                m.mountpoint.clone(),
            )
        });
        out
    }

    /// The mount that holds `/nix/store`: the one at `/nix`, else at `/`.
    pub fn store_mount(&self) -> Option<Mount> {
        let mounts = self.mounts();
        ["/nix/store", "/nix", "/"]
            .into_iter()
            .find_map(|at| mounts.iter().find(|m| m.mountpoint == at).cloned())
    }
}
