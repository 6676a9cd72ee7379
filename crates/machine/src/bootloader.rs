//! Installing the boot loader the way nixos-install does: inside a chroot of the installed
//! system, with /dev, /proc and /sys from the installer, run the system's activation script
//! and then `NIXOS_INSTALL_BOOTLOADER=1 …/bin/switch-to-configuration boot`, which writes
//! the ESP mounted at /boot.
//!
//! /run is a fresh tmpfs rather than the installer's own: activation writes
//! /run/current-system, and on a NixOS installer that would replace the installer's.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::device_alias::{Aliases, DeviceAlias};
use crate::mount::under;

/// What the boot loader step ran, for the report and the log.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BootloaderRun {
    /// Output of the activation script, if the system has one (its failure is not fatal, as in
    /// nixos-enter).
    pub activate_output: String,
    pub output: String,
    /// How the disks the host's configuration names were made to lead to the chosen ones.
    pub aliases: Vec<String>,
}

/// The /nix/var/nix/profiles/system link inside the chroot, as nixos-install calls it.
const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";

/// Runs the installed system's own boot loader installation in a chroot of `root`.
/// `toplevel` must already be the target of `root/nix/var/nix/profiles/system`. `disks`:
/// the paths the host's configuration names its boot loader disks by (GRUB for BIOS), and
/// the disks chosen here that they must reach while it runs.
pub fn install(root: &Path, toplevel: &str, disks: &[DeviceAlias]) -> io::Result<BootloaderRun> {
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
    for d in ["dev", "sys", "proc", "run"] {
        fs::create_dir_all(root.join(d))?;
    }
    // Grub and bootctl look for an mtab.
    let etc = root.join("etc");
    fs::create_dir_all(&etc)?;
    let mtab = etc.join("mtab");
    if fs::symlink_metadata(&mtab).is_err() {
        symlink("/proc/mounts", &mtab)?;
    }
    // Removed again when this function returns, whatever happens.
    let aliases = Aliases::set_up(disks)?;
    let mut run = BootloaderRun {
        aliases: aliases.notes.clone(),
        ..BootloaderRun::default()
    };
    let activate = format!("{SYSTEM_PROFILE}/activate");
    if fs::symlink_metadata(under(root, &format!("{toplevel}/activate"))).is_ok() {
        // nixos-enter runs it and carries on whatever it says.
        run.activate_output = match in_chroot(root, &aliases, &activate, &[]) {
            Ok(out) => out,
            Err(e) => format!("(activation failed, carrying on as nixos-enter does) {e}"),
        };
    }
    run.output = in_chroot(
        root,
        &aliases,
        &format!("{SYSTEM_PROFILE}/bin/switch-to-configuration"),
        &["boot"],
    )
    .map_err(|e| io::Error::new(e.kind(), format!("switch-to-configuration boot: {e}")))?;
    Ok(run)
}

/// Runs `program` (a path inside the chroot) with a clean environment; stdout and stderr
/// together are returned, or carried in the error.
fn in_chroot(root: &Path, aliases: &Aliases, program: &str, args: &[&str]) -> io::Result<String> {
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
    // Everything the chroot needs is mounted in a mount namespace of its own, so it all
    // disappears with the child (even if the installer is killed) and nothing propagates to
    // the installer's mounts. The strings are made before the fork: the child only makes
    // system calls.
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("no NUL in paths");
    let dirs = ChrootMounts {
        root: c(root),
        dev: c(&root.join("dev")),
        sys: c(&root.join("sys")),
        proc_: c(&root.join("proc")),
        run: c(&root.join("run")),
        covers: aliases
            .overlays
            .iter()
            .map(|(node, covered)| (c(node), c(&under(root, &covered.to_string_lossy()))))
            .collect(),
    };
    // SAFETY: the closure makes only system calls (unshare, mount, chroot, chdir) on strings
    // prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || dirs.enter());
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

struct ChrootMounts {
    root: CString,
    dev: CString,
    sys: CString,
    proc_: CString,
    run: CString,
    /// (disk node, node under the root it is bound over): `device_alias`'s covers.
    covers: Vec<(CString, CString)>,
}

impl ChrootMounts {
    /// In the forked child: a private mount namespace with /dev and /sys bound, a fresh /proc
    /// and /run, then the chroot.
    fn enter(&self) -> io::Result<()> {
        fn check(r: libc::c_int) -> io::Result<()> {
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        let none = std::ptr::null();
        // SAFETY: plain system calls on NUL-terminated strings that outlive them.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (src, dst) in [(c"/dev", &self.dev), (c"/sys", &self.sys)] {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
            for (node, covered) in &self.covers {
                check(libc::mount(
                    node.as_ptr(),
                    covered.as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
            }
            check(libc::mount(
                c"proc".as_ptr(),
                self.proc_.as_ptr(),
                c"proc".as_ptr(),
                0,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.run.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"mode=0755".as_ptr().cast(),
            ))?;
            check(libc::chroot(self.root.as_ptr()))?;
            check(libc::chdir(c"/".as_ptr()))?;
        }
        Ok(())
    }
}
