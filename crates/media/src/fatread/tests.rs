//! Volumes written by our own writer (`fat32.rs`) read back byte for byte.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use super::*;
use crate::fat32::{self, Source, Tree, VolumeOptions};

/// Deterministic bytes that differ from cluster to cluster.
pub(super) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    testkit::pseudo_random(len, seed)
}

pub(super) fn opts() -> VolumeOptions {
    VolumeOptions {
        label: "AIPAYLOAD".into(),
        volume_id: 7,
        hidden_sectors: 0,
        timestamp: 1_700_000_000,
    }
}

/// Writes `tree` at byte `offset` of a temporary file, at the smallest size or at `bytes`.
pub(super) fn write_image(tree: &Tree, bytes: Option<u64>, offset: u64) -> (File, u64) {
    let g = match bytes {
        Some(b) => fat32::geometry_for(tree, b).expect("the tree fits"),
        None => fat32::min_geometry(tree, 0),
    };
    let f = tempfile::tempfile().unwrap();
    f.set_len(offset + g.bytes() + 8192).unwrap();
    fat32::write(&f, offset, &g, tree, &opts(), &mut |_| {}).unwrap();
    (f, g.bytes())
}

/// A tree with what payloads have and what could trip a reader up.
pub(super) fn sample() -> (Tree, Vec<(String, Vec<u8>)>) {
    let mut tree = Tree::new();
    let mut files = Vec::new();
    let mut add = |path: &str, data: Vec<u8>| {
        tree.add_file(path, Source::Bytes(data.clone()));
        files.push((path.to_string(), data));
    };
    add("EFI/BOOT/BOOTX64.EFI", pattern(1, 70_001));
    add("nix-cache-info", b"StoreDir: /nix/store\n".to_vec());
    add("empty", Vec::new());
    add("Mixed.Case", b"upper".to_vec());
    add("mixed.case", b"lower".to_vec());
    add("ünïcødé and spaces.txt", b"hello".to_vec());
    add(
        "a-name-that-is-much-longer-than-thirteen-characters-and-then-some.narinfo",
        b"x".to_vec(),
    );
    add("a/b/c/d/deep.txt", pattern(2, 513));
    add("big.bin", pattern(3, 3 << 20));
    for i in 0..300 {
        add(
            &format!("many/{i:04}-{}.nar.zst", "z".repeat(i % 40)),
            pattern(i as u64 + 10, i * 37),
        );
    }
    tree.add_dir("autoinstall/reports");
    (tree, files)
}

fn read_all<R: Read>(mut r: R) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn every_file_reads_back_at_any_size_and_offset() {
    let (tree, files) = sample();
    // 512-byte clusters at the smallest size, 4 KiB at 600 MiB; one not at byte 0.
    for (bytes, offset) in [(None, 0), (Some(600 << 20), 0), (None, 1 << 20)] {
        let (f, len) = write_image(&tree, bytes, offset);
        let vol = FatVolume::open(f, offset, len, "test.img".into()).unwrap();
        for (path, data) in &files {
            let file = vol
                .open_file(path)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(file.size(), data.len() as u64, "{path}");
            assert!(read_all(file) == *data, "{path} differs");
        }
        vol.check_dir_chains("").unwrap();
        vol.check_dir_chains("autoinstall/reports").unwrap();
        vol.check_dir_chains("/many/").unwrap();
    }
}

#[test]
fn reads_of_every_size_and_seeks_return_the_right_bytes() {
    let (tree, files) = sample();
    let (f, len) = write_image(&tree, None, 0);
    let vol = FatVolume::open(f, 0, len, "test.img".into()).unwrap();
    let data = &files.iter().find(|(p, _)| p == "big.bin").unwrap().1;
    for chunk in [1usize, 7, 511, 4096, 65_535, 65_536, 300_000, 4 << 20] {
        let mut file = vol.open_file("big.bin").unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == *data, "reading in chunks of {chunk}");
    }
    let mut file = vol.open_file("big.bin").unwrap();
    for at in [0u64, 1, 511, 512, 1_000_000, (3 << 20) - 5] {
        file.seek(SeekFrom::Start(at)).unwrap();
        let mut buf = [0u8; 5];
        file.read_exact(&mut buf).unwrap();
        assert_eq!(buf, data[at as usize..at as usize + 5], "at {at}");
    }
    assert_eq!(file.seek(SeekFrom::End(-3)).unwrap(), (3 << 20) - 3);
    assert_eq!(read_all(&mut file), data[data.len() - 3..]);
    assert_eq!(file.seek(SeekFrom::Current(10)).unwrap(), (3 << 20) + 10);
    assert_eq!(file.read(&mut [0u8; 9]).unwrap(), 0);
    assert!(file.seek(SeekFrom::End(-(4 << 20))).is_err());
}

