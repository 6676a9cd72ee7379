//! Enrolment of a LUKS2 volume after it is made (the syscall side of
//! autoinstall-terminal's `unlock`): another key (the recovery key), the TPM2 through
//! systemd-cryptenroll (its `systemd-tpm2` token is what systemd-cryptsetup reads at boot,
//! on the installed NixOS as anywhere), and the removal of a key that was only for the
//! install. Keys go to the tools on standard input or in files under /run, never on a
//! command line.

use std::io;
use std::path::Path;

use crate::stack::{path_arg, run_with};

/// Adds `new_key` (its bytes exactly, as a passphrase typed at a prompt) to `device`, opened
/// by `key_file`. The new key is 256 random bits: PBKDF2 at its minimum (as
/// systemd-cryptenroll does for its recovery keys) costs it nothing and spares the
/// installer argon2's memory.
pub fn add_key(device: &Path, key_file: &Path, new_key: &[u8]) -> io::Result<()> {
    let args: Vec<String> = [
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
