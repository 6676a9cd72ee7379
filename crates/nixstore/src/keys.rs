//! Nix's ed25519 signing keys: `name:base64(secret seed ‖ public key)` for secret keys (the
//! format `nix-store --generate-binary-cache-key` and `nix key generate-secret` write),
//! `name:base64(public key)` for public keys, and signatures `name:base64(signature)`.

use std::fs::File;
use std::io::Read;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why}")]
pub struct KeyError {
    what: &'static str,
    why: String,
}

fn split<'a>(text: &'a str, what: &'static str) -> Result<(&'a str, Vec<u8>), KeyError> {
    let err = |why: String| KeyError { what, why };
    let (name, body) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| err("expected <name>:<base64>".into()))?;
    if name.is_empty() {
        return Err(err("the key name is empty".into()));
    }
    let bytes = B64
        .decode(body)
        .map_err(|e| err(format!("bad base64: {e}")))?;
    Ok((name, bytes))
}

/// A secret key with its name (e.g. `cache.example.org-1`).
pub struct SecretKey {
    pub name: String,
    key: SigningKey,
}

impl SecretKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split(text, "secret key")?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|b: Vec<u8>| KeyError {
            what: "secret key",
            why: format!("expected 64 bytes, found {}", b.len()),
        })?;
        let key = SigningKey::from_keypair_bytes(&bytes).map_err(|_| KeyError {
            what: "secret key",
            why: "its public half does not match its secret half".into(),
        })?;
        Ok(SecretKey {
            name: name.to_string(),
            key,
        })
    }

    /// A fresh key from the kernel's random source.
    pub fn generate(name: &str) -> std::io::Result<Self> {
        let mut seed = [0u8; 32];
        File::open("/dev/urandom")?.read_exact(&mut seed)?;
        Ok(SecretKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn to_text(&self) -> String {
        format!("{}:{}", self.name, B64.encode(self.key.to_keypair_bytes()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// `name:base64(signature)` over `message` (a narinfo fingerprint).
    pub fn sign(&self, message: &str) -> String {
        let sig = self.key.sign(message.as_bytes());
        format!("{}:{}", self.name, B64.encode(sig.to_bytes()))
    }
}

/// A public key with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split(text, "public key")?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| KeyError {
            what: "public key",
            why: format!("expected 32 bytes, found {}", b.len()),
        })?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError {
            what: "public key",
            why: "not a valid ed25519 point".into(),
        })?;
        Ok(PublicKey {
            name: name.to_string(),
            key,
        })
    }

    pub fn to_text(&self) -> String {
        format!("{}:{}", self.name, B64.encode(self.key.as_bytes()))
    }

    /// Whether `sig` (`name:base64`) is this key's valid signature of `message`.
    pub fn verify(&self, message: &str, sig: &str) -> bool {
        let Ok((name, bytes)) = split(sig, "signature") else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes) else {
            return false;
        };
        name == self.name
            && self
                .key
                .verify(message.as_bytes(), &Signature::from_bytes(&bytes))
                .is_ok()
    }
}

/// Whether any of `sigs` is a valid signature of `message` by any of `keys`.
pub fn verify_any(keys: &[PublicKey], message: &str, sigs: &[String]) -> bool {
    sigs.iter()
        .any(|s| keys.iter().any(|k| k.verify(message, s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip() {
        let sk = SecretKey::generate("test-1").unwrap();
        let sk = SecretKey::parse(&sk.to_text()).unwrap();
        let pk = PublicKey::parse(&sk.public().to_text()).unwrap();
        let sig = sk.sign("1;/nix/store/x;sha256:y;1;");
        assert!(pk.verify("1;/nix/store/x;sha256:y;1;", &sig));
        assert!(!pk.verify("1;/nix/store/x;sha256:y;2;", &sig));
        let other = SecretKey::generate("test-1").unwrap().public();
        assert!(!other.verify("1;/nix/store/x;sha256:y;1;", &sig));
        let renamed = sig.replacen("test-1", "test-2", 1);
        assert!(!pk.verify("1;/nix/store/x;sha256:y;1;", &renamed));
    }

    #[test]
    fn refuses_malformed_keys() {
        assert!(SecretKey::parse("nocolon").is_err());
        assert!(SecretKey::parse("x:AAAA").is_err());
        assert!(PublicKey::parse(":AAAA").is_err());
    }
}
