//! Recovery keys: one per encrypted volume, made on the machine at install, added to the
//! volume as a passphrase, and escrowed encrypted to the fleet's recovery recipients (age
//! X25519 `age1…` keys, or OpenSSH `ssh-ed25519`/`ssh-rsa` public keys, as age takes them).
//! The key is never written in the clear: the report and the installed disk hold only its
//! age file, which `mkinstaller reports --identity` opens for the admin.
//!
//! The key reads as systemd-cryptenroll writes its recovery keys: 32 random bytes in
//! modhex (`cbdefghijklnrtuv`, unambiguous on any keyboard layout), 8 groups of 8
//! separated by dashes, so it types the same at a systemd password prompt.

use std::io::{Read, Write};
use std::str::FromStr;

/// The modhex digits, for the values 0 to 15.
const MODHEX: &[u8; 16] = b"cbdefghijklnrtuv";
/// The bytes of randomness in a key.
pub const RANDOM_BYTES: usize = 32;
/// The most an escrowed key's age file may be (one recipient stanza is ~200 bytes; 64
/// recipients still fit): a report is read whole.
const MAX_ESCROW: usize = 64 << 10;

/// A recipient of the fleet's recovery keys.
pub struct Recipient(Box<dyn age::Recipient + Send + Sync>);

impl std::fmt::Debug for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recipient")
    }
}

/// Reads a recipient as hosts.toml gives it: `age1…`, or an OpenSSH public key line.
pub fn recipient(text: &str) -> Result<Recipient, String> {
    let text = text.trim();
    if text.starts_with("age1") {
        return age::x25519::Recipient::from_str(text)
            .map(|r| Recipient(Box::new(r)))
            .map_err(|e| format!("{text:?} is not an age X25519 public key: {e}"));
    }
    if text.starts_with("ssh-") {
        return age::ssh::Recipient::from_str(text)
            .map(|r| Recipient(Box::new(r)))
            .map_err(|e| {
                format!("{text:?} is not an SSH public key age can encrypt to (ssh-ed25519 or ssh-rsa): {e:?}")
            });
    }
    Err(format!(
        "{text:?} is neither an age public key (age1…) nor an SSH public key (ssh-ed25519 …, ssh-rsa …)"
    ))
}

/// The key for `random` (32 bytes from the machine's random source).
pub fn format_key(random: &[u8; RANDOM_BYTES]) -> String {
    let digits: Vec<u8> = random
        .iter()
        .flat_map(|b| [MODHEX[(b >> 4) as usize], MODHEX[(b & 15) as usize]])
        .collect();
    digits
        .chunks(8)
        .map(|c| std::str::from_utf8(c).expect("modhex is ASCII"))
        .collect::<Vec<_>>()
        .join("-")
}

/// Whether `text` reads as a recovery key (what `format_key` makes).
pub fn is_key(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == RANDOM_BYTES * 2 / 8
        && groups
            .iter()
            .all(|g| g.len() == 8 && g.bytes().all(|c| MODHEX.contains(&c)))
}

/// `key` encrypted to every recipient, as an armored age file.
pub fn escrow(key: &str, recipients: &[Recipient]) -> Result<String, String> {
    if recipients.is_empty() {
        return Err("no recovery recipients to escrow the key to".into());
    }
    let rs: Vec<&dyn age::Recipient> = recipients
        .iter()
        .map(|r| r.0.as_ref() as &dyn age::Recipient)
        .collect();
    let enc = age::Encryptor::with_recipients(rs.into_iter())
        .map_err(|e| format!("escrowing a recovery key: {e}"))?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| e.to_string())?;
    let mut w = enc.wrap_output(armor).map_err(|e| e.to_string())?;
    w.write_all(key.as_bytes()).map_err(|e| e.to_string())?;
    w.finish()
        .and_then(|a| a.finish())
        .map_err(|e| format!("escrowing a recovery key: {e}"))?;
    Ok(String::from_utf8(out).expect("armor is ASCII"))
}

/// The identities of an identity file: age's (`AGE-SECRET-KEY-1…` lines, comments) or an
/// unencrypted OpenSSH private key.
pub struct Identities(Vec<Box<dyn age::Identity>>);

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} identities", self.0.len())
    }
}

