//! mkinstaller as a user runs it: images for one and three hosts, read back with sgdisk,
//! sfdisk, fsck.fat, a FAT mount and the real Nix; inspect and verify; rebuilds; refusals.

mod common;

use std::fs;
use std::process::Command;

use common::*;
use testkit::{build_fixture, requisites, run, FatMount, Loop};

#[test]
fn one_host_image() {
    let env = Env::new();
    let top = build_fixture("tiny-fleet.nix", Some("host-1"), &[]);
    let img = env.path("one.img");
    env.ok(&["--system", &top, "-o", img.to_str().unwrap(), "--quiet"]);
    check_image(&img, std::slice::from_ref(&top));
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", img.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(inspect["mode"], "single");
    assert_eq!(inspect["hosts"][0]["name"], "host-1");
    assert_eq!(
        inspect["hosts"][0]["closure_paths"].as_u64().unwrap() as usize,
        requisites(None, &top).len()
    );
}

/// `mkinstaller inspect IMG | grep -q …`: the reader leaves early, and that is no failure
/// (it was a panic on the closed pipe, which failed a VM test's pipeline).
#[test]
fn inspect_into_a_closed_pipe_is_quiet() {
    let env = Env::new();
    let top = build_fixture("tiny-fleet.nix", Some("host-1"), &[]);
    let img = env.path("one.img");
    env.ok(&["--system", &top, "-o", img.to_str().unwrap(), "--quiet"]);
    for json in [false, true] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut args = vec!["inspect", img.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_mkinstaller"))
            .args(&args)
            .stdout(writer)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "inspect {args:?} into a closed pipe: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn three_host_image_stores_shared_paths_once() {
    let env = Env::new();
    let (hosts, tops) = env.fleet("1");
    let img = env.path("fleet.img");
    let summary: serde_json::Value = serde_json::from_str(&env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "-o",
        img.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    check_image(&img, &tops);

    let mut union: Vec<String> = tops.iter().flat_map(|t| requisites(None, t)).collect();
    union.sort();
    union.dedup();
    assert_eq!(summary["paths"].as_u64().unwrap() as usize, union.len());

    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", img.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(
        inspect["format_version"],
        manifest::document::FORMAT_VERSION
    );
    assert_eq!(inspect["mode"], "mass");
    assert_eq!(inspect["paths"].as_u64().unwrap() as usize, union.len());
    let hosts = inspect["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3);
    assert_eq!(hosts[1]["serials"][0], "TEST-SN-0002");
    assert_eq!(hosts[2]["layout"], "uefi-btrfs");
    assert_eq!(hosts[2]["layout_source"], "profile");
    assert!(
        inspect["shared_nar_bytes"].as_u64().unwrap() > 2_000_000,
        "the nar-tree closure is shared"
    );
    let text = env.ok(&["inspect", img.to_str().unwrap()]);
    assert!(
        text.contains("host-3") && text.contains("TEST-SN-0003"),
        "{text}"
    );

    // Every narinfo appears once on the payload although three hosts use most paths.
    let lo = Loop::attach(&img, true);
    let payload = FatMount::new(&lo.partition(2));
    let narinfos = fs::read_dir(payload.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".narinfo")
        })
        .count();
    assert_eq!(narinfos, union.len());
}

