//! The ESP of an installer stick: the removable-media boot loader, its entries, and the
//! installer environment's kernel and initrd. Where the environment carries its
//! distribution's signed boot chain (Debian's Microsoft-signed shim and Debian-signed GRUB),
//! that is the boot loader, so the stick boots with Secure Boot on under the vendor's keys:
//! the firmware checks shim, shim checks GRUB and GRUB (through shim) the kernel; the initrd
//! and the command line are not checked (see docs/SECURITY.md). Otherwise systemd-boot.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fat32::{Source, Tree};

/// An installer environment directory, as images/debian/build and the flake produce it.
#[derive(Debug, Clone)]
pub struct InstallerEnv {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub efi: PathBuf,
    pub cmdline: String,
    /// systemd's EFI stub (`linuxx64.efi.stub`), for a netboot UKI; optional.
    pub stub: Option<PathBuf>,
    /// A statically linked `autoinstall-terminal`, for a kexec bundle to boot the installer
    /// from any running Linux (images/debian/build puts one there); optional.
    pub helper: Option<PathBuf>,
    /// The signed boot chain (`shimx64.efi`, `grubx64.efi`, `mmx64.efi`); optional.
    pub signed: Option<SignedChain>,
    /// GRUB for legacy BIOS (`bios-boot.img`, `bios-core.img`); optional.
    pub bios: Option<crate::bios::BiosBoot>,
    /// GRUB for legacy BIOS from a CD (`bios-eltorito.img`: an El Torito boot image); optional.
    pub bios_cd: Option<PathBuf>,
    /// GRUB's MBR code for an ISO written to a disk (`bios-hybrid.img`: boot_hybrid.img),
    /// which starts the El Torito image's GRUB from the disk; optional.
    pub bios_hybrid: Option<PathBuf>,
}

/// Which boot loader a stick's ESP gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootLoader {
    /// The signed chain where the environment carries one, else systemd-boot.
    #[default]
    Auto,
    /// The signed chain (shim and GRUB): boots with Secure Boot on.
    Signed,
    /// systemd-boot (unsigned): Secure Boot must be off. Nothing measures into PCR 7 after
    /// the firmware, so a TPM2 volume sealed to PCR 7 at install unseals at the installed
    /// system's boot (shim extends PCR 7, and the installer refuses such a layout).
    SystemdBoot,
}

impl InstallerEnv {
    /// This environment with `choice` made: the signed chain dropped for systemd-boot, or
    /// required.
    pub fn with_boot_loader(mut self, choice: BootLoader) -> Result<InstallerEnv, String> {
        match choice {
            BootLoader::Auto => {}
            BootLoader::SystemdBoot => self.signed = None,
            BootLoader::Signed if self.signed.is_none() => {
                return Err(format!(
                    "--boot-loader signed: the installer environment {} has no signed chain (shimx64.efi and grubx64.efi); build it with images/debian/build",
                    self.dir.display()
                ))
            }
            BootLoader::Signed => {}
        }
        Ok(self)
    }
}

/// A distribution's Secure Boot chain: shim signed by the Microsoft UEFI CA (which the
/// vendors' firmware trusts), GRUB and the kernel signed by the distribution (whose key shim
/// carries), and shim's MokManager, which shim starts when a check fails.
#[derive(Debug, Clone)]
pub struct SignedChain {
    pub shim: PathBuf,
    pub grub: PathBuf,
    pub mok_manager: Option<PathBuf>,
}

fn sized(path: &Path) -> Result<Source, String> {
    let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Source::File {
        path: path.to_path_buf(),
        size: meta.len(),
    })
}

impl InstallerEnv {
    /// Loads `dir`, which must hold `kernel`, `initrd`, `cmdline` and `systemd-bootx64.efi`.
    pub fn load(dir: &Path) -> Result<InstallerEnv, String> {
        let need = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "the installer environment {} has no {name}; build one with images/debian/build or point --installer at a directory with kernel, initrd, cmdline and systemd-bootx64.efi",
                    dir.display()
                ))
            }
        };
        let cmdline_file = need("cmdline")?;
        Ok(InstallerEnv {
            dir: dir.to_path_buf(),
            kernel: need("kernel")?,
            initrd: need("initrd")?,
            efi: need("systemd-bootx64.efi")?,
            cmdline: fs::read_to_string(&cmdline_file)
                .map_err(|e| format!("{}: {e}", cmdline_file.display()))?
                .trim()
                .to_string(),
            stub: Some(dir.join("linuxx64.efi.stub")).filter(|p| p.is_file()),
            helper: Some(dir.join("autoinstall-terminal")).filter(|p| p.is_file()),
            bios: crate::bios::BiosBoot::load(dir)?,
            bios_cd: Some(dir.join(crate::bios::ELTORITO_IMG)).filter(|p| p.is_file()),
            bios_hybrid: Some(dir.join(crate::bios::HYBRID_IMG)).filter(|p| p.is_file()),
            signed: match (dir.join("shimx64.efi"), dir.join("grubx64.efi")) {
                (shim, grub) if shim.is_file() && grub.is_file() => Some(SignedChain {
                    shim,
                    grub,
                    mok_manager: Some(dir.join("mmx64.efi")).filter(|p| p.is_file()),
                }),
                _ => None,
            },
        })
    }
}

