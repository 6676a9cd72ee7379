//! mkinstaller's other outputs as a user meets them: a hybrid ISO (xorriso, sgdisk, a
//! FUSE mount and the real Nix), signed images Nix itself checks, a `--format cache` site (on
//! disk and behind a real nginx) and netboot directories.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use testkit::{build_fixture, requisites, run, FatMount, Loop};

/// `-o fleet.iso`: a hybrid image that xorriso reads as an ISO with a UEFI El Torito entry and
/// sgdisk as a valid GPT disk with the ESP appended; mounted (fuseiso: this kernel has no
/// iso9660), it serves `nix copy` for every host; `inspect` and `verify` read it
/// (and verify finds a flipped byte); the same inputs give the same bytes, and another
/// SOURCE_DATE_EPOCH other bytes; `--size` is refused for an ISO.
#[test]
fn iso_output_is_a_hybrid_iso_nix_can_read() {
    let env = Env::new();
    let (hosts, tops) = env.fleet("1");
    let hosts_s = hosts.to_str().unwrap();
    let (a, b) = (env.path("a.iso"), env.path("b.iso"));
    env.ok(&["--mass", hosts_s, "-o", a.to_str().unwrap(), "--quiet"]);
    // Another second, and the second build takes the NARs from the cache: neither may show.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.ok(&["--mass", hosts_s, "-o", b.to_str().unwrap(), "--quiet"]);
    let iso = a.to_str().unwrap();

    let toc = Command::new("xorriso")
        .args(["-indev", iso, "-toc"])
        .output()
        .unwrap();
    let toc =
        String::from_utf8_lossy(&toc.stdout).to_string() + &String::from_utf8_lossy(&toc.stderr);
    assert!(
        toc.contains("platform_id=0xEF"),
        "no UEFI El Torito entry:\n{toc}"
    );
    assert!(
        toc.contains("Joliet") && toc.contains("Rock_Ridge"),
        "{toc}"
    );
    assert!(toc.contains("AIPAYLOAD_"), "volume id:\n{toc}");
    let sgdisk = run("sgdisk", &["-v", iso]);
    assert!(sgdisk.contains("No problems found"), "sgdisk -v: {sgdisk}");
    let json: serde_json::Value = serde_json::from_str(&run("sfdisk", &["-J", iso])).unwrap();
    let parts = json["partitiontable"]["partitions"].as_array().unwrap();
    assert!(
        parts.iter().any(|p| p["type"] == ESP_TYPE),
        "no ESP partition: {json}"
    );
    // The ESP (checked with fsck and mtools) boots the installer and names this ISO's label.
    let esp = parts.iter().find(|p| p["type"] == ESP_TYPE).unwrap();
    let at = esp["start"].as_u64().unwrap() * 512;
    let entry = run(
        "mtype",
        &[
            "-i",
            &format!("{iso}@@{at}"),
            "::/loader/entries/autoinstall.conf",
        ],
    );
    assert!(
        entry.contains("autoinstall.payload=LABEL=AIPAYLOAD_"),
        "{entry}"
    );

    // Mounted as a user would (through FUSE: this kernel has no iso9660), Nix reads it.
    let tree = env.path("mounted");
    fs::create_dir_all(&tree).unwrap();
    run("fuseiso", &[iso, tree.to_str().unwrap()]);
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("fusermount").arg("-u").arg(&self.0).status();
        }
    }
    let mounted = Unmount(tree.clone());
    assert!(tree.join("autoinstall/manifest.json").is_file());
    assert!(tree.join("autoinstall/reports").is_dir());
    nix_installs_every_host(&tree, &tops);
    drop(mounted);

    let shown = env.ok(&["inspect", iso, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["hosts"].as_array().unwrap().len(), 3, "{shown}");
    env.ok(&["verify", iso, "--quiet"]);

    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "two ISOs of the same fleet differ"
    );
    let c = env.path("c.iso");
    let out = env.mkinstaller_env(
        &["--mass", hosts_s, "-o", c.to_str().unwrap(), "--quiet"],
        "SOURCE_DATE_EPOCH",
        "1700000000",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fs::read(&a).unwrap() != fs::read(&c).unwrap(),
        "SOURCE_DATE_EPOCH is ignored"
    );

    // A flipped byte in the largest NAR: verify names the path.
    let lbas = run(
        "xorriso",
        &[
            "-indev",
            iso,
            "-find",
            "/nar",
            "-type",
            "f",
            "-exec",
            "report_lba",
        ],
    );
    let (lba, size) = lbas
        .lines()
        .filter_map(|l| l.strip_prefix("File data lba:"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f[1].parse::<u64>().unwrap(), f[3].parse::<u64>().unwrap())
        })
        .max_by_key(|&(_, size)| size)
        .expect("NARs on the ISO");
    let mut bytes = fs::read(&a).unwrap();
    bytes[(lba * 2048 + size / 2) as usize] ^= 0x55;
    fs::write(&a, &bytes).unwrap();
    let out = env.mkinstaller(&["verify", iso]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("/nix/store/"),
        "{said}"
    );

    let out = env.mkinstaller(&["--mass", hosts_s, "-o", iso, "--size", "1G"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("--size"), "{said}");
}

