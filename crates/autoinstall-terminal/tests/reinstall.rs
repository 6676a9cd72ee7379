//! A stick left in and booted again (root only, loop disks): the disk that already holds the
//! host from this fleet is recognised by its GPT's install marker and not installed again
//! unless the stick says `reinstall = "always"`; a disk with another host, or from another
//! fleet, is installed as any other. (The firmware's next boot is set through efivarfs,
//! which this host lacks: the report says so; tests/vm/install-fleet boots it.)

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Output;

use common::*;

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(out)))
}

/// The image's modification time: a loop device's writes change it, reads do not.
fn mtime(disk: &LoopDisk) -> (i64, i64) {
    let m = std::fs::metadata(&disk.image).unwrap();
    (m.mtime(), m.mtime_nsec())
}

#[test]
fn a_disk_that_holds_the_host_is_not_installed_again_unasked() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let hosts = [
        ("demo-1", "DEMO-SN-0001", tops[0].as_str(), "uefi-ext4"),
        ("demo-2", "DEMO-SN-0002", tops[1].as_str(), "uefi-ext4"),
    ];
    let ask = env.medium_from(
        &fleet_toml("confirm-seconds = 0\nfleet = \"office\"", &hosts),
        "ask.img",
        &[],
    );
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let install = |stick: &std::path::Path, serial: &str| {
        env.install(&[
            "--payload",
            stick.to_str().unwrap(),
            "--serial",
            serial,
            "--disk",
            &disk.dev,
            "--yes",
            "--json",
        ])
    };
    let first = install(&ask, "DEMO-SN-0001");
    assert_ok(&first);
    let r = report(&first);
    assert_eq!(r["outcome"], "installed");
    // This host has no efivarfs: the report says why there is no next boot.
    assert!(
        r["boot_next"].as_str().unwrap().starts_with("not set: "),
        "{r}"
    );

    // The marker is written once the install completed, both GPT headers intact.
    let verify = testkit::run("sgdisk", &["-v", &disk.dev]);
    assert!(verify.contains("No problems found"), "{verify}");

    // Booted again from the same stick: `ask` with nobody to ask (and no countdown) is no.
    let before = mtime(&disk);
    let again = install(&ask, "DEMO-SN-0001");
    assert_ok(&again);
    let r = report(&again);
    assert_eq!(r["outcome"], "already-installed", "{r}");
    assert_eq!(mtime(&disk), before, "nothing was written");
    // The plan says so too.
    let plan = env.plan(&ask, ["--serial", "DEMO-SN-0001"], &disk);
    assert_eq!(plan["already_installed"], true);

    // Another host on that disk, or the same host from another fleet: installed.
    let other = install(&ask, "DEMO-SN-0002");
    assert_eq!(report(&other)["outcome"], "installed");
    let lab = env.medium_from(
        &fleet_toml("confirm-seconds = 0\nfleet = \"lab\"", &hosts),
        "lab.img",
        &[],
    );
    assert_eq!(
        report(&install(&lab, "DEMO-SN-0002"))["outcome"],
        "installed"
    );

    // `reinstall = "always"`: installed again, unasked.
    let always = env.medium_from(
        &fleet_toml(
            "confirm-seconds = 0\nfleet = \"lab\"\nreinstall = \"always\"",
            &hosts,
        ),
        "always.img",
        &[],
    );
    let r = report(&install(&always, "DEMO-SN-0002"));
    assert_eq!(r["outcome"], "installed", "{r}");
    check_installed(&env, &disk, &tops[1], "ext4");
}
