//! Which of the machine's disks each of the layout's disks is: a pure function of the disk
//! facts, the layout and what the operator named, so every refusal is unit-tested and
//! `--dry-run` shows which device got which role and why. Where the partitions and the
//! stacked devices go on them is `graph`.
//!
//! The order is stable and documented: the layout's disks in name order; first those the
//! operator names (`--disk NAME=PATH`, or plain paths in that order; the host's `disk` for
//! a one-disk layout), then those whose layout `device` this machine has (disko's
//! `/dev/disk/by-id/…`), then the rest by the rules: the candidates ordered by the rules'
//! `select` (largest or smallest first), equal sizes by device path, the first for the first
//! remaining layout disk and so on. When the last disk taken ties with one left out, which
//! disks to erase is a guess: that is asked, or refused.

use std::collections::BTreeMap;

use serde::Serialize;

use manifest::devices::Layout;
use manifest::profile::{DiskRules, Select};
use util::size::human;

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
    /// Spinning (the kernel's queue/rotational), for the inventory.
    pub rotational: bool,
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

    pub fn describe(&self) -> String {
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
    pub fn never(&self) -> Option<String> {
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
    #[error("no disk {}:\n{}", for_disk(.disk, "to install on"), .reasons.join("\n"))]
    NoCandidate { disk: String, reasons: Vec<String> },
    #[error("{} disks fit equally well {}: {}; name one (hosts.toml `disk`, or --disk)", .tied.len(), for_disk(.disk, "for the target"), .tied.join(", "))]
    Ambiguous {
        disk: String,
        tied: Vec<String>,
        /// The tied disks' paths, in `tied`'s order.
        paths: Vec<String>,
    },
    #[error("the host names disk {0}, which this machine does not have")]
    NamedDiskMissing(String),
    #[error("{disk} cannot be used: {why}")]
    NamedDiskUnusable { disk: String, why: String },
    #[error("{named} is named twice")]
    NamedTwice { named: String },
    #[error("--disk {0}: the layout has no disk of that name (it has {1})")]
    UnknownLayoutDisk(String, String),
    #[error("{} disk(s) named, but the layout has {}", .named, .disks)]
    TooManyNamed { named: usize, disks: usize },
    #[error("{disk} is {} but the layout and closure need {}: {} short", human(*.size), human(*.needed), human(.needed - .size))]
    TooSmall {
        disk: String,
        size: u64,
        needed: u64,
    },
    /// The layout does not fit the disks chosen (a partition past the end, a volume group
    /// too small for its volumes, a store file system too small for the closure).
    #[error("{0}")]
    DoesNotFit(String),
}

/// "for layout disk NAME" when the layout has several disks (`disk` set), else `one`.
fn for_disk(disk: &str, one: &str) -> String {
    if disk.is_empty() {
        one.to_string()
    } else {
        format!("for layout disk {disk}")
    }
}

/// One of the layout's disks and the machine disk that plays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assigned {
    /// The layout's name for it (`main`, or disko's attribute name).
    pub name: String,
    pub facts: DiskFacts,
    /// Why this device: named by the operator, by the layout, or chosen by the rules.
    pub why: String,
}

