//! A file system written here is a machine's root for years: the kernel must be able to live
//! in it. After it is written, the kernel mounts it read-write and creates, grows, renames and
//! deletes many files and directories (crowded ones too, which it indexes) among those this
//! crate wrote, for a few seconds (`EXT4_LIFE_SECONDS`, longer in the benchmark); then
//! `e2fsck -fn` finds nothing, `dumpe2fs` shows the free counts e2fsck counted, `tune2fs`
//! changes its label, UUID (every checksum rewritten), journal and check intervals, and
//! `resize2fs` grows it, each followed by e2fsck; and every file holds what the model of the
//! workload says it should. Needs root (the kernel's mount); without it the test says so.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// What a file should hold: made by the workload (`byte(seed, i)` for i < len), or written
/// with the file system (its length and hash as the tree had them).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Content {
    Made { seed: u64, len: u64 },
    Fixed { len: u64, hash: u64 },
}

fn byte(seed: u64, i: u64) -> u8 {
    (seed.wrapping_add(i.wrapping_mul(31)) % 251) as u8
}

fn made(seed: u64, from: u64, to: u64) -> Vec<u8> {
    (from..to).map(|i| byte(seed, i)).collect()
}

/// FNV-1a, enough to tell contents apart.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

impl Content {
    fn summary(self) -> (u64, u64) {
        match self {
            Content::Made { seed, len } => (len, hash(&made(seed, 0, len))),
            Content::Fixed { len, hash } => (len, hash),
        }
    }
}

/// The regular files under `root` (lost+found aside), by path relative to it.
fn files(root: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() && e.file_name() != "lost+found" {
                todo.push(e.path());
            } else if t.is_file() {
                let bytes = fs::read(e.path()).unwrap();
                out.insert(
                    e.path().strip_prefix(root).unwrap().to_path_buf(),
                    (bytes.len() as u64, hash(&bytes)),
                );
            }
        }
    }
    out
}

/// A workload on the mounted file system, and its model.
struct Life {
    root: PathBuf,
    model: BTreeMap<PathBuf, Content>,
    rng: u64,
}

impl Life {
    fn next(&mut self) -> u64 {
        // xorshift64: the same workload on every run.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn create(&mut self, rel: PathBuf, len: u64) {
        let seed = self.next();
        fs::create_dir_all(self.root.join(&rel).parent().unwrap()).unwrap();
        fs::write(self.root.join(&rel), made(seed, 0, len)).unwrap();
        self.model.insert(rel, Content::Made { seed, len });
    }

    fn append(&mut self, rel: &Path, more: u64) {
        let Some(Content::Made { seed, len }) = self.model.get(rel).copied() else {
            return;
        };
        fs::OpenOptions::new()
            .append(true)
            .open(self.root.join(rel))
            .unwrap()
            .write_all(&made(seed, len, len + more))
            .unwrap();
        self.model.insert(
            rel.to_path_buf(),
            Content::Made {
                seed,
                len: len + more,
            },
        );
    }

    fn rename(&mut self, from: &Path, to: PathBuf) {
        fs::create_dir_all(self.root.join(&to).parent().unwrap()).unwrap();
        fs::rename(self.root.join(from), self.root.join(&to)).unwrap();
        let c = self.model.remove(from).unwrap();
        self.model.insert(to, c);
    }

    fn delete(&mut self, rel: &Path) {
        fs::remove_file(self.root.join(rel)).unwrap();
        self.model.remove(rel);
    }

    fn pick(&mut self, under: &str) -> Option<PathBuf> {
        let under: Vec<PathBuf> = self
            .model
            .keys()
            .filter(|p| p.starts_with(under))
            .cloned()
            .collect();
        if under.is_empty() {
            return None;
        }
        let i = (self.next() % under.len() as u64) as usize;
        Some(under[i].clone())
    }

    /// One round: a crowded new directory, growth, renames across directories, deletions
    /// (of what this crate wrote too), a big file that grows and is cut, and old rounds
    /// removed whole so the disk never fills.
    fn round(&mut self, r: u64) {
        for i in 0..400 {
            let len = self.next() % 20_000;
            self.create(
                PathBuf::from(format!("work/r{r:04}/file-with-a-long-name-{i:05}")),
                len,
            );
        }
        for _ in 0..60 {
            if let Some(p) = self.pick("work") {
                let more = self.next() % 70_000;
                self.append(&p, more);
            }
        }
        for i in 0..80 {
            if let Some(p) = self.pick("work") {
                self.rename(&p, PathBuf::from(format!("work/moved/{r:04}-{i:03}")));
            }
        }
        for _ in 0..3 {
            if let Some(p) = self.pick("tree") {
                let to = PathBuf::from(format!("work/from-tree/{r:04}-{}", self.next() % 1000));
                if self.model.contains_key(&to) {
                    self.delete(&p);
                } else {
                    self.rename(&p, to);
                }
            }
        }
        for _ in 0..100 {
            if let Some(p) = self.pick("work/moved") {
                self.delete(&p);
            }
        }
        let big = PathBuf::from("work/big");
        match self.model.get(&big).copied() {
            Some(Content::Made { len, .. }) if len >= 128 << 20 => self.delete(&big),
            Some(_) => self.append(&big, 8 << 20),
            None => self.create(big, 8 << 20),
        }
        if r >= 20 {
            let old = format!("work/r{:04}", r - 20);
            let doomed: Vec<PathBuf> = self
                .model
                .keys()
                .filter(|p| p.starts_with(&old))
                .cloned()
                .collect();
            doomed.iter().for_each(|p| self.delete(p));
            fs::remove_dir(self.root.join(&old)).unwrap();
        }
    }

