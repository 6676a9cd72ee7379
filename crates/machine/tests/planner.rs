//! The planner on disko-shaped fixtures and the shipped profiles: which machine disk plays
//! which layout disk and why, where every partition goes, the order stacked devices are built
//! in, the store's fit, and the refusals.

use std::collections::BTreeMap;
use std::path::Path;

use machine::graph::{self, Build, DevicePlan};
use machine::layout::{assign_disks, DiskFacts, PlanError};
use manifest::devices::{Holder, Layout, LvSize, PercentOf};
use manifest::profile::{DiskRules, Filesystem, Profile, Select};
use util::size::MIB;

const GIB: u64 = 1 << 30;

fn profile(name: &str) -> Layout {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../installer-profiles/{name}.toml"));
    Profile::parse(name, &file, &std::fs::read_to_string(&file).unwrap())
        .unwrap()
        .to_layout()
}

fn rules() -> DiskRules {
    DiskRules::default()
}

fn disko(name: &str) -> Layout {
    let text = std::fs::read_to_string(format!(
        "{}/../manifest/tests/fixtures/disko/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    manifest::disko::parse(&text, name, rules()).unwrap()
}

fn disk(path: &str, size: u64) -> DiskFacts {
    DiskFacts {
        path: path.into(),
        by_id: vec![format!(
            "/dev/disk/by-id/test-{}",
            path.trim_start_matches("/dev/")
        )],
        size,
        logical_block_size: 512,
        removable: false,
        rotational: false,
        read_only: false,
        transport: "nvme".into(),
        model: "Test Disk".into(),
        serial: "S1".into(),
        boot_medium: false,
        mounted: vec![],
        swap: false,
        holders: vec![],
    }
}

/// Assigns and plans `layout` for a closure of `nar` bytes, as the installer does.
fn plan(
    layout: &Layout,
    facts: &[DiskFacts],
    named: &[&str],
    nar: u64,
) -> Result<DevicePlan, PlanError> {
    let needs = graph::disk_needs(layout, nar);
    let named: Vec<String> = named.iter().map(|s| s.to_string()).collect();
    let assigned = assign_disks(layout, facts, &named, &needs)?;
    graph::plan(layout, assigned, nar)
}

fn paths(p: &DevicePlan) -> Vec<(&str, &str)> {
    p.disks
        .iter()
        .map(|d| (d.name.as_str(), d.facts.path.as_str()))
        .collect()
}

#[test]
fn picks_the_largest_usable_disk_or_the_smallest() {
    let l = profile("uefi-ext4");
    let mut stick = disk("/dev/sda", 64 * GIB);
    stick.boot_medium = true;
    stick.removable = true;
    let disks = [
        stick,
        disk("/dev/nvme0n1", 512 * GIB),
        disk("/dev/vda", 256 * GIB),
    ];
    let p = plan(&l, &disks, &[], 2 * GIB).unwrap();
    assert_eq!(paths(&p), [("main", "/dev/nvme0n1")]);
    assert!(
        p.disks[0].why.contains("largest of 2 candidates"),
        "{}",
        p.disks[0].why
    );
    let mut small = l.clone();
    small.rules.select = Select::Smallest;
    assert_eq!(
        paths(&plan(&small, &disks, &[], 2 * GIB).unwrap()),
        [("main", "/dev/vda")]
    );
}

#[test]
fn never_the_boot_medium_a_busy_or_a_removable_disk() {
    let l = profile("uefi-ext4");
    let mut boot = disk("/dev/sda", 512 * GIB);
    boot.boot_medium = true;
    let mut mounted = disk("/dev/sdb", 512 * GIB);
    mounted.mounted = vec!["/mnt".into()];
    let mut swap = disk("/dev/sdc", 512 * GIB);
    swap.swap = true;
    let mut lvm = disk("/dev/sdd", 512 * GIB);
    lvm.holders = vec!["dm-0".into()];
    let mut usb = disk("/dev/sde", 512 * GIB);
    usb.removable = true;
    let small = disk("/dev/sdf", 4 * GIB);
    let err = plan(&l, &[boot, mounted, swap, lvm, usb, small], &[], GIB).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("no disk to install on:"), "{text}");
    for needle in [
        "boot medium",
        "mounted at /mnt",
        "swap",
        "dm-0",
        "removable",
        "minimum of 8 GiB",
    ] {
        assert!(text.contains(needle), "{needle} missing from: {text}");
    }
}

#[test]
fn equal_candidates_are_ambiguous_until_one_is_named() {
    let l = profile("uefi-ext4");
    let disks = [disk("/dev/sda", 512 * GIB), disk("/dev/sdb", 512 * GIB)];
    assert!(matches!(
        plan(&l, &disks, &[], GIB),
        Err(PlanError::Ambiguous { tied, .. }) if tied.len() == 2
    ));
    let p = plan(&l, &disks, &["/dev/disk/by-id/test-sdb"], GIB).unwrap();
    assert_eq!(paths(&p), [("main", "/dev/sdb")]);
    assert_eq!(p.disks[0].why, "named: /dev/disk/by-id/test-sdb");
}

#[test]
fn a_named_disk_must_exist_be_free_and_large_enough() {
    let l = profile("uefi-ext4");
    let mut boot = disk("/dev/sda", 512 * GIB);
    boot.boot_medium = true;
    let disks = [boot, disk("/dev/sdb", 10 * GIB)];
    assert!(matches!(
        plan(&l, &disks, &["/dev/sdz"], GIB),
        Err(PlanError::NamedDiskMissing(_))
    ));
    assert!(matches!(
        plan(&l, &disks, &["/dev/sda"], GIB),
        Err(PlanError::NamedDiskUnusable { .. })
    ));
    let err = plan(&l, &disks, &["/dev/sdb"], 20 * GIB).unwrap_err();
    assert!(err.to_string().contains("short"), "{err}");
    let err = plan(&l, &disks, &["/dev/sdb", "/dev/sdc"], GIB).unwrap_err();
    assert!(
        matches!(err, PlanError::TooManyNamed { named: 2, disks: 1 }),
        "{err}"
    );
    let err = plan(&l, &disks, &["data=/dev/sdb"], GIB).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--disk data: the layout has no disk of that name (it has main)"
    );
}

