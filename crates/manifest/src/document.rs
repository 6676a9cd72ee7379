//! The manifest on the payload partition (`autoinstall/manifest.json`): which hosts the stick
//! installs, by which serials, with which closure and which resolved disk layout.

use serde::{Deserialize, Serialize};

use crate::devices::Layout;
use crate::hosts::{AfterInstall, Reinstall, UnknownSerial, Verify, WithoutTpm};
use crate::serial;

/// The media format version; docs/MEDIA-FORMAT.md describes it. Version 2 added what a
/// manifest is (`kind`, `lookup-key`), the fleet and the generation, all inside the signature;
/// version 3 the device graph as each host's layout (`devices`), and LUKS keys.
pub const FORMAT_VERSION: u32 = 3;
/// The `format` field, so a stray JSON file is never mistaken for a manifest.
pub const FORMAT_NAME: &str = "nixos-autoinstall-manifest";
/// Where the manifest lives in the payload tree.
pub const MANIFEST_PATH: &str = "autoinstall/manifest.json";
/// Per-serial lookups in a `--format cache` site: `<dir>/<key>.json` holds that host's entry,
/// so an online installer fetches one small static file for its serial.
pub const HOSTS_LOOKUP_DIR: &str = "autoinstall/hosts";

/// Where a serial's lookup file lives in a cache site: its comparison key (upper case, no
/// spaces), with every byte outside `A-Z 0-9 . _ -` percent-encoded so it is safe as a file
/// name and in a URL.
pub fn host_lookup_path(serial: &str) -> String {
    let mut name = String::new();
    for b in crate::serial::key(serial).bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{HOSTS_LOOKUP_DIR}/{name}.json")
}

/// Signatures of the manifest's exact bytes, one `keyname:base64` per line (Nix's key format).
pub const MANIFEST_SIG_PATH: &str = "autoinstall/manifest.json.sig";
/// Where installers write their reports back.
pub const REPORTS_DIR: &str = "autoinstall/reports";
/// Where each host's extra files are kept.
pub const EXTRA_FILES_DIR: &str = "autoinstall/extra-files";
/// Where each host's LUKS keys are kept: `<dir>/<host>/<LUKS name>`.
pub const LUKS_KEYS_DIR: &str = "autoinstall/luks-keys";
/// Where each host's sealed secrets are: `<dir>/<host>.age`.
pub const SECRETS_DIR: &str = "autoinstall/secrets";

/// How large each small file of a payload may be: a reader takes no more, whatever the
/// medium or the server sends (a manifest of a thousand hosts with large closures is some
/// tens of MiB; a narinfo of a path with thousands of references a few hundred KiB).
pub mod limits {
    /// `autoinstall/manifest.json`: the whole fleet.
    pub const MANIFEST: u64 = 256 << 20;
    /// A cache site's per-serial lookup: one host.
    pub const LOOKUP: u64 = 16 << 20;
    /// One narinfo.
    pub const NARINFO: u64 = 1 << 20;
    /// A detached signature file: a few lines of `name:base64`.
    pub const SIGNATURE: u64 = 64 << 10;
    /// All narinfos of one closure together: at most this, or 64 KiB per path if more.
    pub const NARINFOS_PER_PATH: u64 = 64 << 10;
    pub const NARINFOS_MIN_TOTAL: u64 = 64 << 20;
}

