//! The steps that write, from Tear down to Finish, once the plan is confirmed: each a call
//! into `machine`'s mechanism with plain rows. The disks are held exclusively until the first
//! step that needs their partitions claimed by others (mdadm, cryptsetup, LVM, mkfs, mount);
//! everything mounted is unmounted by its guard on any error, and the caller then empties the
//! ESPs again and takes down what was built.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use machine::blockdev::{self, Hold, LockedDisk};
use machine::esp::EspSpot;
use machine::graph::Make;
use machine::mount::{self, Mounted};
use machine::stack::{self, Record};
use machine::{btrfs, format, partition, store, system};
use manifest::devices::Holder;
use manifest::document::HostEntry;
use manifest::profile::Filesystem;
use media::verify::{Closure, Pins};
use util::size::human;

use crate::direct;
use crate::keys::Keys;
use crate::plan::{direct_store, Plan};
use crate::report::{Outcome, Report};
use crate::source::Source;
use crate::step::{Fail, Run, Step};

/// Where the installed system keeps its install reports.
pub const TARGET_REPORTS_DIR: &str = "/var/log/autoinstall";

/// What is installed: from where, which host, where, and the closure as verified.
pub struct Job<'a> {
    pub source: &'a Source,
    pub host: &'a HostEntry,
    pub plan: &'a Plan,
    pub closure: &'a Closure,
    /// What the verify pass measured of each compressed file (none online: no verify pass).
    pub pins: Option<&'a Pins>,
    pub keys: &'a Keys,
    /// The fleet's recovery recipients, to escrow each LUKS volume's recovery key to.
    pub recovery_recipients: &'a [String],
    /// The fleet's Secure Boot keys, if it has any.
    pub secure_boot: Option<&'a manifest::document::SecureBootKeys>,
}

/// The plan's disks, held; in the plan's order.
pub struct Held {
    disks: Vec<LockedDisk>,
}

impl Held {
    /// Holds every disk of the plan exclusively (see blockdev::Hold): a disk someone else
    /// holds (a VM, ZFS, a mapper, RAID) is refused before anything is written.
    pub fn exclusive(plan: &Plan) -> std::io::Result<Held> {
        Held::open(plan, Hold::Exclusive)
    }

    /// Holds every disk of the plan by its lock alone (after a failure: arrays may still
    /// claim their partitions).
    pub fn shared(plan: &Plan) -> std::io::Result<Held> {
        Held::open(plan, Hold::Shared)
    }

    fn open(plan: &Plan, hold: Hold) -> std::io::Result<Held> {
        let disks = plan
            .devices
            .disks
            .iter()
            .map(|d| blockdev::open_locked(Path::new(&d.facts.path), hold))
            .collect::<std::io::Result<_>>()?;
        Ok(Held { disks })
    }

    /// The first of the plan's disks that holds data, and the offset where it showed (see
    /// `machine::blank`); None when every disk holds nothing.
    pub fn first_data(&self) -> std::io::Result<Option<(PathBuf, u64)>> {
        for d in &self.disks {
            if let Some(at) = machine::blank::first_data(d.file(), d.size()?)? {
                return Ok(Some((d.path().to_path_buf(), at)));
            }
        }
        Ok(None)
    }

    /// Zeroes the first MiB of partition `h` (what a signature at its start needs).
    pub fn wipe_start(&self, plan: &Plan, h: &Holder) -> std::io::Result<()> {
        let Holder::Partition { disk, partition } = h else {
            return Ok(());
        };
        let d = plan
            .devices
            .disks
            .iter()
            .find(|d| &d.name == disk)
            .expect("planned");
        let i = plan
            .devices
            .disks
            .iter()
            .position(|x| x.name == d.name)
            .expect("planned");
        let p = d
            .partitions
            .iter()
            .find(|p| &p.name == partition)
            .expect("planned");
        let start = p.first_lba * d.facts.logical_block_size;
        self.disks[i].wipe(start, p.bytes.min(1 << 20))
    }

