//! The stacked devices of a plan, built with the real tools: md arrays (mdadm), LUKS2
//! containers (cryptsetup), LVM volume groups and volumes (lvm2). Every object is written to
//! a record under /run before it is created, so that the next run, after a failure or a
//! reset of the installer, takes down exactly what an earlier attempt of ours left (and
//! nothing else: a machine's own arrays and mappers are never touched). The installer
//! environments run without udev: cryptsetup and LVM make their device nodes themselves
//! (`DM_DISABLE_UDEV`, lvm.conf `udev_rules = 0`), mdadm makes `/dev/md/NAME` and leaves it
//! behind when stopped, which is removed here.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use manifest::devices::{Holder, LvSize, PercentOf};

use crate::format::tool;
use crate::graph::Build;

/// Where the installer records what it creates.
pub const RECORD: &str = "/run/nixos-autoinstall/created";

/// How long a new device node may take to appear.
const NODE_WAIT: Duration = Duration::from_secs(20);

/// An object the installer created, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Md(String),
    Luks(String),
    Vg(String),
}

impl Created {
    fn line(&self) -> String {
        match self {
            Created::Md(n) => format!("md {n}"),
            Created::Luks(n) => format!("luks {n}"),
            Created::Vg(n) => format!("vg {n}"),
        }
    }

    fn parse(line: &str) -> Option<Created> {
        let (kind, name) = line.split_once(' ')?;
        // Names were checked when planned; a record that says otherwise is not ours.
        manifest::devices::check_name("recorded", name).ok()?;
        match kind {
            "md" => Some(Created::Md(name.into())),
            "luks" => Some(Created::Luks(name.into())),
            "vg" => Some(Created::Vg(name.into())),
            _ => None,
        }
    }
}

/// The record of what this installer created, in creation order.
#[derive(Debug, Clone)]
pub struct Record {
    path: PathBuf,
}

impl Record {
    pub fn at(path: &Path) -> Record {
        Record {
            path: path.to_path_buf(),
        }
    }

    pub fn standard() -> Record {
        Record::at(Path::new(RECORD))
    }

    /// What the record holds (nothing when there is no record).
    pub fn read(&self) -> io::Result<Vec<Created>> {
        match fs::read_to_string(&self.path) {
            Ok(t) => Ok(t.lines().filter_map(Created::parse).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("reading {}: {e}", self.path.display()),
            )),
        }
    }

    fn add(&self, c: &Created) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(f, "{}", c.line())?;
        f.sync_all()
    }

    fn clear(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The kernel names (`md127`, `dm-3`) of the recorded objects that exist now: what an
    /// earlier attempt of ours holds a disk with.
    pub fn kernel_names(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let dm = dm_names();
        for c in self.read()? {
            match c {
                Created::Md(n) => {
                    if let Ok(p) = fs::canonicalize(md_node(&n)) {
                        out.extend(p.file_name().map(|f| f.to_string_lossy().into_owned()));
                    }
                }
                Created::Luks(n) => {
                    out.extend(dm.iter().filter(|(_, m)| **m == n).map(|(k, _)| k.clone()))
                }
                Created::Vg(n) => {
                    let prefix = format!("{}-", n.replace('-', "--"));
                    out.extend(
                        dm.iter()
                            .filter(|(_, m)| m.starts_with(&prefix))
                            .map(|(k, _)| k.clone()),
                    )
                }
            }
        }
        Ok(out)
    }
}

/// Device-mapper devices by kernel name (`dm-0` → its mapper name).
fn dm_names() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(dir) = fs::read_dir("/sys/block") {
        for e in dir.flatten() {
            let k = e.file_name().to_string_lossy().into_owned();
            if let Ok(name) = fs::read_to_string(e.path().join("dm/name")) {
                out.insert(k, name.trim().to_string());
            }
        }
    }
    out
}

pub fn md_node(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/md/{name}"))
}

/// The device node of a stacked device once it exists.
pub fn node(h: &Holder) -> Option<PathBuf> {
    h.stable_path().map(PathBuf::from)
}

/// Runs one of the storage tools with udev out of the picture; its output is kept for the
/// error message, which names what was being done.
fn run(what: &str, program: &str, args: &[String]) -> io::Result<()> {
    run_with(what, program, args, None).map(drop)
}

/// [`run`] with `stdin` (a key, never on a command line) and its standard output returned.
pub(crate) fn run_with(
    what: &str,
    program: &str,
    args: &[String],
    stdin: Option<&[u8]>,
) -> io::Result<Vec<u8>> {
    let path = tool(program)?;
    let failed = |e: io::Error| io::Error::new(e.kind(), format!("{what}: running {program}: {e}"));
    let mut child = Command::new(&path)
        .args(args)
        .env("DM_DISABLE_UDEV", "1")
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(failed)?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits before reading it all fails below with its own message.
        let _ = pipe.write_all(bytes);
    }
    let out = child.wait_with_output().map_err(failed)?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let said = String::from_utf8_lossy(&out.stderr);
    let said = if said.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout)
    } else {
        said
    };
    Err(io::Error::other(format!(
        "{what}: {program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        said.trim()
    )))
}

