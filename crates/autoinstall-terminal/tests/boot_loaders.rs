//! The boot loader steps of hosts that do more than copy systemd-boot, run for real on loop
//! disks (root only): GRUB for BIOS (Debian's grub-install, from the host's closure) goes to
//! the disk the installer chose, never to the one the host's configuration names; a host that
//! signs its boot files (as lanzaboote does) signs them with the db key its extra files
//! deliver. What the hosts then boot is tests/vm/boot-bios's and tests/vm/install-fleet's.

mod common;

use std::fs;
use std::io::Read;
use std::path::PathBuf;

use common::*;
use testkit::run;

/// A tool staged from Debian's packages by images/debian/lib.sh's `function`, after
/// fetching the packages its array `packages` names (as the demo fleet's build does, holding
/// the download cache's lock: tests/run builds the installer environment meanwhile).
fn stage(env: &Env, packages: &str, function: &str) -> PathBuf {
    let dir = env.path(function);
    let repo = testkit::repo_root();
    run(
        "bash",
        &[
            "-c",
            &format!(
                r#"source "$1/images/debian/lib.sh" && mkdir -p "$DEB_CACHE" && exec 9>"$DEB_CACHE/lock" && flock 9 && fetch_debs "${{{packages}[@]}}" >&2 && {function} "$2""#
            ),
            "_",
            repo.to_str().unwrap(),
            dir.to_str().unwrap(),
        ],
    );
    dir
}

/// A host that boots by BIOS (disko's shape: a BIOS boot partition and an ext4 root) whose
/// configuration installs GRUB to a disk that is another disk on this machine, as a
/// configuration written elsewhere does (`/dev/sda` there may be the stick here). The
/// host's own boot loader step (the real grub-install, from its closure) writes GRUB to the
/// disk the installer chose, and not one byte to the disk the configuration names.
#[test]
fn grub_for_bios_goes_to_the_chosen_disk_not_to_the_one_the_configuration_names() {
    let Some((_serial, env, _tops)) = root_env() else {
        return;
    };
    // GRUB for i386-pc from Debian's packages, staged as the demo fleet stages it.
    let grub = stage(&env, "GRUB_BIOS_PACKAGES", "stage_grub_bios");
    let decoy = LoopDisk::new(env.path("decoy.img"), "64M");
    let main = LoopDisk::new(env.path("main.img"), "9G");
    let top = env.demo_host(
        "demo-bios",
        &[("grub", grub.to_str().unwrap()), ("biosDisk", &decoy.dev)],
    );
    let layout = env.path("bios.json");
    fs::write(
        &layout,
        format!(
            r#"{{"disk":{{"main":{{"type":"disk","device":"{}","content":{{"type":"gpt","partitions":{{
  "boot":{{"type":"EF02","size":"1M","priority":1}},
  "root":{{"size":"100%","content":{{"type":"filesystem","format":"ext4","mountpoint":"/"}}}}}}}}}}}}}}"#,
            decoy.dev
        ),
    )
    .unwrap();
    let toml = fleet_toml("confirm-seconds = 0", &[])
        + &format!(
            "\n[[host]]\nname = \"demo-bios\"\nserials = [\"DEMO-SN-0010\"]\nsystem = \"{top}\"\ndisko = \"{}\"\n",
            layout.display()
        );
    let stick = env.medium_from(&toml, "stick.img", &[]);
    let install = |last: &str| {
        env.install(&[
            "--payload",
            stick.to_str().unwrap(),
            "--host",
            "demo-bios",
            "--disk",
            &main.dev,
            last,
            "--json",
        ])
    };
    let out = install("--dry-run");
    assert_ok(&out);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["host_boot"]["bios"], true);
    assert_eq!(plan["host_boot"]["uefi"], false);
    assert_eq!(
        plan["grub_devices"][0]["configured"].as_str(),
        Some(decoy.dev.as_str())
    );
    assert_eq!(
        plan["grub_devices"][0]["path"].as_str(),
        Some(main.dev.as_str())
    );
    let out = install("--yes");
    assert_ok(&out);
    // The report warns of the next rebuild, which would write to the configuration's disk.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warning = report["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains(&format!(
            "names its boot disk by a path that is another disk or none on this machine ({})",
            decoy.dev
        )),
        "{report}"
    );
    assert!(
        decoy.untouched(),
        "GRUB was written to the disk the configuration names"
    );
    // The chosen disk: GRUB's boot sector in its MBR (it names itself), its core image in
    // the BIOS boot partition (it starts with the diskboot sector's code, never zeros), and
    // the host's grub.cfg on the root booting its kernel.
    let first_sector = |dev: &str| {
        let mut b = [0u8; 512];
        fs::File::open(dev).unwrap().read_exact(&mut b).unwrap();
        b
    };
    let mbr = first_sector(&main.dev);
    assert!(
        mbr.windows(4).any(|w| w == b"GRUB"),
        "no GRUB boot code in the MBR"
    );
    assert!(
        first_sector(&main.part(1)).iter().any(|&b| b != 0),
        "no core image in the BIOS boot partition"
    );
    let mnt = env.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    run("mount", &["-o", "ro", &main.part(2), mnt.to_str().unwrap()]);
    let cfg = fs::read_to_string(mnt.join("boot/grub/grub.cfg"));
    let core_img = mnt.join("boot/grub/i386-pc/core.img").exists();
    run("umount", &[mnt.to_str().unwrap()]);
    let cfg = cfg.unwrap();
    assert!(cfg.contains(&format!("init={top}/init")), "{cfg}");
    assert!(core_img, "grub-install left no core.img in /boot/grub");
}

