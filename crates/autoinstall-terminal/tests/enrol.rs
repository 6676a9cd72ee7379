//! Unknown machines under `on-unknown-serial = "enrol"` (root only, loop disks): the machine is
//! recorded on the stick with its inventory and the disk the rules choose, no disk is touched;
//! `mkinstaller reports --pending` turns it into a hosts.toml block, and a stick built with
//! that block (its system filled in) installs the machine.

mod common;

use std::process::Command;

use common::*;

/// Runs the installer for the serial NEW-SN-0100 from `stick` onto `disk`; its JSON report.
fn install_unknown(env: &Env, stick: &std::path::Path, disk: &LoopDisk) -> serde_json::Value {
    let out = env.install(&[
        "--payload",
        stick.to_str().unwrap(),
        "--serial",
        "NEW-SN-0100",
        "--disk",
        &disk.dev,
        "--yes",
        "--json",
    ]);
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_unknown_machine_enrols_and_its_block_installs_it() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let base = fleet_toml(
        "confirm-seconds = 0",
        &[("demo-2", "DEMO-SN-0002", tops[1].as_str(), "uefi-ext4")],
    )
    .replace(
        "on-unknown-serial = \"refuse\"",
        "on-unknown-serial = \"enrol\"",
    );
    let stick = env.medium_from(&base, "stick.img", &[]);
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let report = install_unknown(&env, &stick, &disk);
    assert_eq!(report["outcome"], "enrolled");
    assert_eq!(report["pending"]["disk"], disk.dev.as_str());
    assert!(report["inventory"]["disks"].is_array(), "{report}");
    assert!(
        disk.untouched(),
        "an enrolled machine's disks are not touched"
    );

    // The admin's side: the pending machine as a hosts.toml block.
    let mk = |args: &[&str]| {
        let o = Command::new(mkinstaller()).args(args).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let table = mk(&["reports", stick.to_str().unwrap()]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("NEW-SN-0100") && l.contains("enrolled")),
        "{table}"
    );
    let block = mk(&["reports", "--pending", stick.to_str().unwrap()]);
    assert!(
        block.contains("[[host]]\nname = \"new-sn-0100\"\nserials = [\"NEW-SN-0100\"]\n"),
        "{block}"
    );
    assert!(
        block.contains(&format!("disk = \"{}\"", disk.dev)),
        "{block}"
    );
    // Until the system is filled in, mkinstaller refuses the block, naming its line.
    let file = env.path("hosts.toml");
    std::fs::write(&file, format!("{base}\n{block}")).unwrap();
    let o = Command::new(mkinstaller())
        .args([
            "--mass",
            file.to_str().unwrap(),
            "-o",
            env.path("x.img").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("new-sn-0100"), "{}", stderr(&o));

    // Filled in: the next stick installs it.
    let filled = block.replace("/nix/store/…", &tops[0]);
    let stick2 = env.medium_from(&format!("{base}\n{filled}"), "stick2.img", &[]);
    let report = install_unknown(&env, &stick2, &disk);
    assert_eq!(
        (report["outcome"].as_str(), report["host"].as_str()),
        (Some("installed"), Some("new-sn-0100"))
    );
    check_installed(&env, &disk, &tops[0], "ext4");
}
