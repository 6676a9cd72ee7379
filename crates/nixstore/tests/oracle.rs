//! Our store core against the real Nix (Debian's nix-bin, daemonless, as root): NAR bytes,
//! hashes, closures, binary caches, signatures and registration, on a closure built by Nix.

mod common;

use std::fs;
use std::path::Path;

use common::{fixture, nix_cmd, nix_ok, nix_requisites};
use nixstore::binary_cache::{self, CacheOptions};
use nixstore::closure::{self, PathInfo};
use nixstore::import::{check_compressed, import_compressed, import_from_cache, Check};
use nixstore::keys::{PublicKey, SecretKey};
use nixstore::narinfo::NarInfo;
use nixstore::{nar, register, Sha256Hash, StorePath};

fn closure_infos() -> Vec<PathInfo> {
    closure::closure(&[fixture()]).expect("querying the test closure")
}

#[test]
fn nar_bytes_hash_and_size_equal_nix_store_dump() {
    for info in closure_infos() {
        let path = info.path.to_string();
        let theirs = nix_cmd("nix-store", &["--dump", &path]).stdout;
        let mut ours = Vec::new();
        nar::encode(Path::new(&path), &mut ours).unwrap();
        assert!(
            ours == theirs,
            "NAR of {path} differs from nix-store --dump"
        );

        let (hash, size) = nar::dump(Path::new(&path)).unwrap();
        let nix_hash = nix_ok("nix-store", &["-q", "--hash", &path]);
        let nix_size = nix_ok("nix-store", &["-q", "--size", &path]);
        assert_eq!(hash, Sha256Hash::parse(nix_hash.trim()).unwrap(), "{path}");
        assert_eq!(size.to_string(), nix_size.trim(), "{path}");
        assert_eq!((hash, size), (info.nar_hash, info.nar_size), "{path}");
    }
}

#[test]
fn closure_query_equals_nix_store_qr() {
    let infos = closure_infos();
    let ours: Vec<String> = infos.iter().map(|i| i.path.to_string()).collect();
    assert_eq!(ours, nix_requisites(None, &fixture()));
    assert_eq!(infos.len(), 3, "tree, its dependency and busybox");
    let top = infos.iter().find(|i| i.path == fixture()).unwrap();
    let mut refs: Vec<String> = top.references.iter().map(|r| r.to_string()).collect();
    refs.sort();
    let mut nix_refs: Vec<String> =
        nix_ok("nix-store", &["-q", "--references", &fixture().to_string()])
            .lines()
            .map(String::from)
            .collect();
    nix_refs.sort();
    assert_eq!(refs, nix_refs);
    assert!(
        top.references.contains(&fixture()),
        "the fixture refers to itself"
    );
    assert!(top.deriver.is_some());
}

fn write_cache(dir: &Path, key: Option<&SecretKey>) -> Vec<NarInfo> {
    let opts = CacheOptions {
        key,
        threads: 2,
        ..CacheOptions::default()
    };
    closure_infos()
        .iter()
        .map(|info| {
            binary_cache::add_path(dir, info, Path::new(&info.path.to_string()), &opts).unwrap()
        })
        .collect()
}

#[test]
fn nix_copy_reads_our_binary_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let infos = write_cache(&cache, None);
    for info in &infos {
        let text = fs::read_to_string(cache.join(info.file_name())).unwrap();
        assert_eq!(NarInfo::parse(&text).unwrap(), *info);
    }
    let root = tmp.path().join("root");
    let from = format!("file://{}", cache.display());
    nix_ok(
        "nix",
        &[
            "copy",
            "--no-check-sigs",
            "--from",
            &from,
            "--to",
            root.to_str().unwrap(),
            &fixture().to_string(),
        ],
    );
    assert_eq!(
        nix_requisites(Some(&root), &fixture()),
        nix_requisites(None, &fixture())
    );
    nix_ok(
        "nix-store",
        &[
            "--verify",
            "--check-contents",
            "--store",
            root.to_str().unwrap(),
        ],
    );
}

#[test]
fn narinfos_signed_with_a_nix_generated_key_verify_in_nix() {
    let tmp = tempfile::tempdir().unwrap();
    let (sec, public) = (tmp.path().join("sec"), tmp.path().join("pub"));
    nix_ok(
        "nix-store",
        &[
            "--generate-binary-cache-key",
            "oracle-test-1",
            sec.to_str().unwrap(),
            public.to_str().unwrap(),
        ],
    );
    let key = SecretKey::parse(&fs::read_to_string(&sec).unwrap()).unwrap();
    let public = fs::read_to_string(&public).unwrap();
    assert_eq!(
        key.public().to_text(),
        public.trim(),
        "we derive Nix's public key"
    );

    let cache = tmp.path().join("cache");
    let infos = write_cache(&cache, Some(&key));
    let pk = PublicKey::parse(&public).unwrap();
    assert!(infos
        .iter()
        .all(|i| pk.verify(&i.fingerprint(), &i.sigs[0])));

    let from = format!("file://{}", cache.display());
    let copy = |root: &Path, trusted: &str| {
        nix_cmd(
            "nix",
            &[
                "copy",
                "--from",
                &from,
                "--to",
                root.to_str().unwrap(),
                &fixture().to_string(),
                "--option",
                "require-sigs",
                "true",
                "--option",
                "trusted-public-keys",
                trusted,
            ],
        )
    };
    let good = copy(&tmp.path().join("good"), public.trim());
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    // A key Nix does not trust: Nix must refuse our signatures.
    let other = SecretKey::generate("oracle-test-1")
        .unwrap()
        .public()
        .to_text();
    let bad = copy(&tmp.path().join("bad"), &other);
    assert!(
        !bad.status.success(),
        "nix copy accepted a signature by an untrusted key"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("signature"));
}

