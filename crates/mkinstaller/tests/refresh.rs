//! `-o` that already holds a stick of ours: it is refreshed in place (only what changed is
//! written), its reports survive, and a refresh cut off at any write leaves a stick that
//! `mkinstaller verify` passes, holding the old fleet or the new one.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use common::*;
use media::slice::Slice;
use testkit::build_fixture;

/// hosts.toml of the tiny fleet with host-1 at `version` and the others at the default.
fn fleet_with_host_1(env: &Env, version: &str) -> (String, Vec<String>) {
    let mut tops: Vec<String> = (1..=3)
        .map(|n| build_fixture("tiny-fleet.nix", Some(&format!("host-{n}")), &[]))
        .collect();
    tops[0] = build_fixture("tiny-fleet.nix", Some("host-1"), &[("version", version)]);
    let file = env.path(&format!("hosts-{version}.toml"));
    fs::write(&file, fleet_toml(&tops)).unwrap();
    (file.to_str().unwrap().to_string(), tops)
}

fn build(env: &Env, hosts: &str, img: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--mass", hosts, "-o", img.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&env.ok(&args)).unwrap()
}

/// The payload partition of `img`, as the installer opens it to write its report.
fn payload_fs(img: &Path) -> fatfs::FileSystem<Slice> {
    let extent = media::image::Image::open(img).unwrap().payload;
    let file = OpenOptions::new().read(true).write(true).open(img).unwrap();
    fatfs::FileSystem::new(
        Slice::new(file, extent.start, extent.len),
        fatfs::FsOptions::new(),
    )
    .unwrap()
}

/// Writes a report as the installer does (with fatfs).
fn write_report(img: &Path, name: &str, bytes: &[u8]) {
    let fs = payload_fs(img);
    {
        let dir = fs.root_dir().open_dir("autoinstall/reports").unwrap();
        let mut f = dir.create_file(name).unwrap();
        f.truncate().unwrap();
        f.write_all(bytes).unwrap();
    }
    fs.unmount().unwrap();
}

