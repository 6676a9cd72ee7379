//! How each host's secrets (extra files, LUKS keys) travel, as hosts.toml `[defaults]
//! secrets` says: sealed with age to the fleet's passphrase into one file per host
//! (`autoinstall/secrets/<host>.age`), or in the clear as files of their own. A fleet with
//! secrets that says neither is refused, and so is a cache site that would serve them in the
//! clear: nothing secret travels in the clear unless the fleet says so.

use std::fs;

use manifest::document::{ExtraFile, LuksKey, Sealed, SealedToTpm, SECRETS_DIR};
use manifest::hosts::Secrets;
use media::payload::PayloadFile;
use sha2::{Digest, Sha256};

use crate::fleet::{extra_files, Planned, PlannedHost};
use crate::options::{BuildOptions, Error, OutputFormat};

/// One host's secrets as the payload carries them.
#[derive(Default)]
pub struct HostSecrets {
    /// In the clear: the manifest's entries and the files they name.
    pub extra_files: Vec<ExtraFile>,
    pub luks_keys: Vec<LuksKey>,
    pub files: Vec<PayloadFile>,
    /// Sealed: the manifest's entry and the sealed bytes at its `source`.
    pub sealed: Option<(Sealed, Vec<u8>)>,
}

/// The fleet's passphrase, read before anything is built: required by `secrets =
/// "passphrase"` when a host has secrets, refused without it.
pub fn passphrase(opts: &BuildOptions, planned: &Planned) -> Result<Option<String>, Error> {
    let file = &planned.file;
    let any = planned
        .hosts
        .iter()
        .any(|p| p.host.extra_files.is_some() || !p.key_files.is_empty());
    match (planned.defaults.secrets, &opts.secrets_passphrase_file) {
        (Some(Secrets::Passphrase), None) if !any => Ok(None),
        (Some(Secrets::Tpm), None) => Ok(None),
        (Some(Secrets::Passphrase), None) => Err(format!(
            "{}: secrets = \"passphrase\" seals the hosts' secrets to the fleet's passphrase: give it with --secrets-passphrase-file FILE (nothing was written)",
            file.display()
        )
        .into()),
        (Some(Secrets::Passphrase), Some(f)) => {
            let text = fs::read_to_string(f)
                .map_err(|e| format!("--secrets-passphrase-file {}: {e}", f.display()))?;
            let line = text.lines().next().unwrap_or("").to_string();
            if line.chars().count() < secrets::MIN_PASSPHRASE {
                return Err(format!(
                    "--secrets-passphrase-file {}: its first line is the passphrase, and it has {} characters; use at least {} (several words)",
                    f.display(),
                    line.chars().count(),
                    secrets::MIN_PASSPHRASE
                )
                .into());
            }
            Ok(Some(line))
        }
        (_, Some(f)) => Err(format!(
            "--secrets-passphrase-file {} is given, but {} does not say secrets = \"passphrase\"; say it there, or leave the option out",
            f.display(),
            file.display()
        )
        .into()),
        (_, None) => Ok(None),
    }
}