    /// The disks, held by their locks alone from now on, so that `who` can claim their
    /// partitions.
    fn share(&mut self, run: &mut Run, step: Step, who: &str) -> Result<(), Fail> {
        if self.disks.iter().all(|d| d.hold() == Hold::Shared) {
            return Ok(());
        }
        run.report.log(format!(
            "the disks are held by their locks alone from here: {who} claims their partitions"
        ));
        let mut shared = Vec::new();
        for d in self.disks.drain(..) {
            let path = d.path().to_path_buf();
            shared.push(
                d.share()
                    .map_err(|e| Fail(step, format!("{}: {e}", path.display())))?,
            );
        }
        self.disks = shared;
        Ok(())
    }

    fn file_of(&self, disk: &str, plan: &Plan) -> &File {
        let i = plan
            .devices
            .disks
            .iter()
            .position(|d| d.name == disk)
            .expect("a planned disk");
        self.disks[i].file()
    }
}

/// Everything that writes: from Tear down to Finish. `held` are the disks, held exclusively
/// since the plan (or `None` when an earlier attempt's leftovers were still on them).
pub fn install(run: &mut Run, job: &Job, held: Option<Held>) -> Result<(), Fail> {
    let (opts, plan, host) = (run.opts, job.plan, job.host);
    let root = opts.root.clone();
    let record = Record::standard();

    run.step(Step::TearDown, |r| {
        let gone = mount::unmount_all(&root).map_err(|e| e.to_string())?;
        if !gone.is_empty() {
            r.report.log(format!(
                "unmounted an earlier attempt's {} mount(s) under {}",
                gone.len(),
                root.display()
            ));
        }
        for line in stack::take_down(&record).map_err(|e| e.to_string())? {
            let line = format!("earlier attempt: {line}");
            r.ui.say(&line);
            r.report.log(line);
        }
        Ok(())
    })?;
    let mut held = match held {
        Some(h) => h,
        None => run.step(Step::HoldDisk, |_| {
            Held::exclusive(plan).map_err(|e| format!("{e}; nothing was written"))
        })?,
    };

    let mut nodes: BTreeMap<Holder, PathBuf> = BTreeMap::new();
    run.step(Step::Partition, |r| {
        for (d, disk) in plan.devices.disks.iter().zip(&held.disks) {
            let path = &d.facts.path;
            if d.whole.is_some() {
                r.ui.say(&format!("erasing {path} (used whole)"));
                disk.forget_partitions()
                    .and_then(|_| disk.wipe_signatures())
                    .map_err(|e| format!("erasing {path}: {e}"))?;
                nodes.insert(
                    Holder::Disk {
                        disk: d.name.clone(),
                    },
                    PathBuf::from(path),
                );
                continue;
            }
            r.ui.say(&format!("partitioning {path}"));
            let made = partition::partition(
                disk,
                &d.partitions,
                d.facts.size,
                d.facts.logical_block_size,
                // The install marker only once the install has completed (Finish): a failed
                // one must not pass for this host installed.
                media::ids::random_uuid().map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("partitioning {path}: {e}"))?;
            for (p, node) in d.partitions.iter().zip(made) {
                let h = Holder::Partition {
                    disk: d.name.clone(),
                    partition: p.name.clone(),
                };
                nodes.insert(h, node);
            }
        }
        Ok(())
    })?;

    if !plan.devices.build.is_empty() {
        held.share(run, Step::Build, "mdadm, cryptsetup and LVM")?;
        run.step(Step::Build, |r| {
            for b in &plan.devices.build {
                let key = match b {
                    machine::graph::Build::Luks { name, .. } => job.keys.get(name),
                    _ => None,
                };
                stack::build(b, &mut nodes, key, &record).map_err(|e| e.to_string())?;
                if let Some(h) = b.creates() {
                    r.ui.say(&format!("built {h}"));
                }
                if let (machine::graph::Build::Luks { name, on, .. }, Some(key)) = (b, key) {
                    let k = plan
                        .luks_keys
                        .iter()
                        .find(|k| &k.name == name)
                        .expect("every LUKS volume has a key plan");
                    let device = nodes.get(on).expect("built on a node");
                    let (enrolled, escrowed) =
                        crate::unlock::enrol(k, device, key, job.recovery_recipients)?;
                    r.ui.say(&format!(
                        "enrolled {name}: unlocked by {}",
                        enrolled.unlocked_by
                    ));
                    r.report.unlock.push(enrolled);
                    r.report.recovery.extend(escrowed);
                }
            }
            Ok(())
        })?;
    }

    // The store's file system, when it is ext4, is written directly with the closure in it
    // (machine::store): no mkfs, and no file created through the kernel.
    let store_node = nodes.get(&plan.devices.store.holder).cloned();
    let store_bytes = match &store_node {
        Some(n) => device_bytes(n).map_err(|e| Fail(Step::Format, e))?,
        None => 0,
    };
    let direct = if opts.kernel_copy {
        None
    } else {
        direct_store(plan, store_bytes)
    };
    let is_direct = |m: &Make| direct.is_some() && m.holder == plan.devices.store.holder;
    let external = plan
        .devices
        .make
        .iter()
        .any(|m| !matches!(m.format, Filesystem::Vfat | Filesystem::None) && !is_direct(m));
    if external {
        held.share(run, Step::Format, "mkfs")?;
    }
    run.step(Step::Format, |r| {
        for m in &plan.devices.make {
            let node = &nodes[&m.holder];
            if is_direct(m) {
                r.ui.say(&format!(
                    "{} is written as ext4 with the closure in it",
                    node.display()
                ));
                continue;
            }
            r.ui.say(&format!(
                "formatting {} as {}",
                node.display(),
                m.format.name()
            ));
            let res = if m.format == Filesystem::Vfat {
                esp_spot(&held, plan, m).and_then(|(file, spot)| {
                    machine::esp::format_esp(&file, &spot).map_err(|e| e.to_string())
                })
            } else {
                format::mkfs(m, node).map_err(|e| e.to_string())
            };
            res.map_err(|e| format!("formatting {}: {e}", node.display()))?;
            if !m.subvolumes.is_empty() {
                let names: Vec<&str> = m.subvolumes.iter().map(String::as_str).collect();
                btrfs::create_subvolumes(node, &names, &root.with_extension("btrfs-top"))
                    .map_err(|e| format!("making subvolumes on {}: {e}", node.display()))?;
            }
        }
        Ok(())
    })?;

    let specs = mount::mount_specs(&plan.devices.mounts, &nodes)
        .map_err(|e| Fail(Step::Mount, e.to_string()))?;
    let (mounted, staged) = match (&direct, &store_node) {
        (Some(store_dir), Some(node)) => {
            let s = &plan.devices.store;
            let made = plan.devices.make.iter().find(|m| m.holder == s.holder);
            let target = direct::StoreFs {
                device: node,
                bytes: store_bytes,
                label: made.and_then(|m| m.label.as_deref()).unwrap_or(""),
                uuid: made.and_then(|m| m.uuid.as_deref()),
                store_dir: store_dir.clone(),
            };
            run.step(Step::CopyClosure, |r| copy_closure(r, job, Some(&target)))?;
            held.share(run, Step::Mount, "mount")?;
            run.step(Step::Mount, |r| {
                let m = mount_all(r, &specs)?;
                let n = store::move_into_store(&root)?;
                r.report.log(format!(
                    "moved {n} store paths into /nix/store (indexed by the kernel)"
                ));
                Ok(m)
            })?
        }
        _ => {
            held.share(run, Step::Mount, "mount")?;
            let m = run.step(Step::Mount, |r| mount_all(r, &specs))?;
            run.step(Step::CopyClosure, |r| copy_closure(r, job, None))?;
            m
        }
    };

    run.step(Step::Register, |_| {
        nixstore::register::register(&root, &job.closure.path_infos()).map_err(|e| e.to_string())
    })?;
    run.step(Step::Profile, |_| {
        system::set_profile(&root, &host.toplevel)
            .map_err(|e| format!("setting the system profile: {e}"))
    })?;
    run.step(Step::ExtraFiles, |_| {
        extra_files(job.source, host, &job.keys.sealed_files, &root)
    })?;
    if opts.bootloader && host.bootable {
        run.step(Step::Bootloader, |r| {
            r.ui.say("installing the boot loader (switch-to-configuration boot)");
            crate::boot::install_bootloader(r, plan, &root, &host.toplevel)?;
            if let Some(device) = &staged {
                write_staged_esp(&held, plan, &nodes, device, &root)
                    .map_err(|e| format!("writing the ESP: {e}"))?;
            }
            Ok(())
        })?;
    } else if !host.bootable {
        run.report
            .log("bootloader: none (the host is a bare closure: bootable = false)");
    } else {
        run.report.log("bootloader: skipped (--no-bootloader)");
    }

    run.step(Step::Finish, |r| {
        // The fleet's Secure Boot keys, before anything says this install is done: a firmware
        // that refuses them fails the install (the disks then have no boot entry).
        match (&plan.secure_boot_keys, job.secure_boot) {
            (Some(crate::firmware_keys::KeysPlan::Enrol), Some(keys)) => {
                let done = crate::firmware_keys::enrol(keys, job.source)?;
                r.ui.say(&done);
                r.report.secure_boot_keys = Some(done);
            }
            (Some(crate::firmware_keys::KeysPlan::Skip(why)), _) => {
                r.report.secure_boot_keys = Some(format!("not enrolled: {why}"));
            }
            _ => {}
        }
        // The installed system keeps its own install report (and it is the only copy when the
        // payload is on a read-only ISO). Written before the unmount: the finish step itself
        // is not in it.
        let mut kept = r.report.clone();
        kept.finish(Outcome::Installed);
        write_target_report(&root, &kept)
            .map_err(|e| format!("writing the report to {TARGET_REPORTS_DIR}: {e}"))?;
        mounted.sync_and_unmount().map_err(|e| e.to_string())?;
        // Arrays, LUKS and volume groups are stopped, so that every write has gone through
        // them to the disks before the disks are flushed.
        for line in stack::take_down(&record).map_err(|e| e.to_string())? {
            r.report.log(line);
        }
        for d in &held.disks {
            d.file()
                .sync_all()
                .map_err(|e| format!("flushing {}: {e}", d.path().display()))?;
        }
        // Now the disks say they hold this host from this fleet (see plan::already_installed).
        for (d, disk) in plan.devices.disks.iter().zip(&held.disks) {
            if d.whole.is_none() {
                media::gpt::set_disk_guid(
                    disk.file(),
                    d.facts.logical_block_size,
                    plan.marker(&d.name),
                )
                .map_err(|e| format!("marking {}: {e}", d.facts.path))?;
            }
        }
        let next = crate::boot::boot_next(plan);
        r.ui.say(&format!("next boot: {next}"));
        r.report.boot_next = Some(next);
        Ok(())
    })
}

