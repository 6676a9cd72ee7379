//! The stacked devices of a plan (md arrays, LUKS containers, volume groups and their
//! volumes) in an order that builds each after what it sits on, with the sizes they will
//! about have.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use manifest::devices::{Content, Devices, Holder, LvSize, PercentOf};
use util::size::{human, MIB};

use super::{LUKS2_HEADER, LVM_EXTENT, LVM_PV_METADATA};
use crate::layout::PlanError;

/// A stacked device to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Build {
    Md {
        name: String,
        level: u32,
        metadata: String,
        members: Vec<Holder>,
        bytes: u64,
    },
    Luks {
        name: String,
        on: Holder,
        uuid: Option<String>,
        allow_discards: bool,
        format_args: Vec<String>,
        open_args: Vec<String>,
        /// Unlocked at boot by the TPM2: enrolled once built.
        tpm2: Option<manifest::devices::Tpm2>,
        bytes: u64,
    },
    Vg {
        name: String,
        pvs: Vec<Holder>,
        bytes: u64,
    },
    Lv {
        vg: String,
        name: String,
        size: LvSize,
        bytes: u64,
    },
}

impl Build {
    /// The device this creates (none for a volume group: its volumes are the devices).
    pub fn creates(&self) -> Option<Holder> {
        match self {
            Build::Md { name, .. } => Some(Holder::Md { name: name.clone() }),
            Build::Luks { name, .. } => Some(Holder::Luks { name: name.clone() }),
            Build::Lv { vg, name, .. } => Some(Holder::Lv {
                vg: vg.clone(),
                lv: name.clone(),
            }),
            Build::Vg { .. } => None,
        }
    }
}

/// The stacked devices in an order that builds each after what it sits on, with estimated
/// sizes filled into `bytes`.
pub(super) fn build_order(
    d: &Devices,
    bytes: &mut BTreeMap<Holder, u64>,
) -> Result<Vec<Build>, PlanError> {
    let contents = d.contents();
    let mut pending: Vec<Build> = Vec::new();
    for m in &d.mdadm {
        let members = d.members(&Content::Mdraid {
            name: m.name.clone(),
        });
        pending.push(Build::Md {
            name: m.name.clone(),
            level: m.level,
            metadata: m.metadata.clone(),
            members,
            bytes: 0,
        });
    }
    for (h, c) in &contents {
        if let Content::Luks(l) = c {
            pending.push(Build::Luks {
                name: l.name.clone(),
                on: h.clone(),
                uuid: l.uuid.clone(),
                allow_discards: l.allow_discards,
                format_args: l.extra_format_args.clone(),
                open_args: l.extra_open_args.clone(),
                tpm2: l.tpm2.clone(),
                bytes: 0,
            });
        }
    }
    for vg in &d.lvm_vgs {
        let pvs = d.members(&Content::LvmPv {
            vg: vg.name.clone(),
        });
        pending.push(Build::Vg {
            name: vg.name.clone(),
            pvs,
            bytes: 0,
        });
    }
    let mut done = Vec::new();
    let mut vgs_made = BTreeSet::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|b| match b {
            Build::Md { members: on, .. } | Build::Vg { pvs: on, .. } => {
                on.iter().all(|h| bytes.contains_key(h))
            }
            Build::Luks { on, .. } => bytes.contains_key(on),
            Build::Lv { vg, .. } => vgs_made.contains(vg),
        });
        let Some(i) = ready else {
            let stuck: Vec<String> = pending.iter().map(|b| format!("{b:?}")).collect();
            return Err(PlanError::DoesNotFit(format!(
                "the layout's devices sit on each other in a circle: {}",
                stuck.join("; ")
            )));
        };
        let mut b = pending.remove(i);
        match &mut b {
            Build::Md {
                name,
                level,
                metadata,
                members,
                bytes: size,
            } => {
                let each: Vec<u64> = members.iter().map(|h| bytes[h]).collect();
                let least = each.iter().copied().min().unwrap_or(0);
                let n = each.len() as u64;
                let data = match *level {
                    0 => each.iter().sum(),
                    1 => least,
                    4 | 5 => least * (n - 1),
                    6 => least * (n - 2),
                    _ => least * n / 2,
                };
                // 1.1 and 1.2 keep a data offset at the start (up to 128 MiB), 1.0 and
                // 0.90 a superblock at the end.
                let meta = match metadata.as_str() {
                    "1.0" | "0.90" => MIB,
                    _ => (least / 16).clamp(MIB, 128 * MIB),
                };
                *size = data.saturating_sub(meta * n.max(1));
                bytes.insert(Holder::Md { name: name.clone() }, *size);
            }
            Build::Luks {
                name,
                on,
                bytes: size,
                ..
            } => {
                *size = bytes[on].saturating_sub(LUKS2_HEADER);
                bytes.insert(Holder::Luks { name: name.clone() }, *size);
            }
            Build::Vg {
                name,
                pvs,
                bytes: size,
            } => {
                *size = pvs
                    .iter()
                    .map(|h| bytes[h].saturating_sub(LVM_PV_METADATA) / LVM_EXTENT * LVM_EXTENT)
                    .sum();
                let vg = d.lvm_vgs.iter().find(|v| &v.name == name).expect("planned");
                let mut free = *size;
                for lv in &vg.lvs {
                    let want = match lv.size {
                        LvSize::Bytes(b) => b.div_ceil(LVM_EXTENT) * LVM_EXTENT,
                        LvSize::Percent { percent, of } => {
                            let base = match of {
                                PercentOf::Vg | PercentOf::Pvs => *size,
                                PercentOf::Free => free,
                            };
                            base / 100 * percent as u64 / LVM_EXTENT * LVM_EXTENT
                        }
                    };
                    if want > free {
                        return Err(PlanError::DoesNotFit(format!(
                            "volume group {name} would be about {} with {} free when logical volume {} needs {}",
                            human(*size),
                            human(free),
                            lv.name,
                            human(want)
                        )));
                    }
                    free -= want;
                    pending.push(Build::Lv {
                        vg: name.clone(),
                        name: lv.name.clone(),
                        size: lv.size,
                        bytes: want,
                    });
                }
                vgs_made.insert(name.clone());
            }
            Build::Lv {
                vg,
                name,
                bytes: size,
                ..
            } => {
                bytes.insert(
                    Holder::Lv {
                        vg: vg.clone(),
                        lv: name.clone(),
                    },
                    *size,
                );
            }
        }
        done.push(b);
    }
    Ok(done)
}