#[test]
fn too_small_says_by_how_much() {
    let l = profile("uefi-ext4");
    let err = plan(&l, &[disk("/dev/vda", 16 * GIB)], &[], 16 * GIB).unwrap_err();
    assert!(err.to_string().contains("short of the"), "{err}");
}

#[test]
fn partitions_are_aligned_and_fill_the_disk() {
    let l = profile("uefi-ext4-swap");
    let size = 32 * GIB + 12345 * 512;
    let p = plan(&l, &[disk("/dev/vda", size)], &[], GIB).unwrap();
    let parts = &p.disks[0].partitions;
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].first_lba, 2048);
    assert_eq!(parts[0].bytes, GIB);
    assert_eq!(parts[1].bytes, 8 * GIB);
    for w in parts.windows(2) {
        assert_eq!(w[0].last_lba + 1, w[1].first_lba, "no gaps, no overlaps");
    }
    for part in parts {
        assert_eq!(
            part.first_lba * 512 % MIB,
            0,
            "{} is not MiB-aligned",
            part.label
        );
        assert_eq!(part.bytes, (part.last_lba + 1 - part.first_lba) * 512);
    }
    let end = (parts[2].last_lba + 1) * 512;
    assert!(end <= size - MIB, "the backup GPT keeps its last MiB");
    assert!(
        end > 32 * GIB - 2 * MIB,
        "the rest partition takes the rest"
    );
    // 4 KiB sectors: the same bytes.
    let mut d4k = disk("/dev/vda", 32 * GIB);
    d4k.logical_block_size = 4096;
    let p4k = plan(&l, &[d4k], &[], GIB).unwrap();
    assert_eq!(p4k.disks[0].partitions[0].first_lba, 256);
    // Profiles make what they always made: one disk, partitions named as the profile says.
    assert_eq!(
        p.make.iter().map(|m| m.format).collect::<Vec<_>>(),
        [Filesystem::Vfat, Filesystem::Swap, Filesystem::Ext4]
    );
    assert_eq!(p.make[2].label.as_deref(), Some("nixos"));
    assert!(p.build.is_empty());
}

