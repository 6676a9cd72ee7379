//! The fleet's Secure Boot keys at build time: `[defaults] secure-boot = { keys = DIR }` takes
//! PK.auth, KEK.auth and db.auth as sign-efi-sig-list makes them (the demo fleet's test keys),
//! carries them in the payload under the manifest's hashes, and refuses a directory that
//! lacks one or holds something else, naming the file.

mod common;

use std::fs;

use common::Env;
use testkit::repo_root;

fn fleet_with_keys(env: &Env, dir: &std::path::Path) -> String {
    let (hosts, _) = env.fleet("1");
    let text = fs::read_to_string(&hosts).unwrap().replacen(
        "[defaults]\n",
        &format!(
            "[defaults]\nsecure-boot = {{ keys = \"{}\" }}\n",
            dir.display()
        ),
        1,
    );
    fs::write(&hosts, text).unwrap();
    hosts.to_str().unwrap().to_string()
}

#[test]
fn the_fleets_keys_travel_checked() {
    let env = Env::new();
    let keys = repo_root().join("tests/fixtures/secure-boot");
    let hosts = fleet_with_keys(&env, &keys);
    let img = env.path("sb.img");
    env.ok(&["--mass", &hosts, "-o", img.to_str().unwrap(), "-q"]);
    // The manifest names each with its hash, and the payload holds the same bytes.
    let read = |path: &str| common::partition_file(&img, 1, path);
    let manifest: serde_json::Value =
        serde_json::from_slice(&read("autoinstall/manifest.json")).unwrap();
    for (k, file) in [("pk", "PK"), ("kek", "KEK"), ("db", "db")] {
        let bytes = fs::read(keys.join(format!("{file}.auth"))).unwrap();
        let entry = &manifest["secure_boot"][k];
        assert_eq!(
            entry["source"],
            format!("autoinstall/secure-boot/{file}.auth")
        );
        assert_eq!(entry["size"], bytes.len() as u64);
        assert_eq!(read(entry["source"].as_str().unwrap()), bytes);
    }
    assert_eq!(manifest["secure_boot"]["not_in_setup_mode"], "skip");

    // A directory without db.auth, and one whose db.auth is a certificate: refused.
    let partial = env.path("partial-keys");
    fs::create_dir_all(&partial).unwrap();
    for k in ["PK", "KEK"] {
        fs::copy(
            keys.join(format!("{k}.auth")),
            partial.join(format!("{k}.auth")),
        )
        .unwrap();
    }
    let hosts = fleet_with_keys(&env, &partial);
    let bad = env.path("bad.img");
    let out = env.mkinstaller(&["--mass", &hosts, "-o", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("partial-keys/db.auth") && err.contains("needs PK.auth, KEK.auth and db.auth"),
        "{err}"
    );
    fs::copy(keys.join("db.crt"), partial.join("db.auth")).unwrap();
    let out = env.mkinstaller(&["--mass", &hosts, "-o", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("not an EFI_VARIABLE_AUTHENTICATION_2"),
        "{err}"
    );
    assert!(!bad.exists());
}
