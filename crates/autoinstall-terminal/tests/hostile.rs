//! The installer against hostile inputs, one test per defect class of the hardening issue:
//! a medium that changes between the verify and the copy pass, a server that replays signed
//! files under other names, sends without end or redirects HTTPS to HTTP, a trusted-keys
//! file that cannot be read, a disk someone else holds, and old RAID signatures at the end
//! of a future partition. Each ends as documented (a refusal leaves the disk untouched, a
//! failure leaves no boot entry) within a stated time and memory. Root only (loop disks).

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use testkit::hostile::{Answer, HostileServer};
use testkit::{run, run_measured, Nginx};

/// What a refusal or failure against a hostile input may cost at most.
const MAX_SECONDS: f64 = 90.0;
const MAX_RSS_KIB: u64 = 300 << 10;

/// The largest store path of the payload in `dir`: its narinfo file and NAR file.
fn largest_path(dir: &Path) -> (PathBuf, PathBuf) {
    let mut best: Option<(u64, PathBuf, PathBuf)> = None;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "narinfo") {
            continue;
        }
        let t = fs::read_to_string(&p).unwrap();
        let size: u64 = t
            .lines()
            .find_map(|l| l.strip_prefix("NarSize: "))
            .unwrap()
            .parse()
            .unwrap();
        let url = t.lines().find_map(|l| l.strip_prefix("URL: ")).unwrap();
        if best.as_ref().is_none_or(|(s, _, _)| size > *s) {
            best = Some((size, p.clone(), dir.join(url)));
        }
    }
    let (_, narinfo, nar) = best.unwrap();
    (narinfo, nar)
}

/// The same NAR with one byte of a file's contents changed: as long, as well-formed, and
/// another hash.
fn altered_nar(nar: &[u8]) -> Vec<u8> {
    for at in [nar.len() / 2, nar.len() / 3, nar.len() * 2 / 3] {
        let mut v = nar.to_vec();
        v[at] ^= 0x20;
        if nixstore::nar::check(v.as_slice()).is_ok() {
            return v;
        }
    }
    panic!("no byte of file contents found to change");
}

/// The payload's narinfo for the largest path loses FileHash and FileSize (they are not
/// signed: a hostile medium may leave them out), and the medium swaps the NAR for another of
/// the same size after the verify pass (a BMC's virtual media, a network share, a USB device
/// that answers differently the second time). The copy pass must see it is not the file the
/// verify pass checked: the install fails, with no boot entry. Both ways of writing; and the
/// same swap in a single pass (`--verify streaming`), where the signed NarHash catches it.
#[test]
fn a_nar_swapped_between_verify_and_copy_is_not_installed() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let (key, _, key_file) = signing_keys(&env, "fleet-swap");
    let toml = fleet_toml(
        "confirm-seconds = 3",
        &[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")],
    );
    let stick = env.medium_from(
        &toml,
        "stick.img",
        &["--sign-key", key_file.to_str().unwrap()],
    );
    let dir = env.path("payload");
    payload_dir(&stick, &dir);
    let (narinfo, nar) = largest_path(&dir);
    let text = fs::read_to_string(&narinfo).unwrap();
    let text = edit_narinfo(&edit_narinfo(&text, "FileHash", None), "FileSize", None);
    fs::write(&narinfo, text).unwrap();
    let original = fs::read(&nar).unwrap();
    let decoded = zstd::decode_all(original.as_slice()).unwrap();
    let swapped = zstd::encode_all(altered_nar(&decoded).as_slice(), 3).unwrap();
    let public = key.public().to_text();

    // Checked first (the pins) and as written (the NarHash), both ways of writing.
    for (kernel_copy, verify) in [
        (false, "first"),
        (true, "first"),
        (false, "streaming"),
        (true, "streaming"),
    ] {
        fs::write(&nar, &original).unwrap();
        let disk = LoopDisk::new(env.path("disk.img"), "9G");
        let mut args = vec![
            "--payload",
            dir.to_str().unwrap(),
            "--host",
            "demo-1",
            "--disk",
            &disk.dev,
            "--trusted-key",
            &public,
            "--verify",
            verify,
        ];
        if kernel_copy {
            args.push("--kernel-copy");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_autoinstall-terminal"))
            .args(&args)
            .args([
                "--root",
                env.path("root").to_str().unwrap(),
                "--finish",
                "none",
            ])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // The plan is confirmed after the verify pass: during the countdown, swap the file.
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        loop {
            let mut line = String::new();
            assert!(
                lines.read_line(&mut line).unwrap() > 0,
                "the installer ended before its countdown:\n{said}"
            );
            said += &line;
            if line.contains("installing in") {
                break;
            }
        }
        let staged = env.path("swapped.nar.zst");
        fs::write(&staged, &swapped).unwrap();
        fs::rename(&staged, &nar).unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut lines, &mut rest).unwrap();
        let status = child.wait().unwrap();
        said += &rest;
        assert_eq!(
            status.code(),
            Some(1),
            "kernel_copy={kernel_copy} verify={verify}:\n{said}"
        );
        // First: the compressed file is not the one the verify pass pinned. Streaming: the
        // unpacked NAR is not the one its signed narinfo names.
        let caught = if verify == "first" {
            "has hash"
        } else {
            "the NAR hash is"
        };
        assert!(
            said.contains(caught),
            "kernel_copy={kernel_copy} verify={verify}:\n{said}"
        );
        assert!(!has_boot_entry(&disk), "a boot entry survived the failure");
    }
}