#[test]
fn listings_show_long_names_in_order_without_dots() {
    let (tree, _) = sample();
    let (f, len) = write_image(&tree, None, 0);
    let vol = FatVolume::open(f, 0, len, "test.img".into()).unwrap();
    let root: BTreeSet<String> = vol.list("").unwrap().into_iter().collect();
    let want: BTreeSet<String> = [
        "EFI",
        "Mixed.Case",
        "a",
        "a-name-that-is-much-longer-than-thirteen-characters-and-then-some.narinfo",
        "autoinstall",
        "big.bin",
        "empty",
        "many",
        "mixed.case",
        "nix-cache-info",
        "ünïcødé and spaces.txt",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(root, want);
    let many = vol.list("many").unwrap();
    let want: Vec<String> = (0..300)
        .map(|i| format!("{i:04}-{}.nar.zst", "z".repeat(i % 40)))
        .collect();
    assert_eq!(many, want);
    assert_eq!(vol.list("a/b").unwrap(), ["c"]);
    assert_eq!(vol.list("A/B/C/D").unwrap(), ["deep.txt"]);
    assert!(vol.list("autoinstall/reports").unwrap().is_empty());
}

#[test]
fn names_match_exactly_then_ignoring_case_then_by_short_name() {
    let (tree, _) = sample();
    let (f, len) = write_image(&tree, None, 0);
    let vol = FatVolume::open(f, 0, len, "test.img".into()).unwrap();
    let read = |p: &str| read_all(vol.open_file(p).unwrap_or_else(|e| panic!("{p}: {e}")));
    assert_eq!(read("Mixed.Case"), b"upper");
    assert_eq!(read("mixed.case"), b"lower");
    assert_eq!(read("MIXED.CASE"), b"upper"); // The first in directory order.
    assert_eq!(read("NIX-CACHE-INFO"), b"StoreDir: /nix/store\n");
    assert_eq!(read("efi/boot/bootx64.efi").len(), 70_001);
    assert_eq!(read("//a/B//c/d/DEEP.TXT/").len(), 513);
    // Every long name has a generated short name that finds the same file.
    let root = vol.resolve("").unwrap();
    let d = vol.dir(root.cluster, &String::new).unwrap();
    let e = d
        .entries
        .iter()
        .find(|e| &*e.name == "nix-cache-info")
        .unwrap();
    let short = String::from_utf8_lossy(&e.short).to_string();
    let short = format!("{}.{}", short[..8].trim_end(), short[8..].trim_end());
    let short = short.trim_end_matches('.').to_lowercase();
    assert!(short.starts_with('_'), "{short}");
    assert_eq!(read(&short), b"StoreDir: /nix/store\n");
}

#[test]
fn missing_paths_and_wrong_kinds_are_errors_that_say_so() {
    let (tree, _) = sample();
    let (f, len) = write_image(&tree, None, 0);
    let vol = FatVolume::open(f, 0, len, "test.img".into()).unwrap();
    let cases = [
        (
            vol.open_file("missing").err(),
            io::ErrorKind::NotFound,
            "test.img: missing does not exist",
        ),
        (
            vol.open_file("a/x/y").err(),
            io::ErrorKind::NotFound,
            "a/x does not exist",
        ),
        (
            vol.open_file("many").err(),
            io::ErrorKind::InvalidInput,
            "many is a directory",
        ),
        (
            vol.open_file("").err(),
            io::ErrorKind::InvalidInput,
            "is a directory",
        ),
        (
            vol.open_file("empty/x").err(),
            io::ErrorKind::NotFound,
            "empty is a file",
        ),
        (
            vol.list("big.bin").err(),
            io::ErrorKind::NotFound,
            "big.bin is a file",
        ),
        (
            vol.open_file("a/..").err(),
            io::ErrorKind::NotFound,
            "does not exist",
        ),
        (
            vol.check_dir_chains("big.bin").err(),
            io::ErrorKind::NotFound,
            "big.bin is a file",
        ),
    ];
    for (err, kind, msg) in cases {
        let err = err.expect("an error");
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.to_string().contains(msg), "{err:?} should say {msg:?}");
    }
}

