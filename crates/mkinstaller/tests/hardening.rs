//! mkinstaller's side of the hardening: a cache site never shares a writable file with the
//! NAR cache (and the cache notices a file changed under it), secrets are not published on a
//! site by default, `--verify` reads the output back, and the manifest says what it is.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The site's NARs are copies (one link each, other inodes than the cache's): a write into
/// the site in place (an rsync --inplace, an upload, whoever can write the web root) changes
/// nothing in the cache, and the next stick verifies. A cache file changed in place anyway
/// (by a hand, or by an older mkinstaller's hard link) is noticed by its recorded stat,
/// hashed again and compressed afresh, so the next stick carries the right bytes.
#[test]
fn a_cache_site_cannot_poison_the_nar_cache() {
    let env = Env::new();
    let (hosts, _) = env.fleet("1");
    let hosts_s = hosts.to_str().unwrap();
    let site = env.path("site");
    env.ok(&[
        "--mass",
        hosts_s,
        "--format",
        "cache",
        "-o",
        site.to_str().unwrap(),
        "-q",
    ]);
    let cached: Vec<_> = files(&env.path("cache"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".nar.zst"))
        .collect();
    assert!(!cached.is_empty());
    let cache_inodes: Vec<u64> = cached
        .iter()
        .map(|p| fs::metadata(p).unwrap().ino())
        .collect();
    let mut site_nars: Vec<_> = files(&site.join("nar"));
    site_nars.sort_by_key(|p| std::cmp::Reverse(fs::metadata(p).unwrap().len()));
    for nar in &site_nars {
        let m = fs::metadata(nar).unwrap();
        assert_eq!(m.nlink(), 1, "{} is linked", nar.display());
        assert!(
            !cache_inodes.contains(&m.ino()),
            "{} shares the cache's inode",
            nar.display()
        );
    }
    // Someone writes into the site in place.
    let victim = &site_nars[0];
    let f = fs::OpenOptions::new().write(true).open(victim).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"\0\0\0\0", 100).unwrap();
    drop(f);
    let stick = env.path("stick.img");
    env.ok(&[
        "--mass",
        hosts_s,
        "-o",
        stick.to_str().unwrap(),
        "-q",
        "--verify",
    ]);
    env.ok(&["verify", stick.to_str().unwrap(), "--quiet"]);

    // A cache file changed in place: noticed, and compressed again.
    let biggest = cached
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut perms = fs::metadata(biggest).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    fs::set_permissions(biggest, perms).unwrap();
    let f = fs::OpenOptions::new().write(true).open(biggest).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"\0\0\0\0", 100).unwrap();
    drop(f);
    let again = env.path("again.img");
    let out = env.ok(&[
        "--mass",
        hosts_s,
        "-o",
        again.to_str().unwrap(),
        "--json",
        "--verify",
    ]);
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["paths_compressed"], 1, "{summary}");
    env.ok(&["verify", again.to_str().unwrap(), "--quiet"]);
}

/// Extra files (SSH host keys and the like) would be served to anyone who can reach a cache
/// site: refused unless --public-extra-files, and nothing is written.
#[test]
fn extra_files_are_not_published_on_a_cache_site_by_default() {
    let env = Env::new();
    let (hosts, _) = env.fleet("1");
    common::add_extra_file(&env, &hosts, "-----BEGIN OPENSSH PRIVATE KEY-----\n");
    let site = env.path("site");
    let args = [
        "--mass",
        hosts.to_str().unwrap(),
        "--format",
        "cache",
        "-o",
        site.to_str().unwrap(),
    ];
    let out = env.mkinstaller(&args);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("in the clear") && said.contains("--public-extra-files"),
        "{said}"
    );
    assert!(!site.exists(), "a refused build wrote its output");
    let mut public = args.to_vec();
    public.extend(["--public-extra-files", "-q"]);
    env.ok(&public);
    assert!(site
        .join("autoinstall/extra-files/host-1/etc/ssh/ssh_host_ed25519_key")
        .is_file());
    // A stick keeps them (it is carried by hand, not served).
    env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "-o",
        env.path("s.img").to_str().unwrap(),
        "-q",
    ]);
}