fn read_report(img: &Path, name: &str) -> Vec<u8> {
    let fs = payload_fs(img);
    let mut bytes = Vec::new();
    fs.root_dir()
        .open_file(&format!("autoinstall/reports/{name}"))
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// host-1's toplevel as `mkinstaller inspect` reads it from the stick.
fn host_1(env: &Env, img: &Path) -> String {
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", img.to_str().unwrap(), "--json"])).unwrap();
    shown["hosts"][0]["toplevel"].as_str().unwrap().to_string()
}

#[test]
fn a_stick_of_ours_is_refreshed_in_place_and_keeps_its_reports() {
    let env = Env::new();
    let img = env.path("stick.img");
    let (v1, _) = fleet_with_host_1(&env, "1");
    let first = build(&env, &v1, &img, &["--size", "100M"]);
    assert!(first["refreshed"].is_null(), "{first}");
    write_report(&img, "TEST-SN-0009-1.json", b"{\"outcome\":\"installed\"}");

    // host-1 changes: its new paths, its narinfos and the manifest are written, nothing else.
    let (v2, tops) = fleet_with_host_1(&env, "2");
    let second = build(&env, &v2, &img, &[]);
    let r = &second["refreshed"];
    assert!(r.is_object(), "not refreshed: {second}");
    let (new_bytes, written) = (
        r["new_bytes"].as_u64().unwrap(),
        r["bytes_written"].as_u64().unwrap(),
    );
    assert!(
        r["kept_files"].as_u64().unwrap() > r["new_files"].as_u64().unwrap(),
        "{r}"
    );
    // The new files (in whole 4 KiB clusters), the directories written afresh, a few FAT
    // sectors in both FATs, three boot sectors; the ESP is unchanged, so not written at all.
    let clusters = r["new_files"].as_u64().unwrap() * 4096;
    assert!(
        written <= new_bytes + clusters + 16 * 4096 + 16 * 1024,
        "{written} bytes written for {new_bytes} bytes of new files: {r}"
    );
    assert_eq!(fs::metadata(&img).unwrap().len(), 100 << 20);
    check_image(&img, &tops);
    env.ok(&["verify", img.to_str().unwrap()]);
    assert_eq!(host_1(&env, &img), tops[0]);
    assert_eq!(
        read_report(&img, "TEST-SN-0009-1.json"),
        b"{\"outcome\":\"installed\"}"
    );

    // The installer writes its report on the refreshed stick (whose root directory moved).
    write_report(&img, "TEST-SN-0009-2.json", b"{}");
    check_image(&img, &tops);

    // Nothing changed: nothing is written.
    let again = build(&env, &v2, &img, &[]);
    assert_eq!(again["refreshed"]["bytes_written"], 0, "{again}");
    assert_eq!(again["refreshed"]["new_files"], 0, "{again}");

    // --rewrite writes it whole, and the reports are still carried over.
    let whole = build(&env, &v2, &img, &["--rewrite"]);
    assert!(whole["refreshed"].is_null(), "{whole}");
    assert_eq!(read_report(&img, "TEST-SN-0009-2.json"), b"{}");
    check_image(&img, &tops);
}

#[test]
fn a_stick_too_full_for_a_refresh_is_written_whole() {
    let env = Env::new();
    let img = env.path("tight.img");
    let (v1, _) = fleet_with_host_1(&env, "1");
    build(&env, &v1, &img, &[]);
    // A report fills the payload's free room but two clusters: host-1's new paths, the
    // manifest and the directories cannot go beside the old ones.
    let free = {
        let fs = payload_fs(&img);
        let st = fs.stats().unwrap();
        st.free_clusters() as u64 * st.cluster_size() as u64
    };
    let fill = (free - 2 * 4096) as usize;
    // mtools, not fatfs: fatfs in a debug build writes 16 MiB in half a minute.
    let filler = env.path("big.log");
    fs::write(&filler, vec![b'x'; fill]).unwrap();
    let extent = media::image::Image::open(&img).unwrap().payload;
    let at = format!("{}@@{}", img.display(), extent.start);
    testkit::run(
        "mcopy",
        &[
            "-i",
            &at,
            filler.to_str().unwrap(),
            "::autoinstall/reports/big.log",
        ],
    );
    let (v2, tops) = fleet_with_host_1(&env, "2");
    let out = env.mkinstaller(&["--mass", &v2, "-o", img.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("writing the stick whole"), "{err}");
    check_image(&img, &tops);
    assert_eq!(read_report(&img, "big.log").len(), fill);
}

/// How many pwrite64 calls a refresh of `base` to the `v2` fleet makes, counted by strace.
fn pwrites(env: &Env, base: &Path, img: &Path, v2: &str) -> usize {
    fs::copy(base, img).unwrap();
    let log = env.path("strace.log");
    let out = strace(
        env,
        img,
        v2,
        &["-o", log.to_str().unwrap(), "-e", "trace=pwrite64"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("pwrite64("))
        .count()
}

fn strace(env: &Env, img: &Path, hosts: &str, opts: &[&str]) -> std::process::Output {
    Command::new("strace")
        // Only mkinstaller's main thread, which writes the stick: not the Nix commands it
        // runs (their database writes are pwrites too) nor its compression threads.
        .arg("-qq")
        .args(opts)
        .arg(env!("CARGO_BIN_EXE_mkinstaller"))
        .args(["--mass", hosts, "-o", img.to_str().unwrap(), "--quiet"])
        .arg("--installer")
        .arg(&env.installer)
        .arg("--cache-dir")
        .arg(env.path("cache"))
        .output()
        .expect("strace runs (tests/setup installs it)")
}

#[test]
fn a_refresh_killed_at_any_write_leaves_the_old_stick_or_the_new() {
    let env = Env::new();
    let base = env.path("base.img");
    let (v1, tops_1) = fleet_with_host_1(&env, "1");
    build(&env, &v1, &base, &["--size", "100M"]);
    let (v2, tops_2) = fleet_with_host_1(&env, "2");
    // Compress the new fleet's NARs once, so the refreshes below write only to the stick.
    build(&env, &v2, &env.path("warm.img"), &[]);
    let img = env.path("stick.img");
    let total = pwrites(&env, &base, &img, &v2);
    assert!(total >= 6, "a refresh made only {total} writes");
    assert_eq!(host_1(&env, &img), tops_2[0]);

    // Killed on entering its n-th write, for every n (the kill comes before the write).
    let (mut old, mut new) = (0, 0);
    for n in 1..=total {
        fs::copy(&base, &img).unwrap();
        let inject = format!("inject=pwrite64:signal=SIGKILL:when={n}");
        let out = strace(&env, &img, &v2, &["-o", "/dev/null", "-e", &inject]);
        assert!(
            !out.status.success(),
            "write {n} of {total} was not interrupted"
        );
        let verify = env.mkinstaller(&["verify", img.to_str().unwrap()]);
        assert!(
            verify.status.success(),
            "killed at write {n} of {total}, the stick does not verify:\n{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        let top = host_1(&env, &img);
        if top == tops_1[0] {
            old += 1;
        } else {
            assert_eq!(top, tops_2[0], "killed at write {n} of {total}");
            new += 1;
        }
    }
    eprintln!("{total} kill points: {old} left the old stick, {new} the new one");
    assert!(old > 0 && new > 0, "{old} old, {new} new");
}
