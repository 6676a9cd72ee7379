//! Recovery keys and the TPM2 at build time and after: a layout that unlocks with the TPM2
//! needs the fleet's recovery recipients, a recipient that is not a key is refused with its
//! line, and `reports --identity` opens the keys the installers escrowed, with an age
//! identity or an SSH key, and with no other.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use age::secrecy::ExposeSecret;
use common::Env;

/// ESP and a LUKS root that the TPM2 unlocks (PCRs 7 and 11).
const TPM_LAYOUT: &str = r#"{"disk":{"main":{"type":"disk","content":{"type":"gpt","partitions":{
  "ESP":{"type":"EF00","size":"256M","content":{"type":"filesystem","format":"vfat","mountpoint":"/boot"}},
  "luks":{"size":"100%","content":{"type":"luks","name":"cryptroot",
    "settings":{"crypttabExtraOpts":["tpm2-device=auto","tpm2-pcrs=7+11"]},
    "content":{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}}}}"#;

/// The tiny fleet with host-2 on the TPM layout and `defaults` added to `[defaults]`.
fn tpm_fleet(env: &Env, defaults: &str) -> String {
    let (hosts, _) = env.fleet("1");
    let layout = env.path("tpm.disko.json");
    fs::write(&layout, TPM_LAYOUT).unwrap();
    let text = fs::read_to_string(&hosts)
        .unwrap()
        .replacen(
            "name = \"host-2\"\n",
            &format!("name = \"host-2\"\ndisko = \"{}\"\n", layout.display()),
            1,
        )
        .replacen("[defaults]\n", &format!("[defaults]\n{defaults}"), 1);
    fs::write(&hosts, text).unwrap();
    hosts.to_str().unwrap().to_string()
}

fn refused(env: &Env, hosts: &str, says: &str) {
    let img = env.path("r.img");
    let out = env.mkinstaller(&["--mass", hosts, "-o", img.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains(says), "{says:?} not in: {err}");
    assert!(!img.exists(), "a refused build wrote the image");
}

#[test]
fn a_tpm_layout_needs_recovery_recipients_that_are_keys() {
    let env = Env::new();
    let hosts = tpm_fleet(&env, "");
    refused(
        &env,
        &hosts,
        "LUKS device cryptroot unlocks with the TPM2, and",
    );
    refused(&env, &hosts, "needs an escrowed recovery key");

    let hosts = tpm_fleet(&env, "recovery-recipients = [\"age1notakey\"]\n");
    refused(&env, &hosts, "hosts.toml:4:24: recovery-recipients:");
    refused(&env, &hosts, "is not an age X25519 public key");
    let hosts = tpm_fleet(
        &env,
        "recovery-recipients = [\"ecdsa-sha2-nistp256 AAAA\"]\n",
    );
    refused(&env, &hosts, "neither an age public key");
    let hosts = tpm_fleet(&env, "without-tpm = \"recovery-key\"\n");
    refused(&env, &hosts, "needs recovery-recipients");

    let fleet = age::x25519::Identity::generate();
    let hosts = tpm_fleet(
        &env,
        &format!(
            "recovery-recipients = [\"{}\"]\nwithout-tpm = \"passphrase\"\n",
            fleet.to_public()
        ),
    );
    let img = env.path("ok.img");
    env.ok(&["--mass", &hosts, "-o", img.to_str().unwrap(), "-q"]);
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", img.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(common::inspect_host(&shown, "host-2")["tpm2_volumes"], 1);
    assert_eq!(common::inspect_host(&shown, "host-1")["tpm2_volumes"], 0);
    assert!(env
        .ok(&["inspect", img.to_str().unwrap()])
        .lines()
        .any(|l| l.starts_with("host-2") && l.contains("tpm, TPM2")));
}

/// A report as an installer writes it for a machine whose volumes escrowed these keys.
fn report(dir: &Path, serial: &str, started: u64, escrowed: &[(&str, String)]) {
    let recovery: Vec<serde_json::Value> = escrowed
        .iter()
        .map(|(volume, key)| {
            serde_json::json!({"volume": volume, "luks_uuid": format!("uuid-of-{volume}"), "key": key})
        })
        .collect();
    let r = serde_json::json!({
        "format": "nixos-autoinstall-report", "version": 2, "started": started,
        "outcome": "installed", "host": "demo-tpm", "serial": serial,
        "identity": {"raw_serial": serial}, "recovery": recovery,
    });
    fs::write(
        dir.join(format!("{serial}-{started}.json")),
        serde_json::to_vec(&r).unwrap(),
    )
    .unwrap();
}

fn reports(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mkinstaller"))
        .arg("reports")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn reports_identity_opens_the_escrowed_keys() {
    let dir = tempfile::tempdir().unwrap();
    let reports_dir = dir.path().join("reports");
    fs::create_dir(&reports_dir).unwrap();
    let age_id = age::x25519::Identity::generate();
    // An SSH key as an admin has one (ssh-keygen, unprotected).
    let ssh_key = dir.path().join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            ssh_key.to_str().unwrap(),
        ])
        .status()
        .expect("ssh-keygen runs");
    assert!(made.success());
    let ssh_pub = fs::read_to_string(dir.path().join("id_ed25519.pub")).unwrap();
    let recipients = [
        secrets::recovery::recipient(&age_id.to_public().to_string()).unwrap(),
        secrets::recovery::recipient(&ssh_pub).unwrap(),
    ];
    let old = secrets::recovery::format_key(&[1; 32]);
    let new = secrets::recovery::format_key(&[2; 32]);
    let other = secrets::recovery::format_key(&[3; 32]);
    let escrow = |k: &str| secrets::recovery::escrow(k, &recipients).unwrap();
    report(&reports_dir, "SN-1", 100, &[("cryptroot", escrow(&old))]);
    report(&reports_dir, "SN-1", 200, &[("cryptroot", escrow(&new))]);
    report(&reports_dir, "SN-2", 150, &[("data", escrow(&other))]);
    for f in fs::read_dir(&reports_dir).unwrap() {
        let text = fs::read_to_string(f.unwrap().path()).unwrap();
        assert!(![&old, &new, &other]
            .iter()
            .any(|k| text.contains(k.as_str())));
    }

    let age_file = dir.path().join("fleet-recovery.txt");
    fs::write(
        &age_file,
        format!(
            "# the fleet's recovery identity\n{}\n",
            age_id.to_string().expose_secret()
        ),
    )
    .unwrap();
    let src = reports_dir.to_str().unwrap();
    for id in [&age_file, &ssh_key] {
        let out = reports(&[src, "--identity", id.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        // Each machine's newest report: SN-1's new key, not its old one.
        assert!(
            text.contains(&format!(
                "SN-1  demo-tpm  cryptroot  uuid-of-cryptroot  {new}"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("SN-2  demo-tpm  data  uuid-of-data  {other}")),
            "{text}"
        );
        assert!(!text.contains(&old), "{text}");
    }
    let out = reports(&[
        src,
        "--identity",
        age_file.to_str().unwrap(),
        "--all",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["recovery_key"], old.as_str());

    // Someone else's identity opens nothing; a file that is no identity says so.
    let stranger = dir.path().join("stranger.txt");
    fs::write(
        &stranger,
        age::x25519::Identity::generate()
            .to_string()
            .expose_secret(),
    )
    .unwrap();
    let out = reports(&[src, "--identity", stranger.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("none of the identities given"));
    let junk = dir.path().join("junk.txt");
    fs::write(&junk, "hello\n").unwrap();
    let out = reports(&[src, "--identity", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.txt, line 1: not an age identity"));
}