/// What a manifest file is. It is inside the signed bytes, so a file signed as one kind (a
/// stick's whole fleet, one serial's lookup) cannot be served as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The whole fleet: `autoinstall/manifest.json`.
    Fleet,
    /// A cache site's answer for one serial: `autoinstall/hosts/<key>.json`.
    Lookup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub kind: Kind,
    /// A lookup's serial, as [`serial::key`] compares it: the one serial it answers for.
    pub lookup_key: Option<String>,
    /// The fleet's name, when hosts.toml gives one (`[defaults] fleet`).
    pub fleet: Option<String>,
    /// Which build of the fleet this is: larger is newer (`[defaults] generation`).
    pub generation: u64,
    /// The tool and version that wrote it, e.g. `mkinstaller 0.1.0`.
    pub generator: String,
    /// `mass`: pick the host by serial. `single`: install `hosts[0]` whatever the serial
    /// (after confirmation).
    pub mode: Mode,
    pub on_unknown_serial: UnknownSerial,
    /// With `on_unknown_serial` enrol: the `[defaults]` profile's layout, whose rules name
    /// the disk an enrolled machine would be installed on.
    pub enrol_layout: Option<crate::devices::Layout>,
    pub after_install: AfterInstall,
    /// What to do where the host is already installed from this fleet.
    pub reinstall: Reinstall,
    /// Public keys that may log in to the live installer over SSH (none: no SSH server).
    pub ssh_authorized_keys: Vec<String>,
    pub confirm_seconds: u32,
    /// When the installer checks the payload. Left out when `auto`, so manifests that do
    /// not set it read as before.
    #[serde(default, skip_serializing_if = "Verify::is_auto")]
    pub verify: Verify,
    /// The fleet's recovery recipients (age or SSH public keys): every LUKS volume gets a
    /// recovery key made on the machine and escrowed to them. Signed with the rest, so a
    /// medium cannot swap in its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery_recipients: Vec<String>,
    /// What a layout that unlocks with the TPM2 does on a machine without one.
    #[serde(default, skip_serializing_if = "WithoutTpm::is_refuse")]
    pub without_tpm: WithoutTpm,
    /// The fleet's Secure Boot keys, for machines in setup mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<SecureBootKeys>,
    pub hosts: Vec<HostEntry>,
}

/// Where the fleet's Secure Boot keys are in the payload.
pub const SECURE_BOOT_DIR: &str = "autoinstall/secure-boot";

/// The fleet's PK, KEK and db as signed EFI signature lists (`*.auth`) in the payload,
/// enrolled (db, KEK, then PK) by the installer when the firmware is in setup mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureBootKeys {
    pub pk: PayloadRef,
    pub kek: PayloadRef,
    pub db: PayloadRef,
    pub not_in_setup_mode: crate::hosts::NotInSetupMode,
}

/// A file of the payload, by its path there, hash and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadRef {
    pub source: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Mass,
    Single,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: String,
    pub serials: Vec<String>,
    /// The NixOS toplevel store path.
    pub toplevel: String,
    /// Every store path of the toplevel's closure, sorted.
    pub closure: Vec<String>,
    /// Sum of the closure's NAR sizes: what the installed store takes, before file system
    /// overhead.
    pub closure_nar_bytes: u64,
    pub layout: Layout,
    /// An explicit target disk (`/dev/disk/by-id/…`), else the layout's rules choose.
    pub disk: Option<String>,
    pub extra_files: Vec<ExtraFile>,
    /// Keys for the layout's LUKS containers; one without a key is asked for at install.
    pub luks_keys: Vec<LuksKey>,
    /// A bootable NixOS system: the installer installs its boot loader. (False: a bare
    /// closure, installed with its profile only.)
    pub bootable: bool,
    /// The host's extra files and LUKS keys sealed to the fleet's passphrase (hosts.toml
    /// `secrets = "passphrase"`); `extra_files` and `luks_keys` are then empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
    /// The platform the system is built for (`x86_64-linux`, `aarch64-linux`), from its
    /// toplevel; an installer on another refuses the host. Absent: not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

/// A host's secrets sealed with age to the fleet's passphrase (the `secrets` crate's bundle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// Path in the payload tree: `autoinstall/secrets/<host>.age`.
    pub source: String,
    /// Of the sealed bytes, as every payload file.
    pub sha256: String,
    pub size: u64,
    /// The LUKS containers whose keys it holds: the plan needs their names before it opens.
    pub luks_keys: Vec<String>,
    /// How many extra files it holds.
    pub files: usize,
    /// Sealed to the host's TPM rather than to the fleet's passphrase: what that TPM's
    /// ActivateCredential takes to give back the key that opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<SealedToTpm>,
}

/// The credential (`secrets::tpm`) that opens a bundle sealed to one machine's TPM, in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedToTpm {
    /// Of the endorsement key it is sealed to: names the TPM in messages.
    pub ek_sha256: String,
    pub blob: String,
    pub secret: String,
}

/// A file copied into the installed system as it is, e.g. an SSH host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    /// Path in the installed system, relative to its root (`etc/ssh/ssh_host_ed25519_key`).
    pub target: String,
    /// Path in the payload tree.
    pub source: String,
    /// Unix mode bits (FAT keeps none, so they travel here).
    pub mode: u32,
    pub sha256: String,
    pub size: u64,
}