/// Our writer only makes contiguous files; move one cluster of a file elsewhere and the file
/// must still read back, now in three runs.
#[test]
fn fragmented_files_read_back() {
    let (tree, files) = sample();
    let (f, len) = write_image(&tree, None, 0);
    let vol = FatVolume::open(f.try_clone().unwrap(), 0, len, "test.img".into()).unwrap();
    let node = vol.resolve("big.bin").unwrap();
    let l = vol.layout;
    let (a, moved) = (node.cluster + 10, node.cluster + 11);
    let spare = l.max_cluster() - 5;
    let fat = |c: u32| l.fat_offset + c as u64 * 4;
    let mut cluster = vec![0u8; l.cluster_bytes as usize];
    f.read_exact_at(&mut cluster, l.cluster_offset(moved))
        .unwrap();
    f.write_all_at(&cluster, l.cluster_offset(spare)).unwrap();
    f.write_all_at(&vec![0u8; cluster.len()], l.cluster_offset(moved))
        .unwrap();
    f.write_all_at(&spare.to_le_bytes(), fat(a)).unwrap();
    f.write_all_at(&(moved + 1).to_le_bytes(), fat(spare))
        .unwrap();
    f.write_all_at(&0u32.to_le_bytes(), fat(moved)).unwrap();
    let vol = FatVolume::open(f, 0, len, "test.img".into()).unwrap();
    let file = vol.open_file("big.bin").unwrap();
    assert_eq!(file.pieces.len(), 3);
    let data = &files.iter().find(|(p, _)| p == "big.bin").unwrap().1;
    assert!(read_all(file) == *data);
}

#[test]
fn files_can_be_read_from_other_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<FatFile<'static>>();
    sync::<FatVolume>();
    send::<FatVolume>();
    let (tree, files) = sample();
    let (f, len) = write_image(&tree, None, 0);
    let vol = FatVolume::open(f, 0, len, "test.img".into()).unwrap();
    std::thread::scope(|s| {
        for chunk in files.chunks(50) {
            let vol = &vol;
            s.spawn(move || {
                for (path, data) in chunk {
                    assert!(read_all(vol.open_file(path).unwrap()) == *data, "{path}");
                }
            });
        }
    });
}

/// A volume made by other tools (mkfs.fat, then mtools' long names, short names with case
/// flags and its own cluster allocation) reads back too.
#[test]
fn reads_what_mkfs_fat_and_mtools_write() {
    use std::process::Command;
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("mk.img");
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // 512-byte clusters so that 40 MiB holds the 65,525 clusters of FAT32.
    run(Command::new("mkfs.fat")
        .args(["-F", "32", "-S", "512", "-s", "1", "-C"])
        .arg(&img)
        .arg("40960"));
    let mut files = Vec::new();
    let host = tmp.path().join("src");
    std::fs::create_dir(&host).unwrap();
    for (i, name) in [
        "Hello World.txt",
        "README.TXT",
        "lower.txt",
        "Deep File.bin",
    ]
    .iter()
    .enumerate()
    {
        files.push((
            name.to_string(),
            pattern(i as u64, if i == 3 { 1 << 20 } else { 100 + i }),
        ));
    }
    let many: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| {
            (
                format!("entry number {i} of many.nar.zst"),
                pattern(100 + i, i as usize * 11),
            )
        })
        .collect();
    let put = |dir: &str, list: &[(String, Vec<u8>)]| {
        let sub = host.join(dir.replace('/', "_"));
        std::fs::create_dir_all(&sub).unwrap();
        let mut cmd = Command::new("mcopy");
        cmd.arg("-i").arg(&img);
        for (name, data) in list {
            std::fs::write(sub.join(name), data).unwrap();
            cmd.arg(sub.join(name));
        }
        run(cmd.arg(format!("::/{dir}")));
    };
    run(Command::new("mmd").arg("-i").arg(&img).args([
        "::/dir with spaces",
        "::/dir with spaces/sub",
        "::/many",
    ]));
    put("", &files[..3]);
    put("dir with spaces/sub", &files[3..]);
    put("many", &many);
    let len = std::fs::metadata(&img).unwrap().len();
    let vol = FatVolume::open(File::open(&img).unwrap(), 0, len, "mk.img".into()).unwrap();
    let mut root = vol.list("").unwrap();
    root.sort();
    assert_eq!(
        root,
        [
            "Hello World.txt",
            "README.TXT",
            "dir with spaces",
            "lower.txt",
            "many"
        ]
    );
    for (path, data) in files[..3]
        .iter()
        .map(|(n, d)| (n.clone(), d))
        .chain([(format!("dir with spaces/sub/{}", files[3].0), &files[3].1)])
    {
        assert!(read_all(vol.open_file(&path).unwrap()) == *data, "{path}");
    }
    assert_eq!(vol.list("many").unwrap().len(), 200);
    for (name, data) in &many {
        assert!(
            read_all(vol.open_file(&format!("MANY/{name}")).unwrap()) == *data,
            "{name}"
        );
    }
    vol.check_dir_chains("dir with spaces/sub").unwrap();
    vol.check_dir_chains("many").unwrap();
}