#[test]
fn verify_finds_a_flipped_byte_and_names_the_path() {
    let env = Env::new();
    let top = build_fixture("nar-tree.nix", None, &[]);
    let img = env.path("v.img");
    env.ok(&["--system", &top, "-o", img.to_str().unwrap(), "--quiet"]);
    env.ok(&["verify", img.to_str().unwrap(), "--quiet"]);

    // Flip one byte inside the largest NAR file on the payload: find it through the mount.
    let (offset, victim) = {
        let lo = Loop::attach(&img, true);
        let payload = FatMount::new(&lo.partition(2));
        let mut nars: Vec<_> = fs::read_dir(payload.path().join("nar"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        nars.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
        let data = fs::read(&nars[0]).unwrap();
        let needle = &data[data.len() / 2..data.len() / 2 + 64];
        let image = fs::read(&img).unwrap();
        let at = image.windows(64).position(|w| w == needle).unwrap();
        (
            at,
            nars[0].file_name().unwrap().to_string_lossy().into_owned(),
        )
    };
    let mut image = fs::read(&img).unwrap();
    image[offset] ^= 0xFF;
    fs::write(&img, image).unwrap();
    let out = env.mkinstaller(&["verify", img.to_str().unwrap(), "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "verify passed a damaged image");
    assert!(
        err.contains(&victim) && err.contains("/nix/store/"),
        "{err}"
    );
}

#[test]
fn rebuild_after_one_host_changed_compresses_only_its_paths() {
    let env = Env::new();
    let (hosts, _) = env.fleet("1");
    let img = env.path("a.img");
    env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "-o",
        img.to_str().unwrap(),
        "--quiet",
    ]);

    let mut tops: Vec<String> = (1..=3)
        .map(|n| build_fixture("tiny-fleet.nix", Some(&format!("host-{n}")), &[]))
        .collect();
    tops[0] = build_fixture("tiny-fleet.nix", Some("host-1"), &[("version", "2")]);
    fs::write(&hosts, fleet_toml(&tops)).unwrap();
    let s: serde_json::Value = serde_json::from_str(&env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "-o",
        img.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    // host-1 version 2 has a new toplevel and a new config path; everything else is cached.
    assert_eq!(s["paths_compressed"], 2, "{s}");
    assert_eq!(
        s["paths_from_cache"].as_u64().unwrap() + 2,
        s["paths"].as_u64().unwrap()
    );
    check_image(&img, &tops[..1]);
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let env = Env::new();
    let (hosts, _) = env.fleet("1");
    let (a, b) = (env.path("a.img"), env.path("b.img"));
    env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
        "--quiet",
    ]);
    env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "-o",
        b.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "two builds of the same fleet differ"
    );
}

