//! Builds file systems from real directory trees, then asks the real tools: `e2fsck -fn`
//! must find nothing to fix, and the kernel, mounting the image, must show the same tree
//! (names, types, modes, sizes, contents, symlink targets, times). Mounting needs root;
//! without it those tests say so and stop after fsck.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ext4::{Entry, Fs, FT_DIR};

mod common;
use common::*;

/// Mounts `image` read-only and compares the tree under `tree` with `src`.
fn compare_mounted(image: &Path, src: &Path) {
    if !is_root() {
        eprintln!("not root: the image was checked with e2fsck but not mounted");
        return;
    }
    let mnt = Mount::new(image, "ro");
    let diff = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(src)
        .arg(mnt.path().join("tree"))
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "the mounted tree differs:\n{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    let stat = |p: &Path| {
        Command::new("find")
            .arg(".")
            .args(["-printf", "%p %y %m %s %T@ %l\n"])
            .current_dir(p)
            .output()
            .unwrap()
            .stdout
    };
    // Times are kept to the second (Nix's are all 1 anyway): drop the fractions.
    let lines = |v: Vec<u8>| {
        let text = String::from_utf8(v).unwrap();
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let secs = f[4].split('.').next().unwrap();
                // A directory's size is how its file system packs names: not compared.
                let size = if f[1] == "d" { "-" } else { f[3] };
                format!(
                    "{} {} {} {size} {secs} {}",
                    f[0],
                    f[1],
                    f[2],
                    f[5..].join(" ")
                )
            })
            .collect();
        lines.sort();
        lines
    };
    let (a, b) = (lines(stat(src)), lines(stat(&mnt.path().join("tree"))));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "type, mode, size or time differs");
    }
    let lf = fs::metadata(mnt.path().join("lost+found")).unwrap();
    assert!(lf.is_dir());
}

#[test]
fn a_tree_written_here_passes_fsck_and_mounts_as_it_was() {
    // Groups of 32 MiB, so the big file crosses several and needs an extent leaf block.
    let (_dir, src, image) = written("/var/tmp", 400 << 20, 8192, 180 << 20);
    compare_mounted(&image, &src);
}

#[test]
fn a_full_size_layout_with_the_default_groups_passes_fsck() {
    // 20 GiB sparse: 160 groups, almost all left for the kernel to initialise.
    let (_dir, src, image) = written("/var/tmp", 20 << 30, 32768, 1 << 20);
    compare_mounted(&image, &src);
}

#[test]
fn a_file_system_of_130_gib_has_its_journal_in_many_pieces() {
    // From 128 GiB the journal is 1 GiB, over nine groups: its inode needs an extent leaf
    // (the writer panicked there before 2026-12-01, on every disk of that size).
    let (_dir, src, image) = written("/var/tmp", 130 << 30, 32768, 1 << 20);
    compare_mounted(&image, &src);
}

#[test]
fn a_file_system_past_16_tib_passes_fsck_and_mounts() {
    // 64bit: 2^32 blocks and more; the last group's bitmap lies past block 2^32. On tmpfs,
    // whose sparse files may be that large (an ext4 /var/tmp's may not); about 1.3 GiB of it
    // written (the descriptors and their backups, the journal).
    let (_dir, src, image) = written("/dev/shm", 17 << 40, 32768, 1 << 20);
    compare_mounted(&image, &src);
}

#[test]
fn a_tree_too_big_for_the_device_is_refused() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = dir.path().join("src");
    sample_tree(&src, 40 << 20);
    let image = dir.path().join("fs.img");
    let bytes = 32 << 20;
    fs::File::create(&image).unwrap().set_len(bytes).unwrap();
    let fs = Fs::create(&image, bytes, options(8192)).unwrap();
    let mut w = fs.writer();
    let mut f = fs::File::open(src.join("lib/big")).unwrap();
    let ino = fs.new_inode().unwrap();
    let e = fs
        .file(&mut w, ino, 0o444, 1, 40 << 20, &mut f)
        .unwrap_err();
    assert!(e.to_string().contains("is full"), "{e}");
}

#[test]
fn threads_with_their_own_writers_build_one_file_system() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = dir.path().join("src");
    sample_tree(&src, 30 << 20);
    let image = dir.path().join("fs.img");
    let bytes = 300 << 20;
    fs::File::create(&image).unwrap().set_len(bytes).unwrap();
    let fs = Fs::create(&image, bytes, options(8192)).unwrap();
    let tree = fs.new_inode().unwrap();
    let mut children: Vec<PathBuf> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    children.sort();
    // Three threads take the top-level entries in turn, as the installer's workers take paths.
    let entries: Vec<Entry> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|t| {
                let (fs, children) = (&fs, &children);
                s.spawn(move || {
                    let mut w = fs.writer();
                    let mine: Vec<Entry> = children
                        .iter()
                        .skip(t)
                        .step_by(3)
                        .map(|p| put(fs, &mut w, p, tree))
                        .collect();
                    w.finish().unwrap();
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut w = fs.writer();
    let meta = fs::metadata(&src).unwrap();
    fs.dir(
        &mut w,
        tree,
        ext4::ROOT_INO,
        (meta.mode() & 0o7777) as u16,
        meta.mtime() as u32,
        &entries,
    )
    .unwrap();
    w.finish().unwrap();
    fs.finish(vec![Entry {
        name: b"tree".to_vec(),
        ino: tree,
        file_type: FT_DIR,
    }])
    .unwrap();
    fsck(&image);
    compare_mounted(&image, &src);
}
