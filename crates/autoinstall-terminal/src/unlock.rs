//! How each LUKS volume will be unlocked on the installed system, and the enrolment that
//! makes it so: the key it is formatted with (from the payload, the sealed secrets, this
//! console, or made here), the TPM2 when the layout asks for it (systemd-cryptenroll's
//! token, so systemd-cryptsetup opens it at boot), and a recovery key made here and escrowed
//! to the fleet's recipients. A TPM2 layout on a machine without a TPM follows the fleet's
//! `without-tpm`, decided in the plan, before any disk is touched: never a silent downgrade.

use std::path::Path;

use manifest::devices::Tpm2;
use manifest::document::{HostEntry, Manifest};
use manifest::hosts::WithoutTpm;
use serde::Serialize;

use crate::plan::{KeyPlan, KeySource};

/// What the key plans depend on in this machine.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    /// The kernel sees a TPM 2.0.
    pub tpm: bool,
    /// shim started this boot (and extended PCR 7).
    pub shim: bool,
    /// The TPM is there but refused to be read at the plan: planned as a machine without
    /// one.
    pub tpm_refused: bool,
}

impl Machine {
    pub fn probe() -> Machine {
        Machine {
            tpm: machine::tpm::present(),
            shim: machine::efi::booted_through_shim(),
            tpm_refused: false,
        }
    }
}

/// The key plan of LUKS volume `name`. `no_one_to_ask` says why no passphrase can be typed
/// (`--yes`, no terminal), if so; `next_pcr7` is PCR 7 as the next boot will measure it,
/// when the fleet's Secure Boot keys are enrolled at the end of this install.
pub fn key_plan(
    name: String,
    tpm2: Option<&Tpm2>,
    host: &HostEntry,
    m: &Manifest,
    machine: Machine,
    no_one_to_ask: Option<&str>,
    next_pcr7: Option<[u8; 32]>,
) -> Result<KeyPlan, String> {
    let next_pcr7 = next_pcr7.filter(|_| tpm2.is_some_and(|t| t.pcrs.contains(&7)));
    let tpm_present = machine.tpm;
    let recovery = !m.recovery_recipients.is_empty();
    let payload = host.luks_keys.iter().any(|k| k.name == name);
    let sealed = host
        .sealed
        .as_ref()
        .is_some_and(|s| s.luks_keys.contains(&name));
    let given = if payload {
        Some(KeySource::Payload)
    } else if sealed {
        Some(KeySource::Sealed)
    } else {
        None
    };
    let prompt = |why: &str| match no_one_to_ask {
        None => Ok(KeySource::Prompt),
        Some(who) => Err(format!(
            "LUKS device {name} {why}, and there is no one to ask for a passphrase ({who})"
        )),
    };
    let (from, tpm2) = match tpm2 {
        None => match given {
            Some(g) => (g, None),
            None => (
                prompt("has no key in the payload (hosts.toml luks-keys)")?,
                None,
            ),
        },
        Some(_) if !recovery => {
            return Err(format!(
                "LUKS device {name} unlocks with the TPM2, and the stick names no recovery recipients to escrow its recovery key to"
            ))
        }
        // Predicted, PCR 7 does not depend on what this boot measured after the firmware.
        Some(t) if tpm_present && machine.shim && t.pcrs.contains(&7) && next_pcr7.is_none() => {
            return Err(format!(
                "LUKS device {name} is to be sealed to PCR 7, and this installer was started by shim (the stick's Secure Boot chain), which extends PCR 7: sealed now, the volume would not unseal when the installed system boots; write the stick with --boot-loader systemd-boot (Secure Boot off for the install), or seal to other PCRs (tpm2-pcrs=)"
            ))
        }
        Some(t) if tpm_present => (given.unwrap_or(KeySource::Generated), Some(t.pcrs.clone())),
        Some(_) => match m.without_tpm {
            WithoutTpm::Refuse => {
                return Err(format!(
                    "LUKS device {name} unlocks with the TPM2, {}, and the fleet says without-tpm = \"refuse\"",
                    if machine.tpm_refused {
                        "this machine's TPM refused to be read (above)"
                    } else {
                        "this machine has no TPM (no /dev/tpmrm0 or /dev/tpm0: is it enabled in the firmware setup?)"
                    }
                ))
            }
            WithoutTpm::Passphrase => (
                match given {
                    Some(g) => g,
                    None => prompt("is to be unlocked by a passphrase on this machine without a TPM (without-tpm = \"passphrase\")")?,
                },
                None,
            ),
            WithoutTpm::RecoveryKey => (given.unwrap_or(KeySource::Generated), None),
        },
    };
    Ok(KeyPlan {
        recovery_if_tpm_refuses: tpm2.is_some() && m.without_tpm == WithoutTpm::RecoveryKey,
        name,
        from,
        pcr7_next_boot: next_pcr7.filter(|_| tpm2.is_some()),
        tpm2,
        recovery,
    })
}

