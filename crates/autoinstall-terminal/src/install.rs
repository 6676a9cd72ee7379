//! The state machine of DESIGN §4: Identify → Load payload → Select host → Plan → Verify →
//! Confirm → Tear down → Partition → Format → Mount → Copy closure → Register → Profile →
//! Extra files → Bootloader → Finish → Report. Each step is timed and logged; the first error
//! stops the run and names its step. Nothing on any disk is written before Confirm.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use manifest::media::{host_lookup_path, limits, Expected, HostEntry, Manifest, MANIFEST_PATH};
use manifest::profile::Format;
use manifest::size::human;
use manifest::AfterInstall;
use nixstore::hash::Sha256Hash;
use target::blockdev::{self, Hold, LockedDisk, PartSpan};
use target::plan::{self, DiskFacts, PartitionPlan, PlanError};
use target::{bootloader, disks, format, mount, partition};

use crate::choose::{self, Choice, Overrides};
use crate::closure::{self, Closure, Pins};
use crate::direct;
use crate::identify::Identity;
use crate::online::{Retry, Site};
use crate::payload::{self, Source};
use crate::report::{DiskSummary, Outcome, PartitionSummary, Report, StepError, StepTime};
use crate::ui::Ui;

/// What the operator asked for on the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// With any key here, the manifest and every store path must be signed by one of them.
    pub trusted_keys: Vec<nixstore::keys::PublicKey>,
    /// `--fleet`: install only from manifests of this fleet.
    pub fleet: Option<String>,
    /// `--min-generation`: refuse manifests older than this generation.
    pub min_generation: Option<u64>,
    pub payload: Option<PathBuf>,
    /// `--url`: a cache site to install from over HTTP(S) (when no `payload` is given).
    pub url: Option<String>,
    /// `--insecure`: online without signatures (labs only).
    pub insecure: bool,
    /// Online: attempts per file.
    pub retries: u32,
    /// Online over HTTPS: trust only these CA certificates (PEM) instead of the public roots.
    pub ca_pem: Option<Vec<u8>>,
    pub overrides: Overrides,
    /// `--disk`: a whole-disk node or by-id link; wins over the host's `disk` and the rules.
    pub disk: Option<String>,
    pub dry_run: bool,
    pub yes: bool,
    /// Where the new system is mounted while it is installed.
    pub root: PathBuf,
    pub jobs: usize,
    /// `--no-bootloader`: install the closure and profile only (closures that are not
    /// bootable systems, benchmarks).
    pub bootloader: bool,
    /// `--kernel-copy`: mkfs and copy through the mounted file system even where the
    /// store's file system could be written directly.
    pub kernel_copy: bool,
}

impl Options {
    /// What a manifest must be to be installed from: a lookup for `serial`, or the whole
    /// fleet; of the fleet and generation the installer was told.
    fn expected<'a>(&'a self, serial: Option<&'a str>) -> Expected<'a> {
        Expected {
            serial,
            fleet: self.fleet.as_deref(),
            min_generation: self.min_generation,
        }
    }
}

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
    pub subvolumes: Vec<String>,
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
                at = p.subvolumes.join(" ");
            }
            s += &format!(
                "  {}  {:<10} {:>10}  {:<6} {}\n",
                p.part.number,
                p.part.label,
                human(p.bytes),
                format_name(p.part.format),
                at
            );
        }
        s += &format!("then      {:?}\n", self.after_install).to_lowercase();
        s
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Vfat => "vfat",
        Format::Ext4 => "ext4",
        Format::Btrfs => "btrfs",
        Format::Xfs => "xfs",
        Format::Swap => "swap",
        Format::None => "-",
    }
}

/// How a run ended, for the exit status and the finish action.
#[derive(Debug)]
pub struct Ended {
    pub report: Report,
    pub source: Option<Source>,
    pub plan: Option<Plan>,
    pub after_install: Option<AfterInstall>,
}

/// The steps that only read: a stop in any of them leaves every disk as it was.
const BEFORE_ANY_WRITE: &[&str] = &[
    "hold-disk",
    "load-payload",
    "select-host",
    "read-closure",
    "plan",
    "verify",
    "confirm",
];

/// A failure: the step and what went wrong.
struct Fail(&'static str, String);

/// The run's state as it goes through the steps.
struct Run<'a> {
    opts: &'a Options,
    ui: &'a Ui,
    report: Report,
}

