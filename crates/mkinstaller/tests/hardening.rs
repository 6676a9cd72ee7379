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
    let secrets = env.path("secrets/host-1/etc/ssh");
    fs::create_dir_all(&secrets).unwrap();
    fs::write(
        secrets.join("ssh_host_ed25519_key"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    let text = fs::read_to_string(&hosts).unwrap().replacen(
        "name = \"host-1\"\n",
        "name = \"host-1\"\nextra-files = \"secrets/host-1\"\n",
        1,
    );
    fs::write(&hosts, text).unwrap();
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
        manifest::media::Manifest::parse(&text).unwrap()
    };
    let whole = read("autoinstall/manifest.json");
    assert_eq!(whole.kind, manifest::media::Kind::Fleet);
    assert_eq!(whole.fleet.as_deref(), Some("office"));
    assert_eq!(whole.generation, 42);
    let one = read("autoinstall/hosts/TEST-SN-0002.json");
    assert_eq!(one.kind, manifest::media::Kind::Lookup);
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