/// The installer's kernel command line: the environment's own, where the payload is
/// (`autoinstall.payload=PARTUUID=…` on a stick, `…=LABEL=…` on an ISO, so the installer reads
/// the medium it booted from even when several are plugged in; `autoinstall.url=…` online),
/// then the user's extra arguments.
pub fn kernel_options(env: &InstallerEnv, source_arg: &str, extra_args: &str) -> String {
    let mut options = format!("{} {source_arg}", env.cmdline);
    if !extra_args.trim().is_empty() {
        options = format!("{options} {}", extra_args.trim());
    }
    options
}

/// The installer's systemd-boot entry on the ESP.
pub const LOADER_ENTRY: &str = "loader/entries/autoinstall.conf";

/// The rescue entry's title and the argument it adds.
const RESCUE: (&str, &str) = (
    "Installer rescue shell (installs nothing)",
    " autoinstall.shell=1",
);

/// The ESP tree: the boot loader, the environment, and an entry booting it with `options`
/// (see [`kernel_options`]) plus a rescue-shell entry. systemd-boot's entries are written in
/// every case: they are the stick's record of its command line, which `inspect` and a
/// refresh read back.
pub fn esp_tree(env: &InstallerEnv, title: &str, options: &str) -> Result<Tree, String> {
    let mut tree = Tree::new();
    match &env.signed {
        Some(chain) => {
            tree.add_file("EFI/BOOT/BOOTX64.EFI", sized(&chain.shim)?);
            // shim starts the second stage by this name, from its own directory.
            tree.add_file("EFI/BOOT/grubx64.efi", sized(&chain.grub)?);
            if let Some(mm) = &chain.mok_manager {
                tree.add_file("EFI/BOOT/mmx64.efi", sized(mm)?);
            }
            let cfg = grub_cfg(title, options, Boot::Esp)?.into_bytes();
            // Debian's signed GRUB reads $prefix/grub.cfg (/EFI/debian) where it exists,
            // else the one beside itself.
            tree.add_file("EFI/BOOT/grub.cfg", Source::Bytes(cfg.clone()));
            tree.add_file("EFI/debian/grub.cfg", Source::Bytes(cfg));
        }
        None => {
            tree.add_file("EFI/BOOT/BOOTX64.EFI", sized(&env.efi)?);
        }
    }
    if env.bios.is_some() {
        let cfg = grub_cfg(title, options, Boot::Bios)?.into_bytes();
        tree.add_file(crate::bios::CONFIG, Source::Bytes(cfg));
    }
    tree.add_file("autoinstall/kernel", sized(&env.kernel)?);
    tree.add_file("autoinstall/initrd", sized(&env.initrd)?);
    // Boot at once; holding a key at power-on shows the menu with the rescue shell.
    tree.add_file(
        "loader/loader.conf",
        Source::Bytes(
            b"timeout 0\ndefault autoinstall.conf\nconsole-mode keep\neditor no\n".to_vec(),
        ),
    );
    let entry = |t: &str, extra: &str| {
        format!("title {t}\nlinux /autoinstall/kernel\ninitrd /autoinstall/initrd\noptions {options}{extra}\n")
    };
    tree.add_file(LOADER_ENTRY, Source::Bytes(entry(title, "").into_bytes()));
    tree.add_file(
        "loader/entries/rescue-shell.conf",
        Source::Bytes(entry(RESCUE.0, RESCUE.1).into_bytes()),
    );
    Ok(tree)
}

/// Where GRUB boots the installer from.
#[derive(Clone, Copy)]
enum Boot {
    /// The stick's ESP (or an ISO's, booted as a disk): the device GRUB was started from.
    Esp,
    /// A CD's ISO 9660 tree.
    Cd,
    /// The stick's ESP, from GRUB for BIOS, whose prefix already names it.
    Bios,
}

/// Where an ISO carries GRUB's El Torito image for BIOS (the `-b` entry).
pub const CD_BIOS_IMAGE: &str = "boot/grub/bios.img";