impl Run<'_> {
    /// Runs one step: timed, logged, and its error tagged with the step's name.
    fn step<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<T, Fail> {
        let t = Instant::now();
        self.report.log(format!("{name}: start"));
        let r = f(self);
        let ok = r.is_ok();
        self.report.steps.push(StepTime {
            step: name,
            seconds: t.elapsed().as_secs_f64(),
            ok,
        });
        match r {
            Ok(v) => {
                self.report.log(format!(
                    "{name}: done in {:.2} s",
                    t.elapsed().as_secs_f64()
                ));
                Ok(v)
            }
            Err(e) => {
                self.report.log(format!("{name}: FAILED: {e}"));
                Err(Fail(name, e))
            }
        }
    }
}

/// Runs the installer from Load payload on (Identify has happened: `identity`).
pub fn run(opts: &Options, ui: &Ui, identity: Identity) -> Ended {
    let mut run = Run {
        opts,
        ui,
        report: Report::new(identity),
    };
    let mut source = None;
    let mut plan = None;
    let mut after = None;
    let result = go(&mut run, &mut source, &mut plan, &mut after);
    let outcome = match result {
        Ok(o) => o,
        Err(Fail(step, message)) => {
            run.report.error = Some(StepError { step, message });
            // Until Tear down, nothing has been written: that is a refusal, not a failure.
            if BEFORE_ANY_WRITE.contains(&step) {
                Outcome::Refused
            } else {
                Outcome::Failed
            }
        }
    };
    run.report.finish(outcome);
    Ended {
        report: run.report,
        source,
        plan,
        after_install: after,
    }
}