#[test]
fn size_pads_the_image_and_refuses_too_small() {
    let env = Env::new();
    let top = build_fixture("tiny-fleet.nix", Some("host-2"), &[]);
    let img = env.path("big.img");
    env.ok(&[
        "--system",
        &top,
        "-o",
        img.to_str().unwrap(),
        "--size",
        "200M",
        "--quiet",
    ]);
    assert_eq!(fs::metadata(&img).unwrap().len(), 200 << 20);
    check_image(&img, std::slice::from_ref(&top));

    let small = env.path("small.img");
    let out = env.mkinstaller(&[
        "--system",
        &top,
        "-o",
        small.to_str().unwrap(),
        "--size",
        "20M",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("use at least --size"), "{err}");
    assert!(!small.exists(), "a refused build wrote its output");
}

/// Each bad fleet is refused with the file, line and reason, and nothing is written.
#[test]
fn bad_fleets_are_refused_with_file_and_line() {
    let env = Env::new();
    let (hosts, tops) = env.fleet("1");
    let good = fleet_toml(&tops);
    let cases: Vec<(String, &str, &str)> = vec![
        (
            good.replace("[defaults]", "[defaults"),
            ":3:",
            "unclosed table",
        ),
        (
            good.replace("confirm-seconds", "confirm-secs"),
            ":6:",
            "confirm-secs",
        ),
        (
            good.replace("TEST-SN-0002", "To Be Filled By O.E.M."),
            ":16:",
            "placeholder",
        ),
        (
            good.replace("TEST-SN-0002", "Default String"),
            ":16:",
            "placeholder",
        ),
        (
            good.replace("TEST-SN-0003", "test-sn-0001"),
            ":22:",
            "both \"host-1\"",
        ),
        (
            good.replace("name = \"host-3\"", "name = \"host-1\""),
            ":21:",
            "defined twice",
        ),
        (
            good.replace(&tops[1], "/nix/store/not-a-hash-host-2"),
            ":17:",
            "not a valid Nix store path",
        ),
        (
            good.replace("uefi-btrfs", "uefi-zfs"),
            "",
            "profile \"uefi-zfs\" not found",
        ),
    ];
    let out_img = env.path("never.img");
    for (text, place, reason) in cases {
        fs::write(&hosts, &text).unwrap();
        let out = env.mkinstaller(&[
            "--mass",
            hosts.to_str().unwrap(),
            "-o",
            out_img.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{text}");
        assert!(
            err.contains(&format!("{}{place}", hosts.display())) || place.is_empty(),
            "no location {place} in: {err}"
        );
        assert!(
            err.to_lowercase().contains(&reason.to_lowercase()),
            "no {reason:?} in: {err}"
        );
        assert!(!out_img.exists(), "a refused build wrote its output");
    }
}

#[test]
fn a_mounted_device_is_refused() {
    let env = Env::new();
    let top = build_fixture("tiny-fleet.nix", Some("host-1"), &[]);
    let disk = env.path("disk.img");
    fs::write(&disk, vec![0u8; 64 << 20]).unwrap();
    run("mkfs.ext4", &["-q", "-F", disk.to_str().unwrap()]);
    let lo = Loop::attach(&disk, false);
    let mnt = env.path("mnt");
    fs::create_dir(&mnt).unwrap();
    run("mount", &[&lo.device, mnt.to_str().unwrap()]);
    let out = env.mkinstaller(&["--system", &top, "-o", &lo.device]);
    Command::new("umount").arg(&mnt).status().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "wrote over a mounted device");
    assert!(
        err.contains("is in use") && err.contains(mnt.to_str().unwrap()),
        "{err}"
    );
    // The file system is intact.
    run("fsck.ext4", &["-n", disk.to_str().unwrap()]);
}

#[test]
fn flake_hosts_are_built_with_nix_build_and_their_disko_layout_checked() {
    let env = Env::new();
    let dir = env.path("fleet");
    fs::create_dir(&dir).unwrap();
    // A flake without inputs (no nixpkgs here): its toplevel is a plain derivation.
    fs::write(
        dir.join("flake.nix"),
        r#"{
  outputs = { self }: {
    nixosConfigurations.fl-1.config = {
      system.build.toplevel = derivation {
        name = "nixos-system-fl-1-1"; system = "x86_64-linux";
        builder = "/bin/sh"; args = [ "-c" "echo fl-1 > $out" ];
      };
      # What disko's module leaves in a configuration: the devices with its own `_`
      # attributes (functions, which JSON cannot hold) beside them.
      disko.devices = {
        _meta = x: x;
        disk.main = {
          type = "disk"; device = "/dev/disk/by-id/nvme-x"; _create = x: x;
          content = { type = "gpt"; partitions = {
            ESP = { size = "512M"; type = "EF00"; content = { type = "filesystem"; format = "vfat"; mountpoint = "/boot"; }; };
            luks = { size = "100%"; content = { type = "luks"; name = "LUKSNAME";
              content = { type = "filesystem"; format = "ext4"; mountpoint = "/"; }; }; };
          }; };
        };
      };
      boot.initrd.luks.devices.LUKSNAME.device = "LUKSDEVICE";
    };
  };
}
"#,
    )
    .unwrap();
    let hosts = dir.join("hosts.toml");
    fs::write(&hosts, "version = 1\n\n[[host]]\nname = \"fl-1\"\nserials = [\"FLAKE-SN-1\"]\nflake = \".#fl-1\"\nbootable = false\n").unwrap();
    let flake = fs::read_to_string(dir.join("flake.nix")).unwrap();
    let img = env.path("flake.img");
    // The host's configuration, with its LUKS device named `name` on `device`.
    let build = |name: &str, device: &str| {
        let text = flake
            .replace("LUKSNAME", name)
            .replace("LUKSDEVICE", device);
        fs::write(dir.join("flake.nix"), text).unwrap();
        Command::new(env!("CARGO_BIN_EXE_mkinstaller"))
            .args([
                "--mass",
                hosts.to_str().unwrap(),
                "-o",
                img.to_str().unwrap(),
                "--json",
            ])
            .arg("--installer")
            .arg(&env.installer)
            .arg("--cache-dir")
            .arg(env.path("cache"))
            .env("NIX_CONFIG", "substituters =\nsandbox = false")
            .output()
            .unwrap()
    };
    // Where the configuration's initrd looks for its LUKS device is not what disko makes:
    // refused, nothing written.
    let out = build("cryptroot", "/dev/disk/by-partlabel/root");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("LUKS device cryptroot (/dev/disk/by-partlabel/root): the layout puts it on partition luks of disk main, which is named /dev/disk/by-partlabel/disk-main-luks"),
        "{err}"
    );
    assert!(!img.exists());
    // As disko names it: built, with the layout from the configuration.
    let out = build("cryptroot", "/dev/disk/by-partlabel/disk-main-luks");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", img.to_str().unwrap(), "--json"])).unwrap();
    let host = &inspect["hosts"][0];
    let top = host["toplevel"].as_str().unwrap();
    assert!(top.ends_with("-nixos-system-fl-1-1"), "{top}");
    assert_eq!(fs::read_to_string(top).unwrap(), "fl-1\n");
    assert_eq!(
        (host["layout"].as_str(), host["layout_source"].as_str()),
        (Some("fl-1"), Some("disko"))
    );
}