/// Reads a ~300 MiB file through this reader and through fatfs (`FatPayload`), with the page
/// cache warm, and prints MB/s. `cargo test -p media --release fatread::tests::throughput --
/// --ignored --nocapture`
#[test]
#[ignore]
fn throughput() {
    use crate::read::{FatPayload, Payload};
    use crate::slice::Extent;
    use std::time::Instant;
    const SIZE: usize = 300 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.src");
    std::fs::write(&src, pattern(5, SIZE)).unwrap();
    let mut tree = Tree::new();
    tree.add_file(
        "nar/big.nar.zst",
        Source::File {
            path: src.clone(),
            size: SIZE as u64,
        },
    );
    for i in 0..2000 {
        tree.add_file(&format!("{i:032}.narinfo"), Source::Bytes(pattern(i, 400)));
    }
    let g = fat32::min_geometry(&tree, 16 << 20);
    let img = tmp.path().join("vol.img");
    let f = File::create(&img).unwrap();
    f.set_len(g.bytes()).unwrap();
    fat32::write(&f, 0, &g, &tree, &opts(), &mut |_| {}).unwrap();
    drop(f);
    std::fs::remove_file(&src).unwrap();
    let extent = Extent {
        start: 0,
        len: g.bytes(),
    };
    let drain = |r: &mut dyn Read, chunk: usize| {
        let mut buf = vec![0u8; chunk];
        let mut total = 0;
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                return total;
            }
            total += n;
        }
    };
    let ours = FatVolume::open(File::open(&img).unwrap(), 0, g.bytes(), "vol.img".into()).unwrap();
    let theirs = FatPayload::open(&img, extent).unwrap();
    // Cold reads drop the image's pages first (only this file's, with fadvise).
    let evict = || {
        let f = File::open(&img).unwrap();
        nix::fcntl::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap();
    };
    for cold in [true, false] {
        for chunk in [8 << 10, 128 << 10, 1 << 20] {
            if !cold {
                drain(&mut ours.open_file("nar/big.nar.zst").unwrap(), 1 << 20);
            }
            let rate = |r: &mut dyn Read| {
                if cold {
                    evict();
                }
                let t = Instant::now();
                assert_eq!(drain(r, chunk), SIZE);
                SIZE as f64 / t.elapsed().as_secs_f64() / 1e6
            };
            let a = rate(&mut ours.open_file("nar/big.nar.zst").unwrap());
            let b = rate(&mut theirs.open("nar/big.nar.zst").unwrap());
            println!(
                "{} cache, reads of {:>4} KiB: FatVolume {a:>6.0} MB/s, fatfs {b:>6.0} MB/s",
                if cold { "cold" } else { "warm" },
                chunk >> 10
            );
        }
    }
    // Opening by name in a directory of 2,000 long names, as an install does for every path.
    let t = Instant::now();
    for i in 0..2000u64 {
        ours.open_file(&format!("{i:032}.narinfo")).unwrap();
    }
    let a = t.elapsed();
    let t = Instant::now();
    for i in 0..2000u64 {
        theirs.open(&format!("{i:032}.narinfo")).unwrap();
    }
    println!(
        "2,000 opens by name: FatVolume {a:?}, fatfs {:?}",
        t.elapsed()
    );
}