/// A recovery key as the report keeps it: encrypted to the fleet's recipients.
#[derive(Debug, Clone, Serialize)]
pub struct Escrowed {
    /// The LUKS volume's name (`/dev/mapper/<name>`).
    pub volume: String,
    /// Its LUKS header's UUID (`/dev/disk/by-uuid/`).
    pub luks_uuid: String,
    /// The key, an armored age file for the fleet's recovery recipients.
    pub key: String,
}

/// How a volume was enrolled, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Enrolled {
    pub volume: String,
    pub unlocked_by: String,
}

/// Enrols LUKS volume `k.name` on `device`, opened with `key_file`: the recovery key first
/// (so that a TPM that refuses leaves a volume the admin can still open), then the TPM2,
/// then the key it was formatted with removed if it was only made for that.
pub fn enrol(
    k: &KeyPlan,
    device: &Path,
    key_file: &Path,
    recipients: &[String],
) -> Result<(Enrolled, Option<Escrowed>), String> {
    let on = |e: std::io::Error| format!("enrolling LUKS device {}: {e}", k.name);
    let mut escrowed = None;
    if k.recovery {
        let rs = recipients
            .iter()
            .map(|r| secrets::recovery::recipient(r))
            .collect::<Result<Vec<_>, _>>()?;
        let mut random: [u8; secrets::recovery::RANDOM_BYTES] =
            media::ids::random_bytes("a recovery key").map_err(|e| e.to_string())?;
        let mut key = secrets::recovery::format_key(&random).into_bytes();
        random.fill(0);
        let sealed =
            secrets::recovery::escrow(std::str::from_utf8(&key).expect("modhex is ASCII"), &rs);
        let added = machine::luks::add_key(device, key_file, &key);
        key.fill(0);
        let sealed = sealed?;
        added.map_err(on)?;
        escrowed = Some(Escrowed {
            volume: k.name.clone(),
            luks_uuid: machine::luks::uuid(device).map_err(on)?,
            key: sealed,
        });
    }
    let mut unlocked_by = k.unlocks();
    if let Some(pcrs) = &k.tpm2 {
        // A TPM present at the plan can still refuse now (lockout, a full NV, a firmware
        // fault): the fleet's without-tpm decides, as for a machine without one.
        let enrolled = match k.pcr7_next_boot {
            Some(pcr7) => machine::luks::enrol_tpm2_predicted(device, key_file, pcrs, pcr7),
            None => machine::luks::enrol_tpm2(device, key_file, pcrs),
        };
        match enrolled {
            Ok(()) => {}
            Err(e) if k.recovery_if_tpm_refuses && escrowed.is_some() => {
                unlocked_by = format!(
                    "the escrowed recovery key alone: the TPM2 refused the enrolment ({e}) and the fleet says without-tpm = \"recovery-key\""
                );
            }
            Err(e) => {
                return Err(format!(
                    "enrolling LUKS device {} with the TPM2: {e}; the fleet's without-tpm is not \"recovery-key\", so the install stops here (a passphrase can only be asked before the disk is written)",
                    k.name
                ))
            }
        }
    }
    if k.from == KeySource::Generated {
        machine::luks::remove_key(device, key_file).map_err(on)?;
    }
    Ok((
        Enrolled {
            volume: k.name.clone(),
            unlocked_by,
        },
        escrowed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifest::UnknownSerial;

    const RECIPIENT: &str = "age17w7qc3fptjd5x7a3nev48wlk8st72jpg8z7uh8l0k978h2qhwd4qckxdsq";

    fn plan(without_tpm: WithoutTpm, machine: Machine, someone: bool) -> Result<KeyPlan, String> {
        plan_with(without_tpm, machine, someone, None)
    }

    fn plan_with(
        without_tpm: WithoutTpm,
        machine: Machine,
        someone: bool,
        next_pcr7: Option<[u8; 32]>,
    ) -> Result<KeyPlan, String> {
        let mut m = crate::testing::manifest(UnknownSerial::Refuse);
        m.recovery_recipients = vec![RECIPIENT.into()];
        m.without_tpm = without_tpm;
        let host = m.hosts[0].clone();
        let tpm2 = Tpm2 { pcrs: vec![7] };
        key_plan(
            "cryptroot".into(),
            Some(&tpm2),
            &host,
            &m,
            machine,
            (!someone).then_some("--yes"),
            next_pcr7,
        )
    }

    const TPM: Machine = Machine {
        tpm: true,
        shim: false,
        tpm_refused: false,
    };
    const NO_TPM: Machine = Machine {
        tpm: false,
        shim: false,
        tpm_refused: false,
    };

    #[test]
    fn a_tpm_is_enrolled_with_a_key_made_here() {
        let k = plan(WithoutTpm::Refuse, TPM, false).unwrap();
        assert_eq!(
            (k.from, k.tpm2.as_deref(), k.recovery),
            (KeySource::Generated, Some(&[7u8][..]), true)
        );
        assert_eq!(k.unlocks(), "the TPM2 (PCR 7), the escrowed recovery key");
        // A TPM that then refuses the enrolment: the fleet's without-tpm, again.
        assert!(!k.recovery_if_tpm_refuses);
        assert!(
            plan(WithoutTpm::RecoveryKey, TPM, false)
                .unwrap()
                .recovery_if_tpm_refuses
        );
    }

    #[test]
    fn no_tpm_follows_the_fleet_never_silently() {
        let e = plan(WithoutTpm::Refuse, NO_TPM, true).unwrap_err();
        assert!(
            e.contains("this machine has no TPM") && e.contains("without-tpm = \"refuse\""),
            "{e}"
        );
        // A TPM that refused to be read at the plan is met the same way, and said.
        let refused = Machine {
            tpm_refused: true,
            ..NO_TPM
        };
        let e = plan(WithoutTpm::Refuse, refused, true).unwrap_err();
        assert!(e.contains("this machine's TPM refused to be read"), "{e}");
        let k = plan(WithoutTpm::Passphrase, NO_TPM, true).unwrap();
        assert_eq!((k.from, k.tpm2.is_none()), (KeySource::Prompt, true));
        let e = plan(WithoutTpm::Passphrase, NO_TPM, false).unwrap_err();
        assert!(e.contains("no one to ask for a passphrase (--yes)"), "{e}");
        let k = plan(WithoutTpm::RecoveryKey, NO_TPM, false).unwrap();
        assert_eq!((k.from, k.tpm2.is_none()), (KeySource::Generated, true));
        assert_eq!(k.unlocks(), "the escrowed recovery key");
    }

    #[test]
    fn pcr_7_is_not_sealed_after_shim_extended_it() {
        let shim = Machine {
            tpm: true,
            shim: true,
            tpm_refused: false,
        };
        let e = plan(WithoutTpm::Refuse, shim, true).unwrap_err();
        assert!(e.contains("--boot-loader systemd-boot"), "{e}");
        // Predicted for the next boot (the fleet's keys enrolled at the end), what shim
        // measured in this one does not matter.
        let k = plan_with(WithoutTpm::Refuse, shim, true, Some([7; 32])).unwrap();
        assert_eq!(k.pcr7_next_boot, Some([7; 32]));
    }

    #[test]
    fn a_predicted_pcr_7_is_sealed_to_and_said() {
        let k = plan_with(WithoutTpm::RecoveryKey, TPM, false, Some([7; 32])).unwrap();
        assert_eq!(
            k.unlocks(),
            "the TPM2 (PCR 7 as the next boot under the fleet's Secure Boot keys measures it), the escrowed recovery key"
        );
        // No TPM: the fleet's without-tpm, and nothing to seal to.
        let k = plan_with(WithoutTpm::RecoveryKey, NO_TPM, false, Some([7; 32])).unwrap();
        assert_eq!((k.tpm2, k.pcr7_next_boot), (None, None));
    }
}
