//! The plan: which disk, and the partition table on it. A pure function of (disk facts, layout,
//! closure size), so every refusal is unit-tested and `--dry-run` shows exactly what would run.

use serde::Serialize;

use manifest::profile::PartSize;
use manifest::profile::{DiskRules, Filesystem, Profile, Select};
use util::size::{human, MIB};

/// What the installer knows about one whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskFacts {
    /// `/dev/nvme0n1`.
    pub path: String,
    /// `/dev/disk/by-id/…` names of the disk, resolved from sysfs (no udev in the installer).
    pub by_id: Vec<String>,
    pub size: u64,
    pub logical_block_size: u64,
    pub removable: bool,
    pub read_only: bool,
    /// nvme, sata, scsi, usb, virtio, mmc, …
    pub transport: String,
    pub model: String,
    pub serial: String,
    /// Holds the payload the installer booted from.
    pub boot_medium: bool,
    /// Mount points of file systems on it or its partitions.
    pub mounted: Vec<String>,
    /// Active swap on it or its partitions.
    pub swap: bool,
    /// Device-mapper, RAID or other holders of it or its partitions.
    pub holders: Vec<String>,
}

impl DiskFacts {
    /// Whether `name` (a /dev path or by-id link) names this disk.
    pub fn is_named(&self, name: &str) -> bool {
        self.path == name || self.by_id.iter().any(|b| b == name)
    }

    fn describe(&self) -> String {
        let mut s = format!("{} ({}", self.path, human(self.size));
        if !self.model.is_empty() {
            s += &format!(", {}", self.model);
        }
        if !self.transport.is_empty() {
            s += &format!(", {}", self.transport);
        }
        s + ")"
    }

    /// Why this disk may never be a target, whatever the layout says.
    fn never(&self) -> Option<String> {
        if self.boot_medium {
            Some("it holds the installer's payload (the boot medium)".into())
        } else if !self.mounted.is_empty() {
            Some(format!(
                "it is in use: mounted at {}",
                self.mounted.join(", ")
            ))
        } else if self.swap {
            Some("it is in use as swap".into())
        } else if !self.holders.is_empty() {
            Some(format!("it is in use by {}", self.holders.join(", ")))
        } else if self.read_only {
            Some("it is read-only".into())
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no disk to install on:\n{}", .0.join("\n"))]
    NoCandidate(Vec<String>),
    #[error("{} disks fit equally well: {}; name one (hosts.toml `disk`, or --disk)", .0.len(), .0.join(", "))]
    Ambiguous(Vec<String>),
    #[error("the host names disk {0}, which this machine does not have")]
    NamedDiskMissing(String),
    #[error("{disk} cannot be used: {why}")]
    NamedDiskUnusable { disk: String, why: String },
    #[error("{disk} is {} but the layout and closure need {}: {} short", human(*.size), human(*.needed), human(.needed - .size))]
    TooSmall {
        disk: String,
        size: u64,
        needed: u64,
    },
}

/// Bytes the store partition needs for a closure of `nar_bytes`: NAR sizes plus file system
/// overhead (inodes, block rounding, journal): a quarter more, and 256 MiB, to be safe.
pub fn store_bytes_needed(nar_bytes: u64) -> u64 {
    nar_bytes + nar_bytes / 4 + 256 * MIB
}

/// The smallest disk that holds `layout` with a closure of `nar_bytes`.
pub fn disk_bytes_needed(layout: &Profile, nar_bytes: u64) -> u64 {
    let fixed = layout.fixed_bytes();
    let store_in_rest = layout
        .store_partition()
        .is_some_and(|p| p.size == PartSize::Rest);
    let store = store_bytes_needed(nar_bytes);
    // The rest partition counted 1 MiB in fixed_bytes; when the store lives there it needs
    // the whole store size instead.
    let needed = if store_in_rest {
        fixed - MIB + store
    } else {
        fixed
    };
    needed.max(layout.disk.min_size)
}

/// Chooses the target disk: the explicitly named one (host's `disk` or `--disk`), else the
/// layout's rules over every usable disk.
pub fn choose_disk<'a>(
    disks: &'a [DiskFacts],
    rules: &DiskRules,
    explicit: Option<&str>,
    needed: u64,
) -> Result<&'a DiskFacts, PlanError> {
    if let Some(name) = explicit {
        let d = disks
            .iter()
            .find(|d| d.is_named(name))
            .ok_or_else(|| PlanError::NamedDiskMissing(name.to_string()))?;
        if let Some(why) = d.never() {
            return Err(PlanError::NamedDiskUnusable {
                disk: d.path.clone(),
                why,
            });
        }
        if d.size < needed {
            return Err(PlanError::TooSmall {
                disk: d.path.clone(),
                size: d.size,
                needed,
            });
        }
        return Ok(d);
    }
    let mut reasons = Vec::new();
    let mut candidates = Vec::new();
    for d in disks {
        let why = d.never().or_else(|| {
            if d.removable && !rules.allow_removable {
                Some("it is removable (the profile does not allow removable disks)".into())
            } else if d.size < rules.min_size {
                Some(format!(
                    "it is smaller than the profile's minimum of {}",
                    human(rules.min_size)
                ))
            } else if d.size < needed {
                Some(format!(
                    "it is {} short of the {} the layout and closure need",
                    human(needed - d.size),
                    human(needed)
                ))
            } else if !rules.transports.is_empty()
                && !rules.transports.iter().any(|t| t == &d.transport)
            {
                Some(format!(
                    "its transport {:?} is not among the profile's {:?}",
                    d.transport, rules.transports
                ))
            } else if let Some(m) = &rules.model {
                (!d.model.to_lowercase().contains(&m.to_lowercase()))
                    .then(|| format!("its model {:?} does not contain {m:?}", d.model))
            } else {
                None
            }
        });
        match why {
            Some(why) => reasons.push(format!("  {}: {why}", d.describe())),
            None => candidates.push(d),
        }
    }
    let best = match rules.select {
        Select::Largest => candidates.iter().map(|d| d.size).max(),
        Select::Smallest => candidates.iter().map(|d| d.size).min(),
    };
    let Some(best) = best else {
        if reasons.is_empty() {
            reasons.push("  the machine has no disks".into());
        }
        return Err(PlanError::NoCandidate(reasons));
    };
    let tied: Vec<&&DiskFacts> = candidates.iter().filter(|d| d.size == best).collect();
    if tied.len() > 1 {
        return Err(PlanError::Ambiguous(
            tied.iter().map(|d| d.describe()).collect(),
        ));
    }
    Ok(tied[0])
}