#[test]
fn luks_on_lvm_with_an_absent_device_goes_by_the_rules() {
    let l = disko("luks-lvm");
    let disks = [
        disk("/dev/nvme0n1", 1024 * GIB),
        disk("/dev/nvme1n1", 256 * GIB),
    ];
    let p = plan(&l, &disks, &[], 4 * GIB).unwrap();
    assert_eq!(paths(&p), [("main", "/dev/nvme0n1")]);
    let parts = &p.disks[0].partitions;
    let labels: Vec<&str> = parts.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["disk-main-ESP", "disk-main-luks"]);
    assert_eq!(parts[0].bytes, 512 * MIB);
    assert_eq!(parts[1].holds, "LUKS crypted (LVM physical volume of pool)");
    // LUKS first, then the volume group on it, then its volumes in the layout's order.
    let order: Vec<String> = p
        .build
        .iter()
        .map(|b| match b {
            Build::Luks { name, on, .. } => format!("luks {name} on {on}"),
            Build::Vg { name, pvs, .. } => format!("vg {name} on {}", pvs[0]),
            Build::Lv { vg, name, .. } => format!("lv {vg}/{name}"),
            Build::Md { name, .. } => format!("md {name}"),
        })
        .collect();
    assert_eq!(
        order,
        [
            "luks crypted on partition luks of disk main",
            "vg pool on /dev/mapper/crypted",
            "lv pool/root",
            "lv pool/swap",
            "lv pool/home"
        ]
    );
    let Build::Lv { bytes: root, .. } = p.build[2] else {
        panic!()
    };
    assert_eq!(root, 100 * GIB);
    // home takes what root and swap leave: about the disk less 116 GiB and the headers.
    let Build::Lv {
        bytes: home, size, ..
    } = p.build[4]
    else {
        panic!()
    };
    assert_eq!(
        size,
        LvSize::Percent {
            percent: 100,
            of: PercentOf::Free
        }
    );
    assert!(
        home > 1024 * GIB - 117 * GIB && home < 1024 * GIB - 116 * GIB,
        "{home}"
    );
    assert_eq!(
        p.store.holder,
        Holder::Lv {
            vg: "pool".into(),
            lv: "root".into()
        }
    );
    // The volumes do not fit a disk smaller than their fixed sizes.
    let err = plan(&l, &[disk("/dev/vda", 64 * GIB)], &[], GIB).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("volume group pool would be about")
            && err
                .to_string()
                .contains("when logical volume root needs 100 GiB"),
        "{err}"
    );
}

