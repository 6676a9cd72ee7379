//! `mkinstaller --ssh` on this machine: what is refused before anything is built or sent,
//! and the installer's host key as dropbear itself reads it. (Installing over SSH kexecs the
//! machine it reaches: tests/vm/ssh-install does that to a VM, never to this one.)

mod common;

use std::fs;
use std::net::TcpListener;
use std::process::Command;

use common::Env;
use mkinstaller::ssh::hostkey::HostKey;

/// A port on which nothing answers (bound, then let go).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_machine_that_does_not_answer_is_refused_before_the_build() {
    let env = Env::new();
    let (hosts, _) = env.fleet("1");
    let out = env.mkinstaller(&[
        "--mass",
        hosts.to_str().unwrap(),
        "--ssh",
        &format!("ssh://root@127.0.0.1:{}", closed_port()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("127.0.0.1") && err.contains("could not look at the running system"),
        "{err}"
    );
    // Nothing was built: no bundle, no compressed NARs.
    let built: Vec<_> = fs::read_dir(env.path("cache"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(built.is_empty(), "built before the look: {built:?}");
}

#[test]
fn bad_targets_identities_and_formats_are_said_plainly() {
    let env = Env::new();
    let (hosts, _) = env.fleet("1");
    let hosts = hosts.to_str().unwrap();
    let out = env.mkinstaller(&["--mass", hosts, "--ssh=-oProxyCommand=x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[USER@]HOST"));

    let out = env.mkinstaller(&["--mass", hosts, "--ssh", "h", "--format", "usb"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ssh boots a kexec bundle"));

    let id = env.path("id");
    fs::write(&id, "not a key").unwrap();
    let out = env.mkinstaller(&[
        "--mass",
        hosts,
        "--ssh",
        "h",
        "--ssh-identity",
        id.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("id.pub") && err.contains("ssh-keygen -y -f"),
        "{err}"
    );
}

#[test]
fn dropbear_reads_the_host_key_as_ssh_is_told_it() {
    // The real dropbearkey (Debian's dropbear-bin, tests/setup installs it): the installer's
    // dropbear serves exactly the key the admin's ssh pins.
    let key = HostKey::generate().unwrap();
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("dropbear_ed25519_host_key");
    fs::write(&file, key.dropbear_file()).unwrap();
    let out = Command::new("dropbearkey")
        .arg("-y")
        .arg("-f")
        .arg(&file)
        .output()
        .expect("dropbearkey (dropbear-bin) is installed by tests/setup");
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    let public = said
        .lines()
        .find(|l| l.starts_with("ssh-ed25519 "))
        .unwrap_or_else(|| panic!("no public key line in {said}"));
    let mut words = public.split_whitespace();
    let (kind, blob) = (words.next().unwrap(), words.next().unwrap());
    assert_eq!(format!("{kind} {blob}"), key.public_line());
}