/// Assigns a machine disk to each of `layout`'s disks (see the module's order). `named` are
/// the operator's (`NAME=PATH` or `PATH`); `needs` the bytes each layout disk needs at least.
pub fn assign_disks(
    layout: &Layout,
    facts: &[DiskFacts],
    named: &[String],
    needs: &BTreeMap<String, u64>,
) -> Result<Vec<Assigned>, PlanError> {
    let names: Vec<&str> = layout
        .devices
        .disks
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    // Several disks: say which in messages; one: as before, no name.
    let tag = |n: &str| {
        if names.len() > 1 {
            n.to_string()
        } else {
            String::new()
        }
    };
    let need = |n: &str| needs.get(n).copied().unwrap_or(0);
    let mut out: BTreeMap<&str, Assigned> = BTreeMap::new();
    let mut taken: Vec<&str> = Vec::new();

    if named.len() > names.len() {
        return Err(PlanError::TooManyNamed {
            named: named.len(),
            disks: names.len(),
        });
    }
    let mut positional = Vec::new();
    for n in named {
        match n.split_once('=') {
            Some((disk, path)) if !disk.starts_with('/') => {
                let disk = names.iter().find(|d| **d == disk).ok_or_else(|| {
                    PlanError::UnknownLayoutDisk(disk.to_string(), names.join(", "))
                })?;
                if out.contains_key(disk) {
                    return Err(PlanError::NamedTwice {
                        named: format!("layout disk {disk}"),
                    });
                }
                let d = named_disk(facts, path, need(disk))?;
                out.insert(disk, assigned(disk, d, format!("named: --disk {n}")));
            }
            _ => positional.push(n),
        }
    }
    for n in positional {
        let disk = *names
            .iter()
            .find(|d| !out.contains_key(*d))
            .expect("no more names than layout disks");
        let d = named_disk(facts, n, need(disk))?;
        out.insert(disk, assigned(disk, d, format!("named: {n}")));
    }
    for a in out.values() {
        if taken.contains(&a.facts.path.as_str()) {
            return Err(PlanError::NamedTwice {
                named: a.facts.path.clone(),
            });
        }
        taken.push(a.facts.path.as_str());
    }
    let mut taken: Vec<String> = taken.into_iter().map(str::to_string).collect();

    // The layout's own devices, where this machine has them.
    for disk in &layout.devices.disks {
        if out.contains_key(disk.name.as_str()) {
            continue;
        }
        let Some(dev) = &disk.device else { continue };
        let Some(d) = facts.iter().find(|d| d.is_named(dev)) else {
            continue;
        };
        if let Some(why) = d.never() {
            return Err(PlanError::NamedDiskUnusable {
                disk: format!("{} (the layout's device for disk {})", d.path, disk.name),
                why,
            });
        }
        if taken.contains(&d.path) {
            return Err(PlanError::NamedTwice {
                named: d.path.clone(),
            });
        }
        check_size(d, need(&disk.name))?;
        taken.push(d.path.clone());
        let why = format!("the layout's device {dev} is this disk");
        out.insert(disk.name.as_str(), assigned(&disk.name, d, why));
    }

    // The rest by the rules.
    let rest: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !out.contains_key(n))
        .collect();
    if !rest.is_empty() {
        let mut reasons = Vec::new();
        let mut candidates: Vec<&DiskFacts> = Vec::new();
        // The least any remaining layout disk needs: a disk below it fits none of them.
        let least = rest.iter().map(|n| need(n)).min().unwrap_or(0);
        for d in facts {
            if taken.contains(&d.path) {
                continue;
            }
            match refusal(d, &layout.rules, least) {
                Some(why) => reasons.push(format!("  {}: {why}", d.describe())),
                None => candidates.push(d),
            }
        }
        candidates.sort_by(|a, b| match layout.rules.select {
            Select::Largest => b.size.cmp(&a.size).then(a.path.cmp(&b.path)),
            Select::Smallest => a.size.cmp(&b.size).then(a.path.cmp(&b.path)),
        });
        for (i, name) in rest.iter().enumerate() {
            let Some(d) = candidates.get(i) else {
                if reasons.is_empty() {
                    reasons.push(if facts.is_empty() {
                        "  the machine has no disks".into()
                    } else {
                        "  every disk is taken by the layout's other disks".into()
                    });
                }
                return Err(PlanError::NoCandidate {
                    disk: tag(name),
                    reasons,
                });
            };
            check_size(d, need(name))?;
            let why = format!(
                "the rules ({} of {} candidate{}{})",
                match layout.rules.select {
                    Select::Largest => "largest",
                    Select::Smallest => "smallest",
                },
                candidates.len(),
                if candidates.len() == 1 { "" } else { "s" },
                if rest.len() > 1 {
                    format!(", number {} in order", i + 1)
                } else {
                    String::new()
                }
            );
            out.insert(name, assigned(name, d, why));
        }
        // The last disk taken ties with one left out: which disks to erase is a guess.
        if let (Some(last), Some(next)) =
            (candidates.get(rest.len() - 1), candidates.get(rest.len()))
        {
            if last.size == next.size {
                let tied: Vec<&&DiskFacts> =
                    candidates.iter().filter(|d| d.size == last.size).collect();
                return Err(PlanError::Ambiguous {
                    disk: rest[rest.len() - 1].to_string(),
                    tied: tied.iter().map(|d| d.describe()).collect(),
                    paths: tied.iter().map(|d| d.path.clone()).collect(),
                });
            }
        }
    }
    Ok(names
        .iter()
        .map(|n| out.remove(n).expect("every disk assigned"))
        .collect())
}

fn assigned(name: &str, d: &DiskFacts, why: String) -> Assigned {
    Assigned {
        name: name.to_string(),
        facts: d.clone(),
        why,
    }
}

/// The disk the operator named: it must exist, be free and be large enough.
fn named_disk<'a>(
    facts: &'a [DiskFacts],
    name: &str,
    needed: u64,
) -> Result<&'a DiskFacts, PlanError> {
    let d = facts
        .iter()
        .find(|d| d.is_named(name))
        .ok_or_else(|| PlanError::NamedDiskMissing(name.to_string()))?;
    if let Some(why) = d.never() {
        return Err(PlanError::NamedDiskUnusable {
            disk: d.path.clone(),
            why,
        });
    }
    check_size(d, needed)?;
    Ok(d)
}

fn check_size(d: &DiskFacts, needed: u64) -> Result<(), PlanError> {
    if d.size < needed {
        return Err(PlanError::TooSmall {
            disk: d.path.clone(),
            size: d.size,
            needed,
        });
    }
    Ok(())
}

/// Why the rules pass over `d` for a layout disk that needs `needed` bytes.
fn refusal(d: &DiskFacts, rules: &DiskRules, needed: u64) -> Option<String> {
    d.never().or_else(|| {
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
    })
}