/// The size of a block device (or file), from its end.
fn device_bytes(node: &Path) -> Result<u64, String> {
    use std::io::Seek;
    File::open(node)
        .and_then(|mut f| f.seek(std::io::SeekFrom::End(0)))
        .map_err(|e| format!("reading the size of {}: {e}", node.display()))
}

/// Where the ESP `m` is written: a partition through its held disk (at its offset); an array
/// through its own device.
pub fn esp_spot(held: &Held, plan: &Plan, m: &Make) -> Result<(File, EspSpot), String> {
    let volume_id = machine::esp::volume_id(m.uuid.as_deref()).map_err(|e| e.to_string())?;
    let label = m.label.clone().unwrap_or_default();
    if let Holder::Partition { disk, partition } = &m.holder {
        let d = plan
            .devices
            .disks
            .iter()
            .find(|d| &d.name == disk)
            .expect("planned");
        let p = d
            .partitions
            .iter()
            .find(|p| &p.name == partition)
            .expect("planned");
        let block = d.facts.logical_block_size;
        let file = held
            .file_of(disk, plan)
            .try_clone()
            .map_err(|e| e.to_string())?;
        return Ok((
            file,
            EspSpot {
                start: p.first_lba * block,
                len: p.bytes,
                block,
                label,
                volume_id,
            },
        ));
    }
    let node = m
        .holder
        .stable_path()
        .ok_or("an ESP on a whole disk is not supported")?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node)
        .map_err(|e| format!("opening {node}: {e}"))?;
    let len = device_bytes(Path::new(&node))?;
    Ok((
        file,
        EspSpot {
            start: 0,
            len,
            block: 512,
            label,
            volume_id,
        },
    ))
}

