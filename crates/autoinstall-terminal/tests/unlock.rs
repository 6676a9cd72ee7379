//! A LUKS2 volume's enrolment, on a header in a file (no device-mapper needed): the
//! recovery key made by `unlock::enrol` opens the volume (real cryptsetup as the oracle),
//! is escrowed so that the fleet's age identity (and only it) reveals that same key, and the
//! key the volume was formatted with is gone when it was only made for the install. Needs
//! cryptsetup (tests/setup installs it).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use age::secrecy::ExposeSecret;
use autoinstall_terminal::plan::{KeyPlan, KeySource};

fn cryptsetup(args: &[&str], stdin: Option<&[u8]>) -> bool {
    let mut c = Command::new("cryptsetup")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cryptsetup runs (tests/setup installs cryptsetup-bin)");
    let mut pipe = c.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    c.wait().unwrap().success()
}

fn opens_with(volume: &Path, key: &[u8]) -> bool {
    cryptsetup(
        &[
            "open",
            "--test-passphrase",
            "--key-file",
            "-",
            volume.to_str().unwrap(),
        ],
        Some(key),
    )
}

/// A LUKS2 header in a file, formatted with `key`.
fn volume(dir: &Path, key: &[u8]) -> (std::path::PathBuf, std::path::PathBuf) {
    testkit::luks_volume(dir, key)
}

/// `unlock::enrol` of volume `name` (in `img`, opened by `key_file`) as `from` with `tpm2`,
/// a recovery key escrowed to a new fleet identity: what it says, and the key revealed with
/// that identity.
fn enrol(
    name: &str,
    from: KeySource,
    tpm2: Option<Vec<u8>>,
    img: &Path,
    key_file: &Path,
) -> (
    autoinstall_terminal::unlock::Enrolled,
    autoinstall_terminal::unlock::Escrowed,
    String,
) {
    try_enrol(name, from, tpm2, false, img, key_file).unwrap()
}

/// [`enrol`], with `without-tpm = "recovery-key"` or not, and its error.
fn try_enrol(
    name: &str,
    from: KeySource,
    tpm2: Option<Vec<u8>>,
    recovery_if_tpm_refuses: bool,
    img: &Path,
    key_file: &Path,
) -> Result<
    (
        autoinstall_terminal::unlock::Enrolled,
        autoinstall_terminal::unlock::Escrowed,
        String,
    ),
    String,
> {
    let fleet = age::x25519::Identity::generate();
    let plan = KeyPlan {
        name: name.into(),
        from,
        tpm2,
        pcr7_next_boot: None,
        recovery: true,
        recovery_if_tpm_refuses,
    };
    let (enrolled, escrowed) = autoinstall_terminal::unlock::enrol(
        &plan,
        img,
        key_file,
        &[fleet.to_public().to_string()],
    )?;
    let escrowed = escrowed.expect("a recovery key was escrowed");
    let ids = secrets::recovery::identities(fleet.to_string().expose_secret(), "fleet").unwrap();
    let key = secrets::recovery::reveal(&escrowed.key, &ids).unwrap();
    Ok((enrolled, escrowed, key))
}

