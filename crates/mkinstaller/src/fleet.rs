//! The fleet as mkinstaller builds it: hosts.toml (or one `--system`) read, each host's
//! profile resolved and system realised, and every mistake that can be caught before anything
//! is written caught, naming the host, the file and the line.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use manifest::devices::Layout;
use manifest::document::{ExtraFile, LuksKey, Mode, EXTRA_FILES_DIR};
use manifest::hosts::{Defaults, Fleet, Host, SystemSource, UnknownSerial};
use media::payload::PayloadFile;
use nixstore::StorePath;
use sha2::{Digest, Sha256};

use crate::options::{BuildOptions, Error, Source};
use crate::ui::Ui;
use crate::{layouts, profiles};

/// The fleet as planned: hosts with their systems realised and layouts resolved.
pub struct Planned {
    pub mode: Mode,
    pub defaults: Defaults,
    /// Where the fleet came from, for messages: hosts.toml, or `--system`.
    pub file: PathBuf,
    pub hosts: Vec<PlannedHost>,
    /// With `on-unknown-serial = "enrol"`: the `[defaults]` profile's layout, whose rules
    /// name the disk an enrolled machine would get.
    pub enrol_layout: Option<Layout>,
    /// `[defaults] ssh-authorized-keys` and the lines of `ssh-authorized-keys-file`.
    pub ssh_authorized_keys: Vec<String>,
}

/// One host as planned.
pub struct PlannedHost {
    pub host: Host,
    pub toplevel: StorePath,
    /// The layout, checked against the system's own mounts (UUIDs it names filled in).
    pub layout: Layout,
    pub luks_keys: Vec<LuksKey>,
    pub key_files: Vec<PayloadFile>,
    /// The platform the system is built for (its toplevel's `system` file, as NixOS writes
    /// it: `x86_64-linux`), if it says.
    pub system: Option<String>,
}

