//! The online installer against a real nginx serving a signed `--format cache` site (HTTP,
//! and HTTPS with a fleet's private CA), onto real loop disks (root only).

mod common;

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use testkit::Nginx;

/// The online installer against a real nginx serving a signed `--format cache` site: without
/// a trusted key, with the wrong key, for a serial the site does not know, and with a
/// narinfo's signature removed it refuses before the disk is touched; a tampered NAR and a
/// server that goes away for good fail the install with no boot entry on the disk; a server
/// stopped mid-copy and started again a moment later costs a retry, and the install
/// completes (the download resumed, the result checked like any install).
/// An nginx `server` block's part that takes reports by PUT and lists them as JSON.
const REPORTS_DAV: &str =
    "location /autoinstall/reports/ { dav_methods PUT; create_full_put_path on; \
     autoindex on; autoindex_format json; }";

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
    // The site takes the installers' reports (WebDAV PUT) and lists them (JSON autoindex).
    let server = Nginx::serve_with(&site, None, REPORTS_DAV);
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
    // Each refusal's report reached the site, and mkinstaller reads them from there.
    let reports = Command::new(mkinstaller())
        .args(["reports", "--all", "--json", &url])
        .output()
        .unwrap();
    assert!(reports.status.success(), "{}", stderr(&reports));
    let reports: serde_json::Value = serde_json::from_slice(&reports.stdout).unwrap();
    let outcomes: Vec<(&str, &str)> = reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["serial"].as_str().unwrap_or("?"),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("DEMO-SN-0001", "refused"),
            ("DEMO-SN-0001", "refused"),
            ("NOT-IN-THE-FLEET-42", "refused")
        ],
        "{reports}"
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

    // A slow server (so the copy can be caught half-way), stopped mid-copy. Its largest NAR
    // crawls after 256 KiB, so that the install can be caught in the middle of it.
    let largest = fs::read_dir(site.join("nar"))
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .file_name();
    let mut slow = Nginx::serve_with(&site, None, &crawl_after_256k(&largest.to_string_lossy()));
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

    // Back 1.5 s later: retried, the cut NAR resumed, installed.
    slow.start();
    let mut child = spawn(&slow.url(), &[]);
    wait_until_mid_nar(&mut child, &store, &disk.part(2), &slow);
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