/// demo-sb's boot loader step (standing in for lanzaboote) signs systemd-boot and the kernel
/// on the ESP with the Secure Boot db key that its extra files put where lanzaboote keeps it:
/// sbverify with the fleet's db certificate accepts all three files. Without the key, the step
/// fails and says where the key belongs.
#[test]
fn a_host_that_signs_its_boot_files_signs_them_with_its_delivered_key() {
    let Some((_serial, env, _tops)) = root_env() else {
        return;
    };
    let sbsign = stage(&env, "SBSIGN_PACKAGES", "stage_sbsign");
    // A kernel sbsign can sign: a PE image (systemd-boot stands in; it is never booted here).
    let kernel = env.path("pe-kernel");
    fs::create_dir_all(kernel.join("lib/modules/6.1.0-test")).unwrap();
    fs::copy(
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        kernel.join("bzImage"),
    )
    .unwrap();
    fs::write(kernel.join("version"), "6.1.0-test\n").unwrap();
    fs::write(kernel.join("modules.load"), "").unwrap();
    let top = env.demo_host(
        "demo-sb",
        &[
            ("sbsign", sbsign.to_str().unwrap()),
            ("kernel", kernel.to_str().unwrap()),
        ],
    );
    let keys = testkit::repo_root().join("tests/fixtures/secure-boot");
    let files = env.path("demo-sb-files/var/lib/sbctl/keys/db");
    fs::create_dir_all(&files).unwrap();
    fs::copy(keys.join("db.key"), files.join("db.key")).unwrap();
    fs::copy(keys.join("db.crt"), files.join("db.pem")).unwrap();
    let fleet = |extra: &str| {
        fleet_toml("confirm-seconds = 0\nsecrets = \"clear\"", &[])
            + &format!(
                "\n[[host]]\nname = \"demo-sb\"\nserials = [\"DEMO-SN-0009\"]\nsystem = \"{top}\"\n{extra}"
            )
    };
    let with_key = env.medium_from(
        &fleet(&format!(
            "extra-files = \"{}\"\n",
            env.path("demo-sb-files").display()
        )),
        "stick.img",
        &[],
    );
    let install = |stick: &std::path::Path, disk: &LoopDisk| {
        env.install(&[
            "--payload",
            stick.to_str().unwrap(),
            "--host",
            "demo-sb",
            "--disk",
            &disk.dev,
            "--yes",
        ])
    };
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    assert_ok(&install(&with_key, &disk));
    let esp = disk.part(1);
    let kernel = run("mdir", &["-b", "-i", &esp, "::/EFI/nixos"])
        .lines()
        .find(|l| l.ends_with("bzImage.efi"))
        .expect("a kernel on the ESP")
        .to_string();
    for (i, f) in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/EFI/systemd/systemd-bootx64.efi",
        &kernel,
    ]
    .iter()
    .enumerate()
    {
        let out = env.path(&format!("signed-{i}.efi"));
        run("mcopy", &["-o", "-i", &esp, f, out.to_str().unwrap()]);
        run(
            "sbverify",
            &[
                "--cert",
                keys.join("db.crt").to_str().unwrap(),
                out.to_str().unwrap(),
            ],
        );
    }

    // No key delivered: the step fails rather than leave unsigned files behind.
    let without = env.medium_from(&fleet(""), "no-key.img", &[]);
    let other = LoopDisk::new(env.path("other.img"), "9G");
    let out = install(&without, &other);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the Secure Boot signing key is missing: /var/lib/sbctl/keys/db/db.key"),
        "{err}"
    );
    assert!(
        !has_boot_entry(&other),
        "a failed signing left a boot entry"
    );
}
