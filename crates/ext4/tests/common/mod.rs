//! What the ext4 tests share: options, writing a real directory tree into a new file
//! system, a sample tree with what a store holds, and e2fsck.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ext4::{Entry, Fs, Options, Writer, FT_DIR, FT_LNK, FT_REG};

pub fn options(blocks_per_group: u64) -> Options {
    Options {
        label: "test-root".into(),
        uuid: *b"0123456789abcdef",
        hash_seed: *b"fedcba9876543210",
        now: 1_700_000_000,
        blocks_per_group,
    }
}

/// Writes the tree at `src` into `fs` as a child of `parent`; returns its entry.
pub fn put(fs: &Fs, w: &mut Writer, src: &Path, parent: u32) -> Entry {
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
pub fn sample_tree(root: &Path, big: u64) {
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

pub fn build(image: &Path, bytes: u64, blocks_per_group: u64, src: &Path) {
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

/// Runs `cmd ARGS IMAGE`, which must succeed; returns what it printed (stdout, then stderr).
pub fn tool(cmd: &str, args: &[&str], image: &Path) -> String {
    let out = Command::new(cmd).args(args).arg(image).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

/// `e2fsck -fn` must find nothing to fix.
pub fn fsck(image: &Path) {
    tool("e2fsck", &["-fn"], image);
}

/// The image mounted by the kernel (loop, with `opts`) on a scratch directory; unmounted on
/// drop, also when a check panicked.
pub struct Mount(tempfile::TempDir);

impl Mount {
    pub fn new(image: &Path, opts: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "ext4", "-o", &format!("loop,{opts}")])
            .arg(image)
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "the kernel would not mount the image ({opts})"
        );
        Mount(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(self.0.path()).status().unwrap();
        assert!(st.success() || std::thread::panicking(), "umount failed");
    }
}

pub fn is_root() -> bool {
    // Safety: getuid cannot fail.
    unsafe { libc::getuid() == 0 }
}

/// A sample tree (its big file `big` bytes) written into a new file system of `bytes` in
/// groups of `blocks_per_group`, in a scratch directory under `under`, and checked with
/// e2fsck. Returns the directory (removed on drop), the tree and the image.
pub fn written(
    under: &str,
    bytes: u64,
    blocks_per_group: u64,
    big: u64,
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir_in(under).unwrap();
    let src = dir.path().join("src");
    sample_tree(&src, big);
    let image = dir.path().join("fs.img");
    build(&image, bytes, blocks_per_group, &src);
    fsck(&image);
    (dir, src, image)
}
