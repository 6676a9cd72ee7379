//! The installer environments a medium boots: those given with `--installer` (one per
//! architecture), and for a fleet with hosts of an architecture none of them boots, the one
//! images/debian/build makes for that architecture in its default place. A stick or ISO carries
//! them all (the firmware picks its own: `BOOTX64.EFI`, `BOOTAA64.EFI`); netboot files and a
//! kexec bundle boot one.

use std::path::PathBuf;

use media::esp::{Arch, BootLoader, InstallerEnv};

use crate::cli::{DEFAULT_INSTALLER, DEFAULT_INSTALLER_ARM64};
use crate::fleet::Planned;

/// The environment for `arch` when none is given: $MKINSTALLER_INSTALLER (x86-64) or
/// $MKINSTALLER_INSTALLER_ARM64 (the flake's wrapper sets them), else where
/// images/debian/build puts it.
fn default_dir(arch: Arch) -> PathBuf {
    let (var, dir) = match arch {
        Arch::X64 => ("MKINSTALLER_INSTALLER", DEFAULT_INSTALLER),
        Arch::Aa64 => ("MKINSTALLER_INSTALLER_ARM64", DEFAULT_INSTALLER_ARM64),
    };
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(dir))
}

/// The environments in `dirs`, x86-64's first; two for one architecture are refused.
pub fn load_given(dirs: &[PathBuf], boot_loader: BootLoader) -> Result<Vec<InstallerEnv>, String> {
    let mut envs: Vec<InstallerEnv> = Vec::new();
    for dir in dirs {
        let env = InstallerEnv::load(dir)?.with_boot_loader(boot_loader)?;
        if let Some(other) = envs.iter().find(|e| e.arch == env.arch) {
            return Err(format!(
                "--installer {} and --installer {} are both for {} machines: give one environment per architecture",
                other.dir.display(),
                dir.display(),
                env.arch.debian()
            ));
        }
        envs.push(env);
    }
    envs.sort_by_key(|e| e.arch);
    Ok(envs)
}

/// `given` completed for `planned`'s hosts: for each architecture a host is built for that
/// none of them boots, the default environment for it (or a refusal saying how to make it). A
/// host of a platform no environment can boot is refused.
pub fn for_fleet(
    mut envs: Vec<InstallerEnv>,
    boot_loader: BootLoader,
    planned: &Planned,
) -> Result<Vec<InstallerEnv>, String> {
    for host in &planned.hosts {
        let Some(platform) = host.system.as_deref() else {
            continue;
        };
        let name = &host.host.name;
        let arch = Arch::of_platform(platform).ok_or_else(|| {
            format!(
                "{}: host {name} is built for {platform}: the installer runs on x86_64-linux and aarch64-linux machines only",
                planned.file.display(),
            )
        })?;
        if envs.iter().any(|e| e.arch == arch) {
            continue;
        }
        let dir = default_dir(arch);
        if !dir
            .join(format!("systemd-boot{}.efi", arch.efi()))
            .is_file()
        {
            return Err(format!(
                "{}: host {name} is built for {platform}, and no installer environment for {} machines is given: build one with `images/debian/build --arch {}` (it goes to {}, where mkinstaller looks) or name its directory with another --installer DIR",
                planned.file.display(),
                arch.debian(),
                arch.debian(),
                dir.display()
            ));
        }
        envs.push(InstallerEnv::load(&dir)?.with_boot_loader(boot_loader)?);
        envs.sort_by_key(|e| e.arch);
    }
    Ok(envs)
}

/// The one environment of `envs` that netboot files or a kexec bundle (`what`) boot: they
/// carry one kernel, so several are refused.
pub fn single<'a>(envs: &'a [InstallerEnv], what: &str) -> Result<&'a InstallerEnv, String> {
    match envs {
        [env] => Ok(env),
        _ => Err(format!(
            "{what} boot one architecture, not {}: make them once per architecture (--host, a hosts.toml of one architecture, or one --installer); a USB stick or ISO boots them all",
            envs.iter()
                .map(|e| e.arch.debian())
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}
