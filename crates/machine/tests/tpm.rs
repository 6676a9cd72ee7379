//! The TPM code against a real TPM 2.0 implementation (swtpm, on its socket): the identity an
//! enrolment records is the same on every call, a credential made for it in software
//! (`secrets::tpm`) comes back from that TPM's ActivateCredential, and from no other TPM, and
//! an altered one is refused.

use std::os::unix::net::UnixStream;

use machine::tpm::Tpm;
use secrets::tpm::{make_credential, Target};

fn connect(tpm: &testkit::Swtpm) -> Tpm<UnixStream> {
    Tpm::new(UnixStream::connect(&tpm.socket).expect("swtpm's socket"))
}

#[test]
fn a_credential_sealed_to_a_tpm_opens_on_that_tpm_only() {
    let dir = tempfile::tempdir().unwrap();
    let (one, other) = (dir.path().join("one"), dir.path().join("other"));
    let swtpm = testkit::Swtpm::start(&one);
    let id = connect(&swtpm).identity().unwrap();
    assert_eq!(id.ek_modulus.len(), 256);
    assert_eq!(id.activation_name.len(), 34);
    // Derived again, not stored: the same keys on every call.
    assert_eq!(connect(&swtpm).identity().unwrap(), id);

    let target = Target::new(id.ek_modulus.clone(), id.activation_name.clone()).unwrap();
    assert_eq!(target.ek_sha256(), id.ek_sha256());
    let key = *b"the key that opens host secrets!";
    let c = make_credential(&target, &key).unwrap();
    let ek = id.ek_sha256();
    assert_eq!(
        connect(&swtpm).activate(&ek, &c.blob, &c.secret).unwrap(),
        key
    );
    // Twice on one connection, without a resource manager: what was loaded is flushed
    // between.
    let mut tpm = connect(&swtpm);
    assert_eq!(tpm.identity().unwrap(), id);
    assert_eq!(tpm.activate(&ek, &c.blob, &c.secret).unwrap(), key);
    assert_eq!(tpm.activate(&ek, &c.blob, &c.secret).unwrap(), key);
    drop(tpm);

    // One bit changed in either part: refused, never another key.
    let mut blob = c.blob.clone();
    blob[40] ^= 1;
    let e = connect(&swtpm).activate(&ek, &blob, &c.secret).unwrap_err();
    assert!(e.to_string().contains("activating the credential"), "{e}");
    let mut secret = c.secret.clone();
    secret[100] ^= 1;
    assert!(connect(&swtpm).activate(&ek, &c.blob, &secret).is_err());

    // Another machine's TPM.
    drop(swtpm);
    let swtpm = testkit::Swtpm::start(&other);
    let theirs = connect(&swtpm).identity().unwrap();
    assert_ne!(theirs, id);
    let e = connect(&swtpm)
        .activate(&ek, &c.blob, &c.secret)
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "sealed to another machine's TPM (endorsement key sha256:{ek}), and this one's is sha256:{}",
            theirs.ek_sha256()
        )),
        "{e}"
    );
    // Even told its own EK, that TPM cannot open a credential made for the first.
    let e = connect(&swtpm)
        .activate(&theirs.ek_sha256(), &c.blob, &c.secret)
        .unwrap_err();
    assert!(e.to_string().contains("activating the credential"), "{e}");
}