/// One partition as it will be written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionPlan {
    /// 1-based partition number.
    pub number: u32,
    pub label: String,
    pub type_guid: String,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub format: Filesystem,
}

impl PartitionPlan {
    pub fn bytes(&self, block: u64) -> u64 {
        (self.last_lba + 1 - self.first_lba) * block
    }
}

/// Lays `layout` out on a disk of `disk_bytes` with `block`-byte sectors: partitions in
/// order, each starting on a MiB boundary, the `rest` partition taking what is left before the
/// last MiB (kept for the backup GPT).
pub fn layout_partitions(
    layout: &Profile,
    disk_bytes: u64,
    block: u64,
) -> Result<Vec<PartitionPlan>, PlanError> {
    let usable_end = (disk_bytes / MIB).saturating_sub(1) * MIB; // last MiB: backup GPT
    let fixed: u64 = layout
        .partitions
        .iter()
        .map(|p| match p.size {
            PartSize::Bytes(b) => b,
            PartSize::Rest => 0,
        })
        .sum();
    let rest = usable_end.saturating_sub(MIB + fixed);
    if usable_end
        < MIB + fixed + layout.partitions.iter().any(|p| p.size == PartSize::Rest) as u64 * MIB
    {
        return Err(PlanError::TooSmall {
            disk: "the disk".into(),
            size: disk_bytes,
            needed: layout.fixed_bytes(),
        });
    }
    let mut start = MIB;
    let mut out = Vec::new();
    for (i, p) in layout.partitions.iter().enumerate() {
        let len = match p.size {
            PartSize::Bytes(b) => b,
            PartSize::Rest => rest / MIB * MIB,
        };
        out.push(PartitionPlan {
            number: i as u32 + 1,
            label: p.label.clone(),
            type_guid: p.type_guid.clone(),
            first_lba: start / block,
            last_lba: (start + len) / block - 1,
            format: p.format,
        });
        start += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const GIB: u64 = 1 << 30;

    fn profile(name: &str) -> Profile {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../../installer-profiles/{name}.toml"));
        Profile::parse(name, &file, &std::fs::read_to_string(&file).unwrap()).unwrap()
    }

    fn disk(path: &str, size: u64) -> DiskFacts {
        DiskFacts {
            path: path.into(),
            by_id: vec![format!(
                "/dev/disk/by-id/test-{}",
                path.trim_start_matches("/dev/")
            )],
            size,
            logical_block_size: 512,
            removable: false,
            read_only: false,
            transport: "nvme".into(),
            model: "Test Disk".into(),
            serial: "S1".into(),
            boot_medium: false,
            mounted: vec![],
            swap: false,
            holders: vec![],
        }
    }

    #[test]
    fn picks_the_largest_usable_disk() {
        let p = profile("uefi-ext4");
        let mut stick = disk("/dev/sda", 64 * GIB);
        stick.boot_medium = true;
        stick.removable = true;
        let disks = [
            stick,
            disk("/dev/nvme0n1", 512 * GIB),
            disk("/dev/vda", 256 * GIB),
        ];
        let need = disk_bytes_needed(&p, 2 * GIB);
        assert_eq!(
            choose_disk(&disks, &p.disk, None, need).unwrap().path,
            "/dev/nvme0n1"
        );
        let mut smallest = p.disk.clone();
        smallest.select = Select::Smallest;
        assert_eq!(
            choose_disk(&disks, &smallest, None, need).unwrap().path,
            "/dev/vda"
        );
    }

    #[test]
    fn never_the_boot_medium_a_busy_or_a_removable_disk() {
        let p = profile("uefi-ext4");
        let mut boot = disk("/dev/sda", 512 * GIB);
        boot.boot_medium = true;
        let mut mounted = disk("/dev/sdb", 512 * GIB);
        mounted.mounted = vec!["/mnt".into()];
        let mut swap = disk("/dev/sdc", 512 * GIB);
        swap.swap = true;
        let mut lvm = disk("/dev/sdd", 512 * GIB);
        lvm.holders = vec!["dm-0".into()];
        let mut usb = disk("/dev/sde", 512 * GIB);
        usb.removable = true;
        let small = disk("/dev/sdf", 4 * GIB);
        let err =
            choose_disk(&[boot, mounted, swap, lvm, usb, small], &p.disk, None, GIB).unwrap_err();
        let text = err.to_string();
        for needle in [
            "boot medium",
            "mounted at /mnt",
            "swap",
            "dm-0",
            "removable",
            "minimum of 8 GiB",
        ] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }

    #[test]
    fn equal_candidates_are_ambiguous() {
        let p = profile("uefi-ext4");
        let disks = [disk("/dev/sda", 512 * GIB), disk("/dev/sdb", 512 * GIB)];
        assert!(
            matches!(choose_disk(&disks, &p.disk, None, GIB), Err(PlanError::Ambiguous(d)) if d.len() == 2)
        );
        // Naming one settles it, by path or by id.
        assert_eq!(
            choose_disk(&disks, &p.disk, Some("/dev/disk/by-id/test-sdb"), GIB)
                .unwrap()
                .path,
            "/dev/sdb"
        );
    }

    #[test]
    fn a_named_disk_must_exist_be_free_and_large_enough() {
        let p = profile("uefi-ext4");
        let mut boot = disk("/dev/sda", 512 * GIB);
        boot.boot_medium = true;
        let disks = [boot, disk("/dev/sdb", 10 * GIB)];
        assert!(matches!(
            choose_disk(&disks, &p.disk, Some("/dev/sdz"), GIB),
            Err(PlanError::NamedDiskMissing(_))
        ));
        assert!(matches!(
            choose_disk(&disks, &p.disk, Some("/dev/sda"), GIB),
            Err(PlanError::NamedDiskUnusable { .. })
        ));
        let need = disk_bytes_needed(&p, 20 * GIB);
        let err = choose_disk(&disks, &p.disk, Some("/dev/sdb"), need).unwrap_err();
        assert!(err.to_string().contains("short"), "{err}");
    }

    #[test]
    fn too_small_says_by_how_much() {
        let p = profile("uefi-ext4");
        let need = disk_bytes_needed(&p, 16 * GIB);
        assert!(need > 21 * GIB && need < 22 * GIB, "{need}");
        let err = choose_disk(&[disk("/dev/vda", 16 * GIB)], &p.disk, None, need).unwrap_err();
        assert!(err.to_string().contains("short of the"), "{err}");
    }

    #[test]
    fn partitions_are_aligned_and_fill_the_disk() {
        let p = profile("uefi-ext4-swap");
        let parts = layout_partitions(&p, 32 * GIB + 12345 * 512, 512).unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].first_lba, 2048);
        assert_eq!(parts[0].bytes(512), GIB);
        assert_eq!(parts[1].bytes(512), 8 * GIB);
        for w in parts.windows(2) {
            assert_eq!(w[0].last_lba + 1, w[1].first_lba, "no gaps, no overlaps");
        }
        for part in &parts {
            assert_eq!(
                part.first_lba * 512 % MIB,
                0,
                "{} is not MiB-aligned",
                part.label
            );
        }
        let end = (parts[2].last_lba + 1) * 512;
        assert!(
            end <= 32 * GIB + 12345 * 512 - MIB,
            "the backup GPT keeps its last MiB"
        );
        assert!(
            end > 32 * GIB - 2 * MIB,
            "the rest partition takes the rest"
        );
        // 4 KiB sectors: the same bytes.
        let p4k = layout_partitions(&p, 32 * GIB, 4096).unwrap();
        assert_eq!(p4k[0].first_lba, 256);
        assert!(layout_partitions(&p, 4 * GIB, 512).is_err());
    }
}
