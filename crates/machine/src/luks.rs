//! Enrolment of a LUKS2 volume after it is made (the syscall side of
//! autoinstall-terminal's `unlock`): another key (the recovery key), the TPM2 through
//! systemd-cryptenroll (its `systemd-tpm2` token is what systemd-cryptsetup reads at boot,
//! on the installed NixOS as anywhere) or, to PCR values predicted for the next boot, by
//! our own TPM code and the same token, and the removal of a key that was only for the
//! install. Keys go to the tools on standard input or in files under /run, never on a
//! command line.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::tpm::{seal, Tpm};

use crate::stack::{path_arg, run_with};

/// Adds `new_key` (its bytes exactly, as a passphrase typed at a prompt) to `device`, opened
/// by `key_file`. The new key is 256 random bits: PBKDF2 at its minimum (as
/// systemd-cryptenroll does for its recovery keys) costs it nothing and spares the
/// installer argon2's memory.
pub fn add_key(device: &Path, key_file: &Path, new_key: &[u8]) -> io::Result<()> {
    add_key_at(device, key_file, new_key, None)
}

/// [`add_key`] into keyslot `slot` if given.
fn add_key_at(device: &Path, key_file: &Path, new_key: &[u8], slot: Option<u32>) -> io::Result<()> {
    let mut args: Vec<String> = [
        "luksAddKey",
        "--batch-mode",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--hash",
        "sha512",
        "--key-file",
        &path_arg(key_file),
        &path_arg(device),
        "-",
    ]
    .map(String::from)
    .to_vec();
    if let Some(slot) = slot {
        args.splice(1..1, ["--key-slot".to_string(), slot.to_string()]);
    }
    run_with(
        &format!("adding a key to LUKS volume {}", device.display()),
        "cryptsetup",
        &args,
        Some(new_key),
    )
    .map(drop)
}

/// Seals a new key of `device` to this machine's TPM2 and `pcrs`' values now, as a keyslot
/// with a `systemd-tpm2` token.
pub fn enrol_tpm2(device: &Path, key_file: &Path, pcrs: &[u8]) -> io::Result<()> {
    let pcrs = pcrs.iter().map(u8::to_string).collect::<Vec<_>>().join("+");
    let args = vec![
        format!("--unlock-key-file={}", path_arg(key_file)),
        "--tpm2-device=auto".to_string(),
        format!("--tpm2-pcrs={pcrs}"),
        path_arg(device),
    ];
    run_with(
        &format!(
            "enrolling LUKS volume {} with the TPM2 (PCR {pcrs})",
            device.display()
        ),
        "systemd-cryptenroll",
        &args,
        None,
    )
    .map(drop)
}

/// Seals a new key of `device` (opened by `key_file`) to `tpm` and the PCR `values` given
/// (index and SHA-256 value: those the next boot will have, not this one's), as a keyslot
/// with the `systemd-tpm2` token systemd-cryptenroll would have written for them.
pub fn enrol_tpm2_to<T: Read + Write>(
    tpm: &mut Tpm<T>,
    device: &Path,
    key_file: &Path,
    values: &[(u8, [u8; 32])],
) -> io::Result<()> {
    let what = format!(
        "sealing a key of LUKS volume {} to the TPM2",
        device.display()
    );
    let mut secret: [u8; 32] = media::ids::random_bytes(&what)?;
    let policy = seal::policy_pcr(values);
    let blob = tpm.seal(&policy, &secret);
    let mut passphrase = seal::passphrase(&secret).into_bytes();
    secret.fill(0);
    let added = blob.and_then(|blob| {
        let slot = free_keyslot(device)?;
        add_key_at(device, key_file, &passphrase, Some(slot))?;
        Ok((slot, blob))
    });
    passphrase.fill(0);
    let (slot, blob) = added.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))?;
    let pcrs: Vec<u8> = values.iter().map(|(i, _)| *i).collect();
    let token = seal::token(slot, &blob, &pcrs, &policy);
    let imported = run_with(
        &format!("adding the TPM2 token to LUKS volume {}", device.display()),
        "cryptsetup",
        &[
            "token".to_string(),
            "import".into(),
            "--json-file".into(),
            "-".into(),
            path_arg(device),
        ],
        Some(token.as_bytes()),
    );
    if let Err(e) = imported {
        // A keyslot without its token opens nothing: take it out again.
        let killed = run_with(
            &format!(
                "removing keyslot {slot} of LUKS volume {}",
                device.display()
            ),
            "cryptsetup",
            &[
                "luksKillSlot".to_string(),
                "--batch-mode".into(),
                "--key-file".into(),
                path_arg(key_file),
                path_arg(device),
                slot.to_string(),
            ],
            None,
        );
        return Err(io::Error::new(
            e.kind(),
            match killed {
                Ok(_) => format!("{e} (its keyslot {slot} removed again)"),
                Err(k) => format!("{e}; and {k}"),
            },
        ));
    }
    Ok(())
}

/// [`enrol_tpm2_to`] this machine's TPM, with `pcrs` as they are now but PCR 7 as
/// `pcr7` (predicted for the next boot).
pub fn enrol_tpm2_predicted(
    device: &Path,
    key_file: &Path,
    pcrs: &[u8],
    pcr7: [u8; 32],
) -> io::Result<()> {
    let mut tpm = Tpm::open()?;
    let values = pcrs
        .iter()
        .map(|&i| Ok((i, if i == 7 { pcr7 } else { tpm.pcr(i)? })))
        .collect::<io::Result<Vec<_>>>()?;
    enrol_tpm2_to(&mut tpm, device, key_file, &values)
}

/// The lowest keyslot of `device` that holds no key (LUKS2 has 32).
fn free_keyslot(device: &Path) -> io::Result<u32> {
    let out = run_with(
        &format!("reading the LUKS2 header of {}", device.display()),
        "cryptsetup",
        &[
            "luksDump".to_string(),
            "--dump-json-metadata".into(),
            path_arg(device),
        ],
        None,
    )?;
    let meta: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| io::Error::other(format!("cryptsetup's JSON metadata: {e}")))?;
    let used = meta["keyslots"].as_object().ok_or_else(|| {
        io::Error::other(format!(
            "the LUKS2 header of {} lists no keyslots",
            device.display()
        ))
    })?;
    (0..32)
        .find(|n| !used.contains_key(&n.to_string()))
        .ok_or_else(|| io::Error::other(format!("{} has no free keyslot", device.display())))
}

/// Removes the keyslot that `key_file` opens.
pub fn remove_key(device: &Path, key_file: &Path) -> io::Result<()> {
    let args = vec![
        "luksRemoveKey".to_string(),
        "--batch-mode".into(),
        path_arg(device),
        path_arg(key_file),
    ];
    run_with(
        &format!(
            "removing the install's key from LUKS volume {}",
            device.display()
        ),
        "cryptsetup",
        &args,
        None,
    )
    .map(drop)
}

/// The UUID of `device`'s LUKS header.
pub fn uuid(device: &Path) -> io::Result<String> {
    let out = run_with(
        &format!("reading the UUID of LUKS volume {}", device.display()),
        "cryptsetup",
        &["luksUUID".to_string(), path_arg(device)],
        None,
    )?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}