/// A signed site whose files are served under other names: another serial's lookup, the
/// whole fleet's manifest as a lookup, a generation older than the installer was told, or
/// another fleet's files. Each is refused before the disk is touched.
#[test]
fn signed_files_replayed_under_other_names_are_refused() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let (key, _, key_file) = signing_keys(&env, "fleet-replay");
    let toml = fleet_toml(
        "confirm-seconds = 0\nfleet = \"fleet-a\"\ngeneration = 7",
        &[
            ("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4"),
            ("demo-2", "DEMO-SN-0002", &tops[1], "uefi-ext4"),
        ],
    );
    let k = key_file.to_str().unwrap();
    let site = env.medium_from(&toml, "site", &["--format", "cache", "--sign-key", k]);
    let public = key.public().to_text();
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let install = |site: &Path, more: &[&str]| {
        let server = HostileServer::start(site, Box::new(|_| Answer::File));
        let url = server.url();
        let mut args = vec![
            "--url",
            &url,
            "--serial",
            "DEMO-SN-0001",
            "--disk",
            &disk.dev,
            "--trusted-key",
            &public,
            "--yes",
            "--retries",
            "1",
        ];
        args.extend(more);
        env.install(&args)
    };
    let lookup = |site: &Path, serial: &str| site.join(format!("autoinstall/hosts/{serial}.json"));
    let replace = |site: &Path, from: &Path, to: &Path| {
        for sig in ["", ".sig"] {
            let from = PathBuf::from(format!("{}{sig}", from.display()));
            let to = PathBuf::from(format!("{}{sig}", to.display()));
            fs::copy(from, to).unwrap();
        }
        let _ = site;
    };

    // The honest site answers for this serial (the dry run touches nothing).
    let out = install(&site, &["--dry-run"]);
    assert_ok(&out);

    let replayed = site_variant(&env, &site, "replayed", &|s| {
        replace(s, &lookup(s, "DEMO-SN-0002"), &lookup(s, "DEMO-SN-0001"))
    });
    assert_refused(
        &install(&replayed, &[]),
        "answers for serial \"DEMO-SN-0002\"",
        &disk,
    );

    let whole = site_variant(&env, &site, "whole", &|s| {
        replace(
            s,
            &s.join("autoinstall/manifest.json"),
            &lookup(s, "DEMO-SN-0001"),
        )
    });
    assert_refused(&install(&whole, &[]), "whole fleet's manifest", &disk);

    assert_refused(
        &install(&site, &["--min-generation", "8"]),
        "older than generation 8",
        &disk,
    );
    assert_refused(
        &install(&site, &["--fleet", "fleet-b"]),
        "belongs to fleet \"fleet-a\"",
        &disk,
    );
}

