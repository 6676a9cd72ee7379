//! The ESP of an installer stick: the removable-media boot loader, its entries, and the
//! installer environment's kernel and initrd. Where the environment carries its
//! distribution's signed boot chain (Debian's Microsoft-signed shim and Debian-signed GRUB),
//! that is the boot loader, so the stick boots with Secure Boot on under the vendor's keys:
//! the firmware checks shim, shim checks GRUB and GRUB (through shim) the kernel; the initrd
//! and the command line are not checked (see docs/SECURITY.md). Otherwise systemd-boot.
//!
//! A stick may carry environments for several architectures (a mixed fleet: x86-64 and
//! aarch64): the firmware starts the removable-media loader of its own architecture
//! (`BOOTX64.EFI`, `BOOTAA64.EFI`), whose entries name that architecture's kernel and initrd
//! (systemd-boot skips entries whose `architecture` is not its own; GRUB's configuration
//! branches on `$grub_cpu`).

use std::fs;
use std::path::{Path, PathBuf};

use crate::fat32::{Source, Tree};

/// The UEFI architecture an environment boots on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arch {
    X64,
    Aa64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X64, Arch::Aa64];

    /// The suffix of its EFI file names (`systemd-bootx64.efi`), as systemd-boot's
    /// `architecture` key takes it.
    pub fn efi(self) -> &'static str {
        match self {
            Arch::X64 => "x64",
            Arch::Aa64 => "aa64",
        }
    }

    /// The platform Nix builds for it.
    pub fn nix_platform(self) -> &'static str {
        match self {
            Arch::X64 => "x86_64-linux",
            Arch::Aa64 => "aarch64-linux",
        }
    }

    /// The one for a Nix platform (`x86_64-linux`), if any.
    pub fn of_platform(platform: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.nix_platform() == platform)
    }

    /// How images/debian/build names it (`--arch`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X64 => "amd64",
            Arch::Aa64 => "arm64",
        }
    }

    /// GRUB's `$grub_cpu`.
    fn grub_cpu(self) -> &'static str {
        match self {
            Arch::X64 => "x86_64",
            Arch::Aa64 => "arm64",
        }
    }

    /// Where its kernel and initrd go under a directory of the ESP (or the CD): x86-64's where
    /// they always were, the others' in a directory named after them.
    fn sub(self, dir: &str) -> String {
        match self {
            Arch::X64 => dir.to_string(),
            other => format!("{dir}/{}", other.efi()),
        }
    }
}

