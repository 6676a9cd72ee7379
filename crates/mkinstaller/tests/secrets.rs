//! How the hosts' secrets travel (hosts.toml `[defaults] secrets`): a fleet with extra files
//! or LUKS keys must say; `passphrase` seals them with age to the fleet's passphrase, so no
//! byte of them is on the stick or the site in the clear, and the sealed file opens (with
//! the age crate) to exactly the secrets, for that host.

mod common;

use std::fs;
use std::path::Path;

use common::Env;
use testkit::repo_root;

const PASSPHRASE: &str = "correct horse battery staple";
const HOST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY----- host-1 only";
const LUKS_KEY: &str = "luks key of host-2, 32 bytes long";

/// The tiny fleet with secrets: host-1 an SSH host key (extra files), host-2 a LUKS key for
/// the demo fleet's LUKS layout; `[defaults] secrets` as given (`None`: unsaid).
fn fleet_with_secrets(env: &Env, secrets: Option<&str>) -> std::path::PathBuf {
    let (hosts, _) = env.fleet("1");
    let ssh = env.path("secrets/host-1/etc/ssh");
    fs::create_dir_all(&ssh).unwrap();
    fs::write(ssh.join("ssh_host_ed25519_key"), HOST_KEY).unwrap();
    fs::write(env.path("secrets/host-2.key"), LUKS_KEY).unwrap();
    let disko = repo_root().join("tests/fixtures/demo-fleet/demo-luks.disko.json");
    let mut text = fs::read_to_string(&hosts)
        .unwrap()
        .replacen(
            "name = \"host-1\"\n",
            "name = \"host-1\"\nextra-files = \"secrets/host-1\"\n",
            1,
        )
        .replacen(
            "name = \"host-2\"\n",
            &format!(
                "name = \"host-2\"\ndisko = \"{}\"\nluks-keys = {{ crypted = \"secrets/host-2.key\" }}\n",
                disko.display()
            ),
            1,
        );
    if let Some(s) = secrets {
        text = text.replacen(
            "[defaults]\n",
            &format!("[defaults]\nsecrets = \"{s}\"\n"),
            1,
        );
    }
    fs::write(&hosts, text).unwrap();
    hosts
}

fn pass_file(env: &Env, text: &str) -> String {
    let f = env.path("fleet.pass");
    fs::write(&f, format!("{text}\n")).unwrap();
    f.to_str().unwrap().to_string()
}

fn refused(env: &Env, args: &[&str], says: &str, output: &Path) {
    let out = env.mkinstaller(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(says), "{says:?} not in: {err}");
    assert!(
        !output.exists(),
        "a refused build wrote {}",
        output.display()
    );
}

/// No byte run of any of `secrets` in the stick image `img` or any file of the site `site`.
fn assert_no_plaintext(img: &Path, site: &Path, secrets: &[&str]) {
    let mut every_byte = fs::read(img).unwrap();
    for f in testkit::list_files(site) {
        every_byte.extend(fs::read(site.join(&f)).unwrap());
    }
    for secret in secrets {
        assert!(
            !every_byte
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "{secret:?} is on the stick or the site in the clear"
        );
    }
}

#[test]
fn a_fleet_with_secrets_must_say_how_they_travel() {
    let env = Env::new();
    let img = env.path("s.img");
    let o = img.to_str().unwrap();
    let hosts = fleet_with_secrets(&env, None);
    let h = hosts.to_str().unwrap();
    refused(&env, &["--mass", h, "-o", o], "has extra files (", &img);
    refused(
        &env,
        &["--mass", h, "-o", o],
        "secrets = \"passphrase\" (sealed with age to the fleet's passphrase",
        &img,
    );

    let hosts = fleet_with_secrets(&env, Some("passphrase"));
    let h = hosts.to_str().unwrap();
    refused(
        &env,
        &["--mass", h, "-o", o],
        "give it with --secrets-passphrase-file FILE",
        &img,
    );
    let short = pass_file(&env, "hunter2");
    refused(
        &env,
        &["--mass", h, "-o", o, "--secrets-passphrase-file", &short],
        "it has 7 characters; use at least 12",
        &img,
    );

    let hosts = fleet_with_secrets(&env, Some("clear"));
    let h = hosts.to_str().unwrap();
    let pass = pass_file(&env, PASSPHRASE);
    refused(
        &env,
        &["--mass", h, "-o", o, "--secrets-passphrase-file", &pass],
        "does not say secrets = \"passphrase\"",
        &img,
    );
    // In the clear, as said: on the stick as files of their own.
    env.ok(&["--mass", h, "-o", o, "-q"]);
    let bytes = fs::read(&img).unwrap();
    assert!(bytes
        .windows(HOST_KEY.len())
        .any(|w| w == HOST_KEY.as_bytes()));
}