/// A key for a LUKS container of the host's layout, carried in the payload: the installer
/// formats and opens the container with it. (Whoever holds the stick holds the key.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuksKey {
    /// The LUKS container's name in the layout (its `/dev/mapper/` name).
    pub name: String,
    /// Path in the payload tree.
    pub source: String,
    pub sha256: String,
    pub size: u64,
}

/// A Nix platform name as a toplevel's `system` file gives it: `<cpu>-<kernel>`, lower-case
/// letters, digits and `_`, at most 64 bytes.
pub fn check_platform(system: &str) -> Result<(), String> {
    let part = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    match system.split_once('-') {
        Some((cpu, kernel)) if system.len() <= 64 && part(cpu) && part(kernel) => Ok(()),
        _ => Err(format!(
            "{system:?} is not a platform such as x86_64-linux or aarch64-linux"
        )),
    }
}

/// An extra file's place and mode must stay inside the installed root and be a file mode;
/// checked for the manifest's extra files and for those of an opened sealed bundle alike.
pub fn check_extra_file(target: &str, mode: u32) -> Result<(), String> {
    let plain = !target.is_empty()
        && target
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if !plain {
        return Err(format!(
            "extra file target {target:?} must be a relative path of plain components"
        ));
    }
    if mode > 0o7777 {
        return Err(format!(
            "extra file {target}: mode {mode:o} is not a file mode"
        ));
    }
    Ok(())
}

/// The largest LUKS key file taken (cryptsetup reads up to 8 MiB; keys are bytes, not files).
pub const MAX_LUKS_KEY: u64 = 64 << 10;

/// What an installer expects a manifest file to be (see [`Manifest::answers`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected<'a> {
    /// A lookup for this serial; `None`: a whole fleet's manifest.
    pub serial: Option<&'a str>,
    pub fleet: Option<&'a str>,
    pub min_generation: Option<u64>,
}