fn go(
    run: &mut Run,
    source_out: &mut Option<Source>,
    plan_out: &mut Option<Plan>,
    after_out: &mut Option<AfterInstall>,
) -> Result<Outcome, Fail> {
    let opts = run.opts;
    let (source, manifest) = run.step("load-payload", |r| {
        let source = match (&opts.payload, &opts.url) {
            (Some(p), _) => payload::from_arg(p).map_err(|e| e.to_string())?,
            (None, Some(url)) => Source::Http(Site::new(
                url,
                Retry {
                    attempts: opts.retries,
                    ..Retry::default()
                },
                opts.ca_pem.as_deref(),
            )?),
            (None, None) => payload::find().map_err(|e| e.to_string())?,
        };
        let manifest = match &source {
            Source::Http(site) => online_manifest(r, site)?,
            _ => closure::read_manifest(
                &source,
                MANIFEST_PATH,
                limits::MANIFEST,
                &opts.trusted_keys,
                &opts.expected(None),
            )
            .map_err(|e| e.to_string())?,
        };
        Ok((source, manifest))
    })?;
    run.report.payload = Some(source.describe());
    *source_out = Some(source.clone());
    run.ui.say(&format!(
        "payload: {} ({} host{})",
        source.describe(),
        manifest.hosts.len(),
        if manifest.hosts.len() == 1 { "" } else { "s" }
    ));

    if let Some(s) = &opts.overrides.serial {
        run.report.serial = Some(s.clone());
    }
    let (host, chosen_by) = run.step("select-host", |r| select_host(r, &manifest))?;
    run.report.host = Some(host.name.clone());
    run.report.chosen_by = Some(chosen_by.clone());
    run.report.toplevel = Some(host.toplevel.clone());

    let closure = run.step("read-closure", |_| {
        closure::load(&source, host, &opts.trusted_keys)
    })?;
    run.report.closure_paths = closure.infos.len();
    run.report.closure_nar_bytes = closure.nar_bytes;

    let (plan, held) = run.step("plan", |r| {
        let plan = make_plan(r, &source, &manifest, host, &chosen_by, &closure)?;
        // Held exclusively from here to the end (see blockdev::Hold): a disk someone else
        // holds (a VM, ZFS, a mapper, RAID) is refused now, before anything is written.
        // A disk with an earlier attempt's mounts is held once Tear down removed them.
        let path = Path::new(&plan.disk.path);
        let held = match (opts.dry_run, plan.earlier_attempt) {
            (_, true) => None,
            (true, false) => {
                blockdev::check_not_held(path).map_err(|e| format!("{e}; nothing was touched"))?;
                None
            }
            (false, false) => Some(
                blockdev::open_locked(path, Hold::Exclusive)
                    .map_err(|e| format!("{e}; nothing was touched"))?,
            ),
        };
        Ok((plan, held))
    })?;
    run.report.disk = Some(DiskSummary {
        path: plan.disk.path.clone(),
        model: plan.disk.model.clone(),
        serial: plan.disk.serial.clone(),
        size: plan.disk.size,
        transport: plan.disk.transport.clone(),
    });
    run.report.partitions = plan
        .partitions
        .iter()
        .map(|p| PartitionSummary {
            number: p.part.number,
            label: p.part.label.clone(),
            format: format_name(p.part.format).into(),
            bytes: p.bytes,
            mount: p.mount.clone(),
        })
        .collect();
    *plan_out = Some(plan.clone());
    if opts.dry_run {
        return Ok(Outcome::DryRun);
    }

    let pins = run.step("verify", |r| {
        if source.is_online() {
            // Reading the closure twice would fetch it twice. Its narinfos' signatures were
            // checked (read-closure); each NAR is checked in full as it is unpacked, and a bad
            // one stops the install before any boot entry exists.
            r.report.log(
                "online: every NAR is checked (FileHash, NarHash, structure) while it is unpacked"
                    .to_string(),
            );
            return Ok(None);
        }
        let bar = r.ui.bytes_bar(closure.file_bytes, "verify");
        let res = closure::verify(&source, &closure, opts.jobs, &|n| bar.inc(n));
        bar.finish_and_clear();
        res.map(Some).map_err(|e| {
            format!("the payload is damaged or was tampered with; nothing was touched: {e}")
        })
    })?;

    run.step("confirm", |r| {
        let text = format!("\n{}", plan.describe());
        if opts.yes {
            r.ui.say(&text);
            return Ok(());
        }
        if r.ui.countdown(&text, manifest.confirm_seconds) {
            Ok(())
        } else {
            Err("stopped by a key press at the confirmation; nothing was touched".into())
        }
    })?;

    let result = install(run, &source, host, &plan, &closure, pins.as_ref(), held);
    if result.is_err() {
        // Whatever failed, the disk must not boot a half-installed system, and the next
        // attempt must find nothing mounted.
        let _ = mount::unmount_all(&opts.root);
        if let Some(esp) = plan
            .partitions
            .iter()
            .find(|p| p.part.format == Format::Vfat)
        {
            if let Ok(disk) = blockdev::open_locked(Path::new(&plan.disk.path), Hold::Shared) {
                let block = plan.disk.logical_block_size;
                if format::format_esp(
                    disk.file(),
                    esp.part.first_lba * block,
                    esp.bytes,
                    block,
                    &esp.part.label,
                )
                .is_ok()
                {
                    run.report
                        .log("the ESP was emptied again: the disk has no boot entry".to_string());
                }
            }
        }
    }
    result?;
    *after_out = Some(manifest.after_install);
    Ok(Outcome::Installed)
}

/// Online, the host comes first: the site's per-serial lookup (a manifest of that one host)
/// for this machine's serial, or the whole manifest with `--host`. Signatures are required
/// unless `--insecure`. A serial the site does not know is refused, never replaced by another
/// host or a default.
fn online_manifest(run: &Run, site: &Site) -> Result<Manifest, String> {
    let opts = run.opts;
    if opts.trusted_keys.is_empty() && !opts.insecure {
        return Err(format!(
            "{}: online installs accept only signed payloads, and this installer trusts no key; give --trusted-key NAME:KEY (or build the installer environment with --trusted-key), or --insecure for a lab; nothing was touched",
            site.base()
        ));
    }
    let source = Source::Http(site.clone());
    let (path, cap, serial) = match &opts.overrides.host {
        Some(_) => (MANIFEST_PATH.to_string(), limits::MANIFEST, None),
        None => {
            let id = &run.report.identity;
            let (serial, rejected, from) = choose::effective_serial(
                id.serial.as_deref(),
                id.serial_rejected.as_deref(),
                &opts.overrides,
            );
            let serial = serial.ok_or_else(|| {
                format!(
                    "this machine has no usable serial ({from}: {}); the online installer finds its host by serial: give --serial or --host; nothing was touched",
                    rejected.as_deref().unwrap_or("none reported")
                )
            })?;
            (host_lookup_path(&serial), limits::LOOKUP, Some(serial))
        }
    };
    let expected = opts.expected(serial.as_deref());
    closure::read_manifest(&source, &path, cap, &opts.trusted_keys, &expected).map_err(|e| {
        match serial {
            Some(s) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "serial {s} is not in the fleet at {} ({e}); nothing was touched",
                site.base()
            ),
            _ => format!("{e}; nothing was touched"),
        }
    })
}

