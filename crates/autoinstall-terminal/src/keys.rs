//! The keys of the plan's LUKS containers: a key file from the payload (checked against the
//! manifest's hash and size), a key from the host's sealed secrets, a passphrase typed
//! twice on the console, or random bytes for a volume the TPM2 or the recovery key unlocks. Each is written to a file only root can read, under /run (a tmpfs:
//! never on a disk), for cryptsetup's `--key-file`, and removed when the keys are dropped,
//! whatever happens. The sealed secrets are opened here, before the first write, with the
//! fleet's passphrase (a file, or three tries on the console) or, sealed to the machine's
//! TPM, with the key its ActivateCredential gives back; their extra files are kept in memory
//! for the extra-files step.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use manifest::document::{HostEntry, Sealed, SealedToTpm};

use crate::install::Options;
use crate::plan::{KeySource, Plan};
use crate::source::Source;
use crate::ui::Ui;

const KEYS_DIR: &str = "/run/nixos-autoinstall/keys";

/// Key files by LUKS name, removed on drop; and the extra files of the sealed secrets.
#[derive(Debug, Default)]
pub struct Keys {
    files: BTreeMap<String, PathBuf>,
    /// The opened bundle's extra files (empty without sealed secrets), zeroed on drop.
    pub sealed_files: Vec<secrets::File>,
}

impl Keys {
    pub fn get(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let dir = Path::new(KEYS_DIR);
        let on = |e: std::io::Error| {
            format!("writing the key of LUKS device {name} under {KEYS_DIR}: {e}")
        };
        fs::create_dir_all(dir).map_err(on)?;
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(on)?;
        let path = dir.join(name);
        let _ = fs::remove_file(&path);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(on)?;
        self.files.insert(name.to_string(), path);
        f.write_all(bytes).map_err(on)
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        for p in self.files.values() {
            // Overwritten in place first (not truncated, which would free the pages that
            // hold the key): a tmpfs page may outlive the file.
            if let Ok(mut f) = OpenOptions::new().write(true).open(p) {
                if let Ok(len) = f.metadata().map(|m| m.len()) {
                    let _ = f.write_all(&vec![0u8; len as usize]);
                }
            }
            let _ = fs::remove_file(p);
        }
        for f in &mut self.sealed_files {
            f.data.fill(0);
        }
    }
}

/// The keys the plan needs, from the payload, the sealed secrets or the console.
pub fn gather(
    plan: &Plan,
    host: &HostEntry,
    source: &Source,
    opts: &Options,
    ui: &Ui,
) -> Result<Keys, String> {
    let mut keys = Keys::default();
    let mut sealed_keys = SealedKeys(Vec::new());
    if let Some(sealed) = &host.sealed {
        let bundle = open_sealed(host, sealed, source, opts, ui, plan.fleet.as_deref())?;
        keys.sealed_files = bundle.files;
        sealed_keys.0 = bundle.luks_keys;
    }
    for k in &plan.luks_keys {
        match k.from {
            KeySource::Sealed => {
                let key = sealed_keys
                    .0
                    .iter()
                    .find(|s| s.name == k.name)
                    .expect("checked when opened");
                keys.put(&k.name, &key.data)?;
            }
            KeySource::Payload => {
                let entry = host
                    .luks_keys
                    .iter()
                    .find(|e| e.name == k.name)
                    .expect("planned from the manifest");
                let what = format!("the key of LUKS device {}", k.name);
                let bytes = source.read_checked(&entry.source, entry.size, &entry.sha256, &what)?;
                keys.put(&k.name, &bytes)?;
            }
            KeySource::Prompt => {
                let ask = |p: &str| {
                    ui.secret(p).ok_or_else(|| {
                        format!(
                            "no passphrase for LUKS device {} was given; nothing was touched",
                            k.name
                        )
                    })
                };
                let first = ask(&format!("passphrase for LUKS device {}: ", k.name))?;
                let again = ask(&format!("passphrase for LUKS device {} again: ", k.name))?;
                if first != again {
                    return Err(format!(
                        "the two passphrases for LUKS device {} differ; nothing was touched",
                        k.name
                    ));
                }
                keys.put(&k.name, first.as_bytes())?;
            }
            KeySource::Generated => {
                // Only to format and open the volume: removed from it once enrolled.
                let mut random: [u8; 32] =
                    media::ids::random_bytes(&format!("the key of LUKS device {}", k.name))
                        .map_err(|e| e.to_string())?;
                let put = keys.put(&k.name, &random);
                random.fill(0);
                put?;
            }
        }
    }
    Ok(keys)
}

/// The sealed bundle's LUKS keys while they are copied to /run, zeroed when dropped, on
/// every path.
struct SealedKeys(Vec<secrets::Key>);

impl Drop for SealedKeys {
    fn drop(&mut self) {
        for k in &mut self.0 {
            k.data.fill(0);
        }
    }
}