#[test]
fn sealed_secrets_leave_no_plaintext_on_a_stick_or_a_site() {
    let env = Env::new();
    let hosts = fleet_with_secrets(&env, Some("passphrase"));
    let h = hosts.to_str().unwrap();
    let pass = pass_file(&env, PASSPHRASE);
    let img = env.path("s.img");
    let site = env.path("site");
    env.ok(&[
        "--mass",
        h,
        "-o",
        img.to_str().unwrap(),
        "-q",
        "--secrets-passphrase-file",
        &pass,
    ]);
    // A site takes sealed secrets without --public-extra-files.
    env.ok(&[
        "--mass",
        h,
        "--format",
        "cache",
        "-o",
        site.to_str().unwrap(),
        "-q",
        "--secrets-passphrase-file",
        &pass,
    ]);
    assert_no_plaintext(&img, &site, &[HOST_KEY, LUKS_KEY, PASSPHRASE]);
    assert!(!site.join("autoinstall/extra-files").exists());
    assert!(!site.join("autoinstall/luks-keys").exists());

    // inspect says which hosts have sealed secrets.
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", img.to_str().unwrap(), "--json"])).unwrap();
    let host = |n: &str| common::inspect_host(&v, n);
    assert_eq!(
        (&host("host-1")["sealed"], &host("host-3")["sealed"]),
        (&true.into(), &false.into())
    );
    assert_eq!(host("host-2")["luks_keys"], 1);
    assert!(env
        .ok(&["inspect", img.to_str().unwrap()])
        .contains("secrets sealed"));

    // Each host's sealed file opens, with the fleet's passphrase, to its own secrets only.
    let sealed = |n: &str| fs::read(site.join(format!("autoinstall/secrets/{n}.age"))).unwrap();
    let one = secrets::open(&sealed("host-1"), PASSPHRASE, "host-1", None).unwrap();
    assert_eq!(one.files.len(), 1);
    assert_eq!(one.files[0].target, "etc/ssh/ssh_host_ed25519_key");
    assert_eq!(one.files[0].data, HOST_KEY.as_bytes());
    assert!(one.luks_keys.is_empty());
    let two = secrets::open(&sealed("host-2"), PASSPHRASE, "host-2", None).unwrap();
    assert_eq!(
        (
            two.luks_keys[0].name.as_str(),
            two.luks_keys[0].data.as_slice()
        ),
        ("crypted", LUKS_KEY.as_bytes())
    );
    assert!(matches!(
        secrets::open(&sealed("host-2"), PASSPHRASE, "host-1", None),
        Err(secrets::OpenError::Refused(_))
    ));
    assert_eq!(
        secrets::open(&sealed("host-1"), "another passphrase", "host-1", None),
        Err(secrets::OpenError::WrongPassphrase)
    );
    assert!(!site.join("autoinstall/secrets/host-3.age").exists());
}

/// Extra files read from the Nix store (a flake's, and always with lib.mkInstaller) are
/// read-only for everyone there: they are installed 0600 (0700 if executable), not 0444.
#[test]
fn extra_files_from_the_store_are_installed_for_root_only() {
    let env = Env::new();
    let (hosts, _) = env.fleet("1");
    let dir = env.path("store-extra/etc/ssh");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("ssh_host_ed25519_key"), HOST_KEY).unwrap();
    fs::write(dir.join("hook"), "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("hook"), fs::Permissions::from_mode(0o755)).unwrap();
    let stored = testkit::nix_ok(
        "nix-store",
        &["--add", env.path("store-extra").to_str().unwrap()],
    );
    let stored = stored.trim();
    let text = fs::read_to_string(&hosts)
        .unwrap()
        .replacen(
            "name = \"host-1\"\n",
            &format!("name = \"host-1\"\nextra-files = \"{stored}\"\n"),
            1,
        )
        .replacen("[defaults]\n", "[defaults]\nsecrets = \"clear\"\n", 1);
    fs::write(&hosts, text).unwrap();
    let site = env.path("site");
    env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "--format",
        "cache",
        "--public-extra-files",
        "-o",
        site.to_str().unwrap(),
        "-q",
    ]);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(site.join("autoinstall/manifest.json")).unwrap()).unwrap();
    let modes: Vec<(String, u64)> = m["hosts"][0]["extra_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["target"].as_str().unwrap().to_string(),
                f["mode"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        modes,
        [
            ("etc/ssh/hook".to_string(), 0o700),
            ("etc/ssh/ssh_host_ed25519_key".to_string(), 0o600)
        ]
    );
}