pub(crate) fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Waits for a device node the kernel (or the tool) is making.
pub fn wait_for_node(p: &Path) -> io::Result<()> {
    let start = Instant::now();
    loop {
        if p.exists() {
            return Ok(());
        }
        if start.elapsed() > NODE_WAIT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not appear within {}s",
                    p.display(),
                    NODE_WAIT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Builds `b` over the devices in `nodes` (every partition and whole disk, and what was
/// built before), adding what it creates. `key` is the key file for a LUKS container.
pub fn build(
    b: &Build,
    nodes: &mut BTreeMap<Holder, PathBuf>,
    key: Option<&Path>,
    record: &Record,
) -> io::Result<()> {
    let of = |h: &Holder| {
        nodes
            .get(h)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("{h} has no device node yet")))
    };
    match b {
        Build::Md {
            name,
            level,
            metadata,
            members,
            ..
        } => {
            let members = members.iter().map(of).collect::<io::Result<Vec<_>>>()?;
            record.add(&Created::Md(name.clone()))?;
            let dev = md_node(name);
            let mut args = vec![
                "--create".to_string(),
                path_arg(&dev),
                "--run".into(),
                format!("--level={level}"),
                format!("--raid-devices={}", members.len()),
                "--homehost=any".into(),
            ];
            if metadata != "default" {
                args.push(format!("--metadata={metadata}"));
            }
            args.extend(members.iter().map(|p| path_arg(p)));
            run(&format!("creating md array {name}"), "mdadm", &args)?;
            wait_for_node(&dev)?;
            nodes.insert(Holder::Md { name: name.clone() }, dev);
        }
        Build::Luks {
            name,
            on,
            uuid,
            allow_discards,
            format_args,
            open_args,
            ..
        } => {
            let dev = path_arg(&of(on)?);
            let key = key.ok_or_else(|| {
                io::Error::other(format!("LUKS device {name}: no key to format it with"))
            })?;
            let mut args = vec![
                "luksFormat".to_string(),
                "--batch-mode".into(),
                "--type".into(),
                "luks2".into(),
                "--key-file".into(),
                path_arg(key),
            ];
            if let Some(u) = uuid {
                args.extend(["--uuid".to_string(), u.clone()]);
            }
            args.extend(format_args.iter().cloned());
            args.push(dev.clone());
            run(
                &format!("formatting LUKS device {name} on {dev}"),
                "cryptsetup",
                &args,
            )?;
            record.add(&Created::Luks(name.clone()))?;
            let mut args = vec!["open".to_string(), "--key-file".into(), path_arg(key)];
            if *allow_discards {
                args.push("--allow-discards".into());
            }
            args.extend(open_args.iter().cloned());
            args.extend([dev, name.clone()]);
            run(&format!("opening LUKS device {name}"), "cryptsetup", &args)?;
            let node = PathBuf::from(format!("/dev/mapper/{name}"));
            wait_for_node(&node)?;
            nodes.insert(Holder::Luks { name: name.clone() }, node);
        }
        Build::Vg { name, pvs, .. } => {
            let pvs: Vec<String> = pvs
                .iter()
                .map(|h| of(h).map(|p| path_arg(&p)))
                .collect::<io::Result<_>>()?;
            let mut args = vec!["-ff".to_string(), "--yes".into()];
            args.extend(pvs.iter().cloned());
            run(
                &format!("making physical volumes for {name}"),
                "pvcreate",
                &args,
            )?;
            record.add(&Created::Vg(name.clone()))?;
            let mut args = vec![name.clone()];
            args.extend(pvs);
            run(&format!("creating volume group {name}"), "vgcreate", &args)?;
        }
        Build::Lv { vg, name, size, .. } => {
            let size = match size {
                LvSize::Bytes(b) => vec!["-L".to_string(), format!("{b}b")],
                LvSize::Percent { percent, of } => vec![
                    "-l".to_string(),
                    format!(
                        "{percent}%{}",
                        match of {
                            PercentOf::Vg => "VG",
                            PercentOf::Free => "FREE",
                            PercentOf::Pvs => "PVS",
                        }
                    ),
                ],
            };
            let mut args = vec!["--yes".to_string(), "-n".into(), name.clone()];
            args.extend(size);
            args.push(vg.clone());
            run(
                &format!("creating logical volume {vg}/{name}"),
                "lvcreate",
                &args,
            )?;
            let node = PathBuf::from(format!("/dev/{vg}/{name}"));
            wait_for_node(&node)?;
            nodes.insert(
                Holder::Lv {
                    vg: vg.clone(),
                    lv: name.clone(),
                },
                node,
            );
        }
    }
    Ok(())
}

/// Takes down what the record says an earlier attempt created (newest first): volume groups
/// deactivated, LUKS containers closed, arrays stopped; then forgets the record. What is
/// already gone is skipped. Returns what was taken down, for the log.
pub fn take_down(record: &Record) -> io::Result<Vec<String>> {
    let mut done = Vec::new();
    let dm = dm_names();
    for c in record.read()?.into_iter().rev() {
        match &c {
            Created::Vg(n) => {
                let prefix = format!("{}-", n.replace('-', "--"));
                if dm.values().any(|m| m.starts_with(&prefix)) {
                    run(
                        &format!("deactivating volume group {n}"),
                        "vgchange",
                        &["-an".into(), n.clone()],
                    )?;
                    done.push(format!("volume group {n} deactivated"));
                }
            }
            Created::Luks(n) => {
                if dm.values().any(|m| m == n) {
                    run(
                        &format!("closing LUKS device {n}"),
                        "cryptsetup",
                        &["close".into(), n.clone()],
                    )?;
                    done.push(format!("LUKS device {n} closed"));
                }
            }
            Created::Md(n) => {
                let dev = md_node(n);
                if fs::canonicalize(&dev).is_ok_and(|p| p.exists()) {
                    run(
                        &format!("stopping md array {n}"),
                        "mdadm",
                        &["--stop".into(), path_arg(&dev)],
                    )?;
                    done.push(format!("md array {n} stopped"));
                }
                // Without udev the name stays behind and would make the next create pick
                // another.
                let _ = fs::remove_file(&dev);
            }
        }
    }
    record.clear()?;
    Ok(done)
}