/// How many times the console is asked for the fleet's passphrase.
const TRIES: usize = 3;

/// Opens the host's sealed secrets: read and checked against the manifest's hash, then
/// opened with the passphrase (the file's, or typed: three tries), and checked to be this
/// host's and to hold what the manifest says. Nothing is written before this succeeds.
fn open_sealed(
    host: &HostEntry,
    sealed: &Sealed,
    source: &Source,
    opts: &Options,
    ui: &Ui,
    fleet: Option<&str>,
) -> Result<secrets::Bundle, String> {
    let what = format!("the sealed secrets of host {}", host.name);
    if sealed.size > secrets::MAX_BYTES + 4096 {
        return Err(format!(
            "{what} are {} bytes, more than a bundle may be; nothing was touched",
            sealed.size
        ));
    }
    let bytes = source.read_checked(&sealed.source, sealed.size, &sealed.sha256, &what)?;
    let from_tpm = match &sealed.tpm {
        Some(t) => Some(tpm_passphrase(t, &what)?),
        None => None,
    };
    let mut tries = 0;
    let mut bundle = loop {
        let passphrase = match (&from_tpm, &opts.secrets_passphrase) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p.clone(),
            // An empty line (or none: the console closed) is a try like a wrong one.
            (None, None) => ui
                .secret(&format!(
                    "fleet passphrase for the secrets of host {}: ",
                    host.name
                ))
                .unwrap_or_default(),
        };
        tries += 1;
        match secrets::open(&bytes, &passphrase, &host.name, fleet) {
            Ok(b) => break b,
            Err(secrets::OpenError::WrongPassphrase) if from_tpm.is_some() => {
                return Err(format!(
                    "the key this machine's TPM gave back does not open {what} (altered on the stick?); nothing was touched"
                ))
            }
            Err(secrets::OpenError::WrongPassphrase)
                if opts.secrets_passphrase.is_none() && tries < TRIES =>
            {
                ui.say(&format!(
                    "that passphrase does not open {what}; {} more tr{}",
                    TRIES - tries,
                    if TRIES - tries == 1 { "y" } else { "ies" }
                ));
            }
            Err(secrets::OpenError::WrongPassphrase) => {
                return Err(format!(
                    "the passphrase does not open {what} ({tries} tr{}); nothing was touched",
                    if tries == 1 { "y" } else { "ies" }
                ))
            }
            Err(secrets::OpenError::Refused(why)) => {
                return Err(format!("{what}: {why}; nothing was touched"))
            }
        }
    };
    let mut names: Vec<String> = bundle.luks_keys.iter().map(|k| k.name.clone()).collect();
    names.sort_unstable();
    let mut want = sealed.luks_keys.clone();
    want.sort_unstable();
    if names != want || bundle.files.len() != sealed.files {
        let why = format!(
            "{what} hold keys for {names:?} and {} files, and the manifest says {want:?} and {}; nothing was touched",
            bundle.files.len(),
            sealed.files
        );
        bundle.wipe();
        return Err(why);
    }
    if let Some(e) = bundle
        .files
        .iter()
        .find_map(|f| manifest::document::check_extra_file(&f.target, f.mode).err())
    {
        bundle.wipe();
        return Err(format!("{what}: {e}; nothing was touched"));
    }
    Ok(bundle)
}

/// The key that opens secrets sealed to this machine's TPM: its ActivateCredential of the
/// manifest's credential. Only the TPM the machine enrolled with gives it; any other, or no
/// TPM, stops the install before anything is written.
fn tpm_passphrase(t: &SealedToTpm, what: &str) -> Result<String, String> {
    let stop = |why: String| format!("{what}: {why}; nothing was touched");
    let decode = |text: &str, part: &str, most: usize| {
        let bytes =
            util::hex::decode(text).map_err(|e| stop(format!("the manifest's TPM {part}: {e}")))?;
        if bytes.len() > most {
            return Err(stop(format!(
                "the manifest's TPM {part} is {} bytes, more than the {most} it can be",
                bytes.len()
            )));
        }
        Ok(bytes)
    };
    // The credential blob: a SHA-256 HMAC and a credential of at most 32 bytes; the secret:
    // the seed encrypted to an RSA key of at most 4096 bits.
    let blob = decode(&t.blob, "credential", 2 + 32 + 2 + 32)?;
    let secret = decode(&t.secret, "secret", 512)?;
    if !machine::tpm::present() {
        return Err(stop(format!(
            "they are sealed to the TPM of the machine that enrolled (endorsement key sha256:{}), and this machine has no TPM",
            t.ek_sha256
        )));
    }
    let mut key = machine::tpm::Tpm::open()
        .and_then(|mut tpm| tpm.activate(&t.ek_sha256, &blob, &secret))
        .map_err(|e| stop(e.to_string()))?;
    let passphrase = secrets::tpm::passphrase(&key);
    key.fill(0);
    Ok(passphrase)
}
