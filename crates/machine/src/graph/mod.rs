//! Where everything of a layout goes once each of its disks has a machine disk (`layout`):
//! the partitions of every disk (MiB-aligned, numbered in the layout's order), the stacked
//! devices in an order that builds each after what it sits on (md arrays, LUKS containers,
//! volume groups and their volumes), the file systems and swaps to make, and the mounts. Pure:
//! sizes of stacked devices are estimates (headers and metadata vary by tool version), good
//! enough to refuse a layout whose store cannot hold the closure before anything is touched.

use std::collections::BTreeMap;

use serde::Serialize;

use manifest::devices::{Content, Devices, DiskContent, Extent, Holder, Layout, Mount};
use manifest::profile::Filesystem;
use util::size::{human, MIB};

use crate::layout::{Assigned, DiskFacts, PlanError};

mod stacked;
use stacked::build_order;
pub use stacked::Build;

/// What LUKS2's header takes from its device (cryptsetup's default).
const LUKS2_HEADER: u64 = 16 * MIB;
/// LVM's extent size and the metadata area at the start of each physical volume.
const LVM_EXTENT: u64 = 4 * MIB;
const LVM_PV_METADATA: u64 = MIB;

/// Bytes the store's file system needs for a closure of `nar_bytes`: NAR sizes plus file
/// system overhead (inodes, block rounding, journal): a quarter more, and 256 MiB, to be safe.
pub fn store_bytes_needed(nar_bytes: u64) -> u64 {
    nar_bytes + nar_bytes / 4 + 256 * MIB
}

/// The whole plan: every disk with its partitions, what is built on them, what is made and
/// where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DevicePlan {
    pub disks: Vec<PlannedDisk>,
    /// Stacked devices, each after what it sits on.
    pub build: Vec<Build>,
    /// File systems and swaps, after every device exists.
    pub make: Vec<Make>,
    /// The installed system's mounts, parents first.
    pub mounts: Vec<Mount>,
    pub store: StorePlan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedDisk {
    /// The layout's name for it.
    pub name: String,
    #[serde(flatten)]
    pub facts: DiskFacts,
    /// Why this device plays this disk.
    pub why: String,
    /// Empty when the disk holds one content whole (`whole`).
    pub partitions: Vec<PartitionPlan>,
    pub whole: Option<String>,
}

/// One partition as it will be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionPlan {
    /// 1-based partition number.
    pub number: u32,
    /// The layout's name for it.
    pub name: String,
    /// The GPT partition name (`/dev/disk/by-partlabel/…`).
    pub label: String,
    pub type_guid: String,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub bytes: u64,
    /// What goes on it, for people.
    pub holds: String,
}

/// A file system or swap to make on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Make {
    pub holder: Holder,
    pub format: Filesystem,
    pub label: Option<String>,
    pub uuid: Option<String>,
    pub extra_args: Vec<String>,
    /// btrfs: subvolumes to create, relative paths.
    pub subvolumes: Vec<String>,
    /// About this many bytes.
    pub bytes: u64,
}

