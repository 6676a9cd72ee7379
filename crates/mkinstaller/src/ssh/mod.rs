//! `mkinstaller --ssh [USER@]HOST`: installs a machine that runs some Linux and answers SSH,
//! with no stick and no PXE. The machine is looked at first (root, x86-64, a kernel that
//! kexecs, enough memory: else refused before anything is sent); the kexec bundle is built
//! here, streamed into a tmpfs of its own on the machine (RAM: nothing on its disk), booted
//! with kexec; the installer comes back on the same address (the bundle keeps the running
//! system's network) with a host key made for this run, and is followed over SSH until its
//! report. The exit status is the installer's.

mod dry_run;
pub mod follow;
pub mod hostkey;
pub mod target;

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::build::{self, BuildOptions, Error, ErrorKind};
use crate::ui::Ui;
use follow::Tracker;
use hostkey::HostKey;
pub use target::{Ssh, Target};

/// The tmpfs on the running system that holds the bundle's files until kexec.
const REMOTE_DIR: &str = "/run/nixos-autoinstall-ssh";
/// What the running system needs beside the bundle, for itself and the kexec'd kernel's
/// early work (MiB).
const MARGIN_MIB: u64 = 128;

/// What `--ssh` asks beyond the build.
pub struct SshInstall {
    pub ssh: Ssh,
    /// How long to wait for the installer to answer after the kexec reboot.
    pub wait: Duration,
    /// Print the installer's report as JSON on stdout.
    pub json: bool,
    /// `--dry-run`: plan on the machine with the installer's planner, change nothing.
    pub dry_run: bool,
}

/// What the running system is, as the look before anything is sent found it.
#[derive(Debug, PartialEq, Eq)]
pub struct Facts {
    pub arch: String,
    pub uid: u32,
    /// kernel.kexec_load_disabled; None: the kernel has no kexec at all.
    pub kexec_disabled: Option<bool>,
    pub mem_available_kib: u64,
}

/// The look: one line each of `uname -m`, `id -u`, the kexec switch, MemAvailable.
const LOOK: &str = "uname -m; id -u; cat /proc/sys/kernel/kexec_load_disabled 2>/dev/null || echo none; sed -n 's/^MemAvailable: *\\([0-9]*\\) kB$/\\1/p' /proc/meminfo";

impl Facts {
    pub fn parse(text: &str) -> Result<Facts, String> {
        let l: Vec<&str> = text.lines().map(str::trim).collect();
        let bad = || format!("the running system answered the look with {text:?}: is it Linux?");
        if l.len() < 4 {
            return Err(bad());
        }
        Ok(Facts {
            arch: l[0].to_string(),
            uid: l[1].parse().map_err(|_| bad())?,
            kexec_disabled: match l[2] {
                "none" => None,
                v => Some(v != "0"),
            },
            mem_available_kib: l[3].parse().map_err(|_| bad())?,
        })
    }

    /// Refuses what cannot work, before the build: the reasons say what to do instead.
    pub fn check(&self, t: &Target) -> Result<(), String> {
        if self.uid != 0 {
            return Err(format!(
                "{t}: logged in as uid {}, not root: kexec needs root (--ssh root@{})",
                self.uid, t.host
            ));
        }
        if self.arch != "x86_64" {
            return Err(format!(
                "{t}: the machine is {}, the installer is x86-64 only",
                self.arch
            ));
        }
        match self.kexec_disabled {
            None => Err(format!("{t}: its kernel has no kexec (no /proc/sys/kernel/kexec_load_disabled): it cannot boot the installer from where it runs; it keeps running, nothing was changed. Boot it from a stick, an ISO or netboot")),
            Some(true) => Err(format!("{t}: its kernel forbids kexec (kernel.kexec_load_disabled = 1, which only a reboot undoes): it keeps running, nothing was changed. Reboot it without that setting, or boot it from a stick, an ISO or netboot")),
            Some(false) => Ok(()),
        }
    }

    /// Refuses a bundle the machine's free memory cannot hold twice (the files in a tmpfs,
    /// then their copy kexec loads).
    pub fn check_memory(&self, t: &Target, bundle: u64) -> Result<(), String> {
        let need = 2 * bundle.div_ceil(1 << 20) + MARGIN_MIB;
        let have = self.mem_available_kib / 1024;
        if have < need {
            return Err(format!("{t}: the bundle needs about {need} MiB of free memory and the machine has {have} MiB available: nothing was sent. Serve the fleet from a cache site (--online URL: the bundle then carries no payload)"));
        }
        Ok(())
    }
}

