//! `mkinstaller reports` on report directories as collected from sticks: one row per
//! machine (its newest report), every report with --all, JSON and CSV for scripts, and an
//! HTML page that a real browser (headless Chromium) renders with the fleet's rows.

use std::fs;
use std::path::Path;
use std::process::Command;

fn mkinstaller(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_mkinstaller"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// A report as an installer writes it (the fields `reports` reads, and some it does not).
fn report(dir: &Path, serial: &str, started: u64, outcome: &str, host: Option<&str>) {
    let error = match outcome {
        "failed" => serde_json::json!({"step": "copy-closure", "message": "the disk <said> no"}),
        "refused" => {
            serde_json::json!({"step": "select-host", "message": "serial belongs to no host"})
        }
        _ => serde_json::Value::Null,
    };
    let r = serde_json::json!({
        "format": "nixos-autoinstall-report",
        "version": 2,
        "started": started,
        "outcome": outcome,
        "error": error,
        "host": host,
        "serial": serial,
        "identity": {"raw_serial": serial, "uuid": "0a1b2c3d-0000-0000-0000-000000000000"},
        "disk": {"path": "/dev/nvme0n1"},
        "seconds": 42.0,
        "steps": [],
        "inventory": {
            "system": {"manufacturer": "Acme", "product": "Box 3000", "serial": serial},
            "cpu": {"model": "Acme CPU", "threads": 8},
            "memory_bytes": 17179869184u64,
            "disks": [{"path": "/dev/nvme0n1", "size": 512110190592u64, "transport": "nvme"}],
            "tpm": {"version": "2.0", "ek_sha256": "ab".repeat(32)},
        },
        "something_newer": {"ignored": true},
    });
    fs::write(
        dir.join(format!("{serial}-{started}.json")),
        serde_json::to_string_pretty(&r).unwrap(),
    )
    .unwrap();
}

fn fleet(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    report(dir, "SN-1", 1_796_000_000, "failed", Some("web-1"));
    report(dir, "SN-1", 1_796_000_600, "installed", Some("web-1"));
    report(dir, "SN-2", 1_796_000_100, "installed", Some("web-2"));
    report(dir, "SN-3", 1_796_000_200, "refused", None);
    // Not a report: skipped by name, not read.
    fs::write(dir.join("SN-1-1796000000.log"), "log lines").unwrap();
}

#[test]
fn one_row_per_machine_and_every_report_with_all() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("reports");
    fleet(&dir);
    let table = mkinstaller(&["reports", dir.to_str().unwrap()]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three machines:\n{table}");
    assert!(lines[0].starts_with("MACHINE"), "{table}");
    let sn1 = lines.iter().find(|l| l.starts_with("SN-1")).unwrap();
    assert!(
        sn1.contains("installed") && sn1.contains("on /dev/nvme0n1 in 42 s"),
        "{sn1}"
    );
    assert!(
        sn1.contains("Acme Box 3000, 8 threads, 16 GiB, 1 disk (477 GiB), TPM 2.0"),
        "{sn1}"
    );
    let sn3 = lines.iter().find(|l| l.starts_with("SN-3")).unwrap();
    assert!(
        sn3.contains("refused") && sn3.contains("select-host: serial belongs to no host"),
        "{sn3}"
    );

    let all = mkinstaller(&["reports", "--all", dir.to_str().unwrap()]);
    assert_eq!(all.lines().count(), 5, "{all}");

    let json: serde_json::Value =
        serde_json::from_str(&mkinstaller(&["reports", "--json", dir.to_str().unwrap()])).unwrap();
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    // The reports as written, fields this version does not know included.
    assert!(arr.iter().all(|r| r["something_newer"]["ignored"] == true));

    let csv = mkinstaller(&["reports", "--csv", dir.to_str().unwrap()]);
    assert!(
        csv.starts_with("machine,host,when,outcome,detail,hardware\n"),
        "{csv}"
    );
    // A field with a comma is quoted.
    assert!(
        csv.contains("\"Acme Box 3000, 8 threads, 16 GiB, 1 disk (477 GiB), TPM 2.0\""),
        "{csv}"
    );
}

#[test]
fn the_html_page_renders_the_fleet_in_a_real_browser() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())
    else {
        panic!("no Chromium: tests/setup installs it");
    };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("reports");
    fleet(&dir);
    report(&dir, "SN-<script>", 1_796_000_300, "installed", Some("x"));
    let page = t.path().join("fleet.html");
    fs::write(
        &page,
        mkinstaller(&["reports", "--html", dir.to_str().unwrap()]),
    )
    .unwrap();
    let out = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!(
            "--user-data-dir={}",
            t.path().join("profile").display()
        ))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && dom.contains("<table"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The browser built one row per machine, with their cells.
    assert_eq!(dom.matches("<tr class=").count(), 4, "{dom}");
    assert!(dom.contains("<td>SN-2</td><td>web-2</td>"), "{dom}");
    assert!(dom.contains("4 machines: 3 installed, 1 refused"), "{dom}");
    // A serial is text, never markup.
    assert!(dom.contains("SN-&lt;script&gt;"), "{dom}");
}
