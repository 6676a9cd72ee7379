//! Secrets sealed to one machine's TPM 2.0, made without the TPM: TPM2_MakeCredential done in
//! software (TPM 2.0 Part 1, "Credential Protection"), to the machine's endorsement key (EK)
//! and the name of a second key its TPM recreates on demand (the *activation key*, see
//! `machine::tpm`). Only that TPM's TPM2_ActivateCredential gives the credential back: the
//! seed is encrypted to the EK (RSA-OAEP, label "IDENTITY"), the credential to keys derived
//! from the seed and the activation key's name, so neither another TPM nor anyone holding
//! the stick can open it.
//!
//! The credential is a random 256-bit key; the host's bundle is sealed with age to it (as a
//! passphrase of 64 hex digits), so the bundle's format and checks are the fleet passphrase's.

use aes::cipher::{BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use rsa::{BigUint, Oaep, RsaPublicKey};
use sha2::{Digest, Sha256};

use crate::Bundle;

/// The EK's modulus size (the TCG's default RSA 2048 template, "L-1"), in bytes.
pub const EK_MODULUS_BYTES: usize = 256;
/// A name in the SHA-256 name algorithm: TPM_ALG_SHA256, then the digest of the public area.
pub const NAME_BYTES: usize = 34;
/// scrypt's work factor for a bundle sealed to a random 256-bit key: stretching a key that
/// cannot be guessed adds nothing, and this keeps the install quick.
const WORK_FACTOR: u8 = 10;

/// What the TPM takes back in TPM2_ActivateCredential: the credential blob (TPM2B_ID_OBJECT's
/// contents: the integrity HMAC as a TPM2B, then the encrypted credential) and the seed
/// encrypted to the EK (TPM2B_ENCRYPTED_SECRET's contents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub blob: Vec<u8>,
    pub secret: Vec<u8>,
}

/// The TPM a host's secrets are sealed to, as its enrolment recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The EK's RSA modulus (the exponent is the default, 65537).
    pub ek_modulus: Vec<u8>,
    /// The activation key's name (TPM_ALG_SHA256 and the SHA-256 of its public area).
    pub activation_name: Vec<u8>,
}

impl Target {
    /// Checks the sizes an RSA 2048 EK and a SHA-256 name have; `what` names them in errors.
    pub fn new(ek_modulus: Vec<u8>, activation_name: Vec<u8>) -> Result<Target, String> {
        if ek_modulus.len() != EK_MODULUS_BYTES || ek_modulus[0] & 0x80 == 0 {
            return Err(format!(
                "the endorsement key is {} bytes; an RSA 2048 key's modulus is {EK_MODULUS_BYTES}, its top bit set",
                ek_modulus.len()
            ));
        }
        if activation_name.len() != NAME_BYTES || activation_name[..2] != [0x00, 0x0B] {
            return Err(format!(
                "the activation key's name is {} bytes; a SHA-256 name is {NAME_BYTES}, starting 000b",
                activation_name.len()
            ));
        }
        Ok(Target {
            ek_modulus,
            activation_name,
        })
    }

    /// SHA-256 of the EK's modulus, hex: how inventories and messages name the TPM.
    pub fn ek_sha256(&self) -> String {
        format!("{:x}", Sha256::digest(&self.ek_modulus))
    }
}

/// The passphrase a bundle sealed to a TPM is sealed with: the credential in hex.
pub fn passphrase(credential: &[u8]) -> String {
    util::hex::encode(credential)
}

impl Bundle {
    /// Sealed to `target`'s TPM: the age file's bytes and the credential that opens it.
    pub fn seal_to_tpm(&self, target: &Target) -> Result<(Vec<u8>, Credential), String> {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let sealed = self.seal(&passphrase(&key), WORK_FACTOR);
        let credential = make_credential(target, &key);
        key.fill(0);
        Ok((sealed?, credential?))
    }
}

/// TPM2_MakeCredential in software: `credential` (at most 32 bytes) for `target`.
pub fn make_credential(target: &Target, credential: &[u8]) -> Result<Credential, String> {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let made = make_credential_with_seed(target, credential, &seed);
    seed.fill(0);
    made
}