/// Builds the bundle into `opts.output` and installs the machine with it. Returns the
/// installer's exit status with the line that says how it ended.
pub fn install(opts: &BuildOptions, s: &SshInstall, ui: &Ui) -> Result<(u8, String), Error> {
    let t = &s.ssh.target;
    ui.say(&format!("looking at {t}"));
    let look = output(&s.ssh, LOOK, "look at the running system")?;
    let facts = Facts::parse(&look)?;
    facts.check(t)?;
    if s.dry_run {
        return dry_run::plan(opts, s, ui);
    }

    build::build(opts, ui)?;
    let dir = &opts.output;
    let files = bundle_files(dir)?;
    let key = HostKey::generate().map_err(|e| Error::failed(e.to_string()))?;
    let archive = key
        .initrd_archive()
        .map_err(|e| Error::failed(e.to_string()))?;
    let total: u64 = files.iter().map(|(_, n)| n).sum::<u64>() + 3 + archive.len() as u64;
    facts.check_memory(t, total)?;
    let known_hosts = dir.join(".installer-known-hosts");
    fs::write(&known_hosts, key.known_hosts_line(&t.host, t.port))
        .map_err(|e| Error::failed(format!("{}: {e}", known_hosts.display())))?;

    make_room(&s.ssh, total)?;
    let sent = send_all(&s.ssh, dir, &files, &archive, total, ui);
    if sent.is_err() {
        // Leave the machine as it was: the files go with their tmpfs.
        clean_up(&s.ssh);
    }
    sent?;

    ui.say(&format!("booting the installer on {t} with kexec"));
    boot(&s.ssh, ui)?;
    follow_installer(&s.ssh.pinned(&known_hosts), s, ui)
}

/// Mounts a tmpfs of our own for `bytes` of files on the machine (RAM: nothing goes to its
/// disk), empty.
fn make_room(ssh: &Ssh, bytes: u64) -> Result<(), Error> {
    let prepare = format!(
        "set -e; d={REMOTE_DIR}; mkdir -p $d; grep -qs \" $d \" /proc/mounts || mount -t tmpfs -o size={}k,mode=0700 nixos-autoinstall $d; rm -rf $d/*",
        bytes.div_ceil(1024) + 1024
    );
    output(ssh, &prepare, "make room in RAM on the running system").map(drop)
}