/// `--sign-key`: Nix itself accepts the stick's narinfo signatures under the public key (no
/// `--no-check-sigs`) and refuses them under another; the manifest carries a detached
/// signature; an unreadable key file is refused before anything is written.
#[test]
fn signed_images_pass_nix_signature_checks() {
    let env = Env::new();
    let top = build_fixture("tiny-fleet.nix", Some("host-1"), &[]);
    let key = nixstore::keys::SecretKey::generate("fleet-sign-test-1").unwrap();
    let other = nixstore::keys::SecretKey::generate("fleet-sign-test-1").unwrap();
    let key_file = env.path("secret.key");
    fs::write(&key_file, key.to_text() + "\n").unwrap();
    let img = env.path("signed.img");
    let k = key_file.to_str().unwrap();
    env.ok(&[
        "--system",
        &top,
        "-o",
        img.to_str().unwrap(),
        "--sign-key",
        k,
        "--quiet",
    ]);

    let lo = Loop::attach(&img, true);
    let payload = FatMount::new(&lo.partition(2));
    let sig = fs::read_to_string(payload.path().join("autoinstall/manifest.json.sig")).unwrap();
    let manifest = fs::read_to_string(payload.path().join("autoinstall/manifest.json")).unwrap();
    assert!(key.public().verify(&manifest, sig.trim()), "{sig}");
    let from = format!("file://{}", payload.path().display());
    let copy = |public: &str| {
        let root = tempfile::tempdir().unwrap();
        let out = nix_copy_requiring_sigs(&from, root.path(), &top, public);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, said) = copy(&key.public().to_text());
    assert!(ok, "nix copy refused our signatures: {said}");
    let (ok, said) = copy(&other.public().to_text());
    assert!(
        !ok,
        "nix copy accepted a path signed by another key: {said}"
    );
    drop(payload);
    drop(lo);

    fs::write(&key_file, "not a key").unwrap();
    let bad = env.path("bad.img");
    let out = env.mkinstaller(&[
        "--system",
        &top,
        "-o",
        bad.to_str().unwrap(),
        "--sign-key",
        k,
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("--sign-key"),
        "{said}"
    );
    assert!(!bad.exists());
}

/// `--format cache -o site/`: a directory that is a Nix binary cache (`nix copy --from
/// file://site` installs every host) with the manifest, a signed lookup file per serial
/// (under the serial's key, URL-safe), read by `inspect` and `verify`; rebuilt in place; a
/// directory that is not ours is refused.
#[test]
fn cache_directory_output_is_a_binary_cache_with_per_serial_lookups() {
    let env = Env::new();
    let (hosts, tops) = env.fleet("1");
    let hosts_s = hosts.to_str().unwrap();
    let key = nixstore::keys::SecretKey::generate("site-test-1").unwrap();
    let key_file = env.path("secret.key");
    fs::write(&key_file, key.to_text()).unwrap();
    let site = env.path("site");
    let site_s = site.to_str().unwrap();
    let k = key_file.to_str().unwrap();
    env.ok(&[
        "--mass",
        hosts_s,
        "--format",
        "cache",
        "-o",
        site_s,
        "--sign-key",
        k,
        "--quiet",
    ]);
    nix_installs_every_host(&site, &tops);
    for (i, top) in tops.iter().enumerate() {
        let lookup = site.join(format!("autoinstall/hosts/TEST-SN-{:04}.json", i + 1));
        let text = fs::read_to_string(&lookup).unwrap();
        // A manifest of that one host.
        let one = manifest::document::Manifest::parse(&text).unwrap();
        assert_eq!(one.hosts.len(), 1, "{text}");
        assert_eq!(one.hosts[0].toplevel, top.as_str(), "{text}");
        assert_eq!(one.hosts[0].name, format!("host-{}", i + 1));
        let sig = fs::read_to_string(lookup.with_extension("json.sig")).unwrap();
        assert!(key.public().verify(&text, sig.trim()), "{sig}");
    }
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", site_s, "--json"])).unwrap();
    assert_eq!(shown["hosts"].as_array().unwrap().len(), 3);
    env.ok(&["verify", site_s, "--quiet"]);
    // Again onto the same directory: replaced, still whole.
    env.ok(&[
        "--mass", hosts_s, "--format", "cache", "-o", site_s, "--quiet",
    ]);
    assert!(!site
        .join("autoinstall/hosts/TEST-SN-0001.json.sig")
        .exists());
    env.ok(&["verify", site_s, "--quiet"]);

    let theirs = env.path("theirs");
    fs::create_dir_all(&theirs).unwrap();
    fs::write(theirs.join("keep"), "someone's file").unwrap();
    let out = env.mkinstaller(&[
        "--mass",
        hosts_s,
        "--format",
        "cache",
        "-o",
        theirs.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("is not a directory written by mkinstaller"),
        "{said}"
    );
    assert_eq!(
        fs::read_to_string(theirs.join("keep")).unwrap(),
        "someone's file"
    );
}

/// A `--format cache` site behind a real nginx on 127.0.0.1: Nix installs every host from it
/// over HTTP with signatures required, and the per-serial lookup is one static GET.
#[test]
fn a_cache_site_served_by_nginx_is_a_signed_binary_cache() {
    let env = Env::new();
    let (hosts, tops) = env.fleet("1");
    let key = nixstore::keys::SecretKey::generate("site-http-test-1").unwrap();
    let key_file = env.path("secret.key");
    fs::write(&key_file, key.to_text()).unwrap();
    let site = env.path("site");
    env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "--format",
        "cache",
        "-o",
        site.to_str().unwrap(),
        "--sign-key",
        key_file.to_str().unwrap(),
        "--quiet",
    ]);
    let server = testkit::Nginx::serve(&site);
    let public = key.public().to_text();
    for top in &tops {
        let root = tempfile::tempdir().unwrap();
        let out = nix_copy_requiring_sigs(&server.url(), root.path(), top, &public);
        assert!(
            out.status.success(),
            "nix copy over HTTP: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(requisites(Some(root.path()), top), requisites(None, top));
    }
    let lookup = run(
        "curl",
        &[
            "-fsS",
            &format!("{}/autoinstall/hosts/TEST-SN-0002.json", server.url()),
        ],
    );
    assert!(lookup.contains(&tops[1]), "{lookup}");
}

/// `--format netboot -o dir/`: the environment's kernel, its initrd with the payload appended
/// as a cpio archive (GNU cpio extracts it, and the extracted tree is a binary cache Nix
/// installs every host from), an iPXE script that boots them with the payload's location, and
/// a UKI whose sections objdump shows (the stand-in environment gets the host's systemd stub).
/// `--online URL` makes the same files without a fleet, pointing at the site; a bad URL and
/// `--online` with `--format cache` are refused, writing nothing.
#[test]
fn netboot_output_boots_the_installer_with_its_payload_or_a_url() {
    let env = Env::new();
    fs::copy(
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        env.installer.join("linuxx64.efi.stub"),
    )
    .expect("tests/setup installs systemd-boot-efi, which has the stub");
    let (hosts, tops) = env.fleet("1");
    let dir = env.path("tftp");
    let d = dir.to_str().unwrap();
    env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "--format",
        "netboot",
        "-o",
        d,
        "--quiet",
    ]);
    let mut names = testkit::list_files(&dir);
    names.sort();
    assert_eq!(
        names,
        ["autoinstall.efi", "boot.ipxe", "initrd", "vmlinuz"],
        "{names:?}"
    );
    assert!(
        fs::read(dir.join("vmlinuz")).unwrap() == fs::read(env.installer.join("kernel")).unwrap()
    );
    let script = fs::read_to_string(dir.join("boot.ipxe")).unwrap();
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains("\nkernel vmlinuz initrd=initrd console=tty0 console=ttyS0,115200 autoinstall.payload=/autoinstall-payload\n"),
        "{script}"
    );
    assert!(script.contains("\ninitrd initrd\nboot\n"), "{script}");

    // The initrd: the environment's bytes, zeros to a 4-byte boundary, then our archive.
    let initrd = fs::read(dir.join("initrd")).unwrap();
    let base = fs::read(env.installer.join("initrd")).unwrap();
    assert!(initrd.starts_with(&base));
    let start = base.len().div_ceil(4) * 4;
    assert!(initrd[base.len()..start].iter().all(|b| *b == 0));
    let unpacked = env.path("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    let mut cpio = Command::new("cpio")
        .args(["-i", "--quiet", "-d", "--no-absolute-filenames", "-D"])
        .arg(&unpacked)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    cpio.stdin
        .take()
        .unwrap()
        .write_all(&initrd[start..])
        .unwrap();
    assert!(cpio.wait().unwrap().success());
    nix_installs_every_host(&unpacked.join("autoinstall-payload"), &tops);

    // The UKI: systemd's stub with our sections, the command line as in the script.
    let sections = run(
        "objdump",
        &["-h", dir.join("autoinstall.efi").to_str().unwrap()],
    );
    for s in [".osrel", ".cmdline", ".linux", ".initrd"] {
        assert!(sections.contains(s), "{s} missing:\n{sections}");
    }
    let cmdline = env.path("cmdline");
    run(
        "objcopy",
        &[
            "-O",
            "binary",
            "--only-section=.cmdline",
            dir.join("autoinstall.efi").to_str().unwrap(),
            cmdline.to_str().unwrap(),
        ],
    );
    assert!(fs::read_to_string(&cmdline)
        .unwrap()
        .ends_with("autoinstall.payload=/autoinstall-payload"));

    // Online: no fleet, the URL on the command line, the initrd as the environment has it.
    let online = env.path("online");
    let o = online.to_str().unwrap();
    env.ok(&[
        "--online",
        "http://10.0.0.1:8080/fleet",
        "--format",
        "netboot",
        "-o",
        o,
        "--quiet",
    ]);
    let script = fs::read_to_string(online.join("boot.ipxe")).unwrap();
    assert!(
        script.contains(" autoinstall.url=http://10.0.0.1:8080/fleet\n"),
        "{script}"
    );
    assert!(fs::read(online.join("initrd")).unwrap() == base);
    // … and as a USB image: the ESP's entry says the same.
    let img = env.path("online.img");
    env.ok(&[
        "--online",
        "http://10.0.0.1:8080/fleet",
        "-o",
        img.to_str().unwrap(),
        "--quiet",
    ]);
    let esp = media::image::Image::open(&img).unwrap().esp;
    let entry = run(
        "mtype",
        &[
            "-i",
            &format!("{}@@{}", img.display(), esp.start),
            "::/loader/entries/autoinstall.conf",
        ],
    );
    assert!(
        entry.contains(" autoinstall.url=http://10.0.0.1:8080/fleet"),
        "{entry}"
    );

    for (args, said) in [
        (
            vec!["--online", "ftp://x/", "--format", "netboot"],
            "expected the cache site's http://",
        ),
        (
            vec!["--online", "http://x/a b", "--format", "netboot"],
            "without spaces",
        ),
        (
            vec!["--online", "http://x/", "--format", "cache"],
            "make the site itself with --mass",
        ),
    ] {
        let bad = env.path("bad");
        let mut args = args.clone();
        args.extend(["-o", bad.to_str().unwrap()]);
        let out = env.mkinstaller(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(said),
            "{args:?}: {err}"
        );
        assert!(!bad.exists());
    }
}

