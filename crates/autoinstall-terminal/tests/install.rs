//! autoinstall-terminal as an operator runs it, onto real loop disks (root only): a stick built
//! by mkinstaller from hosts shaped like the demo fleet (with a stand-in kernel, so no Debian
//! download), installed and checked with sfdisk, blkid, fsck, mtools and the real Nix; each
//! refusal leaves the disk untouched; an install killed mid-copy reruns to success.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use nixstore::hash::Sha256Hash;
use testkit::{nix_ok, requisites, run, Nginx};

#[test]
fn installs_hosts_by_serial_onto_blank_disks() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[
        ("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4"),
        ("demo-2", "DEMO-SN-0002", &tops[1], "uefi-btrfs"),
    ]);
    let s = stick.to_str().unwrap();

    // --dry-run prints the plan as JSON and touches nothing.
    let disk = LoopDisk::new(env.path("disk1.img"), "9G");
    let out = env.install(&[
        "--payload",
        s,
        "--serial",
        "DEMO-SN-0001",
        "--disk",
        &disk.dev,
        "--dry-run",
        "--json",
    ]);
    assert_ok(&out);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["host"], "demo-1");
    assert_eq!(plan["partitions"].as_array().unwrap().len(), 2);
    assert!(disk.untouched());

    let out = env.install(&[
        "--payload",
        s,
        "--serial",
        "demo-sn-0001",
        "--disk",
        &disk.dev,
        "--yes",
        "--json",
    ]);
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "installed");
    check_installed(&env, &disk, &tops[0], "ext4");

    // The second host, with btrfs subvolumes.
    let disk2 = LoopDisk::new(env.path("disk2.img"), "9G");
    let out = env.install(&[
        "--payload",
        s,
        "--serial",
        "DEMO-SN-0002",
        "--disk",
        &disk2.dev,
        "--yes",
    ]);
    assert_ok(&out);
    if Path::new("/usr/bin/btrfs").exists()
        || Path::new("/usr/sbin/btrfs").exists()
        || Path::new("/bin/btrfs").exists()
    {
        check_installed(&env, &disk2, &tops[1], "btrfs");
    }

    // Reports went back to the stick.
    let reports = report_on_stick(&stick);
    let installed: Vec<_> = reports
        .iter()
        .filter(|r| r["outcome"] == "installed")
        .collect();
    assert_eq!(installed.len(), 2, "{reports:?}");
    assert!(installed
        .iter()
        .any(|r| r["host"] == "demo-1" && r["serial"] == "demo-sn-0001"));
    assert!(installed
        .iter()
        .any(|r| r["host"] == "demo-2" && r["disk"]["path"] == disk2.dev.as_str()));
}

/// The same fleet as a hybrid ISO (as a CD or BMC virtual medium shows it): read without a
/// mount, installed, and the report kept on the installed disk since the ISO is read-only.
#[test]
fn installs_from_an_iso() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let iso = env.medium(
        &[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")],
        "fleet.iso",
    );
    let before = fs::read(&iso).unwrap();
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let out = env.install(&[
        "--payload",
        iso.to_str().unwrap(),
        "--serial",
        "DEMO-SN-0001",
        "--disk",
        &disk.dev,
        "--yes",
    ]);
    assert_ok(&out);
    let said = stderr(&out);
    assert!(
        said.contains("(ISO 9660)")
            && said.contains("/var/log/autoinstall/")
            && said.contains("on the installed disk"),
        "{said}"
    );
    check_installed(&env, &disk, &tops[0], "ext4");
    assert!(fs::read(&iso).unwrap() == before, "the ISO was written to");
}