fn mount_all(
    r: &mut Run,
    specs: &[mount::MountSpec],
) -> Result<(Mounted, Option<PathBuf>), String> {
    let root = r.opts.root.clone();
    mount::mount_all(&root, specs, &mut |line| r.report.log(line)).map_err(|e| e.to_string())
}

/// Copy closure, directly into the store's ext4 file system (`target`) or through the kernel
/// into the mounted root.
fn copy_closure(r: &mut Run, job: &Job, target: Option<&direct::StoreFs>) -> Result<(), String> {
    let (opts, closure, source) = (r.opts, job.closure, job.source);
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
            / crate::online::Retry::default().min_rate as f64;
        site.set_deadline(
            std::time::Instant::now()
                + std::time::Duration::from_secs(600)
                + std::time::Duration::from_secs_f64(pace),
        );
    }
    let ui = r.ui;
    let progress = |n| {
        bar.inc(n);
        ui.advance(n);
    };
    let res = match target {
        Some(t) => direct::write(source, closure, t, opts.jobs, job.pins, &progress),
        None => {
            nixstore::register::prepare_root(&opts.root).map_err(|e| e.to_string())?;
            let store = opts.root.join("nix/store");
            crate::copy::copy(source, closure, &store, opts.jobs, job.pins, &progress)
        }
    };
    bar.finish_and_clear();
    if let Source::Http(site) = source {
        for line in site.retried() {
            r.report.log(format!("retried: {line}"));
        }
    }
    res
}

