//! The fleet's Secure Boot keys (`[defaults] secure-boot = { keys = "DIR" }`): PK.auth,
//! KEK.auth and db.auth from DIR, each a signed EFI signature list as the firmware takes it
//! in setup mode (an EFI_VARIABLE_AUTHENTICATION_2 header: a timestamp and a PKCS#7
//! WIN_CERTIFICATE, then the list), checked here (`media::efi_auth`) and carried in the payload for the
//! installer to enrol. sbctl and efitools' sign-efi-sig-list make such files
//! (tests/fixtures/secure-boot/make-keys shows how).

use std::path::Path;

use sha2::{Digest, Sha256};

use manifest::document::{PayloadRef, SecureBootKeys, SECURE_BOOT_DIR};
use manifest::hosts::SecureBootDefaults;
use media::payload::PayloadFile;

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
        media::efi_auth::signature_list(&bytes).map_err(|e| {
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
