//! One stick for a mixed fleet: hosts built for x86_64-linux and aarch64-linux on one stick
//! whose ESP boots each architecture's installer environment (`BOOTX64.EFI`, `BOOTAA64.EFI`,
//! entries marked with their architecture), and the refusals around it. The environments here
//! are stand-ins (no arm64 systemd-boot on this machine); tests/vm/boot-installer-env --arch
//! arm64 boots the real arm64 one.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::{fleet_toml, partition_file, Env};

/// A stand-in system built for aarch64-linux (its `system` file says so), and its store path.
fn aarch64_toplevel(env: &Env) -> String {
    let expr = r#"derivation {
      name = "nixos-system-arm-1-1"; system = "x86_64-linux"; builder = "/bin/sh";
      args = [ "-c" "/bin/mkdir -p $out && echo arm-1 > $out/kernel && printf aarch64-linux > $out/system" ];
    }"#;
    let out = Command::new("nix-build")
        .args(["-E", expr, "--no-out-link"])
        .env("NIX_CONFIG", "substituters =\nsandbox = false")
        .current_dir(env.tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nix-build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// hosts.toml of the tiny fleet's host-1 and an aarch64 host arm-1.
fn mixed_fleet(env: &Env) -> std::path::PathBuf {
    let (file, tops) = env.fleet("mixed");
    let arm = aarch64_toplevel(env);
    let text = fleet_toml(&tops[..1])
        + &format!("\n[[host]]\nname = \"arm-1\"\nserials = [\"ARM-SN-0001\"]\nsystem = \"{arm}\"\nbootable = false\n");
    fs::write(&file, text).unwrap();
    file
}

/// mkinstaller with `args`, the default arm64 environment being `arm64` (which may not exist).
fn build(env: &Env, args: &[&str], arm64: &Path) -> Output {
    env.mkinstaller_env(args, "MKINSTALLER_INSTALLER_ARM64", arm64.to_str().unwrap())
}

fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn boots_on(img: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mkinstaller"))
        .args(["inspect", img.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["boots_on"].clone()
}

#[test]
fn a_mixed_fleet_gets_one_stick_that_boots_both_architectures() {
    let env = Env::new();
    let hosts = mixed_fleet(&env);
    let hosts = hosts.to_str().unwrap();
    let img = env.path("mixed.img");
    let img_s = img.to_str().unwrap();

    // No arm64 environment where mkinstaller looks: refused, before anything is written.
    let out = build(
        &env,
        &["--mass", hosts, "-o", img_s, "--quiet"],
        &env.path("nowhere"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("host arm-1 is built for aarch64-linux, and no installer environment for arm64 machines is given: build one with `images/debian/build --arch arm64`"),
        "{err}"
    );
    assert!(!img.exists(), "a refused build wrote {img_s}");

    // With one (found where mkinstaller looks), both boot.
    let arm64 = testkit::stand_in_installer_arm64(env.tmp.path());
    let out = build(&env, &["--mass", hosts, "-o", img_s, "--quiet"], &arm64);
    succeeded(&out);
    assert_eq!(
        boots_on(&img),
        serde_json::json!(["x86_64-linux", "aarch64-linux"])
    );
    assert_eq!(
        partition_file(&img, 0, "EFI/BOOT/BOOTAA64.EFI"),
        fs::read(arm64.join("systemd-bootaa64.efi")).unwrap()
    );
    assert_eq!(
        partition_file(&img, 0, "EFI/BOOT/BOOTX64.EFI"),
        fs::read(env.installer.join("systemd-bootx64.efi")).unwrap()
    );
    assert_eq!(
        partition_file(&img, 0, "autoinstall/aa64/initrd"),
        fs::read(arm64.join("initrd")).unwrap()
    );
    let entry = String::from_utf8(partition_file(
        &img,
        0,
        "loader/entries/autoinstall-aa64.conf",
    ))
    .unwrap();
    assert!(
        entry.contains("\narchitecture aa64\nlinux /autoinstall/aa64/kernel\n"),
        "{entry}"
    );
    assert!(
        entry.contains("options console=tty0 console=ttyAMA0,115200 autoinstall.payload=PARTUUID="),
        "{entry}"
    );
    let x64 =
        String::from_utf8(partition_file(&img, 0, "loader/entries/autoinstall.conf")).unwrap();
    assert!(
        x64.contains("\narchitecture x64\n") && x64.contains("console=ttyS0"),
        "{x64}"
    );

    // Named with --installer instead: the same stick, byte for byte.
    let named = env.path("named.img");
    let out = build(
        &env,
        &[
            "--mass",
            hosts,
            "-o",
            named.to_str().unwrap(),
            "--quiet",
            "--installer",
            arm64.to_str().unwrap(),
        ],
        &env.path("nowhere"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fs::read(&img).unwrap() == fs::read(&named).unwrap(),
        "the two sticks differ"
    );

    // Netboot files carry one kernel: refused for a fleet of two architectures.
    let out = build(
        &env,
        &[
            "--mass",
            hosts,
            "--format",
            "netboot",
            "-o",
            env.path("tftp").to_str().unwrap(),
            "--quiet",
        ],
        &arm64,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("netboot files boot one architecture, not amd64 and arm64"),
        "{err}"
    );
    assert!(!env.path("tftp").exists());

    // Two environments for one architecture: refused.
    let out = env.mkinstaller(&[
        "--mass",
        hosts,
        "-o",
        env.path("two.img").to_str().unwrap(),
        "--installer",
        env.installer.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("are both for amd64 machines: give one environment per architecture"),
        "{err}"
    );
}

#[test]
fn a_fleet_of_one_architecture_boots_that_one_only() {
    let env = Env::new();
    let (hosts, _) = env.fleet("one-arch");
    let img = env.path("x64.img");
    let arm64 = testkit::stand_in_installer_arm64(env.tmp.path());
    let out = build(
        &env,
        &[
            "--mass",
            hosts.to_str().unwrap(),
            "-o",
            img.to_str().unwrap(),
            "--quiet",
        ],
        &arm64,
    );
    succeeded(&out);
    assert_eq!(boots_on(&img), serde_json::json!(["x86_64-linux"]));
    let entry =
        String::from_utf8(partition_file(&img, 0, "loader/entries/autoinstall.conf")).unwrap();
    assert!(!entry.contains("architecture"), "{entry}");
}