/// Streams the bundle's files into the tmpfs, the host key's archive behind the initrd.
fn send_all(
    ssh: &Ssh,
    dir: &Path,
    files: &[(String, u64)],
    archive: &[u8],
    total: u64,
    ui: &Ui,
) -> Result<(), Error> {
    let t = &ssh.target;
    let bar = ui.bytes(total, "sending");
    for (name, size) in files {
        let mut from = fs::File::open(dir.join(name))
            .map_err(|e| Error::failed(format!("{}: {e}", dir.join(name).display())))?;
        let mut reader: Box<dyn Read> = if name == media::netboot::INITRD {
            // The host key rides behind the initrd as one more archive, at a 4-byte boundary.
            let pad = vec![0u8; ((4 - size % 4) % 4) as usize];
            Box::new(
                from.chain(io::Cursor::new(pad))
                    .chain(io::Cursor::new(archive.to_vec())),
            )
        } else {
            Box::new(&mut from)
        };
        send(ssh, &mut reader, &format!("{REMOTE_DIR}/{name}"), &|n| {
            bar.inc(n)
        })
        .map_err(|e| Error::failed(format!("sending {name} to {t}: {e}")))?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Unmounts the tmpfs on the machine (best effort: it is already failing or refusing).
fn clean_up(ssh: &Ssh) {
    let _ = output(
        ssh,
        &format!("umount {REMOTE_DIR} && rmdir {REMOTE_DIR}"),
        "clean up",
    );
}

/// The bundle's files to send, with their sizes: the directory form (the single
/// self-extracting file would need the room twice on the machine).
fn bundle_files(dir: &Path) -> Result<Vec<(String, u64)>, Error> {
    use media::kexec::{CMDLINE, HELPER, SCRIPT};
    use media::netboot::{INITRD, KERNEL};
    [KERNEL, INITRD, CMDLINE, HELPER, SCRIPT]
        .iter()
        .map(|n| {
            let at = dir.join(n);
            let len = fs::metadata(&at).map_err(|e| {
                Error::failed(format!("{}: {e} (the bundle is incomplete)", at.display()))
            })?;
            Ok((n.to_string(), len.len()))
        })
        .collect()
}

/// Runs `remote` and returns what it printed; a failure is said with `what` and ssh's words.
fn output(ssh: &Ssh, remote: &str, what: &str) -> Result<String, Error> {
    let out = ssh
        .command(remote)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ssh to {what} ({e}): is OpenSSH's client installed?"))?;
    if !out.status.success() {
        return Err(format!(
            "{}: could not {what} ({}): {}",
            ssh.target,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Streams `from` into `path` on the machine (`cat >`), counting bytes as they go.
fn send(
    ssh: &Ssh,
    from: &mut dyn Read,
    path: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<()> {
    let mut child = ssh
        .command(&format!("cat > {path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let copied = {
        let mut to = child.stdin.take().expect("piped");
        io::copy(&mut util::io::Progress::new(from, progress), &mut to).map(drop)
    };
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "ssh {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    copied
}

/// Runs the bundle's script. It never returns when kexec works (the connection drops with
/// the old kernel); a script that returns has refused, and the machine runs on unchanged.
fn boot(ssh: &Ssh, ui: &Ui) -> Result<(), Error> {
    let mut child = ssh
        .command(&format!(
            "chmod 0755 {REMOTE_DIR}/{} && sh {REMOTE_DIR}/run",
            media::kexec::HELPER
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ssh ({e})"))?;
    let mut said = Vec::new();
    let mut booting = false;
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let Ok(line) = line else { break };
        booting |= line.contains("autoinstall.run: booting the installer");
        ui.say(&format!("  {}: {line}", ssh.target.host));
        said.push(line);
    }
    let status = child.wait().map_err(|e| Error::failed(e.to_string()))?;
    if booting && status.code() != Some(1) {
        return Ok(());
    }
    // Leave the machine as it was: the files go with their tmpfs.
    clean_up(ssh);
    Err(format!(
        "{}: the installer did not boot ({status}): {}; the machine keeps running its system, nothing was changed",
        ssh.target,
        if said.is_empty() {
            "no word from the bundle's script".to_string()
        } else {
            said.join(" / ")
        }
    )
    .into())
}

/// Waits for the installer to answer (with the pinned host key) and follows it to its end.
fn follow_installer(ssh: &Ssh, s: &SshInstall, ui: &Ui) -> Result<(u8, String), Error> {
    let deadline = Instant::now() + s.wait;
    let mut tracker = Tracker::new(format!("ssh {}", ssh.args().join(" ")));
    ui.say(&format!(
        "waiting for the installer to answer on {} (with the host key made for this run)",
        ssh.target
    ));
    let mut last_error = String::from("no answer yet");
    let mut bar: Option<indicatif::ProgressBar> = None;
    loop {
        let mut child: Child = ssh
            .command("autoinstall-terminal status --follow")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::failed(format!("cannot run ssh ({e})")))?;
        let stderr = child.stderr.take().expect("piped");
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr)
                .take(64 << 10)
                .read_to_string(&mut text);
            text
        });
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            let Ok(line) = line else { break };
            let shown = tracker.line(&line).map_err(Error::failed)?;
            for l in &shown.lines {
                if let Some(b) = &bar {
                    b.suspend(|| ui.say(l));
                } else {
                    ui.say(l);
                }
            }
            if let Some(p) = shown.progress {
                let b = bar.get_or_insert_with(|| ui.bytes(p.total, &p.what));
                b.set_length(p.total);
                b.set_message(p.what.clone());
                b.set_position(p.done);
            }
            if let Some((report, raw)) = shown.report {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                let _ = child.kill();
                let _ = child.wait();
                if s.json {
                    let text = serde_json::to_string_pretty(&raw).expect("serialises");
                    util::out::stdout(&format!("{text}\n")).map_err(Error::failed)?;
                }
                return Ok(follow::ending(&report));
            }
        }
        let _ = child.wait();
        let said = errors.join().unwrap_or_default();
        if !said.trim().is_empty() {
            last_error = said.trim().lines().last().unwrap_or_default().to_string();
        }
        if Instant::now() >= deadline {
            return Err(Error {
                kind: ErrorKind::Failed,
                message: format!(
                    "{}: the installer did not answer over SSH within {} s ({}; last seen at {}): look at the machine's console. Did the fleet take your key ([defaults] ssh-authorized-keys, or --ssh-identity)?",
                    ssh.target,
                    s.wait.as_secs(),
                    last_error,
                    tracker.step().unwrap_or("no step yet")
                ),
            });
        }
        // The old system is still going down, or the installer is not up yet: try again.
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// A private directory for one `--ssh` run's bundle, removed when dropped (unless the admin
/// named the output with -o).
pub struct WorkDir(pub PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        "root@h".parse().unwrap()
    }

    #[test]
    fn the_look_refuses_what_cannot_kexec_before_anything_is_built() {
        let ok = Facts::parse("x86_64\n0\n0\n1500000\n").unwrap();
        assert_eq!(ok.check(&target()), Ok(()));
        let off = Facts::parse("x86_64\n0\n1\n1500000\n").unwrap();
        let e = off.check(&target()).unwrap_err();
        assert!(
            e.contains("kexec_load_disabled = 1") && e.contains("nothing was changed"),
            "{e}"
        );
        let none = Facts::parse("x86_64\n0\nnone\n1500000\n").unwrap();
        assert!(none.check(&target()).unwrap_err().contains("has no kexec"));
        let user = Facts::parse("x86_64\n1000\n0\n1500000\n").unwrap();
        assert!(user.check(&target()).unwrap_err().contains("not root"));
        let arm = Facts::parse("aarch64\n0\n0\n1500000\n").unwrap();
        assert!(arm.check(&target()).unwrap_err().contains("aarch64"));
        assert!(Facts::parse("Windows").is_err());
    }

    #[test]
    fn memory_for_the_bundle_twice_is_asked_for() {
        let f = Facts::parse("x86_64\n0\n0\n1048576\n").unwrap(); // 1 GiB
        assert!(f.check_memory(&target(), 400 << 20).is_ok());
        let e = f.check_memory(&target(), 500 << 20).unwrap_err();
        assert!(
            e.contains("1128 MiB") && e.contains("1024 MiB") && e.contains("--online"),
            "{e}"
        );
    }
}