/// Writes what the boot loader step left in the staged ESP (a tmpfs at its mount point)
/// into the ESP on `device`, then unmounts the tmpfs.
fn write_staged_esp(
    held: &Held,
    plan: &Plan,
    nodes: &BTreeMap<Holder, PathBuf>,
    device: &Path,
    root: &Path,
) -> Result<(), String> {
    let m = plan
        .devices
        .make
        .iter()
        .find(|m| {
            m.format == Filesystem::Vfat
                && nodes.get(&m.holder).map(PathBuf::as_path) == Some(device)
        })
        .expect("the staged ESP is planned");
    let at = plan
        .devices
        .mounts
        .iter()
        .find(|x| x.holder.as_ref() == Some(&m.holder))
        .map_or("/boot", |x| x.mountpoint.as_str());
    let at = mount::under(root, at);
    let (file, spot) = esp_spot(held, plan, m)?;
    machine::esp::write_staged(&file, &spot, &at, crate::report::now())
        .map_err(|e| e.to_string())?;
    mount::unmount_all(&at).map(drop).map_err(|e| e.to_string())
}

fn write_target_report(root: &Path, report: &Report) -> std::io::Result<()> {
    let dir = root.join(TARGET_REPORTS_DIR.trim_start_matches('/'));
    std::fs::create_dir_all(&dir)?;
    let stem = report.file_stem();
    std::fs::write(dir.join(format!("{stem}.json")), report.to_json())?;
    std::fs::write(
        dir.join(format!("{stem}.log")),
        report.log.join("\n") + "\n",
    )
}

/// Copies the host's extra files into the new root with their modes: from the payload,
/// checking each against the manifest's hash and size, and those of the opened sealed
/// secrets.
fn extra_files(
    source: &Source,
    host: &HostEntry,
    sealed: &[secrets::File],
    root: &Path,
) -> Result<(), String> {
    for f in sealed {
        system::write_file(root, &f.target, &f.data, f.mode)
            .map_err(|e| format!("extra file {e}"))?;
    }
    for f in &host.extra_files {
        let what = format!("extra file {}", f.target);
        let bytes = source.read_checked(&f.source, f.size, &f.sha256, &what)?;
        system::write_file(root, &f.target, &bytes, f.mode)
            .map_err(|e| format!("extra file {e}"))?;
    }
    Ok(())
}
