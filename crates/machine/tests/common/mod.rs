//! What the disk tests share: loop devices over sparse images (their partitions taken out of
//! the kernel and detached on drop), mounts and swaps undone on drop, and probes.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use machine::blockdev::{self, Hold, PartSpan};
use testkit::run;

pub const MIB: u64 = 1 << 20;

pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        eprintln!("note: skipped, needs root (loop devices, mount, BLKPG)");
    }
    uid == 0
}

/// A loop device over a sparse image; on drop, its partitions are removed from the kernel
/// (a loop device without partition scanning keeps them past detaching otherwise) and it is
/// detached.
pub struct LoopDisk {
    pub dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDisk {
    pub fn new(size: u64, partscan: bool) -> LoopDisk {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        fs::File::create(&img).unwrap().set_len(size).unwrap();
        let mut args = vec!["-f", "--show"];
        if partscan {
            args.push("-P");
        }
        args.push(img.to_str().unwrap());
        let dev = PathBuf::from(run("losetup", &args).trim());
        let d = LoopDisk { dev, _dir: dir };
        // A loop number reused after another user may carry that user's partitions.
        if let Ok(disk) = blockdev::open_locked(&d.dev, Hold::Shared) {
            disk.forget_partitions().unwrap();
        }
        d
    }

    pub fn path(&self) -> &Path {
        &self.dev
    }

    pub fn s(&self) -> &str {
        self.dev.to_str().unwrap()
    }

    pub fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Writes a GPT with sfdisk and returns its partitions as sfdisk reads them back.
    pub fn sfdisk(&self, script: &str) -> Vec<PartSpan> {
        let mut child = Command::new("sfdisk")
            .args(["-q", "--no-reread", "--no-tell-kernel", self.s()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sfdisk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `sfdisk -d`: "/dev/loop3p1 : start=        2048, size=      131072, type=…"
        run("sfdisk", &["-d", self.s()])
            .lines()
            .filter(|l| l.contains("start="))
            .map(|l| {
                let (node, rest) = l.split_once(':').unwrap();
                let field = |k: &str| -> u64 {
                    rest.split(',')
                        .find_map(|f| f.trim().strip_prefix(&format!("{k}=")))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap()
                };
                let number = node
                    .trim()
                    .trim_start_matches(self.s())
                    .trim_start_matches('p')
                    .parse()
                    .unwrap();
                PartSpan {
                    number,
                    start: field("start") * 512,
                    len: field("size") * 512,
                }
            })
            .collect()
    }

    /// The kernel's partitions of this disk: (number, start, size) in sysfs units.
    pub fn sysfs_parts(&self) -> Vec<(u32, u64, u64)> {
        let dir = PathBuf::from("/sys/block").join(self.name());
        let num = |p: PathBuf| -> u64 { fs::read_to_string(p).unwrap().trim().parse().unwrap() };
        let mut v: Vec<(u32, u64, u64)> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("partition").exists())
            .map(|p| {
                (
                    num(p.join("partition")) as u32,
                    num(p.join("start")),
                    num(p.join("size")),
                )
            })
            .collect();
        v.sort();
        v
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if let Ok(disk) =
            blockdev::open_locked_within(&self.dev, Hold::Shared, Duration::from_secs(2))
        {
            let _ = disk.forget_partitions();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A mounted file system; unmounted (lazily, if it must) on drop.
pub struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    pub fn new(dev: &Path) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[dev.to_str().unwrap(), dir.path().to_str().unwrap()],
        );
        Mounted { dir }
    }

    pub fn path(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Active swap; switched off on drop.
pub struct Swap(pub PathBuf);

impl Drop for Swap {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg(&self.0).status();
    }
}

pub fn mkfs_ext4(dev: &Path) {
    run("mkfs.ext4", &["-q", "-F", dev.to_str().unwrap()]);
}

pub fn assert_node(node: &Path, part_sysfs: &Path) {
    let m = fs::metadata(node).unwrap_or_else(|e| panic!("{}: {e}", node.display()));
    assert!(m.file_type().is_block_device(), "{}", node.display());
    let dev = fs::read_to_string(part_sysfs.join("dev")).unwrap();
    let (ma, mi) = dev.trim().split_once(':').unwrap();
    assert_eq!(
        (libc::major(m.rdev()) as u64, libc::minor(m.rdev()) as u64),
        (ma.parse().unwrap(), mi.parse().unwrap()),
        "{} has the partition's device number",
        node.display()
    );
}

pub fn nix_mknod(node: &Path, rdev: u64) {
    let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod only reads it.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, rdev) };
    assert_eq!(r, 0, "mknod {}", node.display());
}

/// What `wipefs --no-act` finds on `dev`, one line per signature (empty when nothing).
pub fn wipefs(dev: &str) -> Vec<String> {
    run("wipefs", &["--no-act", "--noheadings", dev])
        .lines()
        .map(String::from)
        .collect()
}

pub fn blkid_probe(dev: &str, offset: Option<u64>) -> (i32, String) {
    let mut cmd = Command::new("blkid");
    cmd.arg("-p");
    if let Some(o) = offset {
        cmd.args(["-O", &o.to_string()]);
    }
    let out = cmd.arg(dev).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
