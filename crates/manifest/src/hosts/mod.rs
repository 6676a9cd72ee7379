//! `hosts.toml`: the fleet. Strict (unknown keys are errors), versioned, and every refusal
//! names the file, line and column.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::location::{from_toml, LocatedError};

mod host;
use host::HostFile;

/// The hosts.toml format version this build reads.
pub const HOSTS_VERSION: u32 = 1;
/// The profile used when neither the host nor `[defaults]` names one.
pub const DEFAULT_PROFILE: &str = "uefi-ext4";

/// What the installer does when the machine's serial matches no host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy", content = "host")]
pub enum UnknownSerial {
    /// Show a menu of hosts on the console.
    Ask,
    /// Stop without touching any disk.
    Refuse,
    /// Install this host.
    Host(String),
    /// Record the machine's inventory on the stick as a pending machine, touch no disk, and
    /// power off (`mkinstaller reports --pending` turns it into a hosts.toml block).
    Enrol,
}

/// What the installer does once the install succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterInstall {
    Reboot,
    Poweroff,
    Shell,
}

/// What the installer does on a machine whose disk already holds this host, installed from
/// this fleet (a stick left in, booted again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reinstall {
    /// Ask on the console, with a countdown that ends in *not* reinstalling; with no one to
    /// ask, never.
    Ask,
    /// Never: boot the installed system instead.
    Never,
    /// Always, unattended (a lab that reinstalls on every boot).
    Always,
}

/// When the installer checks the payload: all of it before the first write, or each NAR in
/// full as it is written (one read of the stick instead of two).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verify {
    /// Streaming where the chosen disks hold nothing (so a bad NAR can cost nothing), first
    /// everywhere else.
    #[default]
    Auto,
    /// The whole closure is checked before any disk is touched: a damaged stick never costs
    /// a machine its old system.
    First,
    /// Each NAR is checked in full as it is written, whatever the disks hold; a bad one fails
    /// the install with no boot entry.
    Streaming,
}

impl Verify {
    pub fn is_auto(&self) -> bool {
        *self == Verify::Auto
    }

    pub fn name(self) -> &'static str {
        match self {
            Verify::Auto => "auto",
            Verify::First => "first",
            Verify::Streaming => "streaming",
        }
    }
}

/// How the hosts' secrets (extra files, LUKS keys) travel on a stick or a site. No default:
/// a fleet with secrets says which, so none travel in the clear by accident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Secrets {
    /// Sealed with age to the fleet's passphrase (mkinstaller `--secrets-passphrase-file`),
    /// typed on each machine at install.
    Passphrase,
    /// In the clear: whoever holds the stick holds them.
    Clear,
    /// Sealed to each host's TPM (its `tpm`, recorded when the machine enrolled): only that
    /// machine opens them, with nothing typed.
    Tpm,
}

/// What the installer does where a layout unlocks a LUKS volume with the TPM2 and the
/// machine has no TPM (or its TPM refuses): never a silent downgrade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WithoutTpm {
    /// Refuse the install, before any disk is touched.
    #[default]
    Refuse,
    /// Ask for a passphrase on the console (twice), which unlocks the volume at boot.
    Passphrase,
    /// Install with the escrowed recovery key as the only way in (typed at boot).
    RecoveryKey,
}

impl WithoutTpm {
    pub fn is_refuse(&self) -> bool {
        *self == WithoutTpm::Refuse
    }

    pub fn name(self) -> &'static str {
        match self {
            WithoutTpm::Refuse => "refuse",
            WithoutTpm::Passphrase => "passphrase",
            WithoutTpm::RecoveryKey => "recovery-key",
        }
    }
}

/// What the installer does with the fleet's Secure Boot keys on a machine whose firmware is
/// not in setup mode (it has a platform key already: the vendor's, usually).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotInSetupMode {
    /// Install, leaving the firmware's keys as they are (and say so in the report).
    #[default]
    Skip,
    /// Refuse the install, before any disk is touched.
    Refuse,
}

