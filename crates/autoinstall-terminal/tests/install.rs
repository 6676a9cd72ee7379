//! autoinstall-terminal as an operator runs it, onto real loop disks (root only): a stick built
//! by mkinstaller from hosts shaped like the demo fleet (with a stand-in kernel, so no Debian
//! download), installed and checked with sfdisk, blkid, fsck, mtools and the real Nix; each
//! refusal leaves the disk untouched; an install killed mid-copy reruns to success.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use nixstore::hash::Sha256Hash;
use testkit::{nix_ok, requisites, run};

#[test]
fn installs_hosts_by_serial_onto_blank_disks() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[
        ("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4"),
        (
            "demo-btrfs",
            "DEMO-SN-0006",
            &tops[2],
            "demo-btrfs.disko.json",
        ),
    ]);
    let s = stick.to_str().unwrap();

    // --dry-run prints the plan as JSON and touches nothing.
    let disk = LoopDisk::new(env.path("disk1.img"), "9G");
    let plan = env.plan(&stick, ["--serial", "DEMO-SN-0001"], &disk);
    assert_eq!(plan["host"], "demo-1");
    assert_eq!(plan["disks"][0]["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(plan["layout"], "uefi-ext4");
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

    // The second host, with its disko layout: btrfs subvolumes.
    let disk2 = LoopDisk::new(env.path("disk2.img"), "9G");
    let out = env.install(&[
        "--payload",
        s,
        "--serial",
        "DEMO-SN-0006",
        "--disk",
        &disk2.dev,
        "--yes",
    ]);
    assert_ok(&out);
    if Path::new("/usr/bin/btrfs").exists()
        || Path::new("/usr/sbin/btrfs").exists()
        || Path::new("/bin/btrfs").exists()
    {
        check_installed(&env, &disk2, &tops[2], "btrfs");
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
        .any(|r| r["host"] == "demo-btrfs" && r["disk"]["path"] == disk2.dev.as_str()));
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
    let img = media::image::Image::open(&signed).unwrap();
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

    // A payload whose NAR was altered: refused (checked first), naming the store path.
    let dir = env.path("payload");
    fs::create_dir_all(&dir).unwrap();
    let img = media::image::Image::open(&stick).unwrap();
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
            // A blank disk would be written as the payload is checked (verify_modes.rs).
            "--verify",
            "first",
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
            "--verify",
            "first",
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
    testkit::NarBuilder::new()
        .dir_start()
        .entry_file(b"..", b"x")
        .end()
        .bytes()
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
    // A closure, not a bootable system: the host says so.
    let toml = fleet_toml(
        "confirm-seconds = 0",
        &[("big", "BIG-SN-1", &top, "uefi-ext4")],
    )
    .replace("profile = ", "bootable = false\nprofile = ");
    let stick = env.medium_from(&toml, "stick.img", &[]);
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

/// A host built for another platform (the stick says `aarch64-linux`; this machine is
/// x86-64) is refused once chosen, whether by its serial or by name, and nothing is written.
#[test]
fn a_host_of_another_platform_is_refused() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")]);
    let v: serde_json::Value = serde_json::from_slice(
        &std::process::Command::new(mkinstaller())
            .args(["inspect", stick.to_str().unwrap(), "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        v["hosts"][0]["system"], "x86_64-linux",
        "read from the toplevel"
    );
    let dir = env.path("payload");
    payload_dir(&stick, &dir);
    let at = dir.join("autoinstall/manifest.json");
    let text = fs::read_to_string(&at).unwrap();
    assert!(text.contains("\"system\": \"x86_64-linux\""), "{text}");
    fs::write(
        &at,
        text.replace(
            "\"system\": \"x86_64-linux\"",
            "\"system\": \"aarch64-linux\"",
        ),
    )
    .unwrap();
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    for select in [["--serial", "DEMO-SN-0001"], ["--host", "demo-1"]] {
        let mut args = vec!["--payload", dir.to_str().unwrap()];
        args.extend(select);
        args.extend(["--disk", &disk.dev, "--yes"]);
        assert_refused(
            &env.install(&args),
            "host demo-1 is built for aarch64-linux, and this machine is x86_64-linux",
            &disk,
        );
    }
}

/// `--after-kexec`, which `mkinstaller --ssh --dry-run` runs on the running system: a disk
/// that system mounts is refused by a plain plan, and planned for the installer that kexec
/// will start there, which finds it free.
#[test]
fn a_disk_the_running_system_mounts_is_planned_for_after_kexec() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")]);
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    run("mkfs.ext4", &["-q", "-F", &disk.dev]);
    let old = env.path("old");
    fs::create_dir_all(&old).unwrap();
    run("mount", &[&disk.dev, old.to_str().unwrap()]);
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "--payload",
            stick.to_str().unwrap(),
            "--host",
            "demo-1",
            "--disk",
            &disk.dev,
            "--dry-run",
            "--json",
            // With a boot loader, --after-kexec also checks this machine's boot mode, which
            // says nothing here (tests/vm/ssh-install runs it on a UEFI machine).
            "--no-bootloader",
        ];
        args.extend(extra);
        env.install(&args)
    };
    let refused = plan(&[]);
    let after_kexec = plan(&["--after-kexec"]);
    run("umount", &[old.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("mounted at"),
        "{}",
        stderr(&refused)
    );
    assert_ok(&after_kexec);
    let p: serde_json::Value = serde_json::from_slice(&after_kexec.stdout).unwrap();
    assert_eq!(p["disks"][0]["path"].as_str(), Some(disk.dev.as_str()));
}