/// Reads the fleet (hosts.toml, or one `--system`), resolves each host's layout (`layouts`),
/// builds its flake if it has one, and checks what can be checked before anything is
/// written: the system is in the store, and is a bootable NixOS toplevel unless the host
/// says `bootable = false`; what its fstab mounts is what the layout makes; its LUKS keys
/// fit the layout. Every mistake names the host, the file and its line.
pub fn plan_fleet(opts: &BuildOptions, ui: &Ui) -> Result<Planned, Error> {
    let (fleet, mode, base_dir) = match &opts.source {
        Source::Online { .. } => unreachable!("online boot media plan no fleet"),
        Source::Mass { file, host } => read_fleet(file, host.as_deref())?,
        Source::Flake { reference, host } => {
            ui.say(&format!("evaluating the fleet of flake {reference}"));
            let file = crate::flake::hosts_file(
                reference,
                &opts.cache_dir.join("flake"),
                host.as_deref(),
            )?;
            read_fleet(&file, host.as_deref())?
        }
        Source::System {
            path,
            name,
            profile,
            not_bootable,
        } => {
            let sp = StorePath::parse(path).map_err(|e| format!("--system: {e}"))?;
            let name = match name {
                Some(n) => n.clone(),
                None => host_name_of(&sp),
            };
            manifest::hosts::check_host_name(&name).map_err(|e| format!("--name: {e}"))?;
            let profile = profile
                .clone()
                .unwrap_or_else(|| manifest::hosts::DEFAULT_PROFILE.to_string());
            let fleet = Fleet {
                file: PathBuf::from("--system"),
                defaults: Defaults {
                    profile: profile.clone(),
                    ..Defaults::default()
                },
                hosts: vec![Host {
                    name,
                    serials: Vec::new(),
                    system: SystemSource::StorePath(sp),
                    profile,
                    disko: None,
                    luks_keys: Vec::new(),
                    disk: None,
                    extra_files: None,
                    bootable: !not_bootable,
                    tpm: None,
                    line: 0,
                }],
            };
            (
                fleet,
                Mode::Single,
                std::env::current_dir().unwrap_or_default(),
            )
        }
    };
    let file = fleet.file.clone();
    let flakes = if fleet
        .hosts
        .iter()
        .any(|h| matches!(h.system, SystemSource::Flake(_)))
    {
        ui.say("evaluating the flake hosts' disks");
        layouts::flake_disks(&fleet.hosts, &base_dir)
            .map_err(|e| format!("{}: {e}", file.display()))?
    } else {
        Default::default()
    };
    let mut hosts = Vec::new();
    for h in fleet.hosts {
        let at = format!("{}:{}: host {:?}", file.display(), h.line, h.name);
        let profile = profiles::resolve(&h.profile, &base_dir, opts.profiles_dir.as_deref())
            .map_err(|e| format!("{at}: {e}"))?;
        let flake = flakes.get(&h.name);
        let mut layout = layouts::layout_of(&h, &fleet.defaults, &profile, flake)
            .map_err(|e| format!("{at}: {e}"))?;
        let toplevel = match &h.system {
            SystemSource::StorePath(p) => p.clone(),
            SystemSource::Flake(f) => {
                ui.say(&format!("building {f} for host {}", h.name));
                build_flake(f, &base_dir).map_err(|e| format!("{at}: {e}"))?
            }
        };
        let system = check_system(&toplevel, h.bootable).map_err(|e| format!("{at}: {e}"))?;
        let luks = flake.map(|f| f.luks.as_slice()).unwrap_or_default();
        let checked = layouts::check_mounts(&mut layout, &toplevel, luks)
            .map_err(|e| format!("{at}: {e}"))?;
        if !checked && h.bootable {
            ui.warn(&format!(
                "{at}: system {toplevel} has no etc/fstab: its mounts cannot be checked against the layout"
            ));
        }
        let (luks_keys, key_files) =
            layouts::luks_keys(&h, &layout).map_err(|e| format!("{at}: {e}"))?;
        for name in layouts::keyless(&layout, &luks_keys) {
            ui.warn(&format!(
                "{at}: LUKS device {name} has no key (luks-keys): the installer asks for a passphrase on the console, so this host cannot be installed unattended"
            ));
        }
        // A volume sealed to one machine's TPM is lost with that TPM (a new main board, a
        // cleared TPM, a firmware update that moves PCR 7) unless a recovery key is escrowed.
        if let Some(name) = layouts::tpm2_volumes(&layout).first() {
            if fleet.defaults.recovery_recipients.is_empty() {
                return Err(format!(
                    "{at}: LUKS device {name} unlocks with the TPM2, and {} gives no [defaults] recovery-recipients: a volume sealed to one machine's TPM needs an escrowed recovery key (add recovery-recipients = [\"age1…\"] or an SSH public key)",
                    file.display()
                )
                .into());
            }
        }
        if let Some(dir) = &h.extra_files {
            if !dir.is_dir() {
                return Err(
                    format!("{at}: extra-files {} is not a directory", dir.display()).into(),
                );
            }
        }
        hosts.push(PlannedHost {
            host: h,
            toplevel,
            layout,
            luks_keys,
            key_files,
            system,
        });
    }
    let enrol_layout = match fleet.defaults.on_unknown_serial {
        UnknownSerial::Enrol => Some(
            profiles::resolve(
                &fleet.defaults.profile,
                &base_dir,
                opts.profiles_dir.as_deref(),
            )
            .map_err(|e| format!("{}: [defaults] profile: {e}", file.display()))?
            .to_layout(),
        ),
        _ => None,
    };
    if mode == Mode::Mass
        && matches!(
            fleet.defaults.on_unknown_serial,
            UnknownSerial::Refuse | UnknownSerial::Enrol
        )
    {
        for h in hosts
            .iter()
            .map(|p| &p.host)
            .filter(|h| h.serials.is_empty())
        {
            ui.warn(&format!(
                "{}:{}: host {:?} has no serials and on-unknown-serial is \"{}\": this stick can never install it (give it serials, or make it the host for unknown serials)",
                file.display(),
                h.line,
                h.name,
                if fleet.defaults.on_unknown_serial == UnknownSerial::Enrol {
                    "enrol"
                } else {
                    "refuse"
                }
            ));
        }
    }
    let mut ssh_authorized_keys = fleet.defaults.ssh_authorized_keys.clone();
    if let Some(f) = &fleet.defaults.ssh_authorized_keys_file {
        let text = fs::read_to_string(f).map_err(|e| {
            format!(
                "{}: ssh-authorized-keys-file {}: {e}",
                file.display(),
                f.display()
            )
        })?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            manifest::hosts::check_authorized_key(line)
                .map_err(|e| format!("{}:{}: {e}", f.display(), i + 1))?;
            ssh_authorized_keys.push(line.to_string());
        }
    }
    for k in &opts.extra_ssh_keys {
        if !ssh_authorized_keys.contains(k) {
            ssh_authorized_keys.push(k.clone());
        }
    }
    Ok(Planned {
        ssh_authorized_keys,
        mode,
        defaults: fleet.defaults,
        file,
        hosts,
        enrol_layout,
    })
}

/// Reads hosts.toml; with `host`, the fleet is that host alone (a per-host stick). Gives the
/// directory relative paths in it are resolved against.
fn read_fleet(file: &Path, host: Option<&str>) -> Result<(Fleet, Mode, PathBuf), Error> {
    let text = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut fleet = Fleet::parse(file, &text).map_err(|e| e.to_string())?;
    let mode = match host {
        Some(name) => {
            let h = fleet.host(name).cloned().ok_or_else(|| {
                let names: Vec<&str> = fleet.hosts.iter().map(|h| h.name.as_str()).collect();
                format!(
                    "{}: there is no host {name:?} (hosts: {})",
                    file.display(),
                    names.join(", ")
                )
            })?;
            fleet.hosts = vec![h];
            Mode::Single
        }
        None => Mode::Mass,
    };
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok((fleet, mode, base))
}

