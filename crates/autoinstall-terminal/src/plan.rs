//! The plan: which disk this host goes on and where each partition goes, as shown before
//! confirmation and printed by `--dry-run` (human and JSON). Made from the machine's disk
//! facts and the host's layout by the pure `machine::layout`; only a tie between disks asks.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use machine::disks;
use machine::layout::{self, DiskFacts, PartitionPlan, PlanError};
use manifest::document::{HostEntry, Manifest};
use manifest::profile::{Filesystem, Subvolume};
use manifest::AfterInstall;
use media::verify::Closure;
use util::size::human;

use crate::install::Options;
use crate::source::Source;
use crate::ui::Ui;

/// The plan as shown before confirmation and printed by `--dry-run`.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub host: String,
    pub chosen_by: String,
    pub serial: Option<String>,
    pub payload: String,
    pub toplevel: String,
    pub closure_paths: usize,
    pub closure_nar_bytes: u64,
    pub disk: DiskFacts,
    /// The disk still carries mounts an earlier attempt of ours left under `--root`: Tear
    /// down removes them before the disk can be held exclusively.
    pub earlier_attempt: bool,
    pub disk_bytes_needed: u64,
    pub partitions: Vec<PlannedPartition>,
    pub after_install: AfterInstall,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedPartition {
    #[serde(flatten)]
    pub part: PartitionPlan,
    pub bytes: u64,
    pub mount: Option<String>,
    pub subvolumes: Vec<Subvolume>,
}

impl Plan {
    pub fn describe(&self) -> String {
        let d = &self.disk;
        let mut s = format!(
            "host      {} ({})\nserial    {}\npayload   {}\nsystem    {}\nclosure   {} paths, {}\ndisk      {} {} {} serial {} via {}\n",
            self.host,
            self.chosen_by,
            self.serial.as_deref().unwrap_or("none"),
            self.payload,
            self.toplevel,
            self.closure_paths,
            human(self.closure_nar_bytes),
            d.path,
            human(d.size),
            if d.model.is_empty() { "(no model)" } else { &d.model },
            if d.serial.is_empty() { "?" } else { &d.serial },
            if d.transport.is_empty() { "?" } else { &d.transport },
        );
        s += "partitions (the disk is erased):\n";
        for p in &self.partitions {
            let mut at = p.mount.clone().unwrap_or_default();
            if !p.subvolumes.is_empty() {
                let each: Vec<String> = p
                    .subvolumes
                    .iter()
                    .map(|s| format!("{}={}", s.name, s.mount))
                    .collect();
                at = each.join(" ");
            }
            s += &format!(
                "  {}  {:<10} {:>10}  {:<6} {}\n",
                p.part.number,
                p.part.label,
                human(p.bytes),
                p.part.format.name(),
                at
            );
        }
        s += &format!("then      {:?}\n", self.after_install).to_lowercase();
        s
    }
}