#[test]
fn keys_we_generate_are_accepted_by_nix() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate("ours-1").unwrap();
    let cache = tmp.path().join("cache");
    write_cache(&cache, Some(&key));
    let root = tmp.path().join("root");
    let out = nix_cmd(
        "nix",
        &[
            "copy",
            "--from",
            &format!("file://{}", cache.display()),
            "--to",
            root.to_str().unwrap(),
            &fixture().to_string(),
            "--option",
            "require-sigs",
            "true",
            "--option",
            "trusted-public-keys",
            &key.public().to_text(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn imported_and_registered_paths_pass_nix_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let narinfos = write_cache(&cache, None);
    let root = tmp.path().join("root");
    register::prepare_root(&root).unwrap();
    let store = root.join("nix/store");
    for info in &narinfos {
        import_from_cache(&cache, info, &store).unwrap();
    }
    let infos: Vec<PathInfo> = closure_infos();
    register::register(&root, &infos).unwrap();
    // Registering again (a rerun after an interruption) is harmless.
    register::register(&root, &infos).unwrap();

    let root_s = root.to_str().unwrap();
    let out = nix_cmd(
        "nix-store",
        &["--verify", "--check-contents", "--store", root_s],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("error"),
        "nix-store --verify: {stderr}"
    );
    assert_eq!(
        nix_requisites(Some(&root), &fixture()),
        nix_requisites(None, &fixture())
    );
    for info in &infos {
        let h = nix_ok(
            "nix-store",
            &["--store", root_s, "-q", "--hash", &info.path.to_string()],
        );
        assert_eq!(Sha256Hash::parse(h.trim()).unwrap(), info.nar_hash);
        // Canonical metadata, as Nix leaves it.
        let meta = fs::symlink_metadata(info.path.under_root(&root)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.mtime(), 1, "{}", info.path);
    }
    let mut valid = register::valid_paths(&root).unwrap();
    valid.sort();
    let mut expected: Vec<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    expected.sort();
    assert_eq!(valid, expected);
}

#[test]
fn unpack_then_encode_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixture().to_string();
    let mut original = Vec::new();
    nar::encode(Path::new(&src), &mut original).unwrap();
    let (stats, _) = nar::unpack(original.as_slice(), tmp.path(), "copy".as_ref()).unwrap();
    assert!(
        stats.files >= 10 && stats.symlinks == 4 && stats.directories >= 7,
        "{stats:?}"
    );
    let mut again = Vec::new();
    nar::encode(&tmp.path().join("copy"), &mut again).unwrap();
    assert!(
        again == original,
        "unpacked tree does not re-encode to the same NAR"
    );
}

#[test]
fn tampered_payloads_are_refused_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let narinfos = write_cache(&cache, None);
    let info = narinfos.iter().find(|i| i.store_path == fixture()).unwrap();
    let store = tmp.path().join("root/nix/store");
    fs::create_dir_all(&store).unwrap();
    let leaves_nothing = |store: &Path| {
        let left: Vec<_> = fs::read_dir(store)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    };

    // A narinfo that lies about the NAR hash: the NAR is unpacked, checked, and thrown away.
    let mut lying = info.clone();
    lying.nar_hash = Sha256Hash::of(b"something else");
    let err = import_from_cache(&cache, &lying, &store).unwrap_err();
    assert!(err.to_string().contains(&fixture().to_string()), "{err}");
    assert!(err.to_string().contains("NAR hash"), "{err}");
    leaves_nothing(&store);

    // The installer's first pass pins the compressed file as it found it.
    let file = cache.join(&info.url);
    let (_, pin) = check_compressed(fs::File::open(&file).unwrap(), &file, info).unwrap();
    assert_eq!(Some(pin.file_hash), info.file_hash);
    // One flipped byte in the compressed file.
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&file, &bytes).unwrap();
    let err = import_from_cache(&cache, info, &store).unwrap_err();
    assert!(err.to_string().contains(&fixture().to_string()), "{err}");
    leaves_nothing(&store);

    // The installer's second pass (the first checked everything): the flipped byte, and a file
    // that still decompresses to the very NAR but is not the file that was checked (another
    // compression level), are both refused by FileHash and leave nothing.
    let pinned = Check::Pinned(pin);
    let err =
        import_compressed(fs::File::open(&file).unwrap(), &file, info, &store, pinned).unwrap_err();
    assert!(err.to_string().contains(&fixture().to_string()), "{err}");
    leaves_nothing(&store);
    let mut nar = Vec::new();
    nar::encode(Path::new(&fixture().to_string()), &mut nar).unwrap();
    let other = zstd::encode_all(nar.as_slice(), 19).unwrap();
    fs::write(&file, &other).unwrap();
    let mut resized = info.clone();
    resized.file_size = Some(other.len() as u64);
    let err = import_compressed(other.as_slice(), &file, &resized, &store, pinned).unwrap_err();
    assert!(err.to_string().contains("has hash"), "{err}");
    leaves_nothing(&store);
    // The same with a narinfo that has no FileHash (it is not signed, so a hostile medium
    // can leave it out): the pin, not the narinfo, is what the second pass checks.
    let mut bare = resized.clone();
    bare.file_hash = None;
    bare.file_size = None;
    let err = import_compressed(other.as_slice(), &file, &bare, &store, pinned).unwrap_err();
    assert!(err.to_string().contains("has hash"), "{err}");
    leaves_nothing(&store);
}