/// `[defaults] secure-boot = { keys = "DIR", not-in-setup-mode = "skip" }`: the fleet's PK,
/// KEK and db, enrolled at install on machines in setup mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureBootDefaults {
    /// Holds PK.auth, KEK.auth and db.auth: signed EFI signature lists (sbctl, efitools).
    pub keys: PathBuf,
    pub not_in_setup_mode: NotInSetupMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SecureBootFile {
    keys: String,
    not_in_setup_mode: Option<NotInSetupMode>,
}

/// Where a host's NixOS system comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemSource {
    /// A toplevel already in the local store.
    StorePath(nixstore::StorePath),
    /// A flake reference `REF#NAME`, built as `REF#nixosConfigurations.NAME.config.system.build.toplevel`.
    Flake(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Defaults {
    pub profile: String,
    /// The disko layout of every host that names none (and no flake host whose configuration
    /// has its own).
    pub disko: Option<PathBuf>,
    pub on_unknown_serial: UnknownSerial,
    pub after_install: AfterInstall,
    pub reinstall: Reinstall,
    pub confirm_seconds: u32,
    /// When the installer checks the payload (`verify = "auto" | "first" | "streaming"`).
    pub verify: Verify,
    /// The fleet's name, signed into every manifest and lookup: an installer told its fleet
    /// (`autoinstall.fleet=`) refuses another fleet's files signed with the same key.
    pub fleet: Option<String>,
    /// Which build of the fleet this is (larger is newer), signed into every manifest and
    /// lookup: an installer told a minimum (`autoinstall.min-generation=`) refuses older ones,
    /// so a replayed old site cannot roll a machine back. Default: SOURCE_DATE_EPOCH, else 0.
    pub generation: Option<u64>,
    /// Public keys (OpenSSH `authorized_keys` lines) that may log in to the live installer
    /// over SSH; none: no SSH server.
    pub ssh_authorized_keys: Vec<String>,
    /// A file of such lines (resolved against the directory of hosts.toml), read by
    /// mkinstaller.
    pub ssh_authorized_keys_file: Option<PathBuf>,
    /// How extra files and LUKS keys travel (`secrets = "passphrase" | "clear"`).
    pub secrets: Option<Secrets>,
    /// The fleet's recovery recipients (`age1…` or SSH public keys, checked): every LUKS
    /// volume gets a recovery key, escrowed to them. None: no recovery keys.
    pub recovery_recipients: Vec<String>,
    /// What a TPM2 layout does on a machine without a TPM (`without-tpm`).
    pub without_tpm: WithoutTpm,
    /// The fleet's Secure Boot keys (`secure-boot`), resolved against hosts.toml's directory.
    pub secure_boot: Option<SecureBootDefaults>,
}

/// The defaults a fleet gets for what its `[defaults]` does not say (and `--system` for all).
impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            profile: DEFAULT_PROFILE.into(),
            disko: None,
            on_unknown_serial: UnknownSerial::Ask,
            after_install: AfterInstall::Reboot,
            reinstall: Reinstall::Ask,
            confirm_seconds: 10,
            verify: Verify::Auto,
            fleet: None,
            generation: None,
            ssh_authorized_keys: Vec::new(),
            ssh_authorized_keys_file: None,
            secrets: None,
            recovery_recipients: Vec::new(),
            without_tpm: WithoutTpm::Refuse,
            secure_boot: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// Normalised serials (see [`serial::normalise`]).
    pub serials: Vec<String>,
    pub system: SystemSource,
    /// The profile name or path, as written (resolved by the caller). With a disko layout,
    /// only its disk rules count.
    pub profile: String,
    /// A disko `disko.devices` tree as JSON (resolved against the directory of hosts.toml):
    /// the host's layout, instead of the profile's partitions.
    pub disko: Option<PathBuf>,
    /// Key files for the layout's LUKS containers, by LUKS name (resolved likewise).
    pub luks_keys: Vec<(String, PathBuf)>,
    pub disk: Option<String>,
    /// Resolved against the directory of hosts.toml.
    pub extra_files: Option<PathBuf>,
    /// A bootable NixOS system (the default): its toplevel must have
    /// `bin/switch-to-configuration`, `kernel` and `init`, and the installer installs its boot
    /// loader. `bootable = false`: a bare closure, installed without one.
    pub bootable: bool,
    /// The machine's TPM (`tpm = { ek = "…", activation = "…" }`, as `mkinstaller reports
    /// --pending` prints it), for `secrets = "tpm"`.
    pub tpm: Option<secrets::tpm::Target>,
    /// Where the host is defined, for later messages.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    pub file: PathBuf,
    pub defaults: Defaults,
    pub hosts: Vec<Host>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FleetFile {
    version: Spanned<u32>,
    #[serde(default)]
    defaults: DefaultsFile,
    #[serde(default)]
    host: Vec<Spanned<HostFile>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DefaultsFile {
    profile: Option<String>,
    disko: Option<String>,
    on_unknown_serial: Option<Spanned<String>>,
    after_install: Option<AfterInstall>,
    reinstall: Option<Reinstall>,
    confirm_seconds: Option<u32>,
    verify: Option<Verify>,
    fleet: Option<Spanned<String>>,
    generation: Option<u64>,
    #[serde(default)]
    ssh_authorized_keys: Vec<Spanned<String>>,
    ssh_authorized_keys_file: Option<String>,
    secrets: Option<Secrets>,
    #[serde(default)]
    recovery_recipients: Vec<Spanned<String>>,
    without_tpm: Option<Spanned<WithoutTpm>>,
    secure_boot: Option<SecureBootFile>,
}

impl Fleet {
    /// Parses and validates hosts.toml. `file` is its path (for messages and to resolve
    /// relative paths such as `extra-files`).
    pub fn parse(file: &Path, text: &str) -> Result<Fleet, LocatedError> {
        let raw: FleetFile = toml::from_str(text).map_err(|e| from_toml(file, text, &e))?;
        let at = |span: Range<usize>, msg: String| LocatedError::at(file, text, span, msg);
        if *raw.version.get_ref() != HOSTS_VERSION {
            return Err(at(
                raw.version.span(),
                format!(
                    "hosts.toml version {} is not supported; this mkinstaller reads version {HOSTS_VERSION}",
                    raw.version.get_ref()
                ),
            ));
        }
        let base = file.parent().unwrap_or(Path::new("."));
        let fallback = Defaults::default();
        let default_profile = raw.defaults.profile.clone().unwrap_or(fallback.profile);
        let default_disko = raw.defaults.disko.as_ref().map(|d| base.join(d));

        let mut hosts = Vec::new();
        let mut seen = host::Seen::default();
        for h in &raw.host {
            hosts.push(host::parse(
                h,
                &mut seen,
                &at,
                text,
                base,
                &default_profile,
            )?);
        }
        if hosts.is_empty() {
            return Err(LocatedError::whole(file, "no [[host]] is defined"));
        }
        let on_unknown_serial = match &raw.defaults.on_unknown_serial {
            None => fallback.on_unknown_serial,
            Some(p) => match p.get_ref().as_str() {
                "ask" => UnknownSerial::Ask,
                "refuse" => UnknownSerial::Refuse,
                "enrol" | "enroll" => UnknownSerial::Enrol,
                other => match other.strip_prefix("host:") {
                    Some(h) if seen.names.contains_key(h) => UnknownSerial::Host(h.to_string()),
                    Some(h) => {
                        return Err(at(
                            p.span(),
                            format!("on-unknown-serial names host {h:?}, which is not defined"),
                        ))
                    }
                    None => {
                        return Err(at(
                            p.span(),
                            format!(
                            "on-unknown-serial {other:?} must be ask, refuse, enrol or host:NAME"
                        ),
                        ))
                    }
                },
            },
        };
        let mut ssh_authorized_keys = Vec::new();
        for k in &raw.defaults.ssh_authorized_keys {
            check_authorized_key(k.get_ref()).map_err(|e| at(k.span(), e))?;
            ssh_authorized_keys.push(k.get_ref().trim().to_string());
        }
        let mut recovery_recipients = Vec::new();
        for r in &raw.defaults.recovery_recipients {
            secrets::recovery::recipient(r.get_ref())
                .map_err(|e| at(r.span(), format!("recovery-recipients: {e}")))?;
            recovery_recipients.push(r.get_ref().trim().to_string());
        }
        let without_tpm = raw
            .defaults
            .without_tpm
            .as_ref()
            .map(|w| (*w.get_ref(), w.span()));
        if let Some((WithoutTpm::RecoveryKey, span)) = &without_tpm {
            if recovery_recipients.is_empty() {
                return Err(at(
                    span.clone(),
                    "without-tpm = \"recovery-key\" needs recovery-recipients to escrow the key to"
                        .into(),
                ));
            }
        }
        if let Some(f) = &raw.defaults.fleet {
            check_host_name(f.get_ref()).map_err(|e| {
                at(
                    f.span(),
                    format!("fleet: {}", e.replace("host name", "name")),
                )
            })?;
        }
        Ok(Fleet {
            file: file.to_path_buf(),
            defaults: Defaults {
                profile: default_profile,
                disko: default_disko,
                on_unknown_serial,
                after_install: raw.defaults.after_install.unwrap_or(fallback.after_install),
                reinstall: raw.defaults.reinstall.unwrap_or(fallback.reinstall),
                confirm_seconds: raw
                    .defaults
                    .confirm_seconds
                    .unwrap_or(fallback.confirm_seconds),
                verify: raw.defaults.verify.unwrap_or(fallback.verify),
                fleet: raw.defaults.fleet.as_ref().map(|f| f.get_ref().clone()),
                generation: raw.defaults.generation,
                ssh_authorized_keys,
                ssh_authorized_keys_file: raw
                    .defaults
                    .ssh_authorized_keys_file
                    .as_ref()
                    .map(|f| base.join(f)),
                secrets: raw.defaults.secrets,
                recovery_recipients,
                without_tpm: without_tpm.map_or(WithoutTpm::Refuse, |(w, _)| w),
                secure_boot: raw
                    .defaults
                    .secure_boot
                    .as_ref()
                    .map(|sb| SecureBootDefaults {
                        keys: base.join(&sb.keys),
                        not_in_setup_mode: sb.not_in_setup_mode.unwrap_or_default(),
                    }),
            },
            hosts,
        })
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// An OpenSSH public key line (`ssh-ed25519 AAAA… comment`): a known key type and a base64
/// key, on one line. Options before the type (`from=…`) are not taken: the installer writes
/// the lines as they are into root's authorized_keys.
pub fn check_authorized_key(line: &str) -> Result<(), String> {
    let line = line.trim();
    let mut parts = line.split_whitespace();
    let (kind, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let known = kind.starts_with("ssh-ed25519")
        || kind == "ssh-rsa"
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-");
    let base64 = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    if !known || !base64 || line.contains(['\n', '\r', '\0']) {
        return Err(format!(
            "{:?} is not an SSH public key line (ssh-ed25519 AAAA… comment)",
            line.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

/// Host names become file names on the stick and host names on the network: keep them to
/// letters, digits, `-`, `_` and `.`, at most 63 characters.
pub fn check_host_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("host name {name:?} must be 1 to 63 characters"));
    }
    if name.starts_with(['.', '-'])
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!("host name {name:?} may hold only letters, digits, -, _ and . (and not start with . or -)"));
    }
    Ok(())
}

/// A serial as a DNS label (and so a valid host name): letters and digits in lower case, every
/// other character `-`, no `-` at either end, at most `max` characters; `None` when nothing
/// is left. The live installer's mDNS name and the skeletons of pending machines use it.
pub fn serial_label(serial: &str, max: usize) -> Option<String> {
    let mapped: String = serial
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let label: String = mapped.trim_matches('-').chars().take(max).collect();
    let label = label.trim_end_matches('-');
    (!label.is_empty()).then(|| label.to_string())
}

#[cfg(test)]
mod tests;