/// Plans the install of `host` (chosen as `chosen_by`) on this machine: the disk, from
/// `--disk`, the host's `disk`, or the layout's rules (a menu on `ui` for a tie), never the
/// payload's own; and where every partition goes on it.
#[allow(clippy::too_many_arguments)]
pub fn make_plan(
    opts: &Options,
    ui: &Ui,
    serial: Option<String>,
    source: &Source,
    m: &Manifest,
    host: &HostEntry,
    chosen_by: &str,
    closure: &Closure,
) -> Result<Plan, String> {
    let explicit = opts.disk.clone().or_else(|| host.disk.clone());
    let mut facts = disks::scan().map_err(|e| format!("listing disks: {e}"))?;
    // `--disk` may name a device the scan skips (a loop device).
    if let Some(name) = &explicit {
        let resolved = fs::canonicalize(name).unwrap_or_else(|_| PathBuf::from(name));
        if !facts.iter().any(|d| d.is_named(name)) {
            if let Ok(mut f) = disks::facts(&resolved) {
                f.by_id.push(name.clone());
                facts.push(f);
            }
        }
    }
    // The payload's own disk is never a target.
    let carrier = source
        .carrier()
        .map(|c| fs::canonicalize(c).unwrap_or_else(|_| c.to_path_buf()));
    let carrier_disk = carrier
        .as_deref()
        .and_then(|c| disks::whole_disk_of(c).ok());
    let mut earlier: Vec<String> = Vec::new();
    for d in &mut facts {
        if carrier_disk.as_deref() == Some(Path::new(&d.path))
            || carrier.as_deref() == Some(Path::new(&d.path))
        {
            d.boot_medium = true;
        }
        // Mounts under our own root are an earlier attempt's, which Tear down removes.
        let root = opts.root.to_string_lossy().to_string();
        let before = d.mounted.len();
        d.mounted
            .retain(|m| !(m == &root || m.starts_with(&format!("{root}/"))));
        if d.mounted.len() != before {
            earlier.push(d.path.clone());
        }
    }
    let needed = layout::disk_bytes_needed(&host.layout, closure.nar_bytes);
    let chosen = match layout::choose_disk(&facts, &host.layout.disk, explicit.as_deref(), needed) {
        Ok(d) => d.clone(),
        Err(PlanError::Ambiguous(list)) => {
            let tied: Vec<&DiskFacts> = facts
                .iter()
                .filter(|d| list.iter().any(|l| l.starts_with(&format!("{} ", d.path))))
                .collect();
            let items: Vec<String> = tied
                .iter()
                .map(|d| {
                    format!(
                        "{:<16} {:>10}  {}  {}  {}",
                        d.path,
                        human(d.size),
                        d.model,
                        d.serial,
                        d.transport
                    )
                })
                .collect();
            match ui.menu(
                "Several disks fit equally well. Choose the one to erase:",
                &items,
            ) {
                Some(i) => tied[i].clone(),
                None => {
                    return Err(PlanError::Ambiguous(list).to_string() + "; nothing was touched")
                }
            }
        }
        Err(e) => return Err(format!("{e}\nnothing was touched")),
    };
    let parts = layout::layout_partitions(&host.layout, chosen.size, chosen.logical_block_size)
        .map_err(|e| e.to_string())?;
    let partitions = parts
        .into_iter()
        .zip(&host.layout.partitions)
        .map(|(part, p)| PlannedPartition {
            bytes: part.bytes(chosen.logical_block_size),
            mount: p.mount.clone(),
            subvolumes: p.subvolumes.clone(),
            part,
        })
        .collect();
    Ok(Plan {
        host: host.name.clone(),
        chosen_by: chosen_by.to_string(),
        serial,
        payload: source.describe(),
        toplevel: host.toplevel.clone(),
        closure_paths: closure.infos.len(),
        closure_nar_bytes: closure.nar_bytes,
        earlier_attempt: earlier.contains(&chosen.path),
        disk: chosen,
        disk_bytes_needed: needed,
        partitions,
        after_install: m.after_install,
    })
}

/// The partition holding `/nix/store`, if it is ext4 mounted at `/` or `/nix` and of a size
/// the ext4 writer handles (16 MiB to 16 TiB; else mkfs.ext4 and the copy through the kernel
/// do it), and the store directory's path inside it.
pub fn direct_store(plan: &Plan) -> Option<(usize, Vec<&'static str>)> {
    let holds = |m: &str| m == "/" || m == "/nix";
    let (i, p) = plan
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.mount.as_deref().is_some_and(holds))
        .max_by_key(|(_, p)| p.mount.as_deref().map_or(0, str::len))?;
    if p.part.format != Filesystem::Ext4
        || !p.subvolumes.is_empty()
        || !(ext4::MIN_BYTES..=ext4::MAX_BYTES).contains(&p.bytes)
    {
        return None;
    }
    let store_dir = if p.mount.as_deref() == Some("/") {
        vec!["nix", "store"]
    } else {
        vec!["store"]
    };
    Some((i, store_dir))
}
