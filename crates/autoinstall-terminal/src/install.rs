//! The state machine of DESIGN §4: Identify → Load payload → Select host → Read closure →
//! Plan → Verify → Confirm, here (nothing is written to any disk before Confirm ends), then
//! Tear down → Hold disk → Partition → Format → Copy closure → Mount → Register → Profile →
//! Extra files → Boot loader → Finish (`write`), then the report. Each step is timed and
//! logged (`step`); the first error stops the run and names its step, and the step says
//! whether that was a refusal or a failure.

use std::path::{Path, PathBuf};

use machine::blockdev;
use manifest::devices::Holder;
use manifest::document::{host_lookup_path, limits, Expected, HostEntry, Manifest, MANIFEST_PATH};
use manifest::profile::Filesystem;
use manifest::{AfterInstall, Reinstall, Verify};
use media::verify as verifier;

use crate::choose::{self, Choice, Overrides};
use crate::identify::Identity;
use crate::online::{Retry, Site};
use crate::plan::{make_plan, Plan};
use crate::report::{DiskSummary, Outcome, PartitionSummary, Report, StepError};
use crate::source::{self, Source};
use crate::step::{Fail, Run, Step};
use crate::ui::Ui;
use crate::write::Held;

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
    /// `--disk`: whole-disk nodes or by-id links, `NAME=DEVICE` for the layout's disk NAME or
    /// plain in the layout's disk order; they win over the host's `disk`, the layout's devices
    /// and the rules.
    pub disks: Vec<String>,
    pub dry_run: bool,
    /// `--after-kexec` (with `dry_run`): plan for the installer that kexec will start here,
    /// the running system's own use of the disks not counted.
    pub after_kexec: bool,
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
    /// `--verify`: when the payload is checked, over the stick's own `verify`.
    pub verify: Option<Verify>,
    /// `--secrets-passphrase-file`: the fleet's passphrase for sealed secrets, instead of
    /// asking on the console.
    pub secrets_passphrase: Option<String>,
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

/// How a run ended, for the exit status, the report and the finish action.
#[derive(Debug)]
pub struct Ended {
    pub report: Report,
    pub source: Option<Source>,
    pub plan: Option<Plan>,
    pub after_install: Option<AfterInstall>,
}

/// How far a run got: what it found on the way, and how it ended.
struct Reached {
    source: Option<Source>,
    plan: Option<Plan>,
    after_install: Option<AfterInstall>,
    outcome: Result<Outcome, Fail>,
}

/// Runs the installer from Load payload on (Identify has happened: `identity`).
pub fn run(opts: &Options, ui: &Ui, identity: Identity) -> Ended {
    let mut run = Run {
        opts,
        ui,
        report: Report::new(identity),
    };
    let reached = go(&mut run);
    let outcome = match reached.outcome {
        Ok(o) => o,
        Err(Fail(step, message)) => {
            run.report.error = Some(StepError { step, message });
            if step.before_any_write() {
                Outcome::Refused
            } else {
                Outcome::Failed
            }
        }
    };
    run.report.finish(outcome);
    run.ui.status(|s| {
        s.outcome = Some(format!("{outcome:?}").to_lowercase());
        s.step = None;
        s.prompt = None;
    });
    Ended {
        report: run.report,
        source: reached.source,
        plan: reached.plan,
        after_install: reached.after_install,
    }
}

fn go(run: &mut Run) -> Reached {
    let mut reached = Reached {
        source: None,
        plan: None,
        after_install: None,
        outcome: Ok(Outcome::Failed),
    };
    reached.outcome = steps(run, &mut reached);
    reached
}

