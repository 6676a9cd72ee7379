//! The steps that write, from Tear down to Finish, once the plan is confirmed: each a call
//! into `machine`'s mechanism with plain rows. The disk is held exclusively until the first
//! step that needs its partitions claimed by others (mkfs, mount); everything mounted is
//! unmounted by its guard on any error, and the caller then empties the ESP again.

use std::path::{Path, PathBuf};

use machine::blockdev::{self, Hold, LockedDisk};
use machine::esp::StagedEsp;
use machine::mount::{self, FsRow, Mounted};
use machine::{bootloader, format, partition, store, system};
use manifest::document::HostEntry;
use manifest::profile::Filesystem;
use media::verify::{Closure, Pins};
use util::size::human;

use crate::direct;
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
}

/// Everything that writes: from Tear down to Finish. `held` is the disk, held exclusively
/// since the plan (or `None` when an earlier attempt's mounts were still on it).
pub fn install(run: &mut Run, job: &Job, held: Option<LockedDisk>) -> Result<(), Fail> {
    let (opts, plan, host) = (run.opts, job.plan, job.host);
    let root = opts.root.clone();
    let disk_path = PathBuf::from(&plan.disk.path);
    let block = plan.disk.logical_block_size;

    run.step(Step::TearDown, |r| {
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
    let mut disk = match held {
        Some(d) => d,
        None => run.step(Step::HoldDisk, |_| {
            blockdev::open_locked(&disk_path, Hold::Exclusive)
                .map_err(|e| format!("{e}; nothing was written"))
        })?,
    };

    let nodes = run.step(Step::Partition, |r| {
        r.ui.say(&format!("partitioning {}", disk_path.display()));
        let parts: Vec<_> = plan.partitions.iter().map(|p| p.part.clone()).collect();
        partition::partition(&disk, &parts, plan.disk.size, block)
            .map_err(|e| format!("partitioning {}: {e}", disk_path.display()))
    })?;

    // The partition that holds the store, when it is ext4, is written directly with the
    // closure in it (machine::store): no mkfs, and no file created through the kernel.
    let direct = if opts.kernel_copy {
        None
    } else {
        direct_store(plan)
    };
    // mkfs and mount claim the partitions they work on, which the kernel refuses while the
    // whole disk is held exclusively: from the first of them on, the lock alone holds it.
    let external_mkfs = plan.partitions.iter().enumerate().any(|(i, p)| {
        !matches!(p.part.format, Filesystem::Vfat | Filesystem::None)
            && direct.as_ref().is_none_or(|(d, _)| *d != i)
    });
    if external_mkfs {
        disk = share(run, disk, Step::Format, "mkfs")?;
    }
    run.step(Step::Format, |r| {
        for (i, (p, node)) in plan.partitions.iter().zip(&nodes).enumerate() {
            let label = &p.part.label;
            if direct.as_ref().is_some_and(|(d, _)| *d == i) {
                let what = format!(
                    "{} ({label}) is written as ext4 with the closure in it",
                    node.display()
                );
                r.ui.say(&what);
                continue;
            }
            r.ui.say(&format!(
                "formatting {} ({label}) as {}",
                node.display(),
                p.part.format.name()
            ));
            let res = match p.part.format {
                Filesystem::Vfat => machine::esp::format_esp(
                    disk.file(),
                    p.part.first_lba * block,
                    p.bytes,
                    block,
                    label,
                ),
                f => format::mkfs(f, node, label),
            };
            res.map_err(|e| format!("formatting {}: {e}", node.display()))?;
        }
        Ok(())
    })?;

    let rows: Vec<FsRow> = plan
        .partitions
        .iter()
        .zip(&nodes)
        .map(|(p, node)| FsRow {
            device: node,
            filesystem: p.part.format,
            mount: p.mount.as_deref(),
            subvolumes: &p.subvolumes,
        })
        .collect();
    let (mounted, staged) = match &direct {
        Some((i, store_dir)) => {
            let p = &plan.partitions[*i];
            let target = direct::StoreFs {
                device: &nodes[*i],
                bytes: p.bytes,
                label: &p.part.label,
                store_dir: store_dir.clone(),
            };
            run.step(Step::CopyClosure, |r| copy_closure(r, job, Some(&target)))?;
            disk = share(run, disk, Step::Mount, "mount")?;
            run.step(Step::Mount, |r| {
                let m = mount_all(r, &rows)?;
                let n = store::move_into_store(&root)?;
                r.report.log(format!(
                    "moved {n} store paths into /nix/store (indexed by the kernel)"
                ));
                Ok(m)
            })?
        }
        None => {
            disk = share(run, disk, Step::Mount, "mount")?;
            let m = run.step(Step::Mount, |r| mount_all(r, &rows))?;
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
    run.step(Step::ExtraFiles, |_| extra_files(job.source, host, &root))?;
    if opts.bootloader && host.bootable {
        run.step(Step::Bootloader, |r| {
            r.ui.say("installing the boot loader (switch-to-configuration boot)");
            let out = bootloader::install(&root, &host.toplevel).map_err(|e| e.to_string())?;
            for line in out.activate_output.lines().chain(out.output.lines()) {
                r.report.log(format!("  | {line}"));
            }
            if let Some(device) = &staged {
                write_staged_esp(&disk, plan, &nodes, device, &root)
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
        // The installed system keeps its own install report (and it is the only copy when the
        // payload is on a read-only ISO). Written before the unmount: the finish step itself
        // is not in it.
        let mut kept = r.report.clone();
        kept.finish(Outcome::Installed);
        write_target_report(&root, &kept)
            .map_err(|e| format!("writing the report to {TARGET_REPORTS_DIR}: {e}"))?;
        mounted.sync_and_unmount().map_err(|e| e.to_string())?;
        disk.file()
            .sync_all()
            .map_err(|e| format!("flushing {}: {e}", disk.path().display()))
    })
}

/// The disk, held by its lock alone from now on, so that `who` can claim its partitions.
fn share(run: &mut Run, disk: LockedDisk, step: Step, who: &str) -> Result<LockedDisk, Fail> {
    if disk.hold() == Hold::Shared {
        return Ok(disk);
    }
    run.report.log(format!(
        "the disk is held by its lock alone from here: {who} claims its partitions"
    ));
    let path = disk.path().to_path_buf();
    disk.share()
        .map_err(|e| Fail(step, format!("{}: {e}", path.display())))
}

fn mount_all(r: &mut Run, rows: &[FsRow]) -> Result<(Mounted, Option<PathBuf>), String> {
    let root = r.opts.root.clone();
    mount::mount_all(&root, rows, &mut |line| r.report.log(line)).map_err(|e| e.to_string())
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
    let progress = |n| bar.inc(n);
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
/// into the partition `device` of `disk`, then unmounts the tmpfs.
fn write_staged_esp(
    disk: &LockedDisk,
    plan: &Plan,
    nodes: &[PathBuf],
    device: &Path,
    root: &Path,
) -> std::io::Result<()> {
    let p = plan
        .partitions
        .iter()
        .zip(nodes)
        .find(|(_, n)| n.as_path() == device)
        .map(|(p, _)| p)
        .expect("the staged partition is planned");
    let block = plan.disk.logical_block_size;
    let at = mount::under(root, p.mount.as_deref().unwrap_or("/boot"));
    let esp = StagedEsp {
        start: p.part.first_lba * block,
        len: p.bytes,
        block,
        label: p.part.label.clone(),
    };
    machine::esp::write_staged(disk.file(), &esp, &at, crate::report::now())?;
    mount::unmount_all(&at).map(drop)
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

/// Copies the host's extra files from the payload into the new root with their modes,
/// checking each against the manifest's hash and size.
fn extra_files(source: &Source, host: &HostEntry, root: &Path) -> Result<(), String> {
    if host.extra_files.is_empty() {
        return Ok(());
    }
    let p = source.open().map_err(|e| e.to_string())?;
    for f in &host.extra_files {
        // Never more than the manifest's size (+1 to see a longer file): a medium or server
        // that sends without end cannot fill the memory.
        let bytes = p
            .read_capped(&f.source, f.size)
            .map_err(|e| format!("extra file {}: {e}", f.target))?;
        let found = nixstore::hash::Sha256Hash::of(&bytes);
        if bytes.len() as u64 != f.size || found.to_hex() != f.sha256.trim_start_matches("sha256:")
        {
            return Err(format!(
                "extra file {} ({}): its hash or size does not match the manifest; the payload is damaged or was tampered with",
                f.target, f.source
            ));
        }
        system::write_file(root, &f.target, &bytes, f.mode)
            .map_err(|e| format!("extra file {e}"))?;
    }
    Ok(())
}
