//! The fleet's Secure Boot keys (`[defaults] secure-boot`): decided at the plan (a firmware
//! in setup mode gets them; one that is not follows `not-in-setup-mode`, a refusal touching
//! nothing), enrolled at the end of a successful install, db and KEK first, PK last (the
//! PK ends setup mode: from the next boot the firmware runs only what the fleet's db
//! signed). Each file is checked against the manifest's hash before it is written.

use serde::Serialize;

use manifest::document::{Manifest, PayloadRef, SecureBootKeys};
use manifest::hosts::NotInSetupMode;

use crate::source::Source;

/// What the install does with the fleet's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeysPlan {
    /// Enrol them: the firmware is in setup mode.
    Enrol,
    /// Leave the firmware's keys as they are, for this reason.
    Skip(String),
}

/// The plan for `m`'s keys on a firmware whose setup mode is `setup_mode` (none: the
/// firmware does not say); none without keys.
pub fn plan(m: &Manifest, setup_mode: Option<bool>) -> Result<Option<KeysPlan>, String> {
    let Some(keys) = &m.secure_boot else {
        return Ok(None);
    };
    let why = match setup_mode {
        Some(true) => return Ok(Some(KeysPlan::Enrol)),
        Some(false) => "the firmware is not in setup mode (it has a platform key)",
        None => "the firmware has no Secure Boot variables (not UEFI, or no Secure Boot)",
    };
    match keys.not_in_setup_mode {
        NotInSetupMode::Skip => Ok(Some(KeysPlan::Skip(format!(
            "{why}; not-in-setup-mode = \"skip\""
        )))),
        NotInSetupMode::Refuse => Err(format!(
            "the fleet's Secure Boot keys are to be enrolled, {why}, and the fleet says not-in-setup-mode = \"refuse\" (clear the keys in the firmware setup to enter setup mode)"
        )),
    }
}

/// Enrols the fleet's `keys` from `source`; says what it did, for the report.
pub fn enrol(keys: &SecureBootKeys, source: &Source) -> Result<String, String> {
    use machine::efi::KeyVar;
    let files: [(KeyVar, &PayloadRef); 3] = [
        (KeyVar::Db, &keys.db),
        (KeyVar::Kek, &keys.kek),
        (KeyVar::Pk, &keys.pk),
    ];
    // All read and checked before the first is written.
    let mut read = Vec::new();
    for (var, f) in files {
        let what = format!("the fleet's Secure Boot {}", var.name());
        read.push((
            var,
            source.read_checked(&f.source, f.size, &f.sha256, &what)?,
        ));
    }
    for (var, bytes) in &read {
        machine::efi::enrol_key(*var, bytes).map_err(|e| {
            format!(
                "{e} (the firmware refused the fleet's {}: is it signed by the key above it?)",
                var.name()
            )
        })?;
    }
    if machine::efi::setup_mode() == Some(true) {
        return Err("the fleet's PK was written, and the firmware is still in setup mode".into());
    }
    Ok(
        "the fleet's db, KEK and PK enrolled: Secure Boot with the fleet's keys from the next boot"
            .into(),
    )
}

/// PCR 7 of the next boot, once `keys` are enrolled: this boot's event log replayed with
/// them (`machine::tpm::next_boot_pcr7`). The inner error: the TPM refused (the fleet's
/// without-tpm decides); the outer: no prediction can be made (a refusal).
pub fn next_boot_pcr7(
    keys: &SecureBootKeys,
    source: &Source,
) -> Result<Result<[u8; 32], String>, String> {
    use machine::tpm::eventlog::NewKeys;
    let read = |f: &PayloadRef, name: &str| {
        let bytes = source.read_checked(
            &f.source,
            f.size,
            &f.sha256,
            &format!("the fleet's Secure Boot {name}"),
        )?;
        media::efi_auth::signature_list(&bytes)
            .map(<[u8]>::to_vec)
            .map_err(|e| format!("the fleet's {name}: {e}"))
    };
    let (pk, kek, db) = (
        read(&keys.pk, "PK")?,
        read(&keys.kek, "KEK")?,
        read(&keys.db, "db")?,
    );
    match machine::tpm::next_boot_pcr7(&NewKeys {
        pk: &pk,
        kek: &kek,
        db: &db,
    }) {
        Ok(v) => Ok(Ok(v)),
        Err(machine::tpm::PredictError::Tpm(e)) => Ok(Err(e.to_string())),
        Err(e) => Err(format!("predicting the next boot's PCR 7: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifest::UnknownSerial;

    fn with_keys(policy: NotInSetupMode) -> Manifest {
        let f = |n: &str| PayloadRef {
            source: format!("autoinstall/secure-boot/{n}.auth"),
            sha256: "0".repeat(64),
            size: 1,
        };
        let mut m = crate::testing::manifest(UnknownSerial::Refuse);
        m.secure_boot = Some(SecureBootKeys {
            pk: f("PK"),
            kek: f("KEK"),
            db: f("db"),
            not_in_setup_mode: policy,
        });
        m
    }

    #[test]
    fn setup_mode_decides_and_the_fleet_says_otherwise() {
        let plain = crate::testing::manifest(UnknownSerial::Refuse);
        assert_eq!(plan(&plain, Some(true)), Ok(None));
        assert_eq!(
            plan(&with_keys(NotInSetupMode::Refuse), Some(true)),
            Ok(Some(KeysPlan::Enrol))
        );
        assert!(matches!(
            plan(&with_keys(NotInSetupMode::Skip), Some(false)),
            Ok(Some(KeysPlan::Skip(why))) if why.contains("not in setup mode")
        ));
        let e = plan(&with_keys(NotInSetupMode::Refuse), None).unwrap_err();
        assert!(
            e.contains("no Secure Boot variables") && e.contains("\"refuse\""),
            "{e}"
        );
    }
}
