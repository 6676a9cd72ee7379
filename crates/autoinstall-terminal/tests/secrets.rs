//! Sealed secrets (hosts.toml `secrets = "passphrase"`) installed onto loop disks: the
//! right passphrase puts each extra file into the installed root with its bytes and mode (an
//! age identity where sops-nix reads it then decrypts what was encrypted to the host);
//! a wrong one, or no one to type it, refuses with the disk untouched; a host's sealed file
//! moved to another host's place on the stick opens but is refused. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

const PASSPHRASE: &str = "correct horse battery staple";
const SECRET_1: &str = "PRIVATE-KEY-OF-DEMO-1 not to be seen on the stick";
const SECRET_2: &str = "PRIVATE-KEY-OF-DEMO-2 not to be seen on the stick";

/// The age identity demo-1's sops-nix reads its secrets with (its `key.txt`).
const SOPS_KEY: &str = "var/lib/sops-nix/key.txt";

/// A stick of demo-1 and demo-2, each with an SSH host key as an extra file, and demo-1
/// with an age identity where sops-nix reads it (`identity`), all sealed.
fn sealed_stick(env: &Env, tops: &[String], identity: &str) -> std::path::PathBuf {
    for (host, secret) in [("demo-1", SECRET_1), ("demo-2", SECRET_2)] {
        let dir = env.path(&format!("extra/{host}/etc/ssh"));
        fs::create_dir_all(&dir).unwrap();
        let key = dir.join("ssh_host_ed25519_key");
        fs::write(&key, secret).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let sops = env.path(&format!("extra/demo-1/{SOPS_KEY}"));
    fs::create_dir_all(sops.parent().unwrap()).unwrap();
    fs::write(&sops, format!("{identity}\n")).unwrap();
    fs::set_permissions(&sops, fs::Permissions::from_mode(0o600)).unwrap();
    let toml = fleet_toml(
        "confirm-seconds = 0\nsecrets = \"passphrase\"",
        &[
            ("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4"),
            ("demo-2", "DEMO-SN-0002", &tops[1], "uefi-ext4"),
        ],
    );
    // Each host's extra files, after its own `profile` line.
    let toml = toml
        .replacen(
            "serials = [\"DEMO-SN-0001\"]\n",
            &format!(
                "serials = [\"DEMO-SN-0001\"]\nextra-files = \"{}\"\n",
                env.path("extra/demo-1").display()
            ),
            1,
        )
        .replacen(
            "serials = [\"DEMO-SN-0002\"]\n",
            &format!(
                "serials = [\"DEMO-SN-0002\"]\nextra-files = \"{}\"\n",
                env.path("extra/demo-2").display()
            ),
            1,
        );
    let pass = env.path("fleet.pass");
    fs::write(&pass, format!("{PASSPHRASE}\n")).unwrap();
    env.medium_from(
        &toml,
        "sealed.img",
        &["--secrets-passphrase-file", pass.to_str().unwrap()],
    )
}

/// demo-1 (DEMO-SN-0001) installed from `payload` onto `disk` with `--yes` and, if given,
/// the passphrase in `pass_file`.
fn install_demo_1(
    env: &Env,
    payload: &Path,
    disk: &LoopDisk,
    pass_file: Option<&str>,
) -> std::process::Output {
    let mut args = vec![
        "--payload",
        payload.to_str().unwrap(),
        "--serial",
        "DEMO-SN-0001",
        "--disk",
        &disk.dev,
        "--yes",
    ];
    if let Some(f) = pass_file {
        args.extend(["--secrets-passphrase-file", f]);
    }
    env.install(&args)
}

fn passphrase_file(env: &Env, name: &str, text: &str) -> String {
    let f = env.path(name);
    fs::write(&f, format!("{text}\n")).unwrap();
    f.to_str().unwrap().to_string()
}

#[test]
fn sealed_extra_files_are_installed_with_the_fleet_passphrase_only() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    // The host's age identity, as sops-nix (and clan vars) decrypt its secrets with, and a
    // secret encrypted to it as `sops` would have put it in the host's configuration.
    let identity = age::x25519::Identity::generate();
    let identity_text = {
        use age::secrecy::ExposeSecret;
        identity.to_string().expose_secret().to_string()
    };
    let encrypted =
        age::encrypt(&identity.to_public(), b"db_password: hunter2-for-demo-1").unwrap();
    let stick = sealed_stick(&env, &tops, &identity_text);
    let image = fs::read(&stick).unwrap();
    for secret in [SECRET_1, SECRET_2, identity_text.as_str()] {
        assert!(
            !image.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret is on the stick in the clear"
        );
    }

    // A wrong passphrase: refused before the first write.
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let wrong = passphrase_file(&env, "wrong.pass", "correct horse battery stapler");
    let out = install_demo_1(&env, &stick, &disk, Some(&wrong));
    assert_refused(
        &out,
        "the passphrase does not open the sealed secrets of host demo-1",
        &disk,
    );
    // No one to type it (--yes, and no passphrase file): refused when planned.
    let out = install_demo_1(&env, &stick, &disk, None);
    assert_refused(
        &out,
        "sealed to the fleet's passphrase, and there is no one to type it",
        &disk,
    );

    // The right one: installed, the key in place with its bytes and mode.
    let right = passphrase_file(&env, "right.pass", PASSPHRASE);
    let out = install_demo_1(&env, &stick, &disk, Some(&right));
    assert_ok(&out);
    check_installed(&env, &disk, &tops[0], "ext4");
    let m = Mounted::new(&disk.part(2), env.path("check"));
    let key = m.0.join("etc/ssh/ssh_host_ed25519_key");
    assert_eq!(fs::read_to_string(&key).unwrap(), SECRET_1);
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    // The first boot can decrypt the host's secrets: the identity delivered where sops-nix
    // reads it opens what was encrypted to the host (the age crate as the oracle).
    let delivered = fs::read_to_string(m.0.join(SOPS_KEY)).unwrap();
    let delivered: age::x25519::Identity = delivered.trim().parse().unwrap();
    assert_eq!(
        age::decrypt(&delivered, &encrypted).unwrap(),
        b"db_password: hunter2-for-demo-1"
    );
    assert_eq!(
        fs::metadata(m.0.join(SOPS_KEY))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o600
    );
    drop(m);
    // Nor is a secret in the report written back to the stick.
    let reports = serde_json::to_string(&report_on_stick(&stick)).unwrap();
    assert!(
        reports.contains("demo-1") && !reports.contains("PRIVATE-KEY"),
        "{reports}"
    );
}