#[test]
fn recovery_key_opens_the_volume_and_only_the_fleet_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let install_key = b"made only for the install";
    let (img, key_file) = volume(dir.path(), install_key);
    let (enrolled, escrowed, key) = enrol("cryptroot", KeySource::Generated, None, &img, &key_file);
    assert_eq!(enrolled.unlocked_by, "the escrowed recovery key");
    assert_eq!(escrowed.volume, "cryptroot");
    let uuid = String::from_utf8(
        Command::new("cryptsetup")
            .args(["luksUUID", img.to_str().unwrap()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(escrowed.luks_uuid, uuid.trim());

    assert!(
        !escrowed.key.contains(&key),
        "the report holds the key in the clear"
    );
    assert!(
        opens_with(&img, key.as_bytes()),
        "the recovery key does not open the volume"
    );
    assert!(
        !opens_with(&img, install_key),
        "the install's own key still opens the volume"
    );

    let stranger = age::x25519::Identity::generate();
    let ids = secrets::recovery::identities(stranger.to_string().expose_secret(), "other").unwrap();
    assert!(secrets::recovery::reveal(&escrowed.key, &ids).is_err());
}

#[test]
fn a_key_file_volume_keeps_its_key_beside_the_recovery_key() {
    let dir = tempfile::tempdir().unwrap();
    let (img, key_file) = volume(dir.path(), b"the host's own key file");
    let (enrolled, _, key) = enrol("crypted", KeySource::Payload, None, &img, &key_file);
    assert_eq!(
        enrolled.unlocked_by,
        "its key file, the escrowed recovery key"
    );
    assert!(opens_with(&img, key.as_bytes()));
    assert!(opens_with(&img, b"the host's own key file"));
}

/// The TPM2 enrolment as the installer makes it, with systemd-cryptenroll and a real
/// (software) TPM: a `systemd-tpm2` token for PCR 7 on its own keyslot, the recovery key on
/// another, and the key made for the install gone. Opening it with the TPM at boot is the VM
/// test's part (tests/vm/install-fleet, machine tpm): this host has no device-mapper.
#[test]
fn tpm2_enrolment_leaves_a_systemd_token_and_the_recovery_key() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = testkit::Swtpm::start(dir.path());
    let install_key = b"made only for the install, 32 b.";
    let (img, key_file) = volume(dir.path(), install_key);
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // First a TPM that refuses (its socket is not there): the fleet's without-tpm decides.
    // SAFETY: set before any thread of this test reads the environment; no other test
    // here enrols with a TPM.
    unsafe {
        std::env::set_var(
            "SYSTEMD_TPM2_DEVICE",
            format!("swtpm:path={}", dir.path().join("gone.sock").display()),
        )
    };
    for fallback in [false, true] {
        let at = dir.path().join(format!("refused-{fallback}"));
        std::fs::create_dir_all(&at).unwrap();
        let (img, key_file) = volume(&at, install_key);
        let r = try_enrol(
            "cryptroot",
            KeySource::Generated,
            Some(vec![7]),
            fallback,
            &img,
            &key_file,
        );
        if !fallback {
            let e = r.expect_err("a refusing TPM fails the install");
            assert!(
                e.contains("with the TPM2") && e.contains("install stops here"),
                "{e}"
            );
            continue;
        }
        let (enrolled, _, key) = r.unwrap();
        assert!(
            enrolled
                .unlocked_by
                .starts_with("the escrowed recovery key alone: the TPM2 refused"),
            "{}",
            enrolled.unlocked_by
        );
        assert!(!opens_with(&img, install_key), "the install's key is gone");
        assert!(
            opens_with(&img, key.as_bytes()),
            "the recovery key opens it"
        );
    }
    // SAFETY: as above.
    unsafe {
        std::env::set_var(
            "SYSTEMD_TPM2_DEVICE",
            format!("swtpm:path={}", tpm.socket.display()),
        )
    };
    let (enrolled, _, key) = enrol(
        "cryptroot",
        KeySource::Generated,
        Some(vec![7]),
        &img,
        &key_file,
    );
    assert_eq!(
        enrolled.unlocked_by,
        "the TPM2 (PCR 7), the escrowed recovery key"
    );
    let dump = Command::new("cryptsetup")
        .args(["luksDump", "--dump-json-metadata", img.to_str().unwrap()])
        .output()
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    let tokens: Vec<&serde_json::Value> = meta["tokens"].as_object().unwrap().values().collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["type"], "systemd-tpm2");
    assert_eq!(tokens[0]["tpm2-pcrs"], serde_json::json!([7]));
    // Two keyslots: the TPM's and the recovery key's; the install's key is gone.
    assert_eq!(meta["keyslots"].as_object().unwrap().len(), 2, "{meta}");
    assert!(!opens_with(&img, install_key));
    assert!(opens_with(&img, key.as_bytes()));
}