impl Manifest {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serialises") + "\n"
    }

    /// Parses a manifest, checks that this build understands it, and checks every value a
    /// hostile medium could have crafted (host names, serials, store paths, layouts, extra
    /// files' targets) as mkinstaller checked them: the installer trusts no medium to have
    /// come from mkinstaller.
    pub fn parse(text: &str) -> Result<Manifest, String> {
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
            version: Option<u32>,
        }
        let head: Head =
            serde_json::from_str(text).map_err(|e| format!("the manifest is not valid: {e}"))?;
        if head.format.as_deref() != Some(FORMAT_NAME) {
            return Err(format!(
                "this is not an autoinstall manifest (format {:?})",
                head.format.unwrap_or_default()
            ));
        }
        if head.version != Some(FORMAT_VERSION) {
            return Err(format!(
                "the media format version is {}, this build reads version {FORMAT_VERSION}; use a matching mkinstaller/autoinstall-terminal",
                head.version.map_or("missing".into(), |v| v.to_string())
            ));
        }
        let m: Manifest =
            serde_json::from_str(text).map_err(|e| format!("the manifest is not valid: {e}"))?;
        m.check()?;
        Ok(m)
    }

    /// The checks of [`Manifest::parse`] past the JSON shape.
    fn check(&self) -> Result<(), String> {
        match (self.kind, &self.lookup_key) {
            (Kind::Fleet, None) => {}
            (Kind::Lookup, Some(k)) if !k.is_empty() && serial::key(k) == *k => {}
            (kind, key) => {
                return Err(format!(
                    "the manifest's kind {kind:?} does not go with lookup key {key:?}"
                ))
            }
        }
        if let Some(f) = &self.fleet {
            crate::hosts::check_host_name(f).map_err(|e| format!("fleet: {e}"))?;
        }
        for k in &self.ssh_authorized_keys {
            crate::hosts::check_authorized_key(k)
                .map_err(|e| format!("ssh_authorized_keys: {e}"))?;
        }
        for r in &self.recovery_recipients {
            secrets::recovery::recipient(r).map_err(|e| format!("recovery_recipients: {e}"))?;
        }
        if self.without_tpm == WithoutTpm::RecoveryKey && self.recovery_recipients.is_empty() {
            return Err("without_tpm is recovery-key, and there are no recovery recipients".into());
        }
        if let Some(sb) = &self.secure_boot {
            for (name, f) in [("PK", &sb.pk), ("KEK", &sb.kek), ("db", &sb.db)] {
                let hex = f.sha256.len() == 64 && f.sha256.bytes().all(|b| b.is_ascii_hexdigit());
                if f.source != format!("{SECURE_BOOT_DIR}/{name}.auth") || !hex || f.size > 1 << 20
                {
                    return Err(format!("secure_boot: {name} is not {SECURE_BOOT_DIR}/{name}.auth with a SHA-256 and a size up to 1 MiB"));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for h in &self.hosts {
            crate::hosts::check_host_name(&h.name)?;
            if !names.insert(h.name.as_str()) {
                return Err(format!("host {:?} appears twice", h.name));
            }
            let within = |e: String| format!("host {}: {e}", h.name);
            for s in &h.serials {
                if serial::normalise(s) != *s {
                    return Err(within(format!("serial {s:?} is not normalised")));
                }
            }
            nixstore::StorePath::parse(&h.toplevel).map_err(|e| within(e.to_string()))?;
            for p in &h.closure {
                nixstore::StorePath::parse(p).map_err(|e| within(e.to_string()))?;
            }
            h.layout
                .devices
                .check()
                .map_err(|e| within(format!("layout: {e}")))?;
            if let Some(d) = &h.disk {
                if !d.starts_with("/dev/") || d.split('/').any(|c| c == "..") {
                    return Err(within(format!("disk {d:?} is not a path under /dev")));
                }
            }
            let luks: Vec<String> = h
                .layout
                .devices
                .contents()
                .into_iter()
                .filter_map(|(_, c)| match c {
                    crate::devices::Content::Luks(l) => Some(l.name.clone()),
                    _ => None,
                })
                .collect();
            for k in &h.luks_keys {
                if !luks.contains(&k.name) {
                    return Err(within(format!(
                        "a LUKS key for {:?}, which the layout does not have",
                        k.name
                    )));
                }
                if k.source != format!("{LUKS_KEYS_DIR}/{}/{}", h.name, k.name) {
                    return Err(within(format!(
                        "LUKS key {} is at {:?}, not where keys are kept",
                        k.name, k.source
                    )));
                }
                if k.size == 0 || k.size > MAX_LUKS_KEY {
                    return Err(within(format!(
                        "LUKS key {} is {} bytes; a key is 1 to {MAX_LUKS_KEY} bytes",
                        k.name, k.size
                    )));
                }
            }
            for f in &h.extra_files {
                check_extra_file(&f.target, f.mode).map_err(within)?;
            }
            if let Some(system) = &h.system {
                check_platform(system).map_err(within)?;
            }
            if let Some(sealed) = &h.sealed {
                if sealed.source != format!("{SECRETS_DIR}/{}.age", h.name) {
                    return Err(within(format!(
                        "sealed secrets are at {:?}, not where they are kept",
                        sealed.source
                    )));
                }
                if !h.extra_files.is_empty() || !h.luks_keys.is_empty() {
                    return Err(within(
                        "has sealed secrets and extra files or LUKS keys in the clear beside them"
                            .to_string(),
                    ));
                }
            }
        }
        match (&self.on_unknown_serial, &self.enrol_layout) {
            (UnknownSerial::Enrol, None) => {
                return Err(
                    "on-unknown-serial is enrol, but the manifest has no enrol layout".into(),
                )
            }
            (_, Some(l)) => l
                .devices
                .check()
                .map_err(|e| format!("enrol layout: {e}"))?,
            _ => {}
        }
        if let UnknownSerial::Host(name) = &self.on_unknown_serial {
            if !names.contains(name.as_str()) {
                return Err(format!(
                    "on-unknown-serial names host {name:?}, which is not in the manifest"
                ));
            }
        }
        Ok(())
    }

    /// Whether this manifest is what its reader asked for: the kind of file, the serial a
    /// lookup answers for, and (when the installer was told them) the fleet and the oldest
    /// acceptable generation. A signature proves who wrote a file, not which question it
    /// answers: this does.
    pub fn answers(&self, want: &Expected) -> Result<(), String> {
        match (want.serial, self.kind) {
            (None, Kind::Fleet) => {}
            (Some(serial), Kind::Lookup) => {
                let key = serial::key(serial);
                if self.lookup_key.as_deref() != Some(key.as_str()) {
                    return Err(format!(
                        "it answers for serial {:?}, not for this machine's {serial:?}; a lookup replayed under another serial's name is refused",
                        self.lookup_key.as_deref().unwrap_or("")
                    ));
                }
            }
            (None, Kind::Lookup) => {
                return Err(format!(
                    "it is one serial's lookup ({:?}), not a whole fleet's manifest",
                    self.lookup_key.as_deref().unwrap_or("")
                ))
            }
            (Some(serial), Kind::Fleet) => {
                return Err(format!(
                    "it is a whole fleet's manifest, not the lookup for serial {serial:?}"
                ))
            }
        }
        if let Some(fleet) = want.fleet {
            if self.fleet.as_deref() != Some(fleet) {
                return Err(format!(
                    "it belongs to fleet {:?}, and this installer installs only fleet {fleet:?}",
                    self.fleet.as_deref().unwrap_or("(none)")
                ));
            }
        }
        if let Some(min) = want.min_generation {
            if self.generation < min {
                return Err(format!(
                    "it is generation {}, older than generation {min}, the oldest this installer accepts (autoinstall.min-generation); an old site or stick cannot roll a machine back",
                    self.generation
                ));
            }
        }
        Ok(())
    }

    /// The host whose serials include `serial` (compared as [`serial::key`] does).
    pub fn host_for_serial(&self, serial_number: &str) -> Option<&HostEntry> {
        let key = serial::key(serial_number);
        self.hosts
            .iter()
            .find(|h| h.serials.iter().any(|s| serial::key(s) == key))
    }

    pub fn host(&self, name: &str) -> Option<&HostEntry> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

#[cfg(test)]
mod lookup_tests {
    use super::host_lookup_path;

    #[test]
    fn lookup_names_are_the_serial_key_and_url_safe() {
        assert_eq!(
            host_lookup_path("sn-0001"),
            "autoinstall/hosts/SN-0001.json"
        );
        assert_eq!(
            host_lookup_path(" Sn 0001 "),
            "autoinstall/hosts/SN0001.json"
        );
        assert_eq!(
            host_lookup_path("a/b?c#d"),
            "autoinstall/hosts/A%2FB%3FC%23D.json"
        );
        assert_eq!(host_lookup_path(".."), "autoinstall/hosts/...json");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: Kind, lookup_key: Option<&str>) -> Manifest {
        let layout = crate::profile::Profile::parse(
            "uefi-ext4",
            std::path::Path::new("uefi-ext4.toml"),
            include_str!("../../../installer-profiles/uefi-ext4.toml"),
        )
        .unwrap()
        .to_layout();
        Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            kind,
            lookup_key: lookup_key.map(str::to_string),
            fleet: Some("office".into()),
            generation: 7,
            generator: "test".into(),
            mode: Mode::Mass,
            on_unknown_serial: UnknownSerial::Refuse,
            enrol_layout: None,
            after_install: AfterInstall::Poweroff,
            reinstall: Reinstall::Ask,
            ssh_authorized_keys: vec![],
            confirm_seconds: 0,
            verify: Verify::Auto,
            recovery_recipients: vec![],
            without_tpm: Default::default(),
            secure_boot: None,
            hosts: vec![HostEntry {
                name: "web-1".into(),
                serials: vec!["SN-1".into()],
                toplevel: format!("/nix/store/{}-web-1", "0".repeat(32)),
                closure: vec![format!("/nix/store/{}-web-1", "0".repeat(32))],
                closure_nar_bytes: 1,
                layout,
                disk: None,
                extra_files: vec![],
                luks_keys: vec![],
                bootable: true,
                sealed: None,
                system: None,
            }],
        }
    }

    #[test]
    fn a_manifest_answers_only_what_it_was_signed_as() {
        let fleet = sample(Kind::Fleet, None);
        let lookup = sample(Kind::Lookup, Some("SN-1"));
        let whole = Expected::default();
        let for_sn1 = Expected {
            serial: Some("sn-1"),
            ..Expected::default()
        };
        fleet.answers(&whole).unwrap();
        lookup.answers(&for_sn1).unwrap();
        let e = lookup
            .answers(&Expected {
                serial: Some("SN-2"),
                ..Expected::default()
            })
            .unwrap_err();
        assert!(e.contains("answers for serial \"SN-1\""), "{e}");
        assert!(fleet.answers(&for_sn1).unwrap_err().contains("whole fleet"));
        assert!(lookup
            .answers(&whole)
            .unwrap_err()
            .contains("one serial's lookup"));
        let e = fleet
            .answers(&Expected {
                fleet: Some("lab"),
                ..Expected::default()
            })
            .unwrap_err();
        assert!(e.contains("belongs to fleet \"office\""), "{e}");
        fleet
            .answers(&Expected {
                fleet: Some("office"),
                min_generation: Some(7),
                ..Expected::default()
            })
            .unwrap();
        let e = fleet
            .answers(&Expected {
                min_generation: Some(8),
                ..Expected::default()
            })
            .unwrap_err();
        assert!(e.contains("older than generation 8"), "{e}");
    }

    /// The root partition of the sample's one disk.
    fn root_part(m: &mut Manifest) -> &mut crate::devices::Partition {
        match &mut m.hosts[0].layout.devices.disks[0].content {
            crate::devices::DiskContent::Gpt { partitions } => &mut partitions[1],
            crate::devices::DiskContent::Whole { .. } => unreachable!("the sample has a GPT"),
        }
    }

    /// The root file system of the sample.
    fn root_fs(m: &mut Manifest) -> &mut crate::devices::Fs {
        match &mut root_part(m).content {
            crate::devices::Content::Filesystem(fs) => fs,
            _ => unreachable!("the sample's root is a file system"),
        }
    }

    /// What a hostile medium could put in a manifest that mkinstaller never would: refused
    /// when the manifest is read.
    #[test]
    fn hostile_values_are_refused_when_read() {
        let good = sample(Kind::Fleet, None);
        Manifest::parse(&good.to_json()).unwrap();
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "mount point",
                Box::new(|m| root_fs(m).mountpoint = Some("/../etc".into())),
            ),
            (
                "mount point",
                Box::new(|m| root_fs(m).mountpoint = Some("relative".into())),
            ),
            ("label", Box::new(|m| root_part(m).label = "a\nb".into())),
            (
                "mount option",
                Box::new(|m| root_fs(m).mount_options = vec!["ro,exec".into()]),
            ),
            (
                "subvolume",
                Box::new(|m| {
                    let fs = root_fs(m);
                    fs.format = crate::profile::Filesystem::Btrfs;
                    fs.subvolumes = vec![crate::devices::Subvol {
                        name: "../x".into(),
                        mountpoint: Some("/x".into()),
                        mount_options: vec![],
                    }];
                }),
            ),
            (
                "LUKS name",
                Box::new(|m| {
                    let p = root_part(m);
                    let inner = std::mem::replace(&mut p.content, crate::devices::Content::None);
                    p.content = crate::devices::Content::Luks(Box::new(crate::devices::Luks {
                        name: "../../etc".into(),
                        key_file: None,
                        allow_discards: false,
                        extra_format_args: vec![],
                        extra_open_args: vec![],
                        uuid: None,
                        tpm2: None,
                        content: inner,
                    }));
                }),
            ),
            ("host name", Box::new(|m| m.hosts[0].name = "../x".into())),
            (
                "store path",
                Box::new(|m| m.hosts[0].closure.push("/etc/passwd".into())),
            ),
            (
                "extra file",
                Box::new(|m| {
                    m.hosts[0].extra_files.push(ExtraFile {
                        target: "etc/../../x".into(),
                        source: "x".into(),
                        mode: 0o600,
                        sha256: String::new(),
                        size: 0,
                    })
                }),
            ),
            (
                "disk",
                Box::new(|m| m.hosts[0].disk = Some("/dev/../etc/passwd".into())),
            ),
            ("lookup key", Box::new(|m| m.kind = Kind::Lookup)),
            ("version", Box::new(|m| m.version = 1)),
            (
                "1 EiB",
                Box::new(|m| root_part(m).size = crate::devices::Extent::Bytes(u64::MAX)),
            ),
            (
                "volume group",
                Box::new(|m| {
                    root_part(m).content = crate::devices::Content::LvmPv { vg: "x".into() }
                }),
            ),
            (
                "LUKS key",
                Box::new(|m| {
                    m.hosts[0].luks_keys.push(LuksKey {
                        name: "nowhere".into(),
                        source: "autoinstall/luks-keys/h/nowhere".into(),
                        sha256: String::new(),
                        size: 1,
                    })
                }),
            ),
        ];
        for (what, edit) in cases {
            let mut m = good.clone();
            edit(&mut m);
            let e = Manifest::parse(&m.to_json()).expect_err(what);
            assert!(!e.is_empty(), "{what}");
            if what == "1 EiB" || what == "LUKS key" {
                assert!(e.contains(what), "{what}: {e}");
            }
        }
    }
}
