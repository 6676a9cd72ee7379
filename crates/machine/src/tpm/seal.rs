//! A LUKS key sealed to the TPM2 the way systemd 252 seals one (`systemd-cryptenroll
//! --tpm2-pcrs=`), but to PCR values given rather than read: the PCR 7 the next boot will
//! have once the fleet's Secure Boot keys are in (see `eventlog`), which systemd-cryptenroll
//! cannot be told. The token it makes is the one systemd-cryptsetup reads at boot (252 and
//! later, which keep unsealing tokens without `tpm2_srk` this way): the sealed object under
//! the owner hierarchy's ECC primary, a policy of one TPM2_PolicyPCR in the SHA-256 bank,
//! and the keyslot's passphrase the secret in base64.
//!
//! Pure: the digests and the token; `Tpm::seal` talks to the TPM.

use base64::Engine;
use sha2::{Digest, Sha256};

use super::wire;

/// The policy digest of TPM2_PolicyPCR over `values` (index and SHA-256 value, ascending):
/// SHA-256 of the empty policy, the command code, the selection, and the SHA-256 of the
/// values one after the other. A session whose PCRs hold these values reaches it.
pub fn policy_pcr(values: &[(u8, [u8; 32])]) -> [u8; 32] {
    let mut sorted = values.to_vec();
    sorted.sort_by_key(|(i, _)| *i);
    // The selection is a bitmap: a PCR named twice is selected, and hashed, once.
    sorted.dedup_by_key(|(i, _)| *i);
    let indices: Vec<u8> = sorted.iter().map(|(i, _)| *i).collect();
    let mut pcrs = Sha256::new();
    for (_, v) in &sorted {
        pcrs.update(v);
    }
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(wire::TPM_CC_POLICY_PCR.to_be_bytes());
    h.update(wire::pcr_selection(&indices));
    h.update(pcrs.finalize());
    h.finalize().into()
}

/// The keyslot passphrase of a sealed secret: its base64 (standard alphabet, padded), as
/// systemd gives the unsealed secret to cryptsetup.
pub fn passphrase(secret: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(secret)
}

/// The LUKS2 token for `keyslot`: `blob` (from `Tpm::seal`) sealed to `pcrs` under `policy`.
pub fn token(keyslot: u32, blob: &[u8], pcrs: &[u8], policy: &[u8; 32]) -> String {
    let mut pcrs = pcrs.to_vec();
    pcrs.sort_unstable();
    pcrs.dedup();
    serde_json::json!({
        "type": "systemd-tpm2",
        "keyslots": [keyslot.to_string()],
        "tpm2-blob": base64::engine::general_purpose::STANDARD.encode(blob),
        "tpm2-pcrs": pcrs,
        "tpm2-pcr-bank": "sha256",
        "tpm2-primary-alg": "ecc",
        "tpm2-policy-hash": util::hex::encode(policy),
        "tpm2-pin": false,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_of_pcr_7_at_zero_is_the_one_systemd_computes() {
        // systemd-cryptenroll 252 on a fresh swtpm (PCR 7 all zeros) stored this
        // tpm2-policy-hash.
        assert_eq!(
            util::hex::encode(&policy_pcr(&[(7, [0; 32])])),
            "8b5682d81b29435d08d79278150611dc7e5923b2fefcce684a09577b40130a8b"
        );
        // The order given does not matter; the values do.
        let a = policy_pcr(&[(7, [1; 32]), (11, [2; 32])]);
        assert_eq!(a, policy_pcr(&[(11, [2; 32]), (7, [1; 32])]));
        assert_ne!(a, policy_pcr(&[(7, [2; 32]), (11, [1; 32])]));
        // tpm2-pcrs=7+7 is PCR 7 once, as the TPM's bitmap has it.
        assert_eq!(
            policy_pcr(&[(7, [0; 32]), (7, [0; 32])]),
            policy_pcr(&[(7, [0; 32])])
        );
    }

    #[test]
    fn the_token_names_its_keyslot_blob_and_policy() {
        let t: serde_json::Value =
            serde_json::from_str(&token(2, &[1, 2, 3], &[11, 7], &[0xab; 32])).unwrap();
        assert_eq!(t["type"], "systemd-tpm2");
        assert_eq!(t["keyslots"], serde_json::json!(["2"]));
        assert_eq!(t["tpm2-blob"], "AQID");
        assert_eq!(t["tpm2-pcrs"], serde_json::json!([7, 11]));
        assert_eq!(t["tpm2-policy-hash"], "ab".repeat(32));
        assert_eq!(passphrase(&[0xff; 32]).len(), 44);
    }
}