#[test]
fn writes_straight_to_a_block_device() {
    let env = Env::new();
    let top = build_fixture("tiny-fleet.nix", Some("host-3"), &[]);
    let backing = env.path("stick.img");
    fs::write(&backing, vec![0xAAu8; 160 << 20]).unwrap();
    {
        let stick = Loop::attach(&backing, false);
        env.ok(&["--system", &top, "-o", &stick.device, "--quiet"]);
    }
    // The image fills the whole "stick", whose old contents are gone from the table's view.
    assert_eq!(fs::metadata(&backing).unwrap().len(), 160 << 20);
    check_image(&backing, std::slice::from_ref(&top));
}

/// A file of an image's ESP.
fn esp_file(img: &std::path::Path, path: &str) -> Vec<u8> {
    partition_file(img, 0, path)
}

/// Where the installer environment carries the signed chain, it is the stick's boot loader
/// (shim as BOOTX64.EFI, GRUB beside it, the command line in grub.cfg word by word) unless
/// `--boot-loader systemd-boot`; inspect says which; a command line GRUB would garble is
/// refused before anything is written.
#[test]
fn the_signed_chain_boots_the_stick_where_the_environment_has_it() {
    let env = Env::new();
    let top = build_fixture("tiny-fleet.nix", Some("host-1"), &[]);
    let build = |name: &str, more: &[&str]| {
        let img = env.path(name);
        let mut args = vec!["--system", &top, "-o", img.to_str().unwrap(), "--quiet"];
        args.extend(more);
        env.ok(&args);
        img
    };
    let boot_loader = |img: &std::path::Path| {
        let shown: serde_json::Value =
            serde_json::from_str(&env.ok(&["inspect", img.to_str().unwrap(), "--json"])).unwrap();
        shown["boot_loader"].as_str().unwrap().to_string()
    };
    let img = build("plain.img", &[]);
    assert_eq!(boot_loader(&img), "systemd-boot (Secure Boot must be off)");
    let refused = env.mkinstaller(&[
        "--system",
        &top,
        "-o",
        img.to_str().unwrap(),
        "--boot-loader",
        "signed",
    ]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("has no signed chain"));

    // Stand-ins for Debian's signed shim and GRUB (their bytes only travel).
    std::fs::write(env.installer.join("shimx64.efi"), b"stand-in for shim").unwrap();
    std::fs::write(env.installer.join("grubx64.efi"), b"stand-in for GRUB").unwrap();
    let img = build(
        "signed.img",
        &["--kernel-args", "autoinstall.args=\"--dry-run --yes\""],
    );
    assert_eq!(
        boot_loader(&img),
        "shim and GRUB, signed (boots with Secure Boot on)"
    );
    assert_eq!(esp_file(&img, "EFI/BOOT/BOOTX64.EFI"), b"stand-in for shim");
    assert_eq!(esp_file(&img, "EFI/BOOT/grubx64.efi"), b"stand-in for GRUB");
    let cfg = String::from_utf8(esp_file(&img, "EFI/BOOT/grub.cfg")).unwrap();
    assert!(cfg.contains("'autoinstall.args=--dry-run --yes'"), "{cfg}");
    assert_eq!(esp_file(&img, "EFI/debian/grub.cfg"), cfg.as_bytes());

    let img = build("unsigned.img", &["--boot-loader", "systemd-boot"]);
    assert_eq!(
        esp_file(&img, "EFI/BOOT/BOOTX64.EFI"),
        std::fs::read(env.installer.join("systemd-bootx64.efi")).unwrap()
    );

    let img = env.path("garbled.img");
    let out = env.mkinstaller(&[
        "--system",
        &top,
        "-o",
        img.to_str().unwrap(),
        "--kernel-args",
        "x='y'",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("which GRUB"));
    assert!(!img.exists());
}

/// GRUB for BIOS, where the environment has it (Debian's boot.img and a core image made with
/// the real grub-mkimage, as images/debian/build makes them): the MBR's boot code points at
/// the core image in the gap before the first partition, whose block list points at its own
/// next sector; the GPT and its protective MBR stay valid (sgdisk -v), and the ESP has the
/// configuration the core image reads. Booting it is tests/vm/boot-bios.
#[test]
fn the_stick_carries_grub_for_bios_where_the_environment_has_it() {
    let env = Env::new();
    let top = build_fixture("tiny-fleet.nix", Some("host-1"), &[]);
    let grub = std::path::Path::new("/usr/lib/grub/i386-pc");
    assert!(
        grub.join("boot.img").exists(),
        "tests/setup installs grub-pc-bin"
    );
    std::fs::copy(grub.join("boot.img"), env.installer.join("bios-boot.img")).unwrap();
    let core = env.installer.join("bios-core.img");
    run(
        "grub-mkimage",
        &[
            "-O",
            "i386-pc",
            "-d",
            grub.to_str().unwrap(),
            "-p",
            "(,gpt1)/autoinstall/bios",
            "-o",
            core.to_str().unwrap(),
            "biosdisk",
            "part_gpt",
            "fat",
            "normal",
            "linux",
        ],
    );
    let img = env.path("bios.img");
    env.ok(&["--system", &top, "-o", img.to_str().unwrap(), "--quiet"]);
    let bytes = std::fs::read(&img).unwrap();
    let boot = std::fs::read(grub.join("boot.img")).unwrap();
    assert_eq!(&bytes[..0x5c], &boot[..0x5c], "GRUB's boot code in the MBR");
    assert_eq!(
        &bytes[0x5c..0x64],
        &34u64.to_le_bytes(),
        "pointing at LBA 34"
    );
    let core_bytes = std::fs::read(&core).unwrap();
    let at = 34 * 512;
    assert_eq!(
        &bytes[at..at + 0x1f4],
        &core_bytes[..0x1f4],
        "the core image at LBA 34"
    );
    assert_eq!(
        &bytes[at + 0x1f4..at + 0x1fc],
        &35u64.to_le_bytes(),
        "its block list at LBA 35"
    );
    assert_eq!(&bytes[at + 512..at + core_bytes.len()], &core_bytes[512..]);
    assert_eq!(bytes[0x1c2], 0xee, "the protective partition stays");
    let sgdisk = run("sgdisk", &["-v", img.to_str().unwrap()]);
    assert!(sgdisk.contains("No problems found"), "sgdisk -v: {sgdisk}");
    let cfg = String::from_utf8(esp_file(&img, "autoinstall/bios/grub.cfg")).unwrap();
    assert!(
        cfg.contains("linux /autoinstall/kernel 'console=tty0'"),
        "{cfg}"
    );
}