/// Adds to an ISO's ISO 9660 tree what it needs to boot as a CD through GRUB, for UEFI (the
/// signed chain) or a BIOS (the El Torito image), nothing without either: GRUB started from
/// the UEFI El Torito image cannot read that image, only the CD's ISO 9660, where Debian's
/// signed GRUB finds its root by `/.disk/info` and reads `/boot/grub/grub.cfg`; GRUB for BIOS
/// reads the same file from the CD it booted from. So the kernel and initrd are there too, a
/// second copy (the ESP's serve disk boots and systemd-boot).
pub fn add_cd_boot(
    tree: &mut Tree,
    env: &InstallerEnv,
    title: &str,
    options: &str,
) -> Result<(), String> {
    if let Some(img) = &env.bios_cd {
        tree.add_file(CD_BIOS_IMAGE, sized(img)?);
    }
    if env.signed.is_some() || env.bios_cd.is_some() {
        tree.add_file(
            ".disk/info",
            Source::Bytes(format!("{title}\n").into_bytes()),
        );
        tree.add_file("boot/kernel", sized(&env.kernel)?);
        tree.add_file("boot/initrd", sized(&env.initrd)?);
        tree.add_file(
            "boot/grub/grub.cfg",
            Source::Bytes(grub_cfg(title, options, Boot::Cd)?.into_bytes()),
        );
    }
    Ok(())
}

/// The words of a kernel command line as the kernel (and the installer's init) splits it:
/// spaces separate, double quotes group and are dropped.
fn kernel_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut in_word, mut quoted) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' | '\t' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// GRUB's configuration for the same two entries. GRUB rebuilds the kernel's command line
/// from its own words, wrapping a word with spaces in double quotes and escaping `"`, `'` and
/// `\` with a backslash (which the kernel does not read): so each kernel word goes to GRUB
/// unquoted, as one single-quoted GRUB word (GRUB's script would otherwise read `$` and `;`),
/// and a `'` or `\` is refused. The files are read from the device GRUB was started from
/// (`$cmdpath`), never searched for: a second stick must not boot instead.
fn grub_cfg(title: &str, options: &str, from: Boot) -> Result<String, String> {
    let (dir, set_root) = match from {
        Boot::Esp => (
            "/autoinstall",
            "regexp --set=1:root '^\\(([^)]+)\\)' \"$cmdpath\"\n",
        ),
        // Debian's GRUB set $root to the CD's ISO 9660 (found by /.disk/info) before it read
        // this file.
        Boot::Cd => ("/boot", ""),
        Boot::Bios => ("/autoinstall", ""),
    };
    let quote = |w: &str| format!("'{}'", w.replace('\'', r"'\''"));
    let words = |extra: &str| -> Result<String, String> {
        let words = kernel_words(&format!("{options}{extra}"));
        if let Some(w) = words.iter().find(|w| w.contains(['\'', '\\'])) {
            return Err(format!(
                "the kernel command line's {w:?} holds a ' or a \\, which GRUB (the stick's Secure Boot chain) would pass on escaped; leave them out of --kernel-args"
            ));
        }
        Ok(words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "))
    };
    let entry = |t: &str, extra: &str| -> Result<String, String> {
        Ok(format!(
            "menuentry {} {{\n  linux {dir}/kernel {}\n  initrd {dir}/initrd\n}}\n",
            quote(t),
            words(extra)?
        ))
    };
    Ok(format!(
        "# Written by mkinstaller: the installer, at once.\n{set_root}\
         set default=0\nset timeout=0\nset timeout_style=hidden\n{}{}",
        entry(title, "")?,
        entry(RESCUE.0, RESCUE.1)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_passes_each_kernel_word_literally() {
        let cfg = grub_cfg(
            "Install x",
            "console=ttyS0 autoinstall.args=\"--dry-run --yes\" x=$y;reboot",
            Boot::Esp,
        )
        .unwrap();
        assert!(cfg.contains("menuentry 'Install x' {"), "{cfg}");
        assert!(
            cfg.contains(
                "linux /autoinstall/kernel 'console=ttyS0' 'autoinstall.args=--dry-run --yes' 'x=$y;reboot'\n"
            ),
            "{cfg}"
        );
        assert!(
            cfg.contains("'x=$y;reboot' 'autoinstall.shell=1'\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains(r#"regexp --set=1:root '^\(([^)]+)\)' "$cmdpath""#),
            "{cfg}"
        );
        assert!(grub_cfg("t", "a='b'", Boot::Esp)
            .unwrap_err()
            .contains("holds a '"));
        assert!(grub_cfg("t", r"a=\b", Boot::Cd).is_err());
        let cd = grub_cfg("t", "a=b", Boot::Cd).unwrap();
        assert!(
            cd.contains("linux /boot/kernel 'a=b'\n  initrd /boot/initrd\n"),
            "{cd}"
        );
        assert!(!cd.contains("cmdpath"), "{cd}");
    }

    #[test]
    fn kernel_words_as_the_kernel_splits_them() {
        assert_eq!(
            kernel_words(r#" a  b="c d" "e=f g"h "#),
            ["a", "b=c d", "e=f gh"]
        );
    }
}