impl DevicePlan {
    /// The tools carrying out this plan takes from the installer environment (the ESP and,
    /// where it fits, the store's ext4 are written natively; mkfs.ext4 is still asked for, as
    /// the fallback).
    pub fn tools(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for b in &self.build {
            out.extend(match b {
                Build::Md { .. } => &["mdadm"][..],
                Build::Luks { .. } => &["cryptsetup"][..],
                Build::Vg { .. } => &["pvcreate", "vgcreate", "vgchange"][..],
                Build::Lv { .. } => &["lvcreate"][..],
            });
        }
        for m in &self.make {
            out.extend(match m.format {
                Filesystem::Ext4 => &["mkfs.ext4"][..],
                Filesystem::Btrfs if !m.subvolumes.is_empty() => &["mkfs.btrfs", "btrfs"][..],
                Filesystem::Btrfs => &["mkfs.btrfs"][..],
                Filesystem::Xfs => &["mkfs.xfs"][..],
                Filesystem::Swap => &["mkswap"][..],
                Filesystem::Vfat | Filesystem::None => &[][..],
            });
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Where `/nix/store` lands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorePlan {
    pub holder: Holder,
    pub mountpoint: String,
    pub subvol: Option<String>,
    pub format: Filesystem,
    /// About this many bytes, and what the closure needs.
    pub bytes: u64,
    pub needed: u64,
}

/// The bytes each of the layout's disks needs at least: its fixed partitions, a MiB for each
/// that takes the rest, the GPT's two MiB; and the store when it lands (directly, or through
/// LUKS or LVM) on that disk's rest alone; and the rules' minimum size for a disk the
/// store is on (a profile's one disk), named or not.
pub fn disk_needs(layout: &Layout, nar_bytes: u64) -> BTreeMap<String, u64> {
    let d = &layout.devices;
    let store_under = d
        .store_mount()
        .and_then(|m| m.holder)
        .map(|h| bottom(d, &h))
        .unwrap_or_default();
    let store_on = Some(store_under.clone())
        .filter(|b| b.len() == 1)
        .and_then(|b| b.into_iter().next());
    let holds_store = |disk: &str| {
        store_under.iter().any(|h| match h {
            Holder::Partition { disk: x, .. } | Holder::Disk { disk: x } => x == disk,
            _ => false,
        })
    };
    let store = store_bytes_needed(nar_bytes) + 2 * LUKS2_HEADER + LVM_EXTENT;
    let mut out = BTreeMap::new();
    for disk in &d.disks {
        let need = match &disk.content {
            DiskContent::Gpt { partitions } => {
                let mut n = 2 * MIB;
                for p in partitions {
                    let here = Holder::Partition {
                        disk: disk.name.clone(),
                        partition: p.name.clone(),
                    };
                    let own = match p.size {
                        Extent::Bytes(b) => b.div_ceil(MIB) * MIB,
                        Extent::ToEnd { reserve } => MIB + reserve,
                        Extent::EndAt(_) => MIB,
                    };
                    let takes_rest = !matches!(p.size, Extent::Bytes(_));
                    n += if takes_rest && store_on.as_ref() == Some(&here) {
                        own.max(store)
                    } else {
                        own
                    };
                }
                n
            }
            DiskContent::Whole { .. } => {
                let here = Holder::Disk {
                    disk: disk.name.clone(),
                };
                if store_on.as_ref() == Some(&here) {
                    store
                } else {
                    MIB
                }
            }
        };
        let least = if holds_store(&disk.name) {
            layout.rules.min_size
        } else {
            0
        };
        out.insert(disk.name.clone(), need.max(least));
    }
    out
}

/// The partitions and whole disks under `h`.
pub fn bottom(d: &Devices, h: &Holder) -> Vec<Holder> {
    let contents = d.contents();
    let under = |pred: &dyn Fn(&Content) -> bool| -> Vec<Holder> {
        contents
            .iter()
            .filter(|(_, c)| pred(c))
            .map(|(h, _)| h.clone())
            .collect()
    };
    let next = match h {
        Holder::Partition { .. } | Holder::Disk { .. } => return vec![h.clone()],
        Holder::Luks { name } => under(&|c| matches!(c, Content::Luks(l) if &l.name == name)),
        Holder::Md { name } => under(&|c| matches!(c, Content::Mdraid { name: n } if n == name)),
        Holder::Lv { vg, .. } => under(&|c| matches!(c, Content::LvmPv { vg: v } if v == vg)),
    };
    let mut out: Vec<Holder> = next.iter().flat_map(|n| bottom(d, n)).collect();
    out.sort();
    out.dedup();
    out
}

/// Lays `layout` out on the assigned disks.
pub fn plan(
    layout: &Layout,
    disks: Vec<Assigned>,
    nar_bytes: u64,
) -> Result<DevicePlan, PlanError> {
    let d = &layout.devices;
    let mut bytes: BTreeMap<Holder, u64> = BTreeMap::new();
    let mut planned = Vec::new();
    for (disk, a) in d.disks.iter().zip(disks) {
        debug_assert_eq!(disk.name, a.name);
        let (partitions, whole) = match &disk.content {
            DiskContent::Gpt { partitions } => {
                let placed = place(&a.facts, partitions)?;
                for p in &placed {
                    let h = Holder::Partition {
                        disk: disk.name.clone(),
                        partition: p.name.clone(),
                    };
                    bytes.insert(h, p.bytes);
                }
                (placed, None)
            }
            DiskContent::Whole { content } => {
                bytes.insert(
                    Holder::Disk {
                        disk: disk.name.clone(),
                    },
                    a.facts.size,
                );
                (Vec::new(), Some(holds(content)))
            }
        };
        planned.push(PlannedDisk {
            name: a.name,
            facts: a.facts,
            why: a.why,
            partitions,
            whole,
        });
    }
    let build = build_order(d, &mut bytes)?;
    let make = d
        .contents()
        .into_iter()
        .filter_map(|(h, c)| {
            let size = bytes.get(&h).copied().unwrap_or(0);
            match c {
                Content::Filesystem(fs) => Some(Make {
                    holder: h,
                    format: fs.format,
                    label: fs.label.clone(),
                    uuid: fs.uuid.clone(),
                    extra_args: fs.extra_args.clone(),
                    subvolumes: fs.subvolumes.iter().map(|s| s.name.clone()).collect(),
                    bytes: size,
                }),
                Content::Swap(s) => Some(Make {
                    holder: h,
                    format: Filesystem::Swap,
                    label: s.label.clone(),
                    uuid: s.uuid.clone(),
                    extra_args: Vec::new(),
                    subvolumes: Vec::new(),
                    bytes: size,
                }),
                _ => None,
            }
        })
        .collect();
    let mount = d
        .store_mount()
        .ok_or_else(|| PlanError::DoesNotFit("the layout mounts nothing at / or /nix".into()))?;
    let holder = mount
        .holder
        .clone()
        .ok_or_else(|| PlanError::DoesNotFit("the Nix store would be on a tmpfs".into()))?;
    let store = StorePlan {
        bytes: bytes.get(&holder).copied().unwrap_or(0),
        needed: store_bytes_needed(nar_bytes),
        holder,
        mountpoint: mount.mountpoint.clone(),
        subvol: mount.subvol.clone(),
        format: mount.format.unwrap_or(Filesystem::None),
    };
    if store.bytes < store.needed {
        return Err(PlanError::DoesNotFit(format!(
            "the Nix store's file system ({} at {}) would be about {}, and the closure needs {}: {} short",
            store.holder,
            store.mountpoint,
            human(store.bytes),
            human(store.needed),
            human(store.needed - store.bytes)
        )));
    }
    Ok(DevicePlan {
        disks: planned,
        build,
        make,
        mounts: d.mounts(),
        store,
    })
}

/// The partitions of one disk: each starting on a MiB boundary (or where the layout says),
/// fixed sizes rounded up to whole MiB, the last MiB kept for the backup GPT.
fn place(
    disk: &DiskFacts,
    partitions: &[manifest::devices::Partition],
) -> Result<Vec<PartitionPlan>, PlanError> {
    let block = disk.logical_block_size.max(1);
    let usable_end = (disk.size / MIB).saturating_sub(1) * MIB;
    let mut cursor = MIB;
    let mut out = Vec::new();
    for (i, p) in partitions.iter().enumerate() {
        let at = |why: String| {
            PlanError::DoesNotFit(format!(
                "{}: partition {} ({}) {why}",
                disk.path, p.name, p.label
            ))
        };
        let start = match p.start {
            Some(s) if s < cursor => {
                return Err(at(format!(
                    "starts at {}, inside the partition before it",
                    human(s)
                )))
            }
            Some(s) => s.div_ceil(block) * block,
            None => cursor.div_ceil(MIB) * MIB,
        };
        let end = match p.size {
            Extent::Bytes(b) => start + b.div_ceil(MIB) * MIB,
            Extent::ToEnd { reserve } => usable_end.saturating_sub(reserve) / MIB * MIB,
            Extent::EndAt(e) => e / block * block,
        };
        if end <= start {
            return Err(at(format!(
                "would end at {} before it starts at {}: the disk is {}",
                human(end),
                human(start),
                human(disk.size)
            )));
        }
        if end > usable_end {
            return Err(at(format!(
                "would end {} past the end of the disk ({}): the disk is too small for the layout",
                human(end - usable_end),
                human(disk.size)
            )));
        }
        out.push(PartitionPlan {
            number: i as u32 + 1,
            name: p.name.clone(),
            label: p.label.clone(),
            type_guid: p.type_guid.clone(),
            first_lba: start / block,
            last_lba: end / block - 1,
            bytes: end - start,
            holds: holds(&p.content),
        });
        cursor = end;
    }
    Ok(out)
}

/// What a content is, for people: `ext4 /`, `LUKS crypted`, `md member of root`.
pub fn holds(c: &Content) -> String {
    match c {
        Content::None => "nothing".into(),
        Content::Filesystem(fs) => {
            let mut s = fs.format.name().to_string();
            if let Some(m) = &fs.mountpoint {
                s += &format!(" {m}");
            }
            let subs: Vec<String> = fs
                .subvolumes
                .iter()
                .map(|v| match &v.mountpoint {
                    Some(m) => format!("{}={m}", v.name),
                    None => v.name.clone(),
                })
                .collect();
            if !subs.is_empty() {
                s += &format!(" [{}]", subs.join(" "));
            }
            s
        }
        Content::Swap(_) => "swap".into(),
        Content::Luks(l) => format!("LUKS {} ({})", l.name, holds(&l.content)),
        Content::LvmPv { vg } => format!("LVM physical volume of {vg}"),
        Content::Mdraid { name } => format!("md member of {name}"),
    }
}