/// The manifest and each lookup say what they are, for which serial, of which fleet and
/// generation, inside the bytes that are signed.
#[test]
fn manifests_and_lookups_say_what_they_are() {
    let env = Env::new();
    let (hosts, _) = env.fleet("1");
    let text = fs::read_to_string(&hosts).unwrap().replacen(
        "[defaults]\n",
        "[defaults]\nfleet = \"office\"\ngeneration = 42\n",
        1,
    );
    fs::write(&hosts, text).unwrap();
    let site = env.path("site");
    env.ok(&[
        "--mass",
        hosts.to_str().unwrap(),
        "--format",
        "cache",
        "-o",
        site.to_str().unwrap(),
        "-q",
    ]);
    let read = |p: &str| {
        let text = fs::read_to_string(site.join(p)).unwrap();
        manifest::document::Manifest::parse(&text).unwrap()
    };
    let whole = read("autoinstall/manifest.json");
    assert_eq!(whole.kind, manifest::document::Kind::Fleet);
    assert_eq!(whole.fleet.as_deref(), Some("office"));
    assert_eq!(whole.generation, 42);
    let one = read("autoinstall/hosts/TEST-SN-0002.json");
    assert_eq!(one.kind, manifest::document::Kind::Lookup);
    assert_eq!(one.lookup_key.as_deref(), Some("TEST-SN-0002"));
    assert_eq!(one.hosts.len(), 1);
    assert_eq!(one.generation, 42);
    // --verify has nothing to read back in netboot files.
    let out = env.mkinstaller(&[
        "--mass",
        hosts.to_str().unwrap(),
        "--format",
        "netboot",
        "-o",
        env.path("tftp").to_str().unwrap(),
        "--verify",
    ]);
    assert!(!out.status.success());
    assert!(!env.path("tftp").exists());
}

/// Fleet mistakes are caught before anything is written, naming the file, the line and the
/// host: a system that is not in the store, a system that is not a bootable NixOS toplevel
/// (unless the host says bootable = false); a host that can never be installed (no serials
/// under `refuse`) is warned about.
#[test]
fn fleet_mistakes_are_caught_before_anything_is_written() {
    let env = Env::new();
    let (hosts, tops) = env.fleet("1");
    let good = fs::read_to_string(&hosts).unwrap();
    let out_path = env.path("out.img");
    let try_fleet = |text: &str| {
        fs::write(&hosts, text).unwrap();
        env.mkinstaller(&[
            "--mass",
            hosts.to_str().unwrap(),
            "-o",
            out_path.to_str().unwrap(),
        ])
    };
    let refused = |text: &str, expect: &[&str]| {
        let out = try_fleet(text);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{said}");
        for e in expect {
            assert!(said.contains(e), "{e:?} not in: {said}");
        }
        assert!(!out_path.exists(), "a refused build wrote its output");
        let partial = env.path(".out.img.partial");
        assert!(
            !partial.exists(),
            "a refused build left {}",
            partial.display()
        );
    };
    // Not in the store.
    let gone = format!("/nix/store/{}-nixos-system-gone-1", "1".repeat(32));
    refused(
        &good.replacen(&tops[1], &gone, 1),
        &[
            "hosts.toml:",
            "host \"host-2\"",
            "not in this machine's Nix store",
        ],
    );
    // Not a bootable system, and the host does not say so.
    refused(
        &good.replacen("bootable = false\n", "", 1),
        &[
            "host \"host-1\"",
            "not a bootable NixOS system",
            "bootable = false",
        ],
    );
    // No serials under refuse: built, with a warning.
    let out = try_fleet(&good.replacen("serials = [\"TEST-SN-0003\"]\n", "", 1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("warning") && said.contains("host-3") && said.contains("never install it"),
        "{said}"
    );
}

/// The output is checked before anything is written: an existing directory where an image
/// file goes, a stick too small for the image (a file standing in for it here: --size), a
/// file where a site's directory goes; and an unknown --format is a usage error (2).
#[test]
fn outputs_are_checked_before_anything_is_written() {
    let env = Env::new();
    let (hosts, _) = env.fleet("1");
    let h = hosts.to_str().unwrap();
    let dir = env.path("a-directory");
    fs::create_dir_all(&dir).unwrap();
    let out = env.mkinstaller(&["--mass", h, "-o", dir.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(
        said.contains("is a directory; name the image file"),
        "{said}"
    );
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);

    let file = env.path("a-file");
    fs::write(&file, "keep").unwrap();
    let out = env.mkinstaller(&[
        "--mass",
        h,
        "--format",
        "cache",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(fs::read_to_string(&file).unwrap(), "keep");

    let out = env.mkinstaller(&["--mass", h, "--format", "tarball", "-o", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usb, iso, cache, netboot"));

    // Completions and the man page come from the same definitions.
    for args in [&["completions", "bash"][..], &["man"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mkinstaller"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.len() > 1000, "{args:?}");
    }
}