/// A server that sends without end, where the file's length is not signed: a NAR with no
/// FileSize in its narinfo, a narinfo, a lookup, an extra file. Each read stops at what the
/// signed facts allow; the install ends within a bounded time and memory: a refusal before
/// the disk is touched, or (past the point of writing) a failure with no boot entry.
#[test]
fn a_server_that_sends_without_end_cannot_hang_the_install_or_fill_its_memory() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let (key, _, key_file) = signing_keys(&env, "fleet-endless");
    let extra = env.path("extra/demo-1/etc/ssh");
    fs::create_dir_all(&extra).unwrap();
    fs::write(extra.join("ssh_host_ed25519_key"), "not a secret: a test\n").unwrap();
    let toml = fleet_toml(
        "confirm-seconds = 0\nsecrets = \"clear\"",
        &[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")],
    ) + &format!("extra-files = \"{}\"\n", env.path("extra/demo-1").display());
    let k = key_file.to_str().unwrap();
    let site = env.medium_from(
        &toml,
        "site",
        &["--format", "cache", "--sign-key", k, "--public-extra-files"],
    );
    // FileHash and FileSize are not signed: a hostile server leaves them out.
    let bare = site_variant(&env, &site, "bare", &|s| {
        for e in fs::read_dir(s).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "narinfo") {
                let t = fs::read_to_string(e.path()).unwrap();
                let t = edit_narinfo(&edit_narinfo(&t, "FileHash", None), "FileSize", None);
                fs::write(e.path(), t).unwrap();
            }
        }
    });
    let public = key.public().to_text();
    // What is sent without end (by path), the exit status, and what the installer says.
    type Case = (&'static str, fn(&str) -> bool, i32, &'static str);
    let cases: [Case; 4] = [
        (
            "a NAR",
            |p| p.ends_with(".nar.zst"),
            1,
            "goes on after the end",
        ),
        ("a narinfo", |p| p.ends_with(".narinfo"), 3, "longer than"),
        (
            "a lookup",
            |p| p.starts_with("autoinstall/hosts/"),
            3,
            "longer than",
        ),
        (
            "an extra file",
            |p| p.starts_with("autoinstall/extra-files/"),
            1,
            "longer than",
        ),
    ];
    for (what, endless, code, says) in cases {
        let disk = LoopDisk::new(env.path("disk.img"), "9G");
        let server = HostileServer::start(
            &bare,
            Box::new(move |p| {
                if endless(p) {
                    Answer::Endless(0)
                } else {
                    Answer::File
                }
            }),
        );
        let m = run_measured(
            Command::new(env!("CARGO_BIN_EXE_autoinstall-terminal"))
                .args(["--url", &server.url(), "--serial", "DEMO-SN-0001"])
                .args(["--disk", &disk.dev, "--trusted-key", &public, "--yes"])
                .args([
                    "--root",
                    env.path("root").to_str().unwrap(),
                    "--finish",
                    "none",
                ]),
        );
        let err = String::from_utf8_lossy(&m.output.stderr);
        assert_eq!(m.output.status.code(), Some(code), "{what}:\n{err}");
        assert!(err.contains(says), "{what}: {says:?} not in:\n{err}");
        assert!(m.seconds < MAX_SECONDS, "{what}: took {:.0} s", m.seconds);
        assert!(
            m.max_rss_kib < MAX_RSS_KIB,
            "{what}: took {} MiB",
            m.max_rss_kib >> 10
        );
        if code == 3 {
            assert!(disk.untouched(), "{what}: a refusal wrote to the disk");
        } else {
            assert!(!has_boot_entry(&disk), "{what}: a boot entry survived");
        }
        eprintln!(
            "endless {what}: exit {code} in {:.1} s, {} MiB",
            m.seconds,
            m.max_rss_kib >> 10
        );
    }
}

/// A site reached over HTTPS that redirects to plain HTTP is refused: whoever sits on the
/// path would answer instead of the site.
#[test]
fn an_https_site_cannot_redirect_to_plain_http() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let (key, _, key_file) = signing_keys(&env, "fleet-redirect");
    let site = env.demo_1_site(&tops[0], &key_file);
    let plain = Nginx::serve(&site);
    let (ca, cert, cert_key) = private_ca(env.tmp.path());
    let lookup = "/autoinstall/hosts/DEMO-SN-0001.json";
    let tls = Nginx::serve_with(
        &site,
        Some((&cert, &cert_key)),
        &format!(
            "location = {lookup} {{ return 301 {}{lookup}; }}",
            plain.url()
        ),
    );
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let public = key.public().to_text();
    let out = env.install(&[
        "--url",
        &tls.url(),
        "--ca-file",
        ca.to_str().unwrap(),
        "--serial",
        "DEMO-SN-0001",
        "--disk",
        &disk.dev,
        "--trusted-key",
        &public,
        "--yes",
    ]);
    assert_refused(&out, "http", &disk);
    assert!(
        !plain.access_log().contains(lookup),
        "the installer followed the redirect to plain HTTP"
    );
}

