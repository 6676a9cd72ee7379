//! Netboot output (`mkinstaller --format netboot`): a directory a TFTP or HTTP boot server
//! serves as it is. `vmlinuz` and `initrd` are the installer environment's; `boot.ipxe`
//! boots them with the installer's kernel command line; `autoinstall.efi` is the same three
//! in one EFI file (a unified kernel image, made with systemd's stub and objcopy) for
//! firmware that boots a single file (UEFI HTTP boot, PXE without iPXE). A small fleet's
//! payload can ride inside the initrd (appended as a cpio archive the kernel unpacks to
//! `/autoinstall-payload`); a large one is served as a cache site (`autoinstall.url=`).

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::Command;

use crate::esp::InstallerEnv;
use crate::fat32::Tree;

pub const KERNEL: &str = "vmlinuz";
pub const INITRD: &str = "initrd";
pub const SCRIPT: &str = "boot.ipxe";
pub const UKI: &str = "autoinstall.efi";
/// Where an embedded payload appears in the installer's root file system.
pub const EMBEDDED_PAYLOAD_DIR: &str = "/autoinstall-payload";

pub struct Netboot<'a> {
    pub env: &'a InstallerEnv,
    /// The kernel command line.
    pub options: &'a str,
    /// Shown by iPXE and written into the UKI's os-release.
    pub title: &'a str,
    /// A payload to carry in the initrd.
    pub embedded: Option<&'a Tree>,
    /// Every embedded file's time (reproducible output).
    pub mtime: u32,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    /// False when the installer environment has no `linuxx64.efi.stub`.
    pub uki: bool,
}

/// Writes the boot files into `dir` (which exists).
pub fn write(dir: &Path, nb: &Netboot, progress: &mut dyn FnMut(u64)) -> io::Result<Written> {
    let ctx = in_file;
    let kernel = dir.join(KERNEL);
    fs::copy(&nb.env.kernel, &kernel).map_err(ctx(&kernel))?;
    let initrd = dir.join(INITRD);
    write_initrd(&initrd, nb, progress).map_err(ctx(&initrd))?;
    let script = dir.join(SCRIPT);
    fs::write(&script, ipxe_script(nb.title, nb.options)).map_err(ctx(&script))?;
    let uki = match &nb.env.stub {
        Some(stub) => {
            let at = dir.join(UKI);
            make_uki(stub, &kernel, &initrd, nb, &at, dir).map_err(ctx(&at))?;
            true
        }
        None => false,
    };
    let mut bytes = 0;
    for name in [KERNEL, INITRD, SCRIPT, UKI] {
        bytes += fs::metadata(dir.join(name)).map(|m| m.len()).unwrap_or(0);
    }
    Ok(Written { bytes, uki })
}

/// An I/O error said with the file it happened on.
pub(crate) fn in_file(what: &Path) -> impl Fn(io::Error) -> io::Error {
    let what = what.display().to_string();
    move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The environment's initrd, then (with a payload) zeros to a 4-byte boundary (the kernel
/// looks for the next archive there) and the payload as an uncompressed cpio archive: the
/// kernel unpacks one archive after another into the same root.
pub(crate) fn write_initrd(
    at: &Path,
    nb: &Netboot,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    fs::copy(&nb.env.initrd, at)?;
    let Some(tree) = nb.embedded else {
        return Ok(());
    };
    let mut f = fs::OpenOptions::new().append(true).open(at)?;
    let len = f.metadata()?.len();
    f.write_all(&[0u8; 3][..((4 - len % 4) % 4) as usize])?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let prefix = EMBEDDED_PAYLOAD_DIR.trim_start_matches('/');
    crate::cpio::write_tree(&mut w, tree, prefix, nb.mtime, progress)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Whether `dir` holds netboot files written here (its script is ours), so that a rebuild
/// may replace it.
pub fn written_here(dir: &Path) -> bool {
    fs::read_to_string(dir.join(SCRIPT)).is_ok_and(|s| s.starts_with(SCRIPT_HEAD))
}

/// How every script of ours begins (every title starts "NixOS autoinstall").
const SCRIPT_HEAD: &str = "#!ipxe\n# NixOS autoinstall";

/// The iPXE script: relative names, so it works from wherever it was fetched (TFTP or HTTP).
/// `initrd=` names the initrd for the kernel's EFI stub.
pub fn ipxe_script(title: &str, options: &str) -> String {
    format!(
        "#!ipxe\n# {title}\necho {title}\nkernel {KERNEL} initrd={INITRD} {options}\ninitrd {INITRD}\nboot\n"
    )
}

/// A unified kernel image: systemd's stub with `.osrel`, `.cmdline`, `.linux` and `.initrd`
/// sections added by objcopy, each placed above the one before.
fn make_uki(
    stub: &Path,
    kernel: &Path,
    initrd: &Path,
    nb: &Netboot,
    at: &Path,
    dir: &Path,
) -> io::Result<()> {
    let scratch = tempfile_in(dir)?;
    let osrel = scratch.join("osrel");
    fs::write(
        &osrel,
        format!(
            "NAME=\"NixOS autoinstall\"\nID=nixos-autoinstall\nPRETTY_NAME=\"{}\"\n",
            nb.title.replace('"', "'")
        ),
    )?;
    let cmdline = scratch.join("cmdline");
    fs::write(&cmdline, nb.options)?;
    let kernel_len = fs::metadata(kernel)?.len();
    let align = |v: u64| v.div_ceil(1 << 20) << 20;
    let linux_vma: u64 = 0x200_0000;
    let initrd_vma = align(linux_vma + kernel_len);
    let sections = [
        (".osrel", osrel.as_path(), 0x2_0000u64),
        (".cmdline", cmdline.as_path(), 0x3_0000),
        (".linux", kernel, linux_vma),
        (".initrd", initrd, initrd_vma),
    ];
    let mut cmd = Command::new("objcopy");
    for (name, file, vma) in sections {
        cmd.arg("--add-section")
            .arg(format!("{name}={}", file.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}=0x{vma:x}"));
    }
    let out = cmd.arg(stub).arg(at).output();
    let _ = fs::remove_dir_all(&scratch);
    let out = out.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("running objcopy (from binutils) for the UKI: {e}"),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "objcopy failed making the UKI: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A fresh scratch directory inside `dir`.
fn tempfile_in(dir: &Path) -> io::Result<std::path::PathBuf> {
    let at = dir.join(format!(".uki-{}", std::process::id()));
    let _ = fs::remove_dir_all(&at);
    fs::create_dir(&at)?;
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_boots_the_relative_files_with_the_options() {
        let s = ipxe_script(
            "NixOS autoinstall (2 hosts)",
            "console=ttyS0 autoinstall.url=http://x/",
        );
        assert!(
            s.starts_with(SCRIPT_HEAD),
            "written_here would not know it: {s}"
        );
        assert!(
            s.contains("\nkernel vmlinuz initrd=initrd console=ttyS0 autoinstall.url=http://x/\n")
        );
        assert!(s.contains("\ninitrd initrd\nboot\n"));
    }
}