/// A signing key (written to `secret.key` for mkinstaller) and another key of the same name,
/// which no trust in the first can accept.
/// `mkinstaller --sign-key` and `autoinstall-terminal --trusted-key`: a signed stick installs
/// under its key; an unsigned stick, another key, and a narinfo whose signature does not
/// match are each refused before the disk is touched, naming what failed.
#[test]
fn signatures_are_required_once_a_key_is_trusted() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let (key, other, key_file) = signing_keys(&env, "fleet-test-1");
    let hosts = [("demo-1", "DEMO-SN-0001", tops[0].as_str(), "uefi-ext4")];
    let signed = env.medium_with(
        &hosts,
        "signed.img",
        &["--sign-key", key_file.to_str().unwrap()],
    );
    let unsigned = env.medium(&hosts, "unsigned.img");
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let trusted = key.public().to_text();
    let install = |payload: &Path, key: &str| {
        env.install(&[
            "--payload",
            payload.to_str().unwrap(),
            "--serial",
            "DEMO-SN-0001",
            "--disk",
            &disk.dev,
            "--trusted-key",
            key,
            "--yes",
        ])
    };
    let refused = |out: Output, expect: &str| assert_refused(&out, expect, &disk);
    refused(install(&unsigned, &trusted), "the manifest is not signed");
    refused(
        install(&signed, &other.public().to_text()),
        "not valid for any trusted key",
    );
    // One narinfo's signature made by another key (its manifest still signed): the path is
    // named. (A payload directory, so the narinfo can be edited.)
    let tree = env.path("tree");
    let img = media::read::Image::open(&signed).unwrap();
    fs::create_dir_all(&tree).unwrap();
    run(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            &format!("{}@@{}", signed.display(), img.payload.start),
            "::/*",
            tree.to_str().unwrap(),
        ],
    );
    let victim = hash_part(&tops[0]);
    let narinfo = tree.join(format!("{victim}.narinfo"));
    let text = fs::read_to_string(&narinfo).unwrap();
    let info = nixstore::narinfo::NarInfo::parse(&text).unwrap();
    let forged = text
        .lines()
        .map(|l| {
            if l.starts_with("Sig: ") {
                format!("Sig: {}", other.sign(&info.fingerprint()))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    fs::write(&narinfo, forged).unwrap();
    refused(install(&tree, &trusted), &tops[0]);

    // Signed by the trusted key: installed.
    let out = install(&signed, &trusted);
    assert_ok(&out);
    check_installed(&env, &disk, &tops[0], "ext4");
}

#[test]
fn refusals_touch_nothing() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")]);
    let s = stick.to_str().unwrap();
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let refused = |args: &[&str], expect: &[&str]| {
        let out = env.install(args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "expected a refusal for {args:?}:\n{}",
            stderr(&out)
        );
        let err = stderr(&out);
        for e in expect {
            assert!(err.contains(e), "{args:?}: {e:?} not in:\n{err}");
        }
        assert!(disk.untouched(), "{args:?} wrote to the disk");
    };
    // Unknown serial under `refuse`.
    refused(
        &[
            "--payload",
            s,
            "--serial",
            "NOT-IN-FLEET",
            "--disk",
            &disk.dev,
            "--yes",
        ],
        &["NOT-IN-FLEET", "refuse"],
    );
    // A junk serial is no serial.
    refused(
        &[
            "--payload",
            s,
            "--serial",
            "To Be Filled By O.E.M.",
            "--disk",
            &disk.dev,
            "--yes",
        ],
        &["refuse"],
    );
    // Too small, and by how much.
    let small = LoopDisk::new(env.path("small.img"), "2G");
    let out = env.install(&[
        "--payload",
        s,
        "--host",
        "demo-1",
        "--disk",
        &small.dev,
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("short"), "{}", stderr(&out));
    assert!(small.untouched());
    // No candidate disk: this machine's own disks are busy; --dry-run so nothing could be
    // touched even on a machine with a spare disk.
    let out = env.install(&["--payload", s, "--host", "demo-1", "--dry-run"]);
    if !out.status.success() {
        assert!(
            stderr(&out).contains("no disk to install on") || stderr(&out).contains("equally"),
            "{}",
            stderr(&out)
        );
    }

    // A payload whose NAR was altered: refused, naming the store path.
    let dir = env.path("payload");
    fs::create_dir_all(&dir).unwrap();
    let img = media::read::Image::open(&stick).unwrap();
    let off = img.payload.start.to_string();
    run(
        "mcopy",
        &[
            "-s",
            "-n",
            "-i",
            &format!("{s}@@{off}"),
            "::/*",
            dir.to_str().unwrap(),
        ],
    );
    let top_hash = &Path::new(&tops[0]).file_name().unwrap().to_str().unwrap()[..32];
    let narinfo_path = dir.join(format!("{top_hash}.narinfo"));
    let narinfo = fs::read_to_string(&narinfo_path).unwrap();
    let url = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap()
        .to_string();
    let nar = dir.join(&url);
    let mut bytes = fs::read(&nar).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    fs::write(&nar, &bytes).unwrap();
    let d = dir.to_str().unwrap();
    refused(
        &[
            "--payload",
            d,
            "--host",
            "demo-1",
            "--disk",
            &disk.dev,
            "--yes",
        ],
        &[&tops[0], "tampered"],
    );

    // A NAR that tries to leave the store, with hashes that match: refused before the disk.
    let evil = hostile_nar();
    let compressed = zstd::encode_all(&evil[..], 3).unwrap();
    fs::write(&nar, &compressed).unwrap();
    let fix = |text: &str, key: &str, value: String| -> String {
        text.lines()
            .map(|l| {
                if l.starts_with(&format!("{key}: ")) {
                    format!("{key}: {value}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    };
    let mut t = fix(&narinfo, "FileHash", Sha256Hash::of(&compressed).to_nix32());
    t = fix(&t, "FileSize", compressed.len().to_string());
    t = fix(&t, "NarHash", Sha256Hash::of(&evil).to_nix32());
    t = fix(&t, "NarSize", evil.len().to_string());
    fs::write(&narinfo_path, t).unwrap();
    refused(
        &[
            "--payload",
            d,
            "--host",
            "demo-1",
            "--disk",
            &disk.dev,
            "--yes",
        ],
        &[&tops[0], ".."],
    );

    // Refusals are reported too.
    let reports = report_on_stick(&stick);
    assert!(
        reports
            .iter()
            .any(|r| r["outcome"] == "refused" && r["serial"] == "NOT-IN-FLEET"),
        "{reports:?}"
    );
}

/// A NAR directory with an entry named `..`.
fn hostile_nar() -> Vec<u8> {
    fn s(out: &mut Vec<u8>, t: &[u8]) {
        out.extend_from_slice(&(t.len() as u64).to_le_bytes());
        out.extend_from_slice(t);
        out.resize(out.len() + (8 - t.len() % 8) % 8, 0);
    }
    let mut v = Vec::new();
    for t in [
        &b"nix-archive-1"[..],
        b"(",
        b"type",
        b"directory",
        b"entry",
        b"(",
        b"name",
        b"..",
        b"node",
        b"(",
        b"type",
        b"regular",
        b"contents",
        b"x",
        b")",
        b")",
        b")",
    ] {
        s(&mut v, t);
    }
    v
}

#[test]
fn an_install_killed_mid_copy_reruns_to_success() {
    if !is_root() {
        eprintln!("skipped: needs root for loop devices");
        return;
    }
    let _serial = one_at_a_time();
    let env = Env::new();
    // One big incompressible path, so the copy takes long enough to be interrupted.
    let big = env.path("big-system");
    fs::create_dir_all(&big).unwrap();
    for i in 0..8 {
        fs::write(
            big.join(format!("blob-{i}")),
            testkit::pseudo_random(24 << 20, 100 + i),
        )
        .unwrap();
    }
    let top = nix_ok("nix-store", &["--add", big.to_str().unwrap()])
        .trim()
        .to_string();
    let stick = env.stick(&[("big", "BIG-SN-1", &top, "uefi-ext4")]);
    // Both ways of writing the store: the ext4 file system written directly (the default)
    // and through the kernel (--kernel-copy).
    for mode in [None, Some("--kernel-copy")] {
        let disk = LoopDisk::new(env.path("disk.img"), "9G");
        let mut args = vec![
            "--payload",
            stick.to_str().unwrap(),
            "--host",
            "big",
            "--disk",
            &disk.dev,
            "--yes",
            "--no-bootloader",
            "--jobs",
            "1",
            "--quiet",
        ];
        args.extend(mode);
        let mut child = Command::new(env!("CARGO_BIN_EXE_autoinstall-terminal"))
            .args(&args)
            .args([
                "--root",
                env.path("root").to_str().unwrap(),
                "--finish",
                "none",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until_copying(
            &mut child,
            &env.path("root/nix/store"),
            &disk.part(2),
            16 << 20,
        );
        let killed = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            killed,
            "the install finished before it could be interrupted"
        );

        // The killed run left a half-written file system (or, through the kernel, its mounts
        // and a half-written path); the rerun takes them down.
        let out = env.install(&args);
        assert_ok(&out);
        let out_fs = run("blkid", &["-p", "-o", "export", &disk.part(2)]);
        assert!(out_fs.contains("TYPE=ext4"), "{out_fs}");
        run("e2fsck", &["-fn", &disk.part(2)]);
        let m = Mounted::new(&disk.part(2), env.path("check"));
        nix_ok(
            "nix-store",
            &[
                "--verify",
                "--check-contents",
                "--store",
                m.0.to_str().unwrap(),
            ],
        );
        assert_eq!(requisites(Some(&m.0), &top), vec![top.clone()]);
        assert!(!fs::read_dir(m.0.join("nix/store"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".import-")));
    }
}

/// The online installer against a real nginx serving a signed `--format cache` site: without
/// a trusted key, with the wrong key, for a serial the site does not know, and with a
/// narinfo's signature removed it refuses before the disk is touched; a tampered NAR and a
/// server that goes away for good fail the install with no boot entry on the disk; a server
/// stopped mid-copy and started again a moment later costs a retry, and the install
/// completes (the download resumed, the result checked like any install).
#[test]
fn installs_online_from_a_signed_cache_site_and_fails_closed() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let (key, other, key_file) = signing_keys(&env, "fleet-online-1");
    let site = env.demo_1_site(&tops[0], &key_file);
    let top_hash = hash_part(&tops[0]);
    let unsigned_narinfo = site_variant(&env, &site, "site-unsigned", &|dir| {
        let narinfo = dir.join(format!("{top_hash}.narinfo"));
        let text = fs::read_to_string(&narinfo).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with("Sig: "))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&narinfo, kept).unwrap();
    });
    let tampered_nar = site_variant(&env, &site, "site-tampered", &|dir| {
        // The largest NAR: a byte in its middle flipped.
        let biggest = fs::read_dir(dir.join("nar"))
            .unwrap()
            .flatten()
            .max_by_key(|e| e.metadata().unwrap().len())
            .unwrap()
            .path();
        let mut bytes = fs::read(&biggest).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        fs::write(&biggest, bytes).unwrap();
    });

    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let trusted = key.public().to_text();
    let install = |url: &str, serial: &str, more: &[&str]| {
        let mut args = vec![
            "--url", url, "--serial", serial, "--disk", &disk.dev, "--yes",
        ];
        args.extend_from_slice(more);
        env.install(&args)
    };
    let refused = |out: Output, expect: &str| assert_refused(&out, expect, &disk);
    let server = Nginx::serve(&site);
    let url = server.url();
    refused(
        install(&url, "DEMO-SN-0001", &[]),
        "online installs accept only signed payloads",
    );
    refused(
        install(
            &url,
            "DEMO-SN-0001",
            &["--trusted-key", &other.public().to_text()],
        ),
        "not valid for any trusted key",
    );
    refused(
        install(&url, "NOT-IN-THE-FLEET-42", &["--trusted-key", &trusted]),
        &format!("serial NOT-IN-THE-FLEET-42 is not in the fleet at {url}"),
    );
    let unsigned = Nginx::serve(&unsigned_narinfo);
    refused(
        install(
            &unsigned.url(),
            "DEMO-SN-0001",
            &["--trusted-key", &trusted],
        ),
        &tops[0],
    );

    // A tampered NAR is found as it is unpacked: the install fails, nothing boots.
    let tampered = Nginx::serve(&tampered_nar);
    let out = install(
        &tampered.url(),
        "DEMO-SN-0001",
        &["--trusted-key", &trusted],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("install failed at step copy-closure"), "{err}");
    assert!(!has_boot_entry(&disk));

    // A slow server (so the copy can be caught half-way), stopped mid-copy.
    let mut slow = Nginx::serve_with(&site, None, "limit_rate 1m;");
    let spawn = |url: &str, more: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_autoinstall-terminal"))
            .args([
                "--url",
                url,
                "--serial",
                "DEMO-SN-0001",
                "--disk",
                &disk.dev,
            ])
            .args(["--yes", "--trusted-key", &trusted, "--finish", "none"])
            .args(["--root", env.path("root").to_str().unwrap()])
            .args(more)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let store = env.path("root/nix/store");
    // Gone for good: after its attempts the install fails, nothing boots.
    let mut child = spawn(&slow.url(), &["--retries", "2"]);
    wait_until_copying(&mut child, &store, &disk.part(2), 0);
    slow.stop();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("gave up on nar/") && err.contains("after 2 attempts"),
        "{err}"
    );
    assert!(!has_boot_entry(&disk));

    // Back 1.5 s later: retried, resumed, installed.
    slow.start();
    let mut child = spawn(&slow.url(), &[]);
    wait_until_copying(&mut child, &store, &disk.part(2), 0);
    slow.stop();
    std::thread::sleep(Duration::from_millis(1500));
    slow.start();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("retrying in"), "{err}");
    assert!(
        slow.access_log().contains(" 206 "),
        "no download resumed with a Range request:\n{}",
        slow.access_log()
    );
    check_installed(&env, &disk, &tops[0], "ext4");
}

/// HTTPS with a fleet's private CA: checked against the public roots, the server is refused
/// at once (a certificate does not get better by retrying) with the disk untouched; with
/// `--ca-file` the same site installs.
#[test]
fn installs_online_over_https_with_a_private_ca() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let (key, _, key_file) = signing_keys(&env, "fleet-tls-1");
    let site = env.demo_1_site(&tops[0], &key_file);
    let (ca, cert, cert_key) = private_ca(env.tmp.path());
    let server = Nginx::serve_with(&site, Some((&cert, &cert_key)), "");
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let trusted = key.public().to_text();
    let url = server.url();
    let install = |more: &[&str]| {
        let mut args = vec![
            "--url",
            &url,
            "--serial",
            "DEMO-SN-0001",
            "--disk",
            &disk.dev,
        ];
        args.extend(["--yes", "--trusted-key", &trusted]);
        args.extend_from_slice(more);
        env.install(&args)
    };
    let out = install(&[]);
    assert_refused(&out, "UnknownIssuer", &disk);
    assert!(!stderr(&out).contains("retrying"), "{}", stderr(&out));

    let out = install(&["--ca-file", ca.to_str().unwrap()]);
    assert_ok(&out);
    check_installed(&env, &disk, &tops[0], "ext4");
}