/// The steps, in order; what they find goes into `reached` as they find it.
fn steps(run: &mut Run, reached: &mut Reached) -> Result<Outcome, Fail> {
    let opts = run.opts;
    if let Some(s) = &opts.overrides.serial {
        run.report.serial = Some(s.clone());
    }
    // The source is kept as soon as it is known: a refusal while reading its manifest (an
    // unsigned site, a serial it does not know) still sends its report there.
    let found_source = &mut reached.source;
    let (source, manifest) = run.step(Step::LoadPayload, |r| {
        let source = match (&opts.payload, &opts.url) {
            (Some(p), _) => source::from_arg(p).map_err(|e| e.to_string())?,
            (None, Some(url)) => Source::Http(Site::new(
                url,
                Retry {
                    attempts: opts.retries,
                    ..Retry::default()
                },
                opts.ca_pem.as_deref(),
            )?),
            (None, None) => source::find().map_err(|e| e.to_string())?,
        };
        *found_source = Some(source.clone());
        let manifest = match &source {
            Source::Http(site) => online_manifest(r, site)?,
            _ => verifier::read_manifest(
                source.open().map_err(|e| e.to_string())?.as_ref(),
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
    crate::remote::start(run, &manifest.ssh_authorized_keys);
    reached.source = Some(source.clone());
    run.ui.say(&format!(
        "payload: {} ({} host{})",
        source.describe(),
        manifest.hosts.len(),
        if manifest.hosts.len() == 1 { "" } else { "s" }
    ));

    let (host, chosen_by) = match run.step(Step::SelectHost, |r| select_host(r, &manifest))? {
        Selected::Host(host, why) => (host, why),
        Selected::Enrol(why) => {
            enrol(run, &manifest, &source, &why);
            reached.after_install = Some(AfterInstall::Poweroff);
            return Ok(Outcome::Enrolled);
        }
    };
    run.report.host = Some(host.name.clone());
    run.report.chosen_by = Some(chosen_by.clone());
    let serial = run.report.serial.clone();
    run.ui.status(|s| {
        s.host = Some(host.name.clone());
        s.serial = serial;
    });
    run.report.toplevel = Some(host.toplevel.clone());

    let closure = run.step(Step::ReadClosure, |_| {
        verifier::load_closure(&source, host, &opts.trusted_keys)
    })?;
    run.report.closure_paths = closure.infos.len();
    run.report.closure_nar_bytes = closure.nar_bytes;

    let (plan, held) = run.step(Step::Plan, |r| {
        let serial = r.report.serial.clone();
        let plan = make_plan(
            opts, r.ui, serial, &source, &manifest, host, &chosen_by, &closure,
        )?;
        // Held exclusively from here to the end (see blockdev::Hold): a disk someone else
        // holds (a VM, ZFS, a mapper, RAID) is refused now, before anything is written.
        // Disks with an earlier attempt's leftovers are held once Tear down removed them.
        // After kexec (--after-kexec), what holds the disks now is gone.
        let held = match (opts.dry_run, plan.earlier_attempt.is_empty()) {
            (_, false) => None,
            (true, true) if opts.after_kexec => None,
            (true, true) => {
                for d in &plan.devices.disks {
                    blockdev::check_not_held(Path::new(&d.facts.path))
                        .map_err(|e| format!("{e}; nothing was touched"))?;
                }
                None
            }
            (false, true) => {
                Some(Held::exclusive(&plan).map_err(|e| format!("{e}; nothing was touched"))?)
            }
        };
        Ok((plan, held))
    })?;
    let summary = |f: &machine::layout::DiskFacts| DiskSummary {
        path: f.path.clone(),
        model: f.model.clone(),
        serial: f.serial.clone(),
        size: f.size,
        transport: f.transport.clone(),
    };
    run.report.disk = Some(summary(plan.first_disk()));
    run.report.disks = plan
        .devices
        .disks
        .iter()
        .map(|d| summary(&d.facts))
        .collect();
    run.report.partitions = plan
        .devices
        .disks
        .iter()
        .flat_map(|d| {
            d.partitions.iter().map(|p| PartitionSummary {
                disk: d.facts.path.clone(),
                number: p.number,
                label: p.label.clone(),
                holds: p.holds.clone(),
                bytes: p.bytes,
            })
        })
        .collect();
    reached.plan = Some(plan.clone());
    run.ui.status(|s| s.plan = Some(plan.describe()));
    if opts.dry_run {
        return Ok(Outcome::DryRun);
    }
    if plan.already_installed {
        if let Some(after) = keep_installed(run, &manifest, &plan) {
            reached.after_install = Some(after);
            return Ok(Outcome::AlreadyInstalled);
        }
    }

    let pins = run.step(Step::Verify, |r| {
        if source.is_online() {
            // Reading the closure twice would fetch it twice. Its narinfos' signatures were
            // checked (read-closure); each NAR is checked in full as it is unpacked, and a bad
            // one stops the install before any boot entry exists.
            r.report.log(
                "online: every NAR is checked (FileHash, NarHash, structure) while it is unpacked",
            );
            r.report.verify = Some(Verify::Streaming);
            return Ok(None);
        }
        let (when, why) = when_to_verify(opts, &manifest, held.as_ref())?;
        r.report.verify = Some(when);
        if when == Verify::Streaming {
            // The narinfos' signatures were checked (read-closure); each NAR's hash, size and
            // structure are checked in full as it is written, as online.
            r.report.log(format!(
                "{why}: each NAR is checked in full (hash, size, structure) as it is written; \
                 a bad one fails the install with no boot entry"
            ));
            return Ok(None);
        }
        r.report.log(format!(
            "{why}: the whole closure is checked before any disk is touched"
        ));
        let bar = r.ui.bytes_bar(closure.file_bytes, "verify");
        let res = verifier::check_nars(&source, &closure.infos, opts.jobs, &|n| {
            bar.inc(n);
            r.ui.advance(n);
        });
        bar.finish_and_clear();
        res.map(Some).map_err(|e| {
            format!(
                "the payload is damaged or was tampered with; nothing was touched (checked \
                 first, as {why}): {e}"
            )
        })
    })?;

    run.step(Step::Confirm, |r| {
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

    let keys = run.step(Step::Keys, |r| {
        crate::keys::gather(&plan, host, &source, opts, r.ui)
    })?;
    let job = crate::write::Job {
        source: &source,
        host,
        plan: &plan,
        closure: &closure,
        pins: pins.as_ref(),
        keys: &keys,
        recovery_recipients: &manifest.recovery_recipients,
        secure_boot: manifest.secure_boot.as_ref(),
    };
    let result = crate::write::install(run, &job, held);
    drop(keys);
    if result.is_err() {
        // Whatever failed (and whatever was mounted is unmounted by now), the disks must not
        // boot a half-installed system, and what was built is taken down.
        if empty_esps(&plan).is_ok() {
            run.report
                .log("the ESP was emptied again: the disks have no boot entry");
        }
        match machine::stack::take_down(&machine::stack::Record::standard()) {
            Ok(lines) => lines.into_iter().for_each(|l| run.report.log(l)),
            Err(e) => run.report.log(format!("taking down what was built: {e}")),
        }
    }
    result?;
    reached.after_install = Some(manifest.after_install);
    Ok(Outcome::Installed)
}

/// When the payload is checked, and why, for the report: `--verify`, else the stick's
/// `verify`; `auto` streams only where every disk of the plan holds nothing (machine::blank),
/// so a damaged stick can never cost a machine its old system. Disks not held yet (an
/// earlier attempt's leftovers) hold data by definition. A disk that cannot be read stops
/// the install here, before anything is written.
fn when_to_verify(
    opts: &Options,
    m: &Manifest,
    held: Option<&Held>,
) -> Result<(Verify, String), String> {
    let from = if opts.verify.is_some() {
        "--verify"
    } else {
        "verify"
    };
    let when = opts.verify.unwrap_or(m.verify);
    Ok(match when {
        Verify::First | Verify::Streaming => (when, format!("{from} = {}", when.name())),
        Verify::Auto => match held {
            None => (
                Verify::First,
                "an earlier attempt left data on the disks".into(),
            ),
            Some(held) => match held.first_data().map_err(|e| {
                format!("reading the disks to see whether they hold data: {e}; nothing was touched")
            })? {
                Some((disk, at)) => (
                    Verify::First,
                    format!("{} holds data (byte {at})", disk.display()),
                ),
                None => (Verify::Streaming, "the disks hold nothing".into()),
            },
        },
    })
}

/// The first disk already holds this host from this fleet (a stick left in, booted again):
/// reinstalled only as the stick says (`reinstall`: always; never; ask, where only a `y`
/// within the confirmation's countdown reinstalls). Not reinstalled, the installed system is
/// made the firmware's next boot and the stick's after-install action follows, a reboot
/// becoming a power-off when the next boot could not be set, so that a stick left in never
/// loops. Returns that action, or `None` to reinstall.
fn keep_installed(run: &mut Run, m: &Manifest, plan: &Plan) -> Option<AfterInstall> {
    let what = format!(
        "{} already holds {} installed from this fleet",
        plan.first_disk().path,
        plan.host
    );
    let policy = format!("{:?}", m.reinstall).to_lowercase();
    let again = match m.reinstall {
        Reinstall::Always => true,
        Reinstall::Never => false,
        Reinstall::Ask => run.ui.yes_within(
            &format!("{what}. Erase it and install again?"),
            m.confirm_seconds,
        ),
    };
    if again {
        run.report
            .log(format!("{what}: installing again (reinstall = {policy})"));
        return None;
    }
    let next = crate::boot::boot_next(plan);
    run.ui.say(&format!(
        "{what}: not installed again (reinstall = {policy}); next boot: {next}"
    ));
    run.report.log(format!("{what}: not installed again"));
    run.report.boot_next = Some(next.clone());
    Some(match m.after_install {
        AfterInstall::Reboot if next.starts_with("not set") => {
            run.ui.say("the next boot could not be set: powering off rather than booting this stick again (remove it)");
            AfterInstall::Poweroff
        }
        a => a,
    })
}

/// Formats the plan's ESPs afresh (empty), so that a failed install leaves no boot entry. An
/// ESP on an array has its members' starts wiped instead (metadata 1.0 keeps the FAT there,
/// where the firmware reads it).
fn empty_esps(plan: &Plan) -> std::io::Result<()> {
    let mut held: Option<crate::write::Held> = None;
    for m in plan
        .devices
        .make
        .iter()
        .filter(|m| m.format == Filesystem::Vfat)
    {
        let h = match &mut held {
            Some(h) => h,
            None => held.insert(crate::write::Held::shared(plan)?),
        };
        if matches!(m.holder, Holder::Partition { .. }) {
            let (file, spot) = crate::write::esp_spot(h, plan, m).map_err(std::io::Error::other)?;
            machine::esp::format_esp(&file, &spot)?;
            continue;
        }
        for b in &plan.devices.build {
            if let machine::graph::Build::Md { members, .. } = b {
                if b.creates().as_ref() == Some(&m.holder) {
                    for member in members {
                        h.wipe_start(plan, member)?;
                    }
                }
            }
        }
    }
    Ok(())
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
    let read = source.open().and_then(|p| {
        verifier::read_manifest(p.as_ref(), &path, cap, &opts.trusted_keys, &expected)
    });
    read.map_err(|e| match serial {
        Some(s) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "serial {s} is not in the fleet at {} ({e}); nothing was touched",
            site.base()
        ),
        _ => format!("{e}; nothing was touched"),
    })
}

/// What Select host found: a host to install, or a machine to enrol.
enum Selected<'m> {
    Host(&'m HostEntry, String),
    Enrol(String),
}

/// An unknown machine under `enrol`: its report (with its inventory) goes to the stick as a
/// pending machine, with the disk the stick's default rules would install it on; nothing is
/// touched, and the machine powers off.
fn enrol(run: &mut Run, m: &Manifest, source: &Source, why: &str) {
    let layout = m
        .enrol_layout
        .as_ref()
        .expect("checked when the manifest was read");
    let named = &run.opts.disks;
    let disk = crate::plan::machine_disks(run.opts, source, named).and_then(|(facts, _)| {
        let needs = machine::graph::disk_needs(layout, 0);
        machine::layout::assign_disks(layout, &facts, named, &needs).map_err(|e| e.to_string())
    });
    let pending = match disk {
        Ok(a) => {
            let d = &a[0].facts;
            crate::report::Pending {
                disk: Some(d.by_id.first().cloned().unwrap_or_else(|| d.path.clone())),
                why: format!("{}: {}", d.describe(), a[0].why),
            }
        }
        Err(e) => crate::report::Pending {
            disk: None,
            why: e.replace('\n', " "),
        },
    };
    run.ui.say(&format!(
        "{why}: enrolled as a pending machine (disk: {}); nothing was touched",
        pending.disk.as_deref().unwrap_or("none fits")
    ));
    run.report.log(format!("enrolled: {why}"));
    run.report.pending = Some(pending);
}

fn select_host<'m>(run: &mut Run, m: &'m Manifest) -> Result<Selected<'m>, String> {
    let id = &run.report.identity;
    let choice = choose::choose(
        m,
        id.serial.as_deref(),
        id.serial_rejected.as_deref(),
        &run.opts.overrides,
    );
    let selected = match choice {
        Choice::Host { host, why } => Ok(Selected::Host(host, why)),
        Choice::Enrol { why } => Ok(Selected::Enrol(why)),
        Choice::Refuse { why } => Err(why),
        Choice::Ask { why } => {
            let items: Vec<String> = m
                .hosts
                .iter()
                .map(|h| format!("{:<24} {}", h.name, h.serials.join(", ")))
                .collect();
            let title = format!("{why}.\nChoose the host to install on this machine:");
            match run.ui.menu(&title, &items) {
                Some(i) => Ok(Selected::Host(&m.hosts[i], format!("{why}; chosen from the menu"))),
                None if run.ui.interactive => Err(format!("{why}; no host was chosen from the menu; nothing was touched")),
                None => Err(format!("{why}; the stick says to ask, but there is no terminal to ask on; nothing was touched (run with --host NAME)")),
            }
        }
    }?;
    if let Selected::Host(host, _) = &selected {
        choose::runs_here(host, &choose::machine_platform())?;
    }
    Ok(selected)
}
