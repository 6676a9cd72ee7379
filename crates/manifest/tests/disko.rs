//! disko layouts read into the device graph: the fixtures are `disko.devices` trees as `nix
//! eval --json` prints them (defaults filled in, or written by hand without them), and each
//! refusal names its place in the tree.

use manifest::devices::{Content, DiskContent, Extent, Holder, LvSize, PercentOf};
use manifest::disko;
use manifest::profile::{DiskRules, Filesystem};

fn rules() -> DiskRules {
    DiskRules::default()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/disko/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn luks_on_lvm_with_defaults_as_nix_eval_prints_them() {
    let l = disko::parse(&fixture("luks-lvm.json"), "laptop", rules()).unwrap();
    let d = &l.devices;
    assert_eq!(d.disks.len(), 1);
    let disk = &d.disks[0];
    assert_eq!(disk.name, "main");
    assert_eq!(
        disk.device.as_deref(),
        Some("/dev/disk/by-id/nvme-Samsung_SSD_980_1TB_S64ANS0T000000")
    );
    let DiskContent::Gpt { partitions } = &disk.content else {
        panic!("a GPT")
    };
    // disko's order: priority (ESP 1000, the 100% partition 9001), then name.
    let names: Vec<&str> = partitions.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(names, ["disk-main-ESP", "disk-main-luks"]);
    assert_eq!(
        partitions[0].type_guid,
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    );
    assert_eq!(partitions[0].size, Extent::Bytes(512 << 20));
    assert_eq!(partitions[1].size, Extent::ToEnd { reserve: 0 });
    let Content::Luks(luks) = &partitions[1].content else {
        panic!("LUKS")
    };
    assert_eq!(luks.name, "crypted");
    assert!(luks.allow_discards);
    assert_eq!(luks.key_file.as_deref(), Some("/tmp/secret.key"));
    assert_eq!(luks.extra_format_args, ["--pbkdf", "pbkdf2"]);
    assert_eq!(luks.content, Content::LvmPv { vg: "pool".into() });
    // LVs: fixed sizes first (priority 1000, by name), the 100%FREE one last.
    let lvs: Vec<(&str, LvSize)> = d.lvm_vgs[0]
        .lvs
        .iter()
        .map(|l| (l.name.as_str(), l.size))
        .collect();
    assert_eq!(
        lvs,
        [
            ("root", LvSize::Bytes(100 << 30)),
            ("swap", LvSize::Bytes(16 << 30)),
            (
                "home",
                LvSize::Percent {
                    percent: 100,
                    of: PercentOf::Free
                }
            )
        ]
    );
    // The label given to mkfs in extraArgs is the file system's label.
    let Content::Filesystem(root) = &d.lvm_vgs[0].lvs[0].content else {
        panic!("ext4")
    };
    assert_eq!(root.label.as_deref(), Some("nixos"));
    assert!(root.extra_args.is_empty());
    // Mounts, parents first; the store is on the root LV; /tmp is a tmpfs.
    let mounts: Vec<(String, Option<Holder>)> = d
        .mounts()
        .into_iter()
        .map(|m| (m.mountpoint, m.holder))
        .collect();
    assert_eq!(mounts[0].0, "/");
    assert_eq!(
        mounts[0].1,
        Some(Holder::Lv {
            vg: "pool".into(),
            lv: "root".into()
        })
    );
    assert!(mounts.contains(&("/tmp".into(), None)));
    assert_eq!(
        d.store_mount()
            .unwrap()
            .holder
            .unwrap()
            .stable_path()
            .unwrap(),
        "/dev/pool/root"
    );
}

#[test]
fn raid1_over_two_disks_by_hand() {
    let l = disko::parse(&fixture("mdadm-raid1.json"), "server", rules()).unwrap();
    let d = &l.devices;
    assert_eq!(
        d.disks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["one", "two"]
    );
    let DiskContent::Gpt { partitions } = &d.disks[1].content else {
        panic!()
    };
    // The BIOS boot partition has priority 1: first; labels are disk-<disk>-<name>.
    let labels: Vec<&str> = partitions.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["disk-two-boot", "disk-two-ESP", "disk-two-mdadm"]);
    assert_eq!(
        partitions[0].type_guid,
        "21686148-6449-6E6F-744E-656564454649"
    );
    assert_eq!(partitions[0].content, Content::None);
    let boot = d.mdadm.iter().find(|m| m.name == "boot").unwrap();
    assert_eq!((boot.level, boot.metadata.as_str()), (1, "1.0"));
    let raid = d.mdadm.iter().find(|m| m.name == "raid1").unwrap();
    assert_eq!(raid.metadata, "default");
    let members = d.members(&Content::Mdraid {
        name: "raid1".into(),
    });
    assert_eq!(
        members,
        [
            Holder::Partition {
                disk: "one".into(),
                partition: "mdadm".into()
            },
            Holder::Partition {
                disk: "two".into(),
                partition: "mdadm".into()
            }
        ]
    );
    assert_eq!(
        d.store_mount().unwrap().holder,
        Some(Holder::Md {
            name: "raid1".into()
        })
    );
}