/// `--format kexec`: the installer's kernel, its initrd with the payload (as netboot's), its
/// command line, the static helper, a `run` script and the same in one self-extracting
/// `autoinstall.run`, which unpacks (here only unpacks: it would reboot this machine) to
/// exactly those files. (The helper itself: autoinstall-terminal's tests/cli.rs.)
#[test]
fn kexec_bundle_unpacks_to_the_installer_and_its_payload() {
    let env = Env::new();
    // The environment's static helper (images/debian/build puts autoinstall-terminal there):
    // a stand-in, since nothing here may kexec.
    fs::write(
        env.installer.join("autoinstall-terminal"),
        "#!/bin/sh\nexit 1\n",
    )
    .unwrap();
    let (hosts, _) = env.fleet("1");
    let dir = env.path("bundle");
    let d = dir.to_str().unwrap();
    env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "--format",
        "kexec",
        "-o",
        d,
        "--quiet",
    ]);
    let mut names = testkit::list_files(&dir);
    names.sort();
    assert_eq!(
        names,
        [
            "autoinstall-terminal",
            "autoinstall.run",
            "cmdline",
            "initrd",
            "run",
            "vmlinuz"
        ]
    );
    assert_eq!(
        fs::read_to_string(dir.join("cmdline")).unwrap(),
        "console=tty0 console=ttyS0,115200 autoinstall.payload=/autoinstall-payload\n"
    );
    let initrd = fs::read(dir.join("initrd")).unwrap();
    assert!(initrd.starts_with(&fs::read(env.installer.join("initrd")).unwrap()));
    assert!(initrd.len() > 100_000, "the payload rides in the initrd");

    let unpacked = env.path("unpacked");
    let out = std::process::Command::new("sh")
        .arg(dir.join("autoinstall.run"))
        .env("AUTOINSTALL_KEXEC_UNPACK_ONLY", "1")
        .env("AUTOINSTALL_KEXEC_DIR", &unpacked)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["vmlinuz", "initrd", "cmdline", "autoinstall-terminal"] {
        assert!(
            fs::read(unpacked.join(f)).unwrap() == fs::read(dir.join(f)).unwrap(),
            "{f} unpacked differs"
        );
    }
    // Cut short (a copy that did not finish): refused, naming what is missing.
    let whole = fs::read(dir.join("autoinstall.run")).unwrap();
    let cut = env.path("cut.run");
    fs::write(&cut, &whole[..whole.len() - 1000]).unwrap();
    let out = std::process::Command::new("sh")
        .arg(&cut)
        .env("AUTOINSTALL_KEXEC_UNPACK_ONLY", "1")
        .env("AUTOINSTALL_KEXEC_DIR", env.path("cut"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is cut short"));
}

/// With GRUB's El Torito image for BIOS in the environment (made with the real grub-mkimage,
/// as images/debian/build makes it), the ISO gets a BIOS El Torito entry before the UEFI one,
/// with GRUB's boot information patched in, and the kernel, initrd and grub.cfg GRUB reads
/// from the CD; with boot_hybrid.img, GRUB's MBR code for the ISO written to a stick, the GPT
/// still valid. Booting both under SeaBIOS is tests/vm/boot-bios.
#[test]
fn iso_output_boots_a_bios_from_the_cd_where_the_environment_has_grub_for_it() {
    let env = Env::new();
    let (hosts, _) = env.fleet("1");
    std::fs::copy(
        "/usr/lib/grub/i386-pc/boot_hybrid.img",
        env.installer.join("bios-hybrid.img"),
    )
    .unwrap();
    let img = env.installer.join("bios-eltorito.img");
    run(
        "grub-mkimage",
        &[
            "-O",
            "i386-pc-eltorito",
            "-d",
            "/usr/lib/grub/i386-pc",
            "-p",
            "/boot/grub",
            "-o",
            img.to_str().unwrap(),
            "biosdisk",
            "iso9660",
            "normal",
            "linux",
        ],
    );
    let iso = env.path("bios.iso");
    env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "-o",
        iso.to_str().unwrap(),
        "--quiet",
    ]);
    let report = Command::new("xorriso")
        .args([
            "-indev",
            iso.to_str().unwrap(),
            "-report_el_torito",
            "plain",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&report.stdout).to_string();
    let entries: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("El Torito boot img"))
        .collect();
    assert!(
        entries.len() == 2 && entries[0].contains("BIOS") && entries[1].contains("UEFI"),
        "{report}"
    );
    assert!(report.contains("/boot/grub/bios.img"), "{report}");
    assert!(report.contains("grub2-boot-info"), "{report}");
    // Written to a stick: GRUB's MBR code in the system area, the GPT still valid.
    let area = Command::new("xorriso")
        .args([
            "-indev",
            iso.to_str().unwrap(),
            "-report_system_area",
            "plain",
        ])
        .output()
        .unwrap();
    let area = String::from_utf8_lossy(&area.stdout).to_string();
    assert!(area.contains("grub2-mbr") && area.contains("GPT"), "{area}");
    let sgdisk = run("sgdisk", &["-v", iso.to_str().unwrap()]);
    assert!(sgdisk.contains("No problems found"), "sgdisk -v: {sgdisk}");
    let extracted = env.path("grub.cfg");
    run(
        "xorriso",
        &[
            "-indev",
            iso.to_str().unwrap(),
            "-osirrox",
            "on",
            "-extract",
            "/boot/grub/grub.cfg",
            extracted.to_str().unwrap(),
        ],
    );
    let cfg = fs::read_to_string(&extracted).unwrap();
    assert!(cfg.contains("linux /boot/kernel"), "{cfg}");
}
