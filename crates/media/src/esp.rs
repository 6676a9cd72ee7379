//! The ESP of an installer stick: systemd-boot as the removable-media boot loader, a loader
//! entry, and the installer environment's kernel and initrd.

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

/// The ESP tree: systemd-boot, the environment, and an entry booting it with `options`
/// (see [`kernel_options`]) plus a rescue-shell entry.
pub fn esp_tree(env: &InstallerEnv, title: &str, options: &str) -> Result<Tree, String> {
    let mut tree = Tree::new();
    tree.add_file("EFI/BOOT/BOOTX64.EFI", sized(&env.efi)?);
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
        Source::Bytes(
            entry(
                "Installer rescue shell (installs nothing)",
                " autoinstall.shell=1",
            )
            .into_bytes(),
        ),
    );
    Ok(tree)
}
