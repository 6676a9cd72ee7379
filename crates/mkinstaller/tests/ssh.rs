//! `mkinstaller --ssh` on this machine: what is refused before anything is built or sent,
//! and the installer's host key as dropbear itself reads it. (Installing over SSH kexecs the
//! machine it reaches: tests/vm/ssh-install does that to a VM, never to this one.)

mod common;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
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

    let out = env.mkinstaller(&[
        "--online",
        "http://10.0.0.1/site",
        "--ssh",
        "h",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("autoinstall-terminal --url URL --dry-run")
    );

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

/// `--ssh --dry-run` sends the running system the planner and the payload's manifest and
/// narinfos, and nothing secret: no NARs, no extra files. A stand-in `ssh` first in PATH
/// plays the running system (it answers the look, keeps what is sent in a directory, and
/// prints a plan for the planner's run) so that nothing runs on this machine.
#[test]
fn a_dry_run_sends_the_planner_and_the_manifest_but_nothing_secret() {
    let env = Env::new();
    fs::write(
        env.installer.join("autoinstall-terminal"),
        "a stand-in planner",
    )
    .unwrap();
    let (hosts, _) = env.fleet("1");
    common::add_extra_file(&env, &hosts, "PRIVATE-KEY-BYTES\n");

    let bin = env.path("bin");
    let sent = env.path("sent");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(&sent).unwrap();
    let ssh = bin.join("ssh");
    fs::write(
        &ssh,
        format!(
            r#"#!/bin/sh
# The remote command is the last argument.
for a; do cmd=$a; done
case "$cmd" in
  uname*) printf 'x86_64\n0\n0\n4000000\n' ;;
  "cat > "*) cat > "{sent}/${{cmd##*/}}" ;;
  *--dry-run*) echo "$cmd" > "{sent}/planner-command"; echo "host      host-1 (stand-in plan)" ;;
esac
"#,
            sent = sent.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = env.mkinstaller_env(
        &[
            "--mass",
            hosts.to_str().unwrap(),
            "--ssh",
            "root@machine",
            "--dry-run",
        ],
        "PATH",
        &path,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "host      host-1 (stand-in plan)\n"
    );
    assert!(err.contains("planned; nothing on it was changed"), "{err}");
    let command = fs::read_to_string(sent.join("planner-command")).unwrap();
    assert!(command.contains("--dry-run --after-kexec"), "{command}");
    assert_eq!(
        fs::read(sent.join("autoinstall-terminal")).unwrap(),
        b"a stand-in planner"
    );
    // The payload image: the manifest and a narinfo per path, no NAR, no extra file.
    let img = sent.join("payload.img");
    let files = Command::new("mdir")
        .args(["-/", "-b", "-i", img.to_str().unwrap(), "::"])
        .output()
        .unwrap();
    assert!(
        files.status.success(),
        "{}",
        String::from_utf8_lossy(&files.stderr)
    );
    let files = String::from_utf8_lossy(&files.stdout);
    assert!(files.contains("autoinstall/manifest.json"), "{files}");
    assert!(files.lines().any(|l| l.ends_with(".narinfo")), "{files}");
    assert!(
        !files.contains(".nar.zst") && !files.contains("extra-files"),
        "{files}"
    );
    let bytes = fs::read(&img).unwrap();
    assert!(
        !bytes.windows(17).any(|w| w == b"PRIVATE-KEY-BYTES"),
        "an extra file went to the running system"
    );
    // Nothing of the kit is left here either.
    assert!(fs::read_dir(env.path("cache")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("ssh-bundle")));
}
