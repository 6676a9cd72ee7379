//! When the payload is checked (manifest::Verify): a damaged stick costs a disk that holds
//! data nothing (the whole closure is checked first), while onto a disk that holds nothing
//! the closure is read once, each NAR checked in full as it is written, and a bad one fails
//! the install with no boot entry. The stick's `verify` and `--verify` decide otherwise.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;

/// Flips a byte in the middle of the compressed NAR of `path` in the payload tree `dir`.
fn damage(dir: &Path, path: &str) {
    let narinfo = fs::read_to_string(dir.join(format!("{}.narinfo", hash_part(path)))).unwrap();
    let url = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap();
    let nar = dir.join(url);
    let mut bytes = fs::read(&nar).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    fs::write(&nar, &bytes).unwrap();
}

/// Installs demo-1 from `payload` onto `disk`, unattended, with the report on stdout.
fn install(env: &Env, payload: &Path, disk: &LoopDisk, more: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--payload",
        payload.to_str().unwrap(),
        "--host",
        "demo-1",
        "--disk",
        &disk.dev,
        "--yes",
        "--json",
    ];
    args.extend(more);
    env.install(&args)
}

fn report(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}", stderr(out)))
}

/// A failure after the disk was written: exit 1, streaming, no boot entry.
fn assert_failed_streaming(out: &std::process::Output, disk: &LoopDisk) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "expected a failure:\n{err}");
    assert_eq!(report(out)["verify"], "streaming", "{err}");
    assert!(!has_boot_entry(disk), "a boot entry survived the failure");
}

#[test]
fn a_damaged_stick_costs_a_disk_with_data_nothing_and_a_blank_disk_no_boot_entry() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let hosts = [("demo-1", "DEMO-SN-0001", tops[0].as_str(), "uefi-ext4")];
    let stick = env.stick(&hosts);

    // A good stick onto a blank disk: one pass, installed.
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let out = install(&env, &stick, &disk, &[]);
    assert_ok(&out);
    assert_eq!(report(&out)["verify"], "streaming");
    check_installed(&env, &disk, &tops[0], "ext4");

    let dir = env.path("payload");
    payload_dir(&stick, &dir);
    damage(&dir, &tops[0]);

    // A disk that holds something (here a few bytes in its middle, where the sampling looks,
    // not at the ends): the damage is found before it is touched.
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let old = b"an old system that must survive";
    let at = machine::blank::probes(9 << 30)[20].start + 4096;
    fs::OpenOptions::new()
        .write(true)
        .open(&disk.image)
        .unwrap()
        .write_all_at(old, at)
        .unwrap();
    let out = install(&env, &dir, &disk, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "expected a refusal:\n{err}");
    assert!(err.contains("holds data"), "{err}");
    assert!(
        err.contains(&tops[0]),
        "the damaged path is not named:\n{err}"
    );
    assert_eq!(report(&out)["verify"], "first");
    let mut back = vec![0u8; old.len()];
    fs::File::open(&disk.image)
        .unwrap()
        .read_exact_at(&mut back, at)
        .unwrap();
    assert_eq!(&back, old);
    fs::OpenOptions::new()
        .write(true)
        .open(&disk.image)
        .unwrap()
        .write_all_at(&vec![0; old.len()], at)
        .unwrap();
    assert!(disk.untouched(), "the refusal wrote to the disk");

    // The same damage onto a blank disk: found as it is written; the install fails with no
    // boot entry, which is all a blank disk can lose.
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let out = install(&env, &dir, &disk, &[]);
    assert_failed_streaming(&out, &disk);
    assert!(stderr(&out).contains(&tops[0]), "{}", stderr(&out));

    // --verify first: checked before the blank disk is touched.
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let out = install(&env, &dir, &disk, &["--verify", "first"]);
    assert_refused(&out, "--verify = first", &disk);
}

#[test]
fn the_stick_says_when_to_verify() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let hosts = [("demo-1", "DEMO-SN-0001", tops[0].as_str(), "uefi-ext4")];

    // verify = "first": even a blank disk waits for the whole check.
    let stick = env.medium_from(
        &fleet_toml("confirm-seconds = 0\nverify = \"first\"", &hosts),
        "first.img",
        &[],
    );
    let shown = std::process::Command::new(mkinstaller())
        .args(["inspect", stick.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("verify: first"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let dir = env.path("first");
    payload_dir(&stick, &dir);
    damage(&dir, &tops[0]);
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    assert_refused(&install(&env, &dir, &disk, &[]), "verify = first", &disk);
    // The command line wins over the stick.
    let out = install(&env, &dir, &disk, &["--verify", "auto"]);
    assert_failed_streaming(&out, &disk);

    // verify = "streaming": even a disk that holds data (the failed install above left a
    // partition table) is written as the payload is checked.
    let stick = env.medium_from(
        &fleet_toml("confirm-seconds = 0\nverify = \"streaming\"", &hosts),
        "streaming.img",
        &[],
    );
    let dir = env.path("streaming");
    payload_dir(&stick, &dir);
    damage(&dir, &tops[0]);
    let out = install(&env, &dir, &disk, &[]);
    assert_failed_streaming(&out, &disk);

    // A typo is refused with the file and line, before anything is built.
    let file = env.path("typo.toml");
    fs::write(
        &file,
        fleet_toml("confirm-seconds = 0\nverify = \"streamed\"", &hosts),
    )
    .unwrap();
    let out = std::process::Command::new(mkinstaller())
        .args(["--mass", file.to_str().unwrap(), "-o"])
        .arg(env.path("typo.img"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("typo.toml:7:10") && err.contains("streamed"),
        "{err}"
    );
}