#[test]
fn raid1_uses_the_layouts_device_where_present_and_the_rules_for_the_rest() {
    let l = disko("mdadm-raid1");
    // disk one's by-id name is on this machine; disk two's is not.
    let mut one = disk("/dev/sdb", 1000 * GIB);
    one.by_id
        .push("/dev/disk/by-id/ata-WDC_WD1003FZEX_1".into());
    let disks = [
        disk("/dev/sda", 1000 * GIB),
        one,
        disk("/dev/sdc", 500 * GIB),
    ];
    let p = plan(&l, &disks, &[], 4 * GIB).unwrap();
    assert_eq!(paths(&p), [("one", "/dev/sdb"), ("two", "/dev/sda")]);
    assert!(p.disks[0]
        .why
        .contains("the layout's device /dev/disk/by-id/ata-WDC_WD1003FZEX_1"));
    assert!(p.disks[1].why.contains("the rules"), "{}", p.disks[1].why);
    let names: Vec<&str> = p
        .build
        .iter()
        .map(|b| match b {
            Build::Md { name, .. } => name.as_str(),
            _ => "?",
        })
        .collect();
    assert_eq!(names, ["boot", "raid1"]);
    let Build::Md {
        members,
        bytes,
        metadata,
        ..
    } = &p.build[0]
    else {
        panic!()
    };
    assert_eq!(members.len(), 2);
    assert_eq!(metadata, "1.0");
    assert!(*bytes < 500 * MIB && *bytes > 490 * MIB, "{bytes}");
    assert_eq!(
        p.store.holder,
        Holder::Md {
            name: "raid1".into()
        }
    );
    assert_eq!(
        p.make[0].holder,
        Holder::Md {
            name: "boot".into()
        }
    );

    // Identical disks and no device on the machine: the first two by path, in layout order.
    let disks = [disk("/dev/vdb", 100 * GIB), disk("/dev/vda", 100 * GIB)];
    let p = plan(&l, &disks, &[], GIB).unwrap();
    assert_eq!(paths(&p), [("one", "/dev/vda"), ("two", "/dev/vdb")]);
    // A third identical disk: which two to erase is a guess.
    let three = [
        disk("/dev/vda", 100 * GIB),
        disk("/dev/vdb", 100 * GIB),
        disk("/dev/vdc", 100 * GIB),
    ];
    let err = plan(&l, &three, &[], GIB).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("3 disks fit equally well for layout disk two"),
        "{err}"
    );
    let p = plan(&l, &three, &["two=/dev/vdc", "/dev/vdb"], GIB).unwrap();
    assert_eq!(paths(&p), [("one", "/dev/vdb"), ("two", "/dev/vdc")]);
    // One disk for two: refused, naming the layout disk.
    let err = plan(&l, &[disk("/dev/vda", 100 * GIB)], &[], GIB).unwrap_err();
    assert!(
        err.to_string().starts_with("no disk for layout disk two:"),
        "{err}"
    );
}

#[test]
fn btrfs_subvolumes_and_an_absolute_end() {
    let l = disko("btrfs-subvolumes");
    let p = plan(&l, &[disk("/dev/vdb", 64 * GIB)], &[], GIB).unwrap();
    let parts = &p.disks[0].partitions;
    assert_eq!(parts[0].first_lba * 512, MIB);
    assert_eq!((parts[0].last_lba + 1) * 512, 128 * MIB);
    assert_eq!(parts[1].first_lba * 512, 128 * MIB);
    let btrfs = p
        .make
        .iter()
        .find(|m| m.format == Filesystem::Btrfs)
        .unwrap();
    // In name order: a parent before what is inside it.
    assert_eq!(
        btrfs.subvolumes,
        ["home", "home/user", "nix", "rootfs", "swap"]
    );
    assert_eq!(p.store.mountpoint, "/nix");
    assert_eq!(p.store.subvol.as_deref(), Some("nix"));
}

#[test]
fn a_store_too_small_for_the_closure_is_refused() {
    let mut l = disko("luks-lvm");
    // Root (the store) of 1 GiB for a 4 GiB closure.
    l.devices.lvm_vgs[0].lvs[0].size = LvSize::Bytes(GIB);
    let err = plan(&l, &[disk("/dev/vda", 512 * GIB)], &[], 4 * GIB).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the Nix store's file system (/dev/pool/root at /) would be about 1 GiB, and the closure needs 5.2 GiB"),
        "{err}"
    );
}

#[test]
fn disk_needs_count_the_store_where_it_lands() {
    let needs: BTreeMap<String, u64> = graph::disk_needs(&profile("uefi-ext4"), 16 * GIB);
    let main = needs["main"];
    assert!(main > 21 * GIB && main < 22 * GIB, "{main}");
}