fn make_credential_with_seed(
    target: &Target,
    credential: &[u8],
    seed: &[u8; 32],
) -> Result<Credential, String> {
    if credential.len() > 32 {
        return Err("a TPM credential holds at most 32 bytes".into());
    }
    let ek = RsaPublicKey::new(
        BigUint::from_bytes_be(&target.ek_modulus),
        BigUint::from(65_537u32),
    )
    .map_err(|e| format!("the endorsement key is not an RSA public key: {e}"))?;
    // The label includes its terminating zero, as the TPM hashes it.
    let secret = ek
        .encrypt(
            &mut OsRng,
            Oaep::new_with_label::<Sha256, _>("IDENTITY\0"),
            seed,
        )
        .map_err(|e| format!("encrypting to the endorsement key: {e}"))?;
    let name = &target.activation_name;
    // The EK's symmetric algorithm (AES-128-CFB) protects the credential, with a zero IV.
    let sym_key = kdfa(seed, b"STORAGE", name, b"", 128);
    let mut plain = (credential.len() as u16).to_be_bytes().to_vec();
    plain.extend_from_slice(credential);
    let enc_identity = aes128_cfb_encrypt(sym_key[..16].try_into().expect("16 bytes"), &plain);
    plain.fill(0);
    let hmac_key = kdfa(seed, b"INTEGRITY", b"", b"", 256);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&hmac_key).expect("any key length");
    mac.update(&enc_identity);
    mac.update(name);
    let integrity = mac.finalize().into_bytes();
    let mut blob = (integrity.len() as u16).to_be_bytes().to_vec();
    blob.extend_from_slice(&integrity);
    blob.extend_from_slice(&enc_identity);
    Ok(Credential { blob, secret })
}

/// KDFa with HMAC-SHA-256 (Part 1, 11.4.10.2): `bits` of key from `key`, a label (with its
/// terminating zero added) and two contexts.
fn kdfa(key: &[u8], label: &[u8], context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut counter = 1u32;
    while out.len() * 8 < bits as usize {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(&counter.to_be_bytes());
        mac.update(label);
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bits.div_ceil(8) as usize);
    out
}

/// AES-128 in CFB mode with full-block feedback and a zero IV, as the TPM's parameter and
/// credential encryption uses it.
fn aes128_cfb_encrypt(key: &[u8; 16], plain: &[u8]) -> Vec<u8> {
    let cipher = aes::Aes128::new(key.into());
    let mut feedback = [0u8; 16];
    let mut out = Vec::with_capacity(plain.len());
    for chunk in plain.chunks(16) {
        let mut block = feedback.into();
        cipher.encrypt_block(&mut block);
        let start = out.len();
        out.extend(chunk.iter().zip(block.iter()).map(|(p, k)| p ^ k));
        feedback[..chunk.len()].copy_from_slice(&out[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_and_cfb_match_their_definitions() {
        // KDFa of one block is one HMAC over counter 1, the label and its zero, the
        // contexts and the length in bits.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"seed").unwrap();
        mac.update(&[0, 0, 0, 1]);
        mac.update(b"STORAGE\0name");
        mac.update(&[0, 0, 0, 128]);
        let one = mac.finalize().into_bytes();
        assert_eq!(kdfa(b"seed", b"STORAGE", b"name", b"", 128), one[..16]);
        assert_eq!(kdfa(b"seed", b"INTEGRITY", b"", b"", 512).len(), 64);
        // CFB: the first block is the plaintext XOR E(IV); a second block feeds the first
        // ciphertext back.
        let key = [7u8; 16];
        let c = aes128_cfb_encrypt(&key, &[0u8; 40]);
        let mut block = [0u8; 16].into();
        aes::Aes128::new(&key.into()).encrypt_block(&mut block);
        assert_eq!(c[..16], block[..]);
        let mut next = block;
        aes::Aes128::new(&key.into()).encrypt_block(&mut next);
        assert_eq!(c[16..32], next[..]);
        assert_eq!(c.len(), 40);
    }

    #[test]
    fn a_credential_is_shaped_as_activate_credential_reads_it() {
        let mut n = vec![0xC5u8; EK_MODULUS_BYTES];
        n[EK_MODULUS_BYTES - 1] = 0x01; // odd, like any RSA modulus
        let mut name = vec![0x00, 0x0B];
        name.extend([9u8; 32]);
        let t = Target::new(n, name).unwrap();
        let c = make_credential(&t, &[1u8; 32]).unwrap();
        assert_eq!(c.secret.len(), EK_MODULUS_BYTES);
        // The integrity HMAC as a TPM2B, then size + credential encrypted.
        assert_eq!(c.blob[..2], [0, 32]);
        assert_eq!(c.blob.len(), 2 + 32 + 2 + 32);
        // Seeds differ each time: so do both parts.
        let again = make_credential(&t, &[1u8; 32]).unwrap();
        assert_ne!(c.secret, again.secret);
        assert_ne!(c.blob, again.blob);
        assert!(make_credential(&t, &[0u8; 33]).is_err());
    }

    #[test]
    fn a_target_must_be_an_rsa_2048_ek_and_a_sha256_name() {
        let name = [&[0x00, 0x0B][..], &[0u8; 32]].concat();
        assert!(Target::new(vec![0x80; 256], name.clone()).is_ok());
        assert!(Target::new(vec![0x80; 255], name.clone()).is_err());
        assert!(Target::new(vec![0x7F; 256], name.clone()).is_err());
        assert!(Target::new(vec![0x80; 256], name[1..].to_vec()).is_err());
        assert!(Target::new(vec![0x80; 256], [&[0x00, 0x04][..], &[0u8; 32]].concat()).is_err());
    }
}