/// Reads an identity file; `what` names it in errors.
pub fn identities(text: &str, what: &str) -> Result<Identities, String> {
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----")
        || text.contains("-----BEGIN RSA PRIVATE KEY-----")
    {
        return match age::ssh::Identity::from_buffer(text.as_bytes(), Some(what.to_string())) {
            Ok(age::ssh::Identity::Unencrypted(i)) => {
                Ok(Identities(vec![Box::new(age::ssh::Identity::Unencrypted(i))]))
            }
            Ok(age::ssh::Identity::Encrypted(_)) => Err(format!(
                "{what}: the SSH key is protected by a passphrase; give an unprotected copy (or an age identity)"
            )),
            Ok(age::ssh::Identity::Unsupported(k)) => {
                Err(format!("{what}: an SSH key of a kind age cannot use: {k:?}"))
            }
            Err(e) => Err(format!("{what}: not an SSH private key: {e}")),
        };
    }
    let mut ids: Vec<Box<dyn age::Identity>> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = age::x25519::Identity::from_str(line).map_err(|_| {
            format!(
                "{what}, line {}: not an age identity (AGE-SECRET-KEY-1…) nor an OpenSSH private key",
                n + 1
            )
        })?;
        ids.push(Box::new(id));
    }
    if ids.is_empty() {
        return Err(format!("{what}: no identity in it"));
    }
    Ok(Identities(ids))
}

/// The recovery key in an escrowed age file, for one of `ids`.
pub fn reveal(escrowed: &str, ids: &Identities) -> Result<String, String> {
    if escrowed.len() > MAX_ESCROW {
        return Err(format!("an escrowed key of {} bytes", escrowed.len()));
    }
    let armor = age::armor::ArmoredReader::new(escrowed.as_bytes());
    let dec = age::Decryptor::new(armor).map_err(|e| format!("not an age file: {e}"))?;
    if dec.is_scrypt() {
        return Err("the escrowed key is sealed to a passphrase, not to recipients".into());
    }
    let mut r = dec
        .decrypt(ids.0.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => {
                "none of the identities given is a recipient of this key".to_string()
            }
            e => format!("opening the escrowed key: {e}"),
        })?;
    let mut key = String::new();
    r.by_ref()
        .take(1024)
        .read_to_string(&mut key)
        .map_err(|e| format!("opening the escrowed key: {e}"))?;
    if !is_key(&key) {
        return Err("the escrowed file opens, but does not hold a recovery key".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_systemd_writes_them() {
        let k = format_key(&[0u8; 32]);
        assert_eq!(k.len(), 64 + 7);
        assert!(k.starts_with("cccccccc-"));
        let k = format_key(&[0xff; 32]);
        assert!(k.starts_with("vvvvvvvv-"));
        assert!(is_key(&k));
        assert!(!is_key("cccccccc"));
        assert!(!is_key(&k.replace('v', "a")));
    }

    #[test]
    fn escrowed_to_age_and_ssh_opens_with_either() {
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let r = vec![
            recipient(&a.to_public().to_string()).unwrap(),
            recipient(&b.to_public().to_string()).unwrap(),
        ];
        let key = format_key(&[7u8; 32]);
        let escrowed = escrow(&key, &r).unwrap();
        assert!(escrowed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(!escrowed.contains(&key));
        use age::secrecy::ExposeSecret;
        for id in [&a, &b] {
            let ids = identities(
                &format!("# test\n{}\n", id.to_string().expose_secret()),
                "t",
            )
            .unwrap();
            assert_eq!(reveal(&escrowed, &ids).unwrap(), key);
        }
        let c = age::x25519::Identity::generate();
        let other = identities(c.to_string().expose_secret(), "t").unwrap();
        assert!(reveal(&escrowed, &other)
            .unwrap_err()
            .contains("none of the identities"));
    }

    #[test]
    fn recipients_that_are_not_keys_are_refused() {
        for bad in [
            "age1nope",
            "ssh-ed25519 AAAAnotbase64",
            "ecdsa-sha2-nistp256 AAAA",
            "",
        ] {
            assert!(recipient(bad).is_err(), "{bad:?} taken");
        }
        assert!(identities("AGE-SECRET-KEY-1XYZ\n", "f")
            .unwrap_err()
            .contains("f, line 1"));
    }
}