/// The secrets of host `p`, sealed with `passphrase` where the fleet says so.
pub fn host_secrets(
    opts: &BuildOptions,
    planned: &Planned,
    p: &PlannedHost,
    passphrase: Option<&str>,
) -> Result<HostSecrets, Error> {
    let h = &p.host;
    let at = format!("{}:{}: host {:?}", planned.file.display(), h.line, h.name);
    let (extra, files) = extra_files(h).map_err(|e| format!("{at}: {e}"))?;
    if files.is_empty() && p.key_files.is_empty() {
        return Ok(HostSecrets::default());
    }
    let what = if files.is_empty() {
        "LUKS keys (luks-keys)".to_string()
    } else {
        format!(
            "extra files ({})",
            h.extra_files
                .as_deref()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        )
    };
    match (planned.defaults.secrets, passphrase) {
        (None, _) => Err(format!(
            "{at} has {what}: say in [defaults] how secrets travel: secrets = \"passphrase\" (sealed with age to the fleet's passphrase, typed on each machine; build with --secrets-passphrase-file FILE) or secrets = \"clear\" (in the clear: whoever holds the stick holds them); nothing was written"
        )
        .into()),
        (Some(Secrets::Clear), _) => {
            if opts.format == OutputFormat::Cache && !opts.public_extra_files {
                return Err(format!(
                    "{at}: its {what} would be served to anyone who can reach the site, in the clear; seal them (secrets = \"passphrase\") or keep them off cache sites (or pass --public-extra-files if these are not secret)"
                )
                .into());
            }
            let mut files = files;
            files.extend(p.key_files.iter().cloned());
            Ok(HostSecrets {
                extra_files: extra,
                luks_keys: p.luks_keys.clone(),
                files,
                sealed: None,
            })
        }
        (Some(Secrets::Passphrase), Some(passphrase)) => {
            let (bundle, sealed) = bundle(planned, p, &extra, &files, &at)?;
            let bytes = bundle
                .seal(passphrase, secrets::WORK_FACTOR)
                .map_err(|e| format!("{at}: {e}"))?;
            Ok(HostSecrets {
                sealed: Some(sealed.of(bytes, None)),
                ..HostSecrets::default()
            })
        }
        (Some(Secrets::Tpm), _) => {
            let Some(target) = &h.tpm else {
                return Err(format!(
                    "{at} has {what}, and secrets = \"tpm\" seals them to the host's TPM, but the host has no tpm = {{ ek = …, activation = … }}: boot the machine once from a stick with on-unknown-serial = \"enrol\" and copy the block `mkinstaller reports --pending` prints (nothing was written)"
                )
                .into());
            };
            let (bundle, sealed) = bundle(planned, p, &extra, &files, &at)?;
            let (bytes, credential) = bundle
                .seal_to_tpm(target)
                .map_err(|e| format!("{at}: {e}"))?;
            let tpm = SealedToTpm {
                ek_sha256: target.ek_sha256(),
                blob: util::hex::encode(&credential.blob),
                secret: util::hex::encode(&credential.secret),
            };
            Ok(HostSecrets {
                sealed: Some(sealed.of(bytes, Some(tpm))),
                ..HostSecrets::default()
            })
        }
        (Some(Secrets::Passphrase), None) => unreachable!("passphrase() requires the file"),
    }
}

/// What a sealed bundle holds, before it is sealed: the manifest's entry is made from this
/// and the sealed bytes.
struct Unsealed {
    source: String,
    luks_keys: Vec<String>,
    files: usize,
}

impl Unsealed {
    fn of(self, bytes: Vec<u8>, tpm: Option<SealedToTpm>) -> (Sealed, Vec<u8>) {
        let sealed = Sealed {
            source: self.source,
            sha256: format!("{:x}", Sha256::digest(&bytes)),
            size: bytes.len() as u64,
            luks_keys: self.luks_keys,
            files: self.files,
            tpm,
        };
        (sealed, bytes)
    }
}

/// Host `p`'s extra files and LUKS keys in one bundle, read from their files.
fn bundle(
    planned: &Planned,
    p: &PlannedHost,
    extra: &[ExtraFile],
    files: &[PayloadFile],
    at: &str,
) -> Result<(secrets::Bundle, Unsealed), Error> {
    let h = &p.host;
    let read = |f: &PayloadFile| {
        fs::read(&f.source).map_err(|e| format!("{at}: {}: {e}", f.source.display()))
    };
    let mut bundle_files = Vec::new();
    for (e, f) in extra.iter().zip(files) {
        bundle_files.push(secrets::File {
            target: e.target.clone(),
            mode: e.mode,
            data: read(f)?,
        });
    }
    let mut keys = Vec::new();
    for (k, f) in p.luks_keys.iter().zip(&p.key_files) {
        keys.push(secrets::Key {
            name: k.name.clone(),
            data: read(f)?,
        });
    }
    let unsealed = Unsealed {
        source: format!("{SECRETS_DIR}/{}.age", h.name),
        luks_keys: keys.iter().map(|k| k.name.clone()).collect(),
        files: bundle_files.len(),
    };
    let bundle = secrets::Bundle::new(
        &h.name,
        planned.defaults.fleet.as_deref(),
        bundle_files,
        keys,
    );
    Ok((bundle, unsealed))
}
