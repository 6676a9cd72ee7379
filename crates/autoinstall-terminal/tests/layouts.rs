//! Layouts from the host's own configuration, on real loop disks (root only): a host whose
//! fstab names its file systems by UUID gets those UUIDs; a disko layout over two disks is
//! laid out on the two disks the operator names; a host whose fstab names what its layout
//! does not make is refused by mkinstaller with nothing written. (LUKS, LVM and md need
//! device-mapper and md, which this kernel lacks: tests/vm/install-fleet installs them.)

mod common;

use std::fs;
use std::process::Command;

use common::*;
use testkit::run;

fn blkid(dev: &str, tag: &str) -> String {
    run("blkid", &["-p", "-o", "value", "-s", tag, dev])
        .trim()
        .to_string()
}

#[test]
fn file_systems_named_by_uuid_are_made_with_that_uuid() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[("demo-uuid", "DEMO-SN-0007", &tops[3], "uefi-ext4")]);
    let s = stick.to_str().unwrap();
    for (i, way) in [None, Some("--kernel-copy")].into_iter().enumerate() {
        let disk = LoopDisk::new(env.path(&format!("disk{i}.img")), "9G");
        let plan = env.plan(&stick, ["--host", "demo-uuid"], &disk);
        let made: Vec<&str> = plan["make"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["uuid"].as_str())
            .collect();
        assert_eq!(made, ["1A2B-3C4D", "5c3a9f1e-7d2b-4e8a-9c61-0b7f3e2a4d11"]);
        let mut args = vec![
            "--payload",
            s,
            "--host",
            "demo-uuid",
            "--disk",
            &disk.dev,
            "--yes",
        ];
        args.extend(way);
        assert_ok(&env.install(&args));
        assert_eq!(
            blkid(&disk.part(2), "UUID"),
            "5c3a9f1e-7d2b-4e8a-9c61-0b7f3e2a4d11",
            "{way:?}"
        );
        assert_eq!(blkid(&disk.part(1), "UUID"), "1A2B-3C4D", "{way:?}");
        run("e2fsck", &["-fn", &disk.part(2)]);
        run("fsck.vfat", &["-n", &disk.part(1)]);
    }
}

#[test]
fn a_disko_layout_over_two_named_disks() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    // demo-1 mounts partitions labelled ESP and nixos: this layout names them so (disko's
    // `label`), and puts /srv on a second disk as a whole-disk-sized partition.
    let layout = env.path("two-disks.json");
    fs::write(
        &layout,
        r#"{"disk":{
  "main":{"type":"disk","device":"/dev/disk/by-id/not-here-1","content":{"type":"gpt","partitions":{
    "ESP":{"label":"ESP","type":"EF00","size":"256M","content":{"type":"filesystem","format":"vfat","mountpoint":"/boot"}},
    "root":{"label":"nixos","type":"8304","size":"100%","content":{"type":"filesystem","format":"ext4","mountpoint":"/","extraArgs":["-L","nixos"]}}}}},
  "srv":{"type":"disk","content":{"type":"gpt","partitions":{
    "data":{"end":"-64M","content":{"type":"filesystem","format":"xfs","mountpoint":"/srv","extraArgs":["-L","srv"]}}}}}}}"#,
    )
    .unwrap();
    let toml = fleet_toml("confirm-seconds = 0", &[])
        + &format!(
            "\n[[host]]\nname = \"demo-1\"\nserials = [\"DEMO-SN-0001\"]\nsystem = \"{}\"\ndisko = \"{}\"\n",
            tops[0],
            layout.display()
        );
    let stick = env.medium_from(&toml, "stick.img", &[]);
    let main = LoopDisk::new(env.path("main.img"), "9G");
    let srv = LoopDisk::new(env.path("srv.img"), "2G");
    let srv_arg = format!("srv={}", srv.dev);
    let install = |last: &str| {
        env.install(&[
            "--payload",
            stick.to_str().unwrap(),
            "--host",
            "demo-1",
            "--disk",
            &srv_arg,
            "--disk",
            &main.dev,
            last,
            "--json",
        ])
    };
    let out = install("--dry-run");
    assert_ok(&out);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let roles: Vec<(&str, &str, &str)> = plan["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap(),
                d["path"].as_str().unwrap(),
                d["why"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        roles,
        [
            (
                "main",
                main.dev.as_str(),
                format!("named: {}", main.dev).as_str()
            ),
            (
                "srv",
                srv.dev.as_str(),
                format!("named: --disk srv={}", srv.dev).as_str()
            )
        ]
    );
    assert!(main.untouched() && srv.untouched());
    let out = install("--yes");
    assert_ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["disks"].as_array().unwrap().len(), 2);
    check_installed(&env, &main, &tops[0], "ext4");
    // The second disk: one partition named as disko names it, ending 64 MiB before the end
    // (the last MiB is the backup GPT), with the XFS /srv.
    let table: serde_json::Value = serde_json::from_str(&run("sfdisk", &["-J", &srv.dev])).unwrap();
    let p = &table["partitiontable"]["partitions"][0];
    assert_eq!(p["name"], "disk-srv-data");
    let end = (p["start"].as_u64().unwrap() + p["size"].as_u64().unwrap()) * 512;
    assert_eq!(end, (2 << 30) - (64 << 20) - (1 << 20));
    if Command::new("mkfs.xfs").arg("-V").output().is_ok() {
        assert_eq!(blkid(&srv.part(1), "TYPE"), "xfs");
        assert_eq!(blkid(&srv.part(1), "LABEL"), "srv");
    }
}

#[test]
fn a_host_whose_fstab_the_layout_does_not_make_is_refused_at_build_time() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    // demo-1 mounts / as ext4 from the partition labelled nixos; uefi-btrfs makes btrfs
    // there, and demo-btrfs's disko layout names its partitions disk-main-*.
    for (layout, expect) in [
        (
            "profile = \"uefi-btrfs\"",
            "fstab line 2: / (/dev/disk/by-partlabel/nixos): the fstab says ext4, the layout makes btrfs",
        ),
        (
            &*format!(
                "disko = \"{}/../../tests/fixtures/demo-fleet/demo-btrfs.disko.json\"",
                env!("CARGO_MANIFEST_DIR")
            ),
            "fstab line 2: / (/dev/disk/by-partlabel/nixos): the layout puts / on partition root of disk main, which is named /dev/disk/by-partlabel/disk-main-root",
        ),
    ] {
        let toml = fleet_toml("", &[])
            + &format!(
                "\n[[host]]\nname = \"demo-1\"\nserials = [\"DEMO-SN-0001\"]\nsystem = \"{}\"\n{layout}\n",
                tops[0]
            );
        let file = env.path("hosts.toml");
        fs::write(&file, toml).unwrap();
        let img = env.path("refused.img");
        let out = Command::new(mkinstaller())
            .args(["--mass", file.to_str().unwrap(), "-o", img.to_str().unwrap()])
            .arg("--installer")
            .arg(testkit::stand_in_installer(&env.path("env")))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(err.contains("host \"demo-1\""), "{err}");
        assert!(err.contains("would not find its disks"), "{err}");
        assert!(err.contains(expect), "{err}");
        assert!(!img.exists(), "nothing is written");
    }
}