fn select_host<'m>(run: &mut Run, m: &'m Manifest) -> Result<(&'m HostEntry, String), String> {
    let id = &run.report.identity;
    let choice = choose::choose(
        m,
        id.serial.as_deref(),
        id.serial_rejected.as_deref(),
        &run.opts.overrides,
    );
    match choice {
        Choice::Host { host, why } => Ok((host, why)),
        Choice::Refuse { why } => Err(why),
        Choice::Ask { why } => {
            let items: Vec<String> = m
                .hosts
                .iter()
                .map(|h| format!("{:<24} {}", h.name, h.serials.join(", ")))
                .collect();
            let title = format!("{why}.\nChoose the host to install on this machine:");
            match run.ui.menu(&title, &items) {
                Some(i) => Ok((&m.hosts[i], format!("{why}; chosen from the menu"))),
                None if run.ui.interactive => Err(format!("{why}; no host was chosen from the menu; nothing was touched")),
                None => Err(format!("{why}; the stick says to ask, but there is no terminal to ask on; nothing was touched (run with --host NAME)")),
            }
        }
    }
}

fn make_plan(
    run: &mut Run,
    source: &Source,
    m: &Manifest,
    host: &HostEntry,
    chosen_by: &str,
    closure: &Closure,
) -> Result<Plan, String> {
    let opts = run.opts;
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
    let needed = plan::disk_bytes_needed(&host.layout, closure.nar_bytes);
    let chosen = match plan::choose_disk(&facts, &host.layout.disk, explicit.as_deref(), needed) {
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
            match run.ui.menu(
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
    let parts = plan::layout_partitions(&host.layout, chosen.size, chosen.logical_block_size)
        .map_err(|e| e.to_string())?;
    let partitions = parts
        .into_iter()
        .zip(&host.layout.partitions)
        .map(|(part, p)| PlannedPartition {
            bytes: part.bytes(chosen.logical_block_size),
            mount: p.mount.clone(),
            subvolumes: p
                .subvolumes
                .iter()
                .map(|s| format!("{}={}", s.name, s.mount))
                .collect(),
            part,
        })
        .collect();
    Ok(Plan {
        host: host.name.clone(),
        chosen_by: chosen_by.to_string(),
        serial: run.report.serial.clone(),
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

/// Everything that writes: from Tear down to Finish.
fn install(
    run: &mut Run,
    source: &Source,
    host: &HostEntry,
    plan: &Plan,
    closure: &Closure,
    pins: Option<&Pins>,
    held: Option<LockedDisk>,
) -> Result<(), Fail> {
    let opts = run.opts;
    let root = opts.root.clone();
    let disk_path = PathBuf::from(&plan.disk.path);
    let block = plan.disk.logical_block_size;

    run.step("tear-down", |r| {
        let gone = mount::unmount_all(&root).map_err(|e| e.to_string())?;
        if !gone.is_empty() {
            r.report.log(format!(
                "unmounted an earlier attempt's {} mount(s) under {}",
                gone.len(),
                root.display()
            ));
        }
        Ok(())
    })?;

    let held = match held {
        Some(d) => d,
        None => run.step("hold-disk", |_| {
            blockdev::open_locked(&disk_path, Hold::Exclusive)
                .map_err(|e| format!("{e}; nothing was written"))
        })?,
    };

    // Held to the end: the lock keeps udev and other installers off the disk.
    let (mut disk, nodes) = run.step("partition", |r| {
        r.ui.say(&format!("partitioning {}", disk_path.display()));
        partition_disk(held, plan).map_err(|e| format!("partitioning {}: {e}", disk_path.display()))
    })?;

    // The partition that holds the store, when it is ext4, is written directly with the
    // closure in it (crate ext4): no mkfs, and no file created through the kernel.
    let direct = if opts.kernel_copy {
        None
    } else {
        direct_store(plan)
    };

    // mkfs and mount claim the partitions they work on, which the kernel refuses while the
    // whole disk is held exclusively: from the first of them on, the lock alone holds it.
    let external_mkfs = plan.partitions.iter().enumerate().any(|(i, p)| {
        !matches!(p.part.format, Format::Vfat | Format::None)
            && direct.as_ref().is_none_or(|(d, _)| *d != i)
    });
    if external_mkfs {
        disk = release_exclusive(run, disk, "mkfs")?;
    }

    run.step("format", |r| {
        for (i, (p, node)) in plan.partitions.iter().zip(&nodes).enumerate() {
            if direct.as_ref().is_some_and(|(d, _)| *d == i) {
                r.ui.say(&format!(
                    "{} ({}) is written as ext4 with the closure in it",
                    node.display(),
                    p.part.label,
                ));
                continue;
            }
            r.ui.say(&format!(
                "formatting {} ({}) as {}",
                node.display(),
                p.part.label,
                format_name(p.part.format)
            ));
            let res = match p.part.format {
                Format::Vfat => format::format_esp(
                    disk.file(),
                    p.part.first_lba * block,
                    p.bytes,
                    block,
                    &p.part.label,
                ),
                f => format::mkfs(f, node, &p.part.label),
            };
            res.map_err(|e| format!("formatting {}: {e}", node.display()))?;
        }
        Ok(())
    })?;

    let copy = |r: &mut Run, store: Option<&direct::StoreFs>| {
        r.ui.say(&format!(
            "copying {} store paths ({})",
            closure.infos.len(),
            human(closure.nar_bytes)
        ));
        let bar = r.ui.bytes_bar(closure.file_bytes, "copy");
        if let Source::Http(site) = source {
            // The whole copy's deadline, from signed sizes: ten minutes, plus the time the
            // slowest pace each file is allowed (online::Retry::min_rate) would take for all.
            let pace = nixstore::import::max_compressed_size(closure.nar_bytes) as f64
                / Retry::default().min_rate as f64;
            site.set_deadline(
                std::time::Instant::now()
                    + std::time::Duration::from_secs(600)
                    + std::time::Duration::from_secs_f64(pace),
            );
        }
        let progress = |n| bar.inc(n);
        let res = match store {
            Some(store) => direct::write(source, closure, store, opts.jobs, pins, &progress),
            None => {
                nixstore::register::prepare_root(&root).map_err(|e| e.to_string())?;
                let store = root.join("nix/store");
                closure::copy(source, closure, &store, opts.jobs, pins, &progress)
            }
        };
        bar.finish_and_clear();
        if let Source::Http(site) = source {
            for line in site.retried() {
                r.report.log(format!("retried: {line}"));
            }
        }
        res
    };
    let staged_esp = match &direct {
        Some((i, store_dir)) => {
            let p = &plan.partitions[*i];
            let store = direct::StoreFs {
                device: &nodes[*i],
                bytes: p.bytes,
                label: &p.part.label,
                store_dir: store_dir.clone(),
            };
            run.step("copy-closure", |r| copy(r, Some(&store)))?;
            disk = release_exclusive(run, disk, "mount")?;
            run.step("mount", |r| {
                let staged = mount_all(r, plan, &nodes, &root)?;
                let n = direct::move_into_store(&root)?;
                r.report.log(format!(
                    "moved {n} store paths into /nix/store (indexed by the kernel)"
                ));
                Ok(staged)
            })?
        }
        None => {
            disk = release_exclusive(run, disk, "mount")?;
            let staged = run.step("mount", |r| mount_all(r, plan, &nodes, &root))?;
            run.step("copy-closure", |r| copy(r, None))?;
            staged
        }
    };

    run.step("register", |_| {
        nixstore::register::register(&root, &closure.path_infos()).map_err(|e| e.to_string())
    })?;

    run.step("profile", |_| {
        set_profile(&root, &host.toplevel).map_err(|e| format!("setting the system profile: {e}"))
    })?;

    run.step("extra-files", |_| extra_files(source, host, &root))?;

    if opts.bootloader {
        run.step("bootloader", |r| {
            r.ui.say("installing the boot loader (switch-to-configuration boot)");
            let out = bootloader::install(&root, &host.toplevel).map_err(|e| e.to_string())?;
            for line in out.activate_output.lines().chain(out.output.lines()) {
                r.report.log(format!("  | {line}"));
            }
            if let Some(esp) = &staged_esp {
                write_staged_esp(&disk, plan, esp, &root)
                    .map_err(|e| format!("writing the ESP: {e}"))?;
            }
            Ok(())
        })?;
    } else {
        run.report.log("bootloader: skipped (--no-bootloader)");
    }

    run.step("finish", |r| {
        // The installed system keeps its own install report (and it is the only copy when the
        // payload is on a read-only ISO). Written before the unmount: the finish step itself
        // is not in it.
        let mut kept = r.report.clone();
        kept.finish(Outcome::Installed);
        write_target_report(&root, &kept)
            .map_err(|e| format!("writing the report to {}: {e}", TARGET_REPORTS_DIR))?;
        mount::sync_all_under(&root).map_err(|e| e.to_string())?;
        mount::unmount_all(&root).map_err(|e| e.to_string())?;
        disk.file()
            .sync_all()
            .map_err(|e| format!("flushing {}: {e}", disk.path().display()))?;
        Ok(())
    })?;
    drop(disk);
    Ok(())
}

/// Where the installed system keeps its install reports.
pub const TARGET_REPORTS_DIR: &str = "/var/log/autoinstall";

fn write_target_report(root: &Path, report: &Report) -> std::io::Result<()> {
    let dir = root.join(TARGET_REPORTS_DIR.trim_start_matches('/'));
    fs::create_dir_all(&dir)?;
    let stem = report.file_stem();
    fs::write(dir.join(format!("{stem}.json")), report.to_json())?;
    fs::write(
        dir.join(format!("{stem}.log")),
        report.log.join("\n") + "\n",
    )
}

/// The disk, held without `O_EXCL` from now on, so that `who` can claim its partitions.
fn release_exclusive(run: &mut Run, disk: LockedDisk, who: &str) -> Result<LockedDisk, Fail> {
    if disk.hold() == Hold::Shared {
        return Ok(disk);
    }
    run.report.log(format!(
        "the disk is held by its lock alone from here: {who} claims its partitions"
    ));
    let path = disk.path().to_path_buf();
    disk.share()
        .map_err(|e| Fail("partition", format!("{}: {e}", path.display())))
}

/// Wipes, writes the GPT, tells the kernel, and returns the partition nodes.
fn partition_disk(disk: LockedDisk, plan: &Plan) -> std::io::Result<(LockedDisk, Vec<PathBuf>)> {
    let size = disk.size()?;
    let block = disk.logical_block_size()?;
    if size != plan.disk.size || block != plan.disk.logical_block_size {
        return Err(std::io::Error::other(format!(
            "the disk changed since it was planned ({} bytes, {block}-byte sectors now); run again",
            size
        )));
    }
    disk.forget_partitions()?;
    disk.wipe_signatures()?;
    let parts: Vec<PartitionPlan> = plan.partitions.iter().map(|p| p.part.clone()).collect();
    // Old file systems and RAID members at the same offsets would show through: clear each
    // partition's first and last MiB (an md v1.0 or v0.90 superblock sits at the end).
    for p in &parts {
        let (start, len) = (p.first_lba * block, p.bytes(block));
        disk.wipe(start, MIB.min(len))?;
        disk.wipe(start + len.saturating_sub(MIB), MIB.min(len))?;
    }
    partition::write_gpt(disk.file(), size, block, &parts)?;
    let spans: Vec<PartSpan> = parts
        .iter()
        .map(|p| PartSpan {
            number: p.number,
            start: p.first_lba * block,
            len: p.bytes(block),
        })
        .collect();
    let nodes = disk.reread(&spans)?;
    Ok((disk, nodes))
}

const MIB: u64 = 1 << 20;

/// A staged ESP: the kernel cannot mount FAT, so /boot is a tmpfs while the boot loader is
/// installed and its contents are written into the ESP afterwards.
struct StagedEsp {
    number: u32,
}

/// The partition holding `/nix/store`, if it is ext4 mounted at `/` or `/nix` and of a size
/// the ext4 writer handles (16 MiB to 16 TiB; else mkfs.ext4 and the copy through the kernel
/// do it), and the store directory's path inside it.
fn direct_store(plan: &Plan) -> Option<(usize, Vec<&'static str>)> {
    let holds = |m: &str| m == "/" || m == "/nix";
    let (i, p) = plan
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.mount.as_deref().is_some_and(holds))
        .max_by_key(|(_, p)| p.mount.as_deref().map_or(0, str::len))?;
    if p.part.format != Format::Ext4
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

fn mount_all(
    run: &mut Run,
    plan: &Plan,
    nodes: &[PathBuf],
    root: &Path,
) -> Result<Option<StagedEsp>, String> {
    fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    let mut specs = Vec::new();
    for (p, node) in plan.partitions.iter().zip(nodes) {
        let Some(fstype) = mount::fstype(p.part.format) else {
            continue;
        };
        if p.part.format == Format::Btrfs && !p.subvolumes.is_empty() {
            make_subvolumes(node, p, root)?;
            for s in &p.subvolumes {
                let (name, at) = s.split_once('=').expect("name=mount");
                specs.push(mount::MountSpec {
                    device: node.clone(),
                    at: at.to_string(),
                    fstype,
                    options: format!("subvol={name}"),
                });
            }
        } else if let Some(at) = &p.mount {
            specs.push(mount::MountSpec {
                device: node.clone(),
                at: at.clone(),
                fstype,
                options: String::new(),
            });
        }
    }
    mount::mount_order(&mut specs);
    if specs.first().map(|s| s.at.as_str()) != Some("/") {
        return Err("the layout mounts nothing at /".into());
    }
    let mut staged = None;
    for s in &specs {
        if s.fstype == "vfat" && !vfat_available() {
            run.report.log(format!(
                "this kernel cannot mount FAT: {} is staged on a tmpfs and written into the ESP after the boot loader step",
                s.at
            ));
            let at = mount::under(root, &s.at);
            fs::create_dir_all(&at).map_err(|e| e.to_string())?;
            nix::mount::mount(
                Some("tmpfs"),
                &at,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("mode=0755"),
            )
            .map_err(|e| format!("mounting a tmpfs on {}: {}", at.display(), e.desc()))?;
            let number = plan
                .partitions
                .iter()
                .zip(nodes)
                .find(|(_, n)| **n == s.device)
                .map(|(p, _)| p.part.number)
                .expect("the node is one of ours");
            staged = Some(StagedEsp { number });
            continue;
        }
        mount::mount_one(root, s).map_err(|e| e.to_string())?;
    }
    Ok(staged)
}

fn vfat_available() -> bool {
    if bootloader::kernel_has("vfat") {
        return true;
    }
    let _ =
        std::process::Command::new(format::tool("modprobe").unwrap_or_else(|_| "modprobe".into()))
            .arg("vfat")
            .output();
    bootloader::kernel_has("vfat")
}

fn make_subvolumes(node: &Path, p: &PlannedPartition, root: &Path) -> Result<(), String> {
    let top = root.with_extension("btrfs-top");
    fs::create_dir_all(&top).map_err(|e| e.to_string())?;
    let spec = mount::MountSpec {
        device: node.to_path_buf(),
        at: "/".into(),
        fstype: "btrfs",
        options: String::new(),
    };
    mount::mount_one(&top, &spec).map_err(|e| e.to_string())?;
    let btrfs = format::tool("btrfs").map_err(|e| e.to_string());
    let res = btrfs.and_then(|btrfs| {
        for s in &p.subvolumes {
            let (name, _) = s.split_once('=').expect("name=mount");
            let path = top.join(name);
            format::run(
                &btrfs,
                &["subvolume", "create", path.to_str().unwrap_or_default()],
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    mount::unmount_all(&top).map_err(|e| e.to_string())?;
    let _ = fs::remove_dir(&top);
    res
}

fn write_staged_esp(
    disk: &LockedDisk,
    plan: &Plan,
    esp: &StagedEsp,
    root: &Path,
) -> std::io::Result<()> {
    let p = plan
        .partitions
        .iter()
        .find(|p| p.part.number == esp.number)
        .expect("the staged partition is planned");
    let at = mount::under(root, p.mount.as_deref().unwrap_or("/boot"));
    let mut tree = media::fat32::Tree::new();
    add_tree(&mut tree, &at, "")?;
    let block = plan.disk.logical_block_size;
    let g = media::fat32::geometry_for(&tree, p.bytes).ok_or_else(|| {
        std::io::Error::other(format!(
            "the boot files do not fit the {} ESP",
            human(p.bytes)
        ))
    })?;
    let opts = media::fat32::VolumeOptions {
        label: p.part.label.to_uppercase(),
        volume_id: (crate::report::now() as u32) ^ 0x5a5a_5a5a,
        hidden_sectors: (p.part.first_lba * block / 512) as u32,
        timestamp: crate::report::now(),
    };
    media::fat32::write(
        disk.file(),
        p.part.first_lba * block,
        &g,
        &tree,
        &opts,
        &mut |_| {},
    )?;
    disk.file().sync_data()?;
    mount::unmount_all(&at)?;
    Ok(())
}

fn add_tree(tree: &mut media::fat32::Tree, dir: &Path, prefix: &str) -> std::io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(e.path())?;
        if meta.is_dir() {
            tree.add_dir(&path);
            add_tree(tree, &e.path(), &path)?;
        } else if meta.is_file() {
            tree.add_file(
                &path,
                media::fat32::Source::File {
                    path: e.path(),
                    size: meta.len(),
                },
            );
        } else {
            return Err(std::io::Error::other(format!(
                "/boot/{path} is neither a file nor a directory; FAT cannot hold it"
            )));
        }
    }
    Ok(())
}

/// The system profile as nixos-install leaves it: generation 1 and the `system` link, and
/// /etc/NIXOS, which marks a NixOS root.
fn set_profile(root: &Path, toplevel: &str) -> std::io::Result<()> {
    let profiles = root.join("nix/var/nix/profiles");
    fs::create_dir_all(&profiles)?;
    let replace = |link: &Path, to: &str| -> std::io::Result<()> {
        let _ = fs::remove_file(link);
        symlink(to, link)
    };
    replace(&profiles.join("system-1-link"), toplevel)?;
    replace(&profiles.join("system"), "system-1-link")?;
    // Nix keeps profiles alive through this root.
    let gcroots = root.join("nix/var/nix/gcroots");
    fs::create_dir_all(&gcroots)?;
    let profiles_root = gcroots.join("profiles");
    if fs::symlink_metadata(&profiles_root).is_err() {
        symlink("/nix/var/nix/profiles", profiles_root)?;
    }
    let etc = root.join("etc");
    fs::create_dir_all(&etc)?;
    fs::write(etc.join("NIXOS"), b"")?;
    Ok(())
}

/// Copies the host's extra files from the payload into the new root with their modes,
/// checking each against the manifest's hash. A target that would leave the root, or pass
/// through a symlink, is refused.
fn extra_files(source: &Source, host: &HostEntry, root: &Path) -> Result<(), String> {
    if host.extra_files.is_empty() {
        return Ok(());
    }
    let p = source.open().map_err(|e| e.to_string())?;
    for f in &host.extra_files {
        let rel = Path::new(&f.target);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) || f.target.is_empty() {
            return Err(format!(
                "extra file {:?}: the target must be a relative path without `..`",
                f.target
            ));
        }
        // Never more than the manifest's size (+1 to see a longer file): a medium or server
        // that sends without end cannot fill the memory.
        let bytes = p
            .read_capped(&f.source, f.size)
            .map_err(|e| format!("extra file {}: {e}", f.target))?;
        let found = Sha256Hash::of(&bytes);
        if bytes.len() as u64 != f.size || found.to_hex() != f.sha256.trim_start_matches("sha256:")
        {
            return Err(format!(
                "extra file {} ({}): its hash or size does not match the manifest; the payload is damaged or was tampered with",
                f.target, f.source
            ));
        }
        let dest = root.join(rel);
        let mut dir = root.to_path_buf();
        for c in rel.parent().into_iter().flat_map(|p| p.components()) {
            dir.push(c);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(format!(
                        "extra file {}: {} is not a directory",
                        f.target,
                        dir.display()
                    ))
                }
                Err(_) => {
                    fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?
                }
            }
        }
        let _ = fs::remove_file(&dest);
        fs::write(&dest, &bytes).map_err(|e| format!("writing {}: {e}", dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(f.mode))
            .map_err(|e| format!("setting the mode of {}: {e}", dest.display()))?;
    }
    Ok(())
}