#[test]
fn a_hosts_sealed_secrets_moved_to_another_hosts_place_are_refused() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let identity = age::x25519::Identity::generate();
    let identity_text = {
        use age::secrecy::ExposeSecret;
        identity.to_string().expose_secret().to_string()
    };
    let stick = sealed_stick(&env, &tops, &identity_text);
    let dir = env.path("payload");
    payload_dir(&stick, &dir);
    // demo-2's sealed file where demo-1's goes, and the manifest's hash and size made to
    // match (an unsigned stick: whoever holds it can do that much).
    let (one, two) = (
        dir.join("autoinstall/secrets/demo-1.age"),
        dir.join("autoinstall/secrets/demo-2.age"),
    );
    let moved = fs::read(&two).unwrap();
    fs::write(&one, &moved).unwrap();
    let manifest_path = dir.join("autoinstall/manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    let host = manifest["hosts"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|h| h["name"] == "demo-1")
        .unwrap();
    use sha2::Digest;
    host["sealed"]["sha256"] = format!("{:x}", sha2::Sha256::digest(&moved)).into();
    host["sealed"]["size"] = moved.len().into();
    fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let right = passphrase_file(&env, "right.pass", PASSPHRASE);
    let out = install_demo_1(&env, &dir, &disk, Some(&right));
    assert_refused(&out, "host \"demo-2\"'s", &disk);
    assert!(!Path::new(&env.path("root/etc/ssh/ssh_host_ed25519_key")).exists());
}