/// An installer environment directory, as images/debian/build and the flake produce it.
#[derive(Debug, Clone)]
pub struct InstallerEnv {
    pub dir: PathBuf,
    /// Which of `systemd-bootx64.efi`, `systemd-bootaa64.efi` it holds.
    pub arch: Arch,
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
    /// Loads `dir`, which must hold `kernel`, `initrd`, `cmdline` and `systemd-bootx64.efi`
    /// (or `systemd-bootaa64.efi`, and the names below with aa64 for x64).
    pub fn load(dir: &Path) -> Result<InstallerEnv, String> {
        let arch = Arch::ALL
            .into_iter()
            .find(|a| dir.join(format!("systemd-boot{}.efi", a.efi())).is_file())
            .unwrap_or(Arch::X64);
        let e = arch.efi();
        let need = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "the installer environment {} has no {name}; build one with images/debian/build (--arch arm64 for aarch64 machines) or point --installer at a directory with kernel, initrd, cmdline and systemd-bootx64.efi (systemd-bootaa64.efi)",
                    dir.display()
                ))
            }
        };
        let cmdline_file = need("cmdline")?;
        Ok(InstallerEnv {
            dir: dir.to_path_buf(),
            arch,
            kernel: need("kernel")?,
            initrd: need("initrd")?,
            efi: need(&format!("systemd-boot{e}.efi"))?,
            cmdline: fs::read_to_string(&cmdline_file)
                .map_err(|e| format!("{}: {e}", cmdline_file.display()))?
                .trim()
                .to_string(),
            stub: Some(dir.join(format!("linux{e}.efi.stub"))).filter(|p| p.is_file()),
            helper: Some(dir.join("autoinstall-terminal")).filter(|p| p.is_file()),
            bios: crate::bios::BiosBoot::load(dir)?,
            bios_cd: Some(dir.join(crate::bios::ELTORITO_IMG)).filter(|p| p.is_file()),
            bios_hybrid: Some(dir.join(crate::bios::HYBRID_IMG)).filter(|p| p.is_file()),
            signed: match (
                dir.join(format!("shim{e}.efi")),
                dir.join(format!("grub{e}.efi")),
            ) {
                (shim, grub) if shim.is_file() && grub.is_file() => Some(SignedChain {
                    shim,
                    grub,
                    mok_manager: Some(dir.join(format!("mm{e}.efi"))).filter(|p| p.is_file()),
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

/// One environment a medium boots, with its kernel command line (see [`kernel_options`]).
pub struct EnvBoot<'a> {
    pub env: &'a InstallerEnv,
    pub options: String,
}

/// The ESP tree: for each environment (the first is the stick's primary one), its boot
/// loader, kernel and initrd, and an entry booting it with its options plus a rescue-shell
/// entry. systemd-boot's entries are written in every case: they are the stick's record of
/// its command line, which `inspect` and a refresh read back (the primary's).
pub fn esp_tree(boots: &[EnvBoot<'_>], title: &str) -> Result<Tree, String> {
    let mixed = boots.len() > 1;
    let mut tree = Tree::new();
    for b in boots {
        let e = b.env.arch.efi();
        let removable = format!("EFI/BOOT/BOOT{}.EFI", e.to_uppercase());
        match &b.env.signed {
            Some(chain) => {
                tree.add_file(&removable, sized(&chain.shim)?);
                // shim starts the second stage by this name, from its own directory.
                tree.add_file(&format!("EFI/BOOT/grub{e}.efi"), sized(&chain.grub)?);
                if let Some(mm) = &chain.mok_manager {
                    tree.add_file(&format!("EFI/BOOT/mm{e}.efi"), sized(mm)?);
                }
            }
            None => tree.add_file(&removable, sized(&b.env.efi)?),
        }
    }
    let signed: Vec<&EnvBoot> = boots.iter().filter(|b| b.env.signed.is_some()).collect();
    if !signed.is_empty() {
        let cfg = grub_cfg(&signed, title, Medium::Esp)?.into_bytes();
        // Debian's signed GRUB reads $prefix/grub.cfg (/EFI/debian) where it exists,
        // else the one beside itself.
        tree.add_file("EFI/BOOT/grub.cfg", Source::Bytes(cfg.clone()));
        tree.add_file("EFI/debian/grub.cfg", Source::Bytes(cfg));
    }
    if let Some(b) = boots.iter().find(|b| b.env.bios.is_some()) {
        let cfg = grub_cfg(&[b], title, Medium::Bios)?.into_bytes();
        tree.add_file(crate::bios::CONFIG, Source::Bytes(cfg));
    }
    for b in boots {
        let dir = b.env.arch.sub("autoinstall");
        tree.add_file(&format!("{dir}/kernel"), sized(&b.env.kernel)?);
        tree.add_file(&format!("{dir}/initrd"), sized(&b.env.initrd)?);
    }
    // Boot at once; holding a key at power-on shows the menu with the rescue shell. With
    // several architectures, each loader sees only its own entries (`architecture`), and the
    // default is whichever installer entry that leaves.
    let default = if mixed {
        "autoinstall*"
    } else {
        "autoinstall.conf"
    };
    tree.add_file(
        "loader/loader.conf",
        Source::Bytes(
            format!("timeout 0\ndefault {default}\nconsole-mode keep\neditor no\n").into_bytes(),
        ),
    );
    for (n, b) in boots.iter().enumerate() {
        let arch = if mixed {
            format!("architecture {}\n", b.env.arch.efi())
        } else {
            String::new()
        };
        let dir = b.env.arch.sub("/autoinstall");
        let entry = |t: &str, extra: &str| {
            format!(
                "title {t}\n{arch}linux {dir}/kernel\ninitrd {dir}/initrd\noptions {}{extra}\n",
                b.options
            )
        };
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{}", b.env.arch.efi())
        };
        tree.add_file(
            &format!("loader/entries/autoinstall{suffix}.conf"),
            Source::Bytes(entry(title, "").into_bytes()),
        );
        tree.add_file(
            &format!("loader/entries/rescue-shell{suffix}.conf"),
            Source::Bytes(entry(RESCUE.0, RESCUE.1).into_bytes()),
        );
    }
    Ok(tree)
}

/// Where GRUB boots the installer from.
#[derive(Clone, Copy)]
enum Medium {
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
/// reads the same file from the CD it booted from. So the kernels and initrds are there too, a
/// second copy (the ESP's serve disk boots and systemd-boot).
pub fn add_cd_boot(tree: &mut Tree, boots: &[EnvBoot<'_>], title: &str) -> Result<(), String> {
    let grub: Vec<&EnvBoot> = boots
        .iter()
        .filter(|b| b.env.signed.is_some() || b.env.bios_cd.is_some())
        .collect();
    if let Some(img) = boots.iter().find_map(|b| b.env.bios_cd.as_ref()) {
        tree.add_file(CD_BIOS_IMAGE, sized(img)?);
    }
    if grub.is_empty() {
        return Ok(());
    }
    tree.add_file(
        ".disk/info",
        Source::Bytes(format!("{title}\n").into_bytes()),
    );
    for b in &grub {
        let dir = b.env.arch.sub("boot");
        tree.add_file(&format!("{dir}/kernel"), sized(&b.env.kernel)?);
        tree.add_file(&format!("{dir}/initrd"), sized(&b.env.initrd)?);
    }
    tree.add_file(
        "boot/grub/grub.cfg",
        Source::Bytes(grub_cfg(&grub, title, Medium::Cd)?.into_bytes()),
    );
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
fn grub_cfg(boots: &[&EnvBoot<'_>], title: &str, from: Medium) -> Result<String, String> {
    let (dir, set_root) = match from {
        Medium::Esp => (
            "/autoinstall",
            "regexp --set=1:root '^\\(([^)]+)\\)' \"$cmdpath\"\n",
        ),
        // Debian's GRUB set $root to the CD's ISO 9660 (found by /.disk/info) before it read
        // this file.
        Medium::Cd => ("/boot", ""),
        Medium::Bios => ("/autoinstall", ""),
    };
    let quote = |w: &str| format!("'{}'", w.replace('\'', r"'\''"));
    let entries = |b: &EnvBoot| -> Result<String, String> {
        let words = |extra: &str| -> Result<String, String> {
            let words = kernel_words(&format!("{}{extra}", b.options));
            if let Some(w) = words.iter().find(|w| w.contains(['\'', '\\'])) {
                return Err(format!(
                    "the kernel command line's {w:?} holds a ' or a \\, which GRUB (the stick's Secure Boot chain) would pass on escaped; leave them out of --kernel-args"
                ));
            }
            Ok(words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "))
        };
        let dir = b.env.arch.sub(dir);
        let entry = |t: &str, extra: &str| -> Result<String, String> {
            Ok(format!(
                "menuentry {} {{\n  linux {dir}/kernel {}\n  initrd {dir}/initrd\n}}\n",
                quote(t),
                words(extra)?
            ))
        };
        Ok(format!(
            "{}{}",
            entry(title, "")?,
            entry(RESCUE.0, RESCUE.1)?
        ))
    };
    let body = match boots {
        [one] => entries(one)?,
        // Each GRUB keeps its own architecture's entries: x86-64's last, for both of its
        // GRUBs (x86_64-efi and i386-pc for BIOS).
        several => {
            let mut sorted = several.to_vec();
            sorted.sort_by_key(|b| std::cmp::Reverse(b.env.arch));
            let mut body = String::new();
            for (n, b) in sorted.iter().enumerate() {
                body += &match (n, b.env.arch) {
                    (_, Arch::X64) if n > 0 => "else\n".to_string(),
                    (0, arch) => format!("if [ \"$grub_cpu\" = {} ]; then\n", arch.grub_cpu()),
                    (_, arch) => format!("elif [ \"$grub_cpu\" = {} ]; then\n", arch.grub_cpu()),
                };
                body += &entries(b)?;
            }
            body + "fi\n"
        }
    };
    Ok(format!(
        "# Written by mkinstaller: the installer, at once.\n{set_root}\
         set default=0\nset timeout=0\nset timeout_style=hidden\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment of `arch` in `dir`, its files a few bytes each (with a signed chain if
    /// `signed`).
    fn env(dir: &Path, arch: Arch, signed: bool) -> InstallerEnv {
        let e = arch.efi();
        let dir = dir.join(e);
        fs::create_dir_all(&dir).unwrap();
        let mut files = vec![
            "kernel".to_string(),
            "initrd".into(),
            format!("systemd-boot{e}.efi"),
        ];
        if signed {
            files.extend([format!("shim{e}.efi"), format!("grub{e}.efi")]);
        }
        for f in files {
            fs::write(dir.join(f), e).unwrap();
        }
        fs::write(dir.join("cmdline"), format!("console={e}\n")).unwrap();
        InstallerEnv::load(&dir).unwrap()
    }

    fn boot<'a>(env: &'a InstallerEnv, options: &str) -> EnvBoot<'a> {
        EnvBoot {
            env,
            options: options.to_string(),
        }
    }

    fn text(tree: &Tree, path: &str) -> String {
        let walked = tree.walk();
        match walked.iter().find(|(p, _)| p == path) {
            Some((_, Some(Source::Bytes(b)))) => String::from_utf8(b.clone()).unwrap(),
            Some((_, Some(Source::File { path, .. }))) => fs::read_to_string(path).unwrap(),
            _ => panic!(
                "no file {path} in {:?}",
                walked.iter().map(|w| &w.0).collect::<Vec<_>>()
            ),
        }
    }

    #[test]
    fn grub_passes_each_kernel_word_literally() {
        let dir = tempfile::tempdir().unwrap();
        let x64 = env(dir.path(), Arch::X64, true);
        let b = boot(
            &x64,
            "console=ttyS0 autoinstall.args=\"--dry-run --yes\" x=$y;reboot",
        );
        let cfg = grub_cfg(&[&b], "Install x", Medium::Esp).unwrap();
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
        assert!(!cfg.contains("grub_cpu"), "{cfg}");
        assert!(grub_cfg(&[&boot(&x64, "a='b'")], "t", Medium::Esp)
            .unwrap_err()
            .contains("holds a '"));
        assert!(grub_cfg(&[&boot(&x64, r"a=\b")], "t", Medium::Cd).is_err());
        let cd = grub_cfg(&[&boot(&x64, "a=b")], "t", Medium::Cd).unwrap();
        assert!(
            cd.contains("linux /boot/kernel 'a=b'\n  initrd /boot/initrd\n"),
            "{cd}"
        );
        assert!(!cd.contains("cmdpath"), "{cd}");
    }

    #[test]
    fn an_environment_is_known_by_its_boot_loader_s_name() {
        let dir = tempfile::tempdir().unwrap();
        let arm = env(dir.path(), Arch::Aa64, true);
        assert_eq!(arm.arch, Arch::Aa64);
        assert!(arm.efi.ends_with("systemd-bootaa64.efi"));
        assert!(arm.signed.unwrap().grub.ends_with("grubaa64.efi"));
        assert_eq!(env(dir.path(), Arch::X64, false).arch, Arch::X64);
        assert_eq!(Arch::of_platform("aarch64-linux"), Some(Arch::Aa64));
        assert_eq!(Arch::of_platform("riscv64-linux"), None);
    }

    #[test]
    fn one_environment_gives_the_single_architecture_esp() {
        let dir = tempfile::tempdir().unwrap();
        let x64 = env(dir.path(), Arch::X64, false);
        let tree = esp_tree(&[boot(&x64, "o=1")], "T").unwrap();
        assert_eq!(
            text(&tree, "loader/loader.conf"),
            "timeout 0\ndefault autoinstall.conf\nconsole-mode keep\neditor no\n"
        );
        assert_eq!(
            text(&tree, LOADER_ENTRY),
            "title T\nlinux /autoinstall/kernel\ninitrd /autoinstall/initrd\noptions o=1\n"
        );
        assert_eq!(text(&tree, "EFI/BOOT/BOOTX64.EFI"), "x64");
        assert!(tree.walk().iter().all(|(p, _)| !p.contains("aa64")));
    }

    #[test]
    fn a_mixed_esp_boots_each_architecture_its_own_installer() {
        let dir = tempfile::tempdir().unwrap();
        let (x64, arm) = (
            env(dir.path(), Arch::X64, true),
            env(dir.path(), Arch::Aa64, true),
        );
        let boots = [boot(&x64, "console=ttyS0"), boot(&arm, "console=ttyAMA0")];
        let tree = esp_tree(&boots, "T").unwrap();
        // The firmware starts its own architecture's removable-media loader: shim, then the
        // GRUB beside it.
        for (file, want) in [
            ("EFI/BOOT/BOOTX64.EFI", "x64"),
            ("EFI/BOOT/grubx64.efi", "x64"),
            ("EFI/BOOT/BOOTAA64.EFI", "aa64"),
            ("EFI/BOOT/grubaa64.efi", "aa64"),
            ("autoinstall/kernel", "x64"),
            ("autoinstall/aa64/kernel", "aa64"),
            ("autoinstall/aa64/initrd", "aa64"),
        ] {
            assert_eq!(text(&tree, file), want, "{file}");
        }
        // systemd-boot: each entry says its architecture; the default matches both installer
        // entries, of which each loader keeps its own.
        assert!(text(&tree, "loader/loader.conf").contains("default autoinstall*\n"));
        assert_eq!(
            text(&tree, LOADER_ENTRY),
            "title T\narchitecture x64\nlinux /autoinstall/kernel\ninitrd /autoinstall/initrd\noptions console=ttyS0\n"
        );
        assert_eq!(
            text(&tree, "loader/entries/autoinstall-aa64.conf"),
            "title T\narchitecture aa64\nlinux /autoinstall/aa64/kernel\ninitrd /autoinstall/aa64/initrd\noptions console=ttyAMA0\n"
        );
        assert!(
            text(&tree, "loader/entries/rescue-shell-aa64.conf").contains("autoinstall.shell=1")
        );
        // GRUB: one file for both, branching on the CPU GRUB was built for.
        let cfg = text(&tree, "EFI/BOOT/grub.cfg");
        let arm_at = cfg
            .find("if [ \"$grub_cpu\" = arm64 ]; then\n")
            .expect(&cfg);
        let else_at = cfg.find("else\n").expect(&cfg);
        assert!(arm_at < else_at && cfg.ends_with("fi\n"), "{cfg}");
        assert!(
            cfg[arm_at..else_at].contains("linux /autoinstall/aa64/kernel 'console=ttyAMA0'"),
            "{cfg}"
        );
        assert!(
            cfg[else_at..].contains("linux /autoinstall/kernel 'console=ttyS0'"),
            "{cfg}"
        );
        // The same on a CD.
        let mut cd = Tree::new();
        add_cd_boot(&mut cd, &boots, "T").unwrap();
        assert_eq!(text(&cd, "boot/aa64/kernel"), "aa64");
        assert!(
            text(&cd, "boot/grub/grub.cfg").contains("linux /boot/aa64/kernel 'console=ttyAMA0'")
        );
    }

    #[test]
    fn kernel_words_as_the_kernel_splits_them() {
        assert_eq!(
            kernel_words(r#" a  b="c d" "e=f g"h "#),
            ["a", "b=c d", "e=f gh"]
        );
    }
}