/// A trusted-keys file that cannot be read as text stops the installer (exit 2) instead of
/// reading as "no keys", which would turn signature checks off.
#[test]
fn an_unreadable_trusted_keys_file_stops_the_installer() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")]);
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let keys = env.path("trusted-keys");
    let key = nixstore::keys::SecretKey::generate("fleet-k").unwrap();
    let mut bytes = format!("{}\n# caf", key.public().to_text()).into_bytes();
    bytes.extend([0xe9, b'\n']);
    fs::write(&keys, bytes).unwrap();
    let out = env.install(&[
        "--payload",
        stick.to_str().unwrap(),
        "--host",
        "demo-1",
        "--disk",
        &disk.dev,
        "--trusted-keys-file",
        keys.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not UTF-8"), "{}", stderr(&out));
    assert!(disk.untouched());
}

/// A stick whose payload has a looping FAT cluster chain (the root directory's chain points
/// back at itself): named with --payload, or found by the installer's own search of every
/// disk, it is refused within seconds, never hangs it.
#[test]
fn a_looping_fat_chain_is_refused_not_followed() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")]);
    let img = media::image::Image::open(&stick).unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&stick)
        .unwrap();
    let at = |off: u64, n: usize| {
        let mut b = vec![0u8; n];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, img.payload.start + off).unwrap();
        b
    };
    let u16_at = |off| u16::from_le_bytes(at(off, 2).try_into().unwrap()) as u64;
    let u32_at = |off| u32::from_le_bytes(at(off, 4).try_into().unwrap()) as u64;
    let (bps, reserved, fats, fat_sectors, root) = (
        u16_at(11),
        u16_at(14),
        at(16, 1)[0] as u64,
        u32_at(36),
        u32_at(44),
    );
    for n in 0..fats {
        let entry = img.payload.start + (reserved + n * fat_sectors) * bps + root * 4;
        std::os::unix::fs::FileExt::write_all_at(&f, &(root as u32).to_le_bytes(), entry).unwrap();
    }
    drop(f);
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let m = run_measured(
        Command::new(env!("CARGO_BIN_EXE_autoinstall-terminal"))
            .args(["--payload", stick.to_str().unwrap(), "--host", "demo-1"])
            .args(["--disk", &disk.dev, "--yes"])
            .args([
                "--root",
                env.path("root").to_str().unwrap(),
                "--finish",
                "none",
            ]),
    );
    let err = String::from_utf8_lossy(&m.output.stderr);
    assert_eq!(m.output.status.code(), Some(3), "{err}");
    assert!(err.contains("loops"), "{err}");
    assert!(m.seconds < 30.0, "took {:.0} s", m.seconds);
    assert!(disk.untouched());

    // Attached as a disk, found by the installer's own search: skipped, not followed.
    let attached = run(
        "losetup",
        &["-f", "-P", "-r", "--show", stick.to_str().unwrap()],
    );
    let attached = attached.trim().to_string();
    let m = run_measured(
        Command::new(env!("CARGO_BIN_EXE_autoinstall-terminal"))
            .args(["--host", "demo-1", "--disk", &disk.dev, "--dry-run"])
            .args([
                "--root",
                env.path("root").to_str().unwrap(),
                "--finish",
                "none",
            ])
            .env_remove("AUTOINSTALL_PAYLOAD_DEVICE"),
    );
    let _ = Command::new("losetup").args(["-d", &attached]).status();
    let err = String::from_utf8_lossy(&m.output.stderr);
    assert_eq!(m.output.status.code(), Some(3), "{err}");
    assert!(m.seconds < 30.0, "took {:.0} s", m.seconds);
    assert!(disk.untouched());
}
