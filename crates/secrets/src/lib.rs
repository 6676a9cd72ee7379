//! A host's secrets for the trip on a stick or a cache site: its extra files and LUKS keys in
//! one bundle, sealed with age to the fleet's passphrase (age's scrypt recipient, so
//! `age -d` opens one too), opened on the machine into memory and written only into the
//! installed root. The bundle names its host and fleet inside the encryption: a bundle moved
//! to another host's place on a stick opens but is refused.
//!
//! Pure: bytes in, bytes out. mkinstaller seals, autoinstall-terminal opens. `recovery`
//! escrows the recovery keys installers make.

pub mod recovery;
pub mod tpm;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// What a bundle's JSON says it is.
pub const FORMAT: &str = "nixos-autoinstall-secrets";
pub const VERSION: u32 = 1;
/// The most a bundle may hold (sealed or open): the installer keeps it in memory.
pub const MAX_BYTES: u64 = 64 << 20;
/// scrypt's work factor (log2 N) bundles are sealed with, and the most an installer accepts:
/// 2^18 × 1 KiB = 256 MiB of memory and about a second here. A hostile stick cannot ask for
/// more (a bundle of 2^22 would take 4 GiB).
pub const WORK_FACTOR: u8 = 18;
/// The shortest fleet passphrase mkinstaller takes.
pub const MIN_PASSPHRASE: usize = 12;

/// A host's secrets, in the clear (only ever in memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    format: String,
    version: u32,
    /// The host these are for.
    pub host: String,
    /// The fleet's name, if it has one.
    pub fleet: Option<String>,
    pub files: Vec<File>,
    pub luks_keys: Vec<Key>,
}

/// An extra file: where it goes in the installed root, its mode, its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub target: String,
    pub mode: u32,
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

/// The key of one LUKS container of the host's layout, by its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    pub name: String,
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

mod base64_bytes {
    use super::*;
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

impl Bundle {
    /// Overwrites every secret's bytes (before the bundle is dropped unused).
    pub fn wipe(&mut self) {
        for f in &mut self.files {
            f.data.fill(0);
        }
        for k in &mut self.luks_keys {
            k.data.fill(0);
        }
    }

    pub fn new(host: &str, fleet: Option<&str>, files: Vec<File>, luks_keys: Vec<Key>) -> Bundle {
        Bundle {
            format: FORMAT.into(),
            version: VERSION,
            host: host.into(),
            fleet: fleet.map(Into::into),
            files,
            luks_keys,
        }
    }

    /// Sealed to `passphrase` with scrypt at `work_factor` ([`WORK_FACTOR`] but in tests):
    /// the age file's bytes. Random (a fresh salt and file key each time).
    pub fn seal(&self, passphrase: &str, work_factor: u8) -> Result<Vec<u8>, String> {
        let plain = serde_json::to_vec(self).expect("a bundle serialises");
        if plain.len() as u64 > MAX_BYTES {
            return Err(format!(
                "the secrets of host {:?} are {} bytes; at most {MAX_BYTES} travel sealed",
                self.host,
                plain.len()
            ));
        }
        let mut recipient = age::scrypt::Recipient::new(passphrase.to_string().into());
        recipient.set_work_factor(work_factor);
        age::encrypt(&recipient, &plain).map_err(|e| format!("sealing the secrets: {e}"))
    }
}

/// Why a sealed bundle did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The passphrase does not open it (or its header was altered).
    WrongPassphrase,
    /// It opened, but is not what this machine was to get; the sentence says why.
    Refused(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::WrongPassphrase => f.write_str("the passphrase does not open the secrets"),
            OpenError::Refused(why) => f.write_str(why),
        }
    }
}