/// The system must be in this machine's Nix store, and (unless `bootable` is false) a NixOS
/// toplevel the installer can make bootable: with `bin/switch-to-configuration`, `kernel`
/// and `init`. Returns the platform its `system` file names (NixOS toplevels have one).
fn check_system(toplevel: &StorePath, bootable: bool) -> Result<Option<String>, String> {
    let path = PathBuf::from(toplevel.to_string());
    if std::fs::symlink_metadata(&path).is_err() {
        return Err(format!(
            "system {toplevel} is not in this machine's Nix store; build it here first, or copy it here (nix copy --from …)"
        ));
    }
    if bootable {
        let missing: Vec<&str> = ["bin/switch-to-configuration", "kernel", "init"]
            .into_iter()
            .filter(|f| std::fs::symlink_metadata(path.join(f)).is_err())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "system {toplevel} is not a bootable NixOS system (it has no {}); give the host's config.system.build.toplevel, or say bootable = false to install a bare closure without a boot loader",
                missing.join(", ")
            ));
        }
    }
    let system = match std::fs::read_to_string(path.join("system")) {
        Err(_) => None,
        // A bare closure's `system`, if it has one, is whatever its maker put there.
        Ok(text) if !bootable => {
            Some(text.trim().to_string()).filter(|s| manifest::document::check_platform(s).is_ok())
        }
        Ok(text) => {
            let system = text.trim().to_string();
            manifest::document::check_platform(&system).map_err(|e| {
                format!("system {toplevel}: its `system` file says {system:?}: {e}")
            })?;
            Some(system)
        }
    };
    Ok(system)
}

/// `nixos-system-dev-365-25.05.20250101.abcdef` → `dev-365`: NixOS appends one version
/// component, and host names may themselves end in `-<digits>`, so only the last goes.
pub fn host_name_of(p: &StorePath) -> String {
    let name = p.name().strip_prefix("nixos-system-").unwrap_or(p.name());
    match name.rsplit_once('-') {
        Some((host, version))
            if !host.is_empty() && version.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            host.to_string()
        }
        _ => name.to_string(),
    }
}

/// Runs `nix ARGS` (with flakes) in `dir` and reads the JSON it prints; `what` names the call
/// in errors.
pub fn nix_json(args: &[&str], dir: &Path, what: &str) -> Result<serde_json::Value, String> {
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running {what}: {e} (is Nix installed?)"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{what}: unreadable JSON output: {e}"))
}

/// Builds `REF#NAME` as `REF#nixosConfigurations.NAME.config.system.build.toplevel`.
fn build_flake(flake: &str, dir: &Path) -> Result<StorePath, String> {
    let (reference, name) = flake
        .split_once('#')
        .ok_or_else(|| format!("flake {flake:?} must be REF#NAME"))?;
    let attr = format!("{reference}#nixosConfigurations.{name}.config.system.build.toplevel");
    let json = nix_json(
        &["build", "--no-link", "--json", &attr],
        dir,
        &format!("nix build {attr}"),
    )?;
    let path = json[0]["outputs"]["out"]
        .as_str()
        .ok_or_else(|| format!("nix build {attr}: no output path in {json}"))?;
    StorePath::parse(path).map_err(|e| e.to_string())
}

pub fn extra_files(host: &Host) -> Result<(Vec<ExtraFile>, Vec<PayloadFile>), String> {
    let Some(dir) = &host.extra_files else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut entries = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        let mut children: Vec<_> = fs::read_dir(&d)
            .map_err(|e| format!("extra-files {}: {e}", d.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("extra-files {}: {e}", d.display()))?;
        children.sort_by_key(|e| e.file_name());
        for e in children {
            let p = e.path();
            let meta = fs::symlink_metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let rel = p
                .strip_prefix(dir)
                .expect("under dir")
                .to_string_lossy()
                .into_owned();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let data = fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                let source = format!("{EXTRA_FILES_DIR}/{}/{rel}", host.name);
                // Files in the Nix store (a flake's extra files, always with lib.mkInstaller)
                // are all read-only for everyone there: installed as they are, an SSH host key
                // would be world-readable, and sshd would refuse it. Those go in as 0600 (0700
                // if executable); elsewhere the file's own mode is kept.
                let mut mode = meta.permissions().mode() & 0o7777;
                if p.starts_with(nixstore::store_path::STORE_DIR) {
                    mode = if mode & 0o111 != 0 { 0o700 } else { 0o600 };
                }
                entries.push(ExtraFile {
                    target: rel,
                    source: source.clone(),
                    mode,
                    sha256: format!("{:x}", Sha256::digest(&data)),
                    size: data.len() as u64,
                });
                files.push(PayloadFile {
                    payload_path: source,
                    source: p,
                    size: meta.len(),
                });
            } else {
                return Err(format!(
                    "extra-files: {} is neither a file nor a directory; only those are copied",
                    p.display()
                ));
            }
        }
    }
    Ok((entries, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_toplevels() {
        let p = |s: &str| StorePath::parse(&format!("/nix/store/{}-{s}", "0".repeat(32))).unwrap();
        assert_eq!(
            host_name_of(&p("nixos-system-dev-365-25.05.20250101.abcdef")),
            "dev-365"
        );
        assert_eq!(host_name_of(&p("nixos-system-web1-24.11")), "web1");
        assert_eq!(host_name_of(&p("my-system")), "my-system");
        assert_eq!(host_name_of(&p("nixos-system-host-1-1")), "host-1");
    }
}