/// `secrets = "tpm"`: each host's secrets sealed to its own TPM (two swtpm instances stand
/// for two machines; their keys read as the installer's enrolment reads them). No byte of a
/// secret is on the stick or the site; the credential in the manifest comes back only from
/// the host's own TPM, and the key it gives opens that host's secrets; a host without a
/// recorded TPM is refused before anything is written.
#[test]
fn secrets_sealed_to_each_hosts_tpm_open_on_that_machine_only() {
    use machine::tpm::Tpm;
    use std::os::unix::net::UnixStream;
    let env = Env::new();
    let (tpm_1, tpm_2) = (
        testkit::Swtpm::start(&env.path("tpm-1")),
        testkit::Swtpm::start(&env.path("tpm-2")),
    );
    let connect = |t: &testkit::Swtpm| Tpm::new(UnixStream::connect(&t.socket).unwrap());
    let tpm_line = |t: &testkit::Swtpm| {
        let id = connect(t).identity().unwrap();
        format!(
            "tpm = {{ ek = \"{}\", activation = \"{}\" }}\n",
            util::hex::encode(&id.ek_modulus),
            util::hex::encode(&id.activation_name)
        )
    };
    let hosts = fleet_with_secrets(&env, Some("tpm"));
    let h = hosts.to_str().unwrap();
    let img = env.path("t.img");
    let o = img.to_str().unwrap();
    refused(
        &env,
        &["--mass", h, "-o", o],
        "secrets = \"tpm\" seals them to the host's TPM, but the host has no tpm = {",
        &img,
    );
    let text = fs::read_to_string(&hosts).unwrap();
    let bad = text.replacen(
        "name = \"host-1\"\n",
        "name = \"host-1\"\ntpm = { ek = \"00ff\", activation = \"000b\" }\n",
        1,
    );
    fs::write(&hosts, bad).unwrap();
    refused(
        &env,
        &["--mass", h, "-o", o],
        "an RSA 2048 key's modulus",
        &img,
    );
    let text = text
        .replacen(
            "name = \"host-1\"\n",
            &format!("name = \"host-1\"\n{}", tpm_line(&tpm_1)),
            1,
        )
        .replacen(
            "name = \"host-2\"\n",
            &format!("name = \"host-2\"\n{}", tpm_line(&tpm_2)),
            1,
        );
    fs::write(&hosts, text).unwrap();
    env.ok(&["--mass", h, "-o", o, "-q"]);
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", o, "--json"])).unwrap();
    let host = |n: &str| common::inspect_host(&v, n);
    assert_eq!(
        (&host("host-1")["sealed_to_tpm"], &host("host-3")["sealed"]),
        (&true.into(), &false.into())
    );
    assert!(env
        .ok(&["inspect", o])
        .contains("secrets sealed to its TPM"));
    let site = env.path("site");
    env.ok(&[
        "--mass",
        h,
        "--format",
        "cache",
        "-o",
        site.to_str().unwrap(),
        "-q",
    ]);
    assert_no_plaintext(&img, &site, &[HOST_KEY, LUKS_KEY]);

    let manifest = manifest::Manifest::parse(
        &fs::read_to_string(site.join("autoinstall/manifest.json")).unwrap(),
    )
    .unwrap();
    let opened = |host: &str, tpm: &testkit::Swtpm| {
        let sealed = manifest.host(host).unwrap().sealed.clone().unwrap();
        let c = sealed.tpm.expect("sealed to the TPM");
        let decode = |s: &str| util::hex::decode(s).unwrap();
        let key = connect(tpm).activate(&c.ek_sha256, &decode(&c.blob), &decode(&c.secret))?;
        let bytes = fs::read(site.join(&sealed.source)).unwrap();
        Ok::<_, std::io::Error>(
            secrets::open(&bytes, &secrets::tpm::passphrase(&key), host, None).unwrap(),
        )
    };
    let one = opened("host-1", &tpm_1).unwrap();
    assert_eq!(one.files[0].data, HOST_KEY.as_bytes());
    let two = opened("host-2", &tpm_2).unwrap();
    assert_eq!(two.luks_keys[0].data, LUKS_KEY.as_bytes());
    // Swapped: each machine's TPM refuses the other host's credential.
    assert!(opened("host-1", &tpm_2).is_err());
    assert!(opened("host-2", &tpm_1).is_err());
}
