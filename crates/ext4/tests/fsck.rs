//! Builds file systems from real directory trees, then asks the real tools: `e2fsck -fn`
//! must find nothing to fix, and the kernel, mounting the image, must show the same tree
//! (names, types, modes, sizes, contents, symlink targets, times). Mounting needs root;
//! without it those tests say so and stop after fsck.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ext4::{Entry, Fs, Options, Writer, FT_DIR, FT_LNK, FT_REG};

fn options(blocks_per_group: u64) -> Options {
    Options {
        label: "test-root".into(),
        uuid: *b"0123456789abcdef",
        hash_seed: *b"fedcba9876543210",
        now: 1_700_000_000,
        blocks_per_group,
    }
}

/// Writes the tree at `src` into `fs` as a child of `parent`; returns its entry.
fn put(fs: &Fs, w: &mut Writer, src: &Path, parent: u32) -> Entry {
    let meta = fs::symlink_metadata(src).unwrap();
    let ino = fs.new_inode().unwrap();
    let name = src.file_name().unwrap().as_encoded_bytes().to_vec();
    let perm = (meta.mode() & 0o7777) as u16;
    let mtime = meta.mtime() as u32;
    let file_type = if meta.is_dir() {
        let mut names: Vec<PathBuf> = fs::read_dir(src)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let entries: Vec<Entry> = names.iter().map(|p| put(fs, w, p, ino)).collect();
        fs.dir(w, ino, parent, perm, mtime, &entries).unwrap();
        FT_DIR
    } else if meta.is_symlink() {
        let target = fs::read_link(src).unwrap();
        fs.symlink(w, ino, mtime, target.as_os_str().as_encoded_bytes())
            .unwrap();
        FT_LNK
    } else {
        let mut f = fs::File::open(src).unwrap();
        fs.file(w, ino, perm, mtime, meta.len(), &mut f).unwrap();
        FT_REG
    };
    Entry {
        name,
        ino,
        file_type,
    }
}

/// A tree with what a store holds: empty, tiny, block-sized and big files, executables,
/// short and long symlinks, empty and crowded directories, deep nesting.
fn sample_tree(root: &Path, big: u64) {
    let w = |p: &str, data: &[u8], mode: u32| {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    };
    w("empty", b"", 0o444);
    w("one", b"x", 0o444);
    w("bin/tool", &vec![7u8; 4096], 0o555);
    w("bin/tool2", &vec![9u8; 4097], 0o555);
    let pattern: Vec<u8> = (0..big).map(|i| (i * 31 % 251) as u8).collect();
    w("lib/big", &pattern, 0o444);
    w("lib/medium", &pattern[..pattern.len().min(5 << 20)], 0o444);
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    for i in 0..700 {
        w(
            &format!("crowded/entry-with-a-long-name-{i:05}"),
            format!("{i}").as_bytes(),
            0o444,
        );
    }
    let mut deep = root.to_path_buf();
    for i in 0..40 {
        deep = deep.join(format!("d{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    w(
        &deep
            .join("leaf")
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy(),
        b"deep",
        0o444,
    );
    std::os::unix::fs::symlink("bin/tool", root.join("short-link")).unwrap();
    std::os::unix::fs::symlink("x".repeat(200), root.join("long-link")).unwrap();
}

fn build(image: &Path, bytes: u64, blocks_per_group: u64, src: &Path) {
    fs::File::create(image).unwrap().set_len(bytes).unwrap();
    let fs = Fs::create(image, bytes, options(blocks_per_group)).unwrap();
    let mut w = fs.writer();
    let top = put(&fs, &mut w, src, ext4::ROOT_INO);
    w.finish().unwrap();
    fs.finish(vec![Entry {
        name: b"tree".to_vec(),
        ..top
    }])
    .unwrap();
}

fn fsck(image: &Path) {
    let out = Command::new("e2fsck")
        .args(["-fn"])
        .arg(image)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "e2fsck -fn found problems:\n{text}");
}

fn is_root() -> bool {
    // Safety: getuid cannot fail.
    unsafe { libc::getuid() == 0 }
}

/// Mounts `image` read-only and compares the tree under `tree` with `src`.
fn compare_mounted(image: &Path, src: &Path) {
    if !is_root() {
        eprintln!("not root: the image was checked with e2fsck but not mounted");
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let st = Command::new("mount")
        .args(["-o", "loop,ro", "-t", "ext4"])
        .arg(image)
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(st.success(), "the kernel would not mount the image");
    let result = std::panic::catch_unwind(|| {
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
    });
    Command::new("umount").arg(mnt.path()).status().unwrap();
    result.unwrap();
}

#[test]
fn a_tree_written_here_passes_fsck_and_mounts_as_it_was() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = dir.path().join("src");
    // Groups of 32 MiB, so the big file crosses several and needs an extent leaf block.
    sample_tree(&src, 180 << 20);
    let image = dir.path().join("fs.img");
    build(&image, 400 << 20, 8192, &src);
    fsck(&image);
    compare_mounted(&image, &src);
}

#[test]
fn a_full_size_layout_with_the_default_groups_passes_fsck() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let src = dir.path().join("src");
    sample_tree(&src, 1 << 20);
    let image = dir.path().join("fs.img");
    // 20 GiB sparse: 160 groups, almost all left for the kernel to initialise.
    build(&image, 20 << 30, 32768, &src);
    fsck(&image);
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