    fn expected(&self) -> BTreeMap<PathBuf, (u64, u64)> {
        self.model
            .iter()
            .map(|(p, c)| (p.clone(), c.summary()))
            .collect()
    }
}

/// The used inodes and blocks e2fsck counted, and those the superblock says (dumpe2fs).
fn counts_agree(image: &Path) {
    let fsck = tool("e2fsck", &["-fn"], image);
    // "NAME: 1234/65536 files (0.1% non-contiguous), 5678/262144 blocks"
    let line = fsck
        .lines()
        .find(|l| l.contains(" files (") && l.ends_with(" blocks"))
        .unwrap_or_else(|| panic!("no summary from e2fsck:\n{fsck}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let n = nums.len();
    let (files, inodes, blocks, total) = (nums[n - 6], nums[n - 5], nums[n - 2], nums[n - 1]);
    let dump = tool("dumpe2fs", &["-h"], image);
    let field = |name: &str| -> u64 {
        dump.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("dumpe2fs shows no {name}:\n{dump}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(field("Inode count"), inodes, "{line}");
    assert_eq!(field("Block count"), total, "{line}");
    assert_eq!(field("Free inodes"), inodes - files, "free inodes: {line}");
    assert_eq!(field("Free blocks"), total - blocks, "free blocks: {line}");
}

#[test]
fn the_kernel_lives_in_a_written_file_system_and_the_tools_agree() {
    // 1 GiB in mkfs's groups of 128 MiB.
    let (_dir, _, image) = written("/var/tmp", 1 << 30, 32768, 24 << 20);
    if !is_root() {
        eprintln!("not root: the image was checked with e2fsck but not mounted");
        return;
    }
    let seconds: u64 = std::env::var("EXT4_LIFE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);

    let m = Mount::new(&image, "rw");
    let initial = files(&m.path().join("tree"));
    let mut life = Life {
        root: m.path().to_path_buf(),
        model: initial
            .into_iter()
            .map(|(p, (len, hash))| (Path::new("tree").join(p), Content::Fixed { len, hash }))
            .collect(),
        rng: 0x9e3779b97f4a7c15,
    };
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 3 || start.elapsed() < Duration::from_secs(seconds) {
        life.round(rounds);
        rounds += 1;
    }
    // The crowded directory the writer made, emptied and filled again by the kernel.
    for i in 0..700 {
        let p = PathBuf::from(format!("tree/crowded/entry-with-a-long-name-{i:05}"));
        if life.model.contains_key(&p) {
            life.delete(&p);
        }
    }
    for i in 0..3000 {
        life.create(PathBuf::from(format!("tree/crowded/again-{i:05}")), i % 300);
    }
    eprintln!(
        "{rounds} rounds in {:.1} s; {} files at the end",
        start.elapsed().as_secs_f64(),
        life.model.len()
    );
    assert_eq!(files(m.path()), life.expected(), "the kernel lost a file");
    drop(m);

    fsck(&image);
    counts_agree(&image);
    {
        let m = Mount::new(&image, "ro");
        assert_eq!(files(m.path()), life.expected(), "after a remount");
    }

    // tune2fs as an admin would use it on any ext4; each change checked by e2fsck. The UUID
    // change rewrites every metadata checksum.
    tool("e2fsck", &["-fp"], &image);
    for args in [
        &["-L", "lived"][..],
        &["-U", "random"],
        &["-O", "^has_journal"],
        &["-j"],
        &["-c", "30", "-i", "1m", "-e", "remount-ro"],
    ] {
        tool("tune2fs", args, &image);
        fsck(&image);
    }
    let dump = tool("dumpe2fs", &["-h"], &image);
    assert!(dump.contains("lived"), "{dump}");

    // Grown to 3 GiB offline (resize2fs wants a freshly checked file system).
    let f = fs::OpenOptions::new().write(true).open(&image).unwrap();
    f.set_len(3 << 30).unwrap();
    drop(f);
    tool("e2fsck", &["-fp"], &image);
    tool("resize2fs", &[], &image);
    fsck(&image);
    counts_agree(&image);
    let m = Mount::new(&image, "rw");
    let st = fs_bytes(m.path());
    assert!(st > 2 << 30, "only {st} bytes after the resize");
    assert_eq!(files(m.path()), life.expected(), "after the resize");
    // Still a living file system: more files, then checked once more.
    life.root = m.path().to_path_buf();
    for i in 0..500 {
        life.create(PathBuf::from(format!("after-resize/{i:04}")), 100_000);
    }
    drop(m);
    fsck(&image);
}

/// The file system's size in bytes, as statvfs reports it.
fn fs_bytes(p: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%b %S"])
        .arg(p)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    v[0] * v[1]
}
