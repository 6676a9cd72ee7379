//! A LUKS key sealed by our own TPM code to a PCR 7 value this boot does not have (what the
//! installer does when the fleet's Secure Boot keys change PCR 7 from the next boot on), on
//! a LUKS2 header in a file and a real (software) TPM, with Debian's systemd 252 as the
//! oracle: systemd-cryptsetup, as at boot, does not unseal the key while PCR 7 holds this
//! boot's value, and unseals it once PCR 7 holds the predicted one. Needs cryptsetup,
//! systemd and swtpm (tests/setup installs them).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use machine::tpm::eventlog::extend;
use machine::tpm::Tpm;
use sha2::{Digest, Sha256};

fn connect(tpm: &testkit::Swtpm) -> Tpm<UnixStream> {
    Tpm::new(UnixStream::connect(&tpm.socket).expect("swtpm's socket"))
}

/// Whether systemd-cryptsetup, as at boot with the `systemd-tpm2` token alone, unseals the
/// volume's key on `tpm` (its own debug log says so). The volume is not opened: this host
/// has no device-mapper, so activating fails after the unseal (the VM test, machine
/// `tpm-sb` of tests/vm/install-fleet, opens it at boot).
fn systemd_unseals(img: &Path, tpm: &testkit::Swtpm) -> bool {
    let out = Command::new("/lib/systemd/systemd-cryptsetup")
        .args(["attach", "sealtest", img.to_str().unwrap(), "-"])
        .arg(format!(
            "tpm2-device=swtpm:path={},headless=true",
            tpm.socket.display()
        ))
        .env("SYSTEMD_LOG_LEVEL", "debug")
        .output()
        .expect("systemd-cryptsetup runs (Debian's systemd)");
    flush_all(tpm);
    let said = String::from_utf8_lossy(&out.stderr);
    let unsealed = said.contains("Completed TPM2 key unsealing");
    assert!(
        unsealed || said.contains("Current policy digest does not match stored policy digest"),
        "systemd-cryptsetup failed otherwise: {said}"
    );
    unsealed
}

/// Sends one raw command; its response code.
fn transact(tpm: &testkit::Swtpm, code: u32, tag: u16, body: &[u8]) -> [u8; 4] {
    let mut c = tag.to_be_bytes().to_vec();
    c.extend((10 + body.len() as u32).to_be_bytes());
    c.extend(code.to_be_bytes());
    c.extend(body);
    let mut s = UnixStream::connect(&tpm.socket).unwrap();
    s.write_all(&c).unwrap();
    let mut answer = [0u8; 4096];
    let n = s.read(&mut answer).unwrap();
    assert!(n >= 10, "a TPM answer of {n} bytes");
    answer[6..10].try_into().unwrap()
}

/// What a kernel's resource manager does when a program closes /dev/tpmrm0: its objects and
/// sessions flushed (swtpm's socket has none, and systemd leaves what it loaded when it
/// fails).
fn flush_all(tpm: &testkit::Swtpm) {
    for base in [0x8000_0000u32, 0x0200_0000, 0x0300_0000] {
        for h in base..base + 8 {
            transact(tpm, 0x165, 0x8001, &h.to_be_bytes());
        }
    }
}

/// TPM2_PCR_Extend(7, SHA-256 `digest`), as the firmware extends it: written out here, since
/// the installer never extends a PCR.
fn extend_pcr7(tpm: &testkit::Swtpm, digest: &[u8; 32]) {
    let mut body = 7u32.to_be_bytes().to_vec();
    body.extend(9u32.to_be_bytes()); // one password session, empty
    body.extend(0x4000_0009u32.to_be_bytes());
    body.extend([0, 0, 0, 0, 0]);
    body.extend(1u32.to_be_bytes()); // one digest: SHA-256
    body.extend(0x000Bu16.to_be_bytes());
    body.extend(digest);
    let rc = transact(tpm, 0x182, 0x8002, &body);
    assert_eq!(rc, [0; 4], "PCR_Extend");
}

#[test]
fn a_key_sealed_to_a_predicted_pcr_7_opens_once_pcr_7_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let swtpm = testkit::Swtpm::start(dir.path());
    let (img, key_file) = testkit::luks_volume(dir.path(), b"the install's key");
    let img_s = img.to_str().unwrap();

    // The next boot's PCR 7: this one's extended once more.
    let now = connect(&swtpm).pcr(7).unwrap();
    let event: [u8; 32] = Sha256::digest(b"the next boot's authority").into();
    let mut next = now;
    extend(&mut next, &event);
    machine::luks::enrol_tpm2_to(&mut connect(&swtpm), &img, &key_file, &[(7, next)]).unwrap();

    let dump = Command::new("cryptsetup")
        .args(["luksDump", "--dump-json-metadata", img_s])
        .output()
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    let token = &meta["tokens"]["0"];
    assert_eq!(token["type"], "systemd-tpm2", "{meta}");
    assert_eq!(token["keyslots"], serde_json::json!(["1"]), "{meta}");
    assert_eq!(meta["keyslots"].as_object().unwrap().len(), 2);

    assert!(
        !systemd_unseals(&img, &swtpm),
        "unsealed with this boot's PCR 7"
    );
    extend_pcr7(&swtpm, &event);
    assert_eq!(connect(&swtpm).pcr(7).unwrap(), next);
    assert!(
        systemd_unseals(&img, &swtpm),
        "not unsealed with the predicted PCR 7"
    );
    // One more measurement (another boot chain): sealed again.
    extend_pcr7(&swtpm, &event);
    assert!(
        !systemd_unseals(&img, &swtpm),
        "unsealed with another PCR 7"
    );
}
