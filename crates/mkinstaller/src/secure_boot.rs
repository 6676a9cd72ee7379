//! The fleet's Secure Boot keys (`[defaults] secure-boot = { keys = "DIR" }`): PK.auth,
//! KEK.auth and db.auth from DIR, each a signed EFI signature list as the firmware takes it
//! in setup mode (an EFI_VARIABLE_AUTHENTICATION_2 header: a timestamp and a PKCS#7
//! WIN_CERTIFICATE, then the list), checked here and carried in the payload for the
//! installer to enrol. sbctl and efitools' sign-efi-sig-list make such files
//! (tests/fixtures/secure-boot/make-keys shows how).

use std::path::Path;

use sha2::{Digest, Sha256};

use manifest::document::{PayloadRef, SecureBootKeys, SECURE_BOOT_DIR};
use manifest::hosts::SecureBootDefaults;
use media::payload::PayloadFile;

/// WIN_CERT_TYPE_EFI_GUID, revision 2.0, and EFI_CERT_TYPE_PKCS7_GUID
/// (4aafd29d-68df-49ee-8aa9-347d375665a7, in its byte order).
const WIN_CERT_REVISION: u16 = 0x0200;
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0EF1;
const PKCS7_GUID: [u8; 16] = [
    0x9d, 0xd2, 0xaf, 0x4a, 0xdf, 0x68, 0xee, 0x49, 0x8a, 0xa9, 0x34, 0x7d, 0x37, 0x56, 0x65, 0xa7,
];

/// Checks the shape of a `.auth` file: EFI_TIME (16 bytes), then a WIN_CERTIFICATE_UEFI_GUID
/// of type PKCS#7 whose length fits, then a non-empty signature list.
pub fn check_auth(bytes: &[u8]) -> Result<(), String> {
    let le16 = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    if bytes.len() < 16 + 24 {
        return Err(format!(
            "{} bytes is too short for a signed EFI variable",
            bytes.len()
        ));
    }
    let length = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
    if le16(20) != WIN_CERT_REVISION
        || le16(22) != WIN_CERT_TYPE_EFI_GUID
        || bytes[24..40] != PKCS7_GUID
    {
        return Err(
            "not an EFI_VARIABLE_AUTHENTICATION_2 (a PKCS#7 WIN_CERTIFICATE after the timestamp)"
                .into(),
        );
    }
    if length < 24 || 16 + length >= bytes.len() {
        return Err(format!(
            "its certificate of {length} bytes leaves no signature list"
        ));
    }
    Ok(())
}

/// The fleet's keys for the manifest, and the files for the payload; none without
/// `secure-boot`.
pub fn keys(
    defaults: Option<&SecureBootDefaults>,
    hosts_file: &Path,
) -> Result<Option<(SecureBootKeys, Vec<PayloadFile>)>, String> {
    let Some(sb) = defaults else {
        return Ok(None);
    };
    let mut files = Vec::new();
    let mut refs = Vec::new();
    for name in ["PK", "KEK", "db"] {
        let path = sb.keys.join(format!("{name}.auth"));
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "{}: secure-boot keys: {}: {e} (the directory needs PK.auth, KEK.auth and db.auth, as sbctl or sign-efi-sig-list make them)",
                hosts_file.display(),
                path.display()
            )
        })?;
        check_auth(&bytes).map_err(|e| {
            format!(
                "{}: secure-boot keys: {}: {e}",
                hosts_file.display(),
                path.display()
            )
        })?;
        let source = format!("{SECURE_BOOT_DIR}/{name}.auth");
        refs.push(PayloadRef {
            source: source.clone(),
            sha256: format!("{:x}", Sha256::digest(&bytes)),
            size: bytes.len() as u64,
        });
        files.push(PayloadFile {
            payload_path: source,
            source: path,
            size: bytes.len() as u64,
        });
    }
    let [pk, kek, db] = <[PayloadRef; 3]>::try_from(refs).expect("three keys");
    Ok(Some((
        SecureBootKeys {
            pk,
            kek,
            db,
            not_in_setup_mode: sb.not_in_setup_mode,
        },
        files,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_files_are_told_from_anything_else() {
        let mut good = vec![0u8; 16];
        good.extend(40u32.to_le_bytes());
        good.extend(0x0200u16.to_le_bytes());
        good.extend(0x0EF1u16.to_le_bytes());
        good.extend(PKCS7_GUID);
        good.extend([1u8; 16]); // the signature
        good.extend([2u8; 28]); // the list
        assert_eq!(check_auth(&good), Ok(()));
        let mut bad = good.clone();
        bad[24] ^= 1;
        assert!(check_auth(&bad).is_err());
        let short = good[..16 + 40].to_vec();
        assert!(check_auth(&short)
            .unwrap_err()
            .contains("leaves no signature list"));
        assert!(check_auth(b"-----BEGIN CERTIFICATE-----").is_err());
    }
}