/// Opens the sealed bundle of `host` (of `fleet`) with `passphrase`. Bounded: at most
/// [`MAX_BYTES`] in and out, and scrypt at most [`WORK_FACTOR`].
pub fn open(
    sealed: &[u8],
    passphrase: &str,
    host: &str,
    fleet: Option<&str>,
) -> Result<Bundle, OpenError> {
    let refused = |why: String| OpenError::Refused(why);
    if sealed.len() as u64 > MAX_BYTES + 4096 {
        return Err(refused(format!(
            "the sealed secrets are {} bytes, more than the {MAX_BYTES} a bundle may hold",
            sealed.len()
        )));
    }
    let mut identity = age::scrypt::Identity::new(passphrase.to_string().into());
    identity.set_max_work_factor(WORK_FACTOR);
    let mut plain = age::decrypt(&identity, sealed).map_err(|e| match e {
        age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
            OpenError::WrongPassphrase
        }
        age::DecryptError::ExcessiveWork { required, .. } => refused(format!(
            "the sealed secrets ask for scrypt work factor {required}, more than the {WORK_FACTOR} they are sealed with; refused (it would take minutes and gigabytes)"
        )),
        e => refused(format!("the sealed secrets are not an age file sealed to a passphrase: {e}")),
    })?;
    let parsed = serde_json::from_slice::<Bundle>(&plain);
    // The plaintext (every secret, in base64) goes as soon as it is read.
    plain.fill(0);
    let mut bundle =
        parsed.map_err(|e| refused(format!("the opened secrets are not a bundle of ours: {e}")))?;
    if bundle.format != FORMAT || bundle.version != VERSION {
        return Err(refused(format!(
            "the opened secrets are {} version {}; this installer reads {FORMAT} version {VERSION}",
            bundle.format, bundle.version
        )));
    }
    if bundle.host != host || bundle.fleet.as_deref() != fleet {
        let why = format!(
            "the secrets at host {host:?}'s place are host {:?}'s (fleet {:?}); a stick's secrets were moved between hosts, so none are used",
            bundle.host, bundle.fleet
        );
        bundle.wipe();
        return Err(refused(why));
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fast scrypt for tests: the format is the same.
    const TEST_WORK: u8 = 10;

    fn bundle(host: &str) -> Bundle {
        Bundle::new(
            host,
            Some("office"),
            vec![File {
                target: "etc/ssh/ssh_host_ed25519_key".into(),
                mode: 0o600,
                data: b"PRIVATE KEY of this host".to_vec(),
            }],
            vec![Key {
                name: "crypted".into(),
                data: vec![0, 1, 2, 255],
            }],
        )
    }

    #[test]
    fn a_sealed_bundle_opens_with_its_passphrase_only() {
        let b = bundle("web-1");
        let sealed = b.seal("correct horse battery", TEST_WORK).unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1\n-> scrypt "));
        assert!(!sealed.windows(11).any(|w| w == b"PRIVATE KEY"));
        assert_eq!(
            open(&sealed, "correct horse battery", "web-1", Some("office")),
            Ok(b)
        );
        assert_eq!(
            open(&sealed, "correct horse battery!", "web-1", Some("office")),
            Err(OpenError::WrongPassphrase)
        );
        // Sealed twice, other bytes: a fresh salt and file key each time.
        assert_ne!(
            bundle("web-1")
                .seal("correct horse battery", TEST_WORK)
                .unwrap(),
            sealed
        );
    }

    #[test]
    fn another_hosts_or_fleets_bundle_is_refused() {
        let sealed = bundle("db-1")
            .seal("correct horse battery", TEST_WORK)
            .unwrap();
        let Err(OpenError::Refused(why)) =
            open(&sealed, "correct horse battery", "web-1", Some("office"))
        else {
            panic!("opened another host's secrets");
        };
        assert!(why.contains("host \"db-1\"'s"), "{why}");
        assert!(matches!(
            open(&sealed, "correct horse battery", "db-1", Some("lab")),
            Err(OpenError::Refused(_))
        ));
    }

    #[test]
    fn a_bundle_asking_for_too_much_work_or_not_ours_is_refused() {
        // A header asking for 2^19 (edited in: the work factor is checked before any scrypt
        // and before the header's MAC).
        let sealed = bundle("web-1").seal("pw pw pw pw pw", TEST_WORK).unwrap();
        let text = String::from_utf8_lossy(&sealed[..80]).into_owned();
        let at = text.find(" 10\n").expect("the scrypt stanza's work factor");
        let mut hostile = sealed.clone();
        hostile[at + 1..at + 3].copy_from_slice(b"19");
        let Err(OpenError::Refused(why)) =
            open(&hostile, "pw pw pw pw pw", "web-1", Some("office"))
        else {
            panic!("accepted work factor 19");
        };
        assert!(why.contains("work factor 19"), "{why}");
        assert!(matches!(
            open(b"not age at all", "pw", "web-1", None),
            Err(OpenError::Refused(_))
        ));
        // An age file of something else.
        let mut r = age::scrypt::Recipient::new("pw pw pw pw pw".to_string().into());
        r.set_work_factor(TEST_WORK);
        let other = age::encrypt(&r, b"{\"hello\": 1}").unwrap();
        let Err(OpenError::Refused(why)) = open(&other, "pw pw pw pw pw", "web-1", None) else {
            panic!("opened a foreign file");
        };
        assert!(why.contains("not a bundle of ours"), "{why}");
    }
}
