//! Installing the boot loader the way nixos-install does: inside a chroot of the installed
//! system, with /dev, /proc and /sys from the installer, run the system's activation script
//! and then `NIXOS_INSTALL_BOOTLOADER=1 …/bin/switch-to-configuration boot`, which writes
//! the ESP mounted at /boot.
//!
//! /run is a fresh tmpfs rather than the installer's own: activation writes
//! /run/current-system, and on a NixOS installer that would replace the installer's.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{mount, MsFlags};

use crate::mount::{bind, under, unmount_all};

/// What the boot loader step ran, for the report and the log.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BootloaderRun {
    /// Output of the activation script, if the system has one (its failure is not fatal, as in
    /// nixos-enter).
    pub activate_output: String,
    pub output: String,
}

/// The /nix/var/nix/profiles/system link inside the chroot, as nixos-install calls it.
const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";

/// Runs the installed system's own boot loader installation in a chroot of `root`.
/// `toplevel` must already be the target of `root/nix/var/nix/profiles/system`.
pub fn install(root: &Path, toplevel: &str) -> io::Result<BootloaderRun> {
    let stc = under(root, &format!("{toplevel}/bin/switch-to-configuration"));
    if fs::symlink_metadata(&stc).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{toplevel} has no bin/switch-to-configuration, so it is not a bootable NixOS \
                 system; build the host's config.system.build.toplevel (or pass --no-bootloader)"
            ),
        ));
    }
    let binds = Binds::new(root)?;
    // Grub and bootctl look for an mtab.
    let etc = root.join("etc");
    fs::create_dir_all(&etc)?;
    let mtab = etc.join("mtab");
    if fs::symlink_metadata(&mtab).is_err() {
        symlink("/proc/mounts", &mtab)?;
    }
    let mut run = BootloaderRun::default();
    let activate = format!("{SYSTEM_PROFILE}/activate");
    if fs::symlink_metadata(under(root, &format!("{toplevel}/activate"))).is_ok() {
        // nixos-enter runs it and carries on whatever it says.
        run.activate_output = match in_chroot(root, &activate, &[]) {
            Ok(out) => out,
            Err(e) => format!("(activation failed, carrying on as nixos-enter does) {e}"),
        };
    }
    run.output = in_chroot(
        root,
        &format!("{SYSTEM_PROFILE}/bin/switch-to-configuration"),
        &["boot"],
    )
    .map_err(|e| io::Error::new(e.kind(), format!("switch-to-configuration boot: {e}")))?;
    binds.release()?;
    Ok(run)
}

/// Runs `program` (a path inside the chroot) with a clean environment; stdout and stderr
/// together are returned, or carried in the error.
fn in_chroot(root: &Path, program: &str, args: &[&str]) -> io::Result<String> {
    let root_owned = root.to_path_buf();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/run/current-system/sw/bin:/nix/var/nix/profiles/system/sw/bin",
        )
        .env("NIXOS_INSTALL_BOOTLOADER", "1")
        .env("IN_NIXOS_ENTER", "1")
        .env(
            "LOCALE_ARCHIVE",
            format!("{SYSTEM_PROFILE}/sw/lib/locale/locale-archive"),
        )
        .stdin(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls happen (chroot, chdir).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::chroot(&root_owned)?;
            nix::unistd::chdir("/")?;
            Ok(())
        });
    }
    let out = cmd
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("starting {program} in the chroot: {e}")))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(output)
    } else {
        Err(io::Error::other(format!(
            "{program} failed ({}):\n{}",
            out.status,
            output.trim_end()
        )))
    }
}

/// The installer's /dev, /proc and /sys (and a fresh /run) inside the root, for as long as
/// the value lives.
struct Binds {
    mounted: Vec<PathBuf>,
}

impl Binds {
    fn new(root: &Path) -> io::Result<Binds> {
        let mut b = Binds {
            mounted: Vec::new(),
        };
        for d in ["dev", "sys"] {
            bind(Path::new(&format!("/{d}")), root, d)?;
            b.mounted.push(under(root, d));
        }
        let proc_dir = root.join("proc");
        fs::create_dir_all(&proc_dir)?;
        mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| io::Error::other(format!("mounting proc in the chroot: {}", e.desc())))?;
        b.mounted.push(proc_dir);
        let run = root.join("run");
        fs::create_dir_all(&run)?;
        mount(
            Some("tmpfs"),
            &run,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=0755"),
        )
        .map_err(|e| io::Error::other(format!("mounting /run in the chroot: {}", e.desc())))?;
        b.mounted.push(run);
        // bootctl may consult udev's database about the ESP's partition.
        if Path::new("/run/udev").is_dir() {
            bind(Path::new("/run/udev"), root, "run/udev")?;
        }
        Ok(b)
    }

    fn release(mut self) -> io::Result<()> {
        let mounted = std::mem::take(&mut self.mounted);
        for m in mounted.iter().rev() {
            unmount_all(m)?;
        }
        Ok(())
    }
}

impl Drop for Binds {
    fn drop(&mut self) {
        for m in self.mounted.iter().rev() {
            let _ = unmount_all(m);
        }
    }
}

/// Whether the running kernel can mount `fstype` (from /proc/filesystems; a module not yet
/// loaded is tried with modprobe by the caller's mount anyway).
pub fn kernel_has(fstype: &str) -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some(fstype))
        })
        .unwrap_or(false)
}