#[test]
fn btrfs_subvolumes_and_an_absolute_end() {
    let l = disko::parse(&fixture("btrfs-subvolumes.json"), "ws", rules()).unwrap();
    let DiskContent::Gpt { partitions } = &l.devices.disks[0].content else {
        panic!()
    };
    assert_eq!(partitions[0].start, Some(1 << 20));
    assert_eq!(partitions[0].size, Extent::EndAt(128 << 20));
    let Content::Filesystem(fs) = &partitions[1].content else {
        panic!()
    };
    assert_eq!(fs.format, Filesystem::Btrfs);
    // Subvolume names lose their leading slash; a subvolume with no mount point is made
    // but not mounted; `-f` stays for mkfs.
    let subs: Vec<(&str, Option<&str>)> = fs
        .subvolumes
        .iter()
        .map(|s| (s.name.as_str(), s.mountpoint.as_deref()))
        .collect();
    assert_eq!(
        subs,
        [
            ("home", Some("/home")),
            ("home/user", None),
            ("nix", Some("/nix")),
            ("rootfs", Some("/")),
            ("swap", Some("/.swapvol"))
        ]
    );
    assert_eq!(fs.extra_args, ["-f"]);
    let store = l.devices.store_mount().unwrap();
    assert_eq!(
        (store.mountpoint.as_str(), store.subvol.as_deref()),
        ("/nix", Some("nix"))
    );
}

/// What cannot be honoured is refused, naming the place in the tree.
#[test]
fn refusals_name_the_place_in_the_tree() {
    let cases: [(&str, &str, &str); 13] = [
        (
            r#"{"disk":{"a":{"type":"disk","device":"/dev/sda","content":{"type":"gpt","partitions":{"z":{"size":"100%","content":{"type":"zfs","pool":"zroot"}}}}}}}"#,
            "disk.a.content.partitions.z.content",
            "ZFS",
        ),
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"table","format":"gpt","partitions":[]}}}}"#,
            "disk.a.content",
            "`table`",
        ),
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"r":{"size":"100%","type":"ZZ99","content":{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}}}"#,
            "disk.a.content.partitions.r.type",
            "give the type's GUID",
        ),
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"r":{"size":"100%","content":{"type":"luks","name":"c","enrollFido2":true,"content":{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}}}}"#,
            "disk.a.content.partitions.r.content.enrollFido2",
            "FIDO2",
        ),
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"r":{"size":"100%","content":{"type":"filesystem","format":"f2fs","mountpoint":"/"}}}}}}}"#,
            "disk.a.content.partitions.r.content.format",
            "f2fs",
        ),
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"r":{"size":"100%","content":{"type":"lvm_pv","vg":"v"}}}}}},"lvm_vg":{"v":{"type":"lvm_vg","lvs":{"t":{"size":"10G","lvm_type":"thin-pool"}}}}}"#,
            "lvm_vg.v.lvs.t.lvm_type",
            "thin pools",
        ),
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"r":{"size":"100%","content":{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}},"bcachefs":{"b":{"type":"bcachefs"}}}"#,
            "bcachefs",
            "bcachefs",
        ),
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"r":{"size":"lots","content":{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}}}"#,
            "disk.a.content.partitions.r.size",
            "lots",
        ),
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"r":{"size":"100%","content":{"type":"luks","name":"c","settings":{"crypttabExtraOpts":["fido2-device=auto"]},"content":{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}}}}"#,
            "disk.a.content.partitions.r.content.settings.crypttabExtraOpts",
            "FIDO2 and PKCS#11",
        ),
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"r":{"size":"100%","content":{"type":"luks","name":"c","settings":{"crypttabExtraOpts":["tpm2-device=auto","tpm2-pcrs=7+secure-boot-policy"]},"content":{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}}}}"#,
            "disk.a.content.partitions.r.content.settings.crypttabExtraOpts",
            "PCRs are numbers 0 to 23",
        ),
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"r":{"size":"100%","content":{"type":"luks","name":"c","settings":{"crypttabExtraOpts":["tpm2-pcrs=7"]},"content":{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}}}}"#,
            "disk.a.content.partitions.r.content.settings.crypttabExtraOpts",
            "without tpm2-device",
        ),
        // A reference to a volume group that is not defined.
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"r":{"size":"100%","content":{"type":"lvm_pv","vg":"nowhere"}}}}}}}"#,
            "",
            "nowhere",
        ),
        // The store on a tmpfs.
        (
            r#"{"disk":{"a":{"type":"disk","content":{"type":"gpt","partitions":{"e":{"size":"1G","type":"EF00","content":{"type":"filesystem","format":"vfat","mountpoint":"/boot"}}}}}},"nodev":{"/":{"fsType":"tmpfs"}}}"#,
            "",
            "tmpfs",
        ),
    ];
    for (json, path, says) in cases {
        let e = disko::parse(json, "x", rules()).expect_err(says);
        let text = e.to_string();
        assert_eq!(e.path, path, "{text}");
        assert!(text.contains(says), "{says:?} not in {text}");
    }
}

/// `settings.crypttabExtraOpts` as NixOS's `boot.initrd.luks.devices` takes them: the TPM2
/// unlock and its PCRs (7 unless said), and nothing for a volume that does not ask.
#[test]
fn tpm2_unlock_from_crypttab_options() {
    let luks = |opts: &str| {
        let json = format!(
            r#"{{"disk":{{"a":{{"type":"disk","content":{{"type":"gpt","partitions":{{"r":{{"size":"100%","content":{{"type":"luks","name":"c","settings":{{"crypttabExtraOpts":{opts}}},"content":{{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}}}}}}}}}}}}"#
        );
        let layout = disko::parse(&json, "x", rules()).unwrap();
        let d = &layout.devices.disks[0];
        let DiskContent::Gpt { partitions } = &d.content else {
            panic!("GPT")
        };
        let Content::Luks(l) = &partitions[0].content else {
            panic!("LUKS")
        };
        l.tpm2.as_ref().map(|t| t.pcrs.clone())
    };
    assert_eq!(luks(r#"["tpm2-device=auto"]"#), Some(vec![7]));
    assert_eq!(
        luks(r#"["tpm2-device=/dev/tpmrm0","tpm2-pcrs=0+7,11","discard"]"#),
        Some(vec![0, 7, 11])
    );
    assert_eq!(luks(r#"["discard"]"#), None);
    assert_eq!(luks("[]"), None);
}
