//! The disk executors against real loop devices: facts from sysfs, partitions told to the
//! kernel (BLKRRPART, else BLKPG), wiping, locking. They need root (loop devices, mount,
//! BLKPG) and print a note and pass without it.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use target::blockdev::{self, Hold, PartSpan};
use target::disks;
use testkit::run;

const MIB: u64 = 1 << 20;

fn root() -> bool {
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
struct LoopDisk {
    dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDisk {
    fn new(size: u64, partscan: bool) -> LoopDisk {
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

    fn path(&self) -> &Path {
        &self.dev
    }

    fn s(&self) -> &str {
        self.dev.to_str().unwrap()
    }

    fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }

    /// Writes a GPT with sfdisk and returns its partitions as sfdisk reads them back.
    fn sfdisk(&self, script: &str) -> Vec<PartSpan> {
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
    fn sysfs_parts(&self) -> Vec<(u32, u64, u64)> {
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
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(dev: &Path) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[dev.to_str().unwrap(), dir.path().to_str().unwrap()],
        );
        Mounted { dir }
    }

    fn path(&self) -> String {
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
struct Swap(PathBuf);

impl Drop for Swap {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg(&self.0).status();
    }
}

fn mkfs_ext4(dev: &Path) {
    run("mkfs.ext4", &["-q", "-F", dev.to_str().unwrap()]);
}

fn assert_node(node: &Path, part_sysfs: &Path) {
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

#[test]
fn facts_of_a_loop_disk_and_what_is_mounted_on_it() {
    if !root() {
        return;
    }
    let disk = LoopDisk::new(256 * MIB, true);
    let f = disks::facts(disk.path()).unwrap();
    assert_eq!(f.path, disk.s());
    assert_eq!(f.size, 256 * MIB);
    assert_eq!(f.logical_block_size, 512);
    assert_eq!(f.transport, "loop");
    assert!(!f.removable && !f.read_only && !f.boot_medium && !f.swap);
    assert!(f.mounted.is_empty(), "{:?}", f.mounted);
    assert!(f.holders.is_empty(), "{:?}", f.holders);

    // A partition with ext4 on it, mounted.
    let spans = disk.sfdisk("label: gpt\n,64M\n,\n");
    assert_eq!(spans.len(), 2);
    let nodes = blockdev::open_locked(disk.path(), Hold::Shared)
        .unwrap()
        .reread(&spans)
        .unwrap();
    assert_eq!(nodes[0], disks::partition_node(disk.path(), 1));
    assert_eq!(nodes[0], PathBuf::from(format!("{}p1", disk.s())));
    assert_eq!(disks::whole_disk_of(&nodes[0]).unwrap(), disk.path());
    assert_eq!(disks::whole_disk_of(&nodes[1]).unwrap(), disk.path());
    assert_eq!(disks::whole_disk_of(disk.path()).unwrap(), disk.path());

    let err = disks::facts(&nodes[0]).unwrap_err().to_string();
    assert!(
        err.contains("is a partition, not a whole disk")
            && err.contains(&format!("({})", disk.s())),
        "{err}"
    );
    let err = disks::facts(Path::new("/dev/no-such-disk"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such block device"), "{err}");
    let err = disks::facts(Path::new("/etc/hostname"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a block device"), "{err}");

    mkfs_ext4(&nodes[0]);
    {
        let mnt = Mounted::new(&nodes[0]);
        let f = disks::facts(disk.path()).unwrap();
        assert_eq!(f.mounted, vec![mnt.path()]);
        // A link to the disk names the same disk.
        let link_dir = tempfile::tempdir().unwrap();
        let link = link_dir.path().join("my-disk");
        std::os::unix::fs::symlink(disk.path(), &link).unwrap();
        assert_eq!(disks::facts(&link).unwrap().mounted, vec![mnt.path()]);

        // A mounted partition cannot be taken from the kernel.
        let locked = blockdev::open_locked(disk.path(), Hold::Shared).unwrap();
        let err = locked.forget_partitions().unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
        let err = locked.reread(&spans[..1]).unwrap_err().to_string();
        assert!(err.contains("in use"), "{err}");
        assert_eq!(locked.partitions_in_kernel().unwrap(), vec![1, 2]);
    }
    assert!(disks::facts(disk.path()).unwrap().mounted.is_empty());

    // Swap on the second partition, where the kernel allows it here.
    run("mkswap", &[nodes[1].to_str().unwrap()]);
    let on = Command::new("swapon").arg(&nodes[1]).output().unwrap();
    if on.status.success() {
        let _swap = Swap(nodes[1].clone());
        assert!(disks::facts(disk.path()).unwrap().swap);
    } else {
        eprintln!(
            "note: swapon refused here ({}); swap detection not checked",
            String::from_utf8_lossy(&on.stderr).trim()
        );
    }
    assert!(!disks::facts(disk.path()).unwrap().swap);

    // The scan lists real disks only, sorted, never loop devices.
    let all = disks::scan().unwrap();
    eprintln!("disks::scan() here: {all:#?}");
    assert!(all
        .iter()
        .all(|d| !d.path.starts_with("/dev/loop") && d.size > 0));
    assert!(all.windows(2).all(|w| w[0].path < w[1].path));
    for d in &all {
        assert_eq!(disks::facts(Path::new(&d.path)).unwrap().size, d.size);
    }
}

#[test]
fn reread_makes_the_kernel_show_the_new_table() {
    if !root() {
        return;
    }
    let disk = LoopDisk::new(256 * MIB, true);
    let sys = PathBuf::from("/sys/block").join(disk.name());
    let locked = blockdev::open_locked(disk.path(), Hold::Shared).unwrap();
    assert_eq!(locked.size().unwrap(), 256 * MIB);
    assert_eq!(locked.logical_block_size().unwrap(), 512);
    assert!(locked.partitions_in_kernel().unwrap().is_empty());

    let two = disk.sfdisk("label: gpt\n,64M\n,\n");
    let nodes = locked.reread(&two).unwrap();
    assert_eq!(
        nodes,
        vec![
            disks::partition_node(disk.path(), 1),
            disks::partition_node(disk.path(), 2)
        ]
    );
    assert_eq!(
        disk.sysfs_parts(),
        two.iter()
            .map(|p| (p.number, p.start / 512, p.len / 512))
            .collect::<Vec<_>>()
    );
    assert_eq!(two[0].len, 64 * MIB);
    for (n, node) in nodes.iter().enumerate() {
        assert_node(node, &sys.join(format!("{}p{}", disk.name(), n + 1)));
    }
    // The same table again changes nothing.
    assert_eq!(locked.reread(&two).unwrap(), nodes);
    assert_eq!(locked.kernel_partitions().unwrap(), two);

    // Another layout: three partitions of other sizes.
    let three = disk.sfdisk("label: gpt\n,32M\n,16M\n,100M\n");
    let nodes = locked.reread(&three).unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        disk.sysfs_parts(),
        three
            .iter()
            .map(|p| (p.number, p.start / 512, p.len / 512))
            .collect::<Vec<_>>()
    );
    for (n, node) in nodes.iter().enumerate() {
        assert_node(node, &sys.join(format!("{}p{}", disk.name(), n + 1)));
    }

    // One partition: the old second and third are gone from sysfs and /dev.
    let one = disk.sfdisk("label: gpt\n,8M\n");
    let nodes = locked.reread(&one).unwrap();
    assert_eq!(nodes, vec![disks::partition_node(disk.path(), 1)]);
    assert_eq!(disk.sysfs_parts(), vec![(1, 2048, 16384)]);
    for n in [2, 3] {
        let old = disks::partition_node(disk.path(), n);
        assert!(!old.exists(), "{} is still there", old.display());
    }

    // Partitions given out of order come back in the order given.
    let swapped = [three[1], three[0]];
    disk.sfdisk("label: gpt\n,32M\n,16M\n");
    let nodes = locked.reread(&swapped).unwrap();
    assert_eq!(
        nodes,
        vec![
            disks::partition_node(disk.path(), 2),
            disks::partition_node(disk.path(), 1)
        ]
    );

    // Nonsense is refused before the kernel is asked.
    let bad = PartSpan {
        number: 1,
        start: 1000,
        len: MIB,
    };
    let err = locked.reread(&[bad]).unwrap_err().to_string();
    assert!(err.contains("not a valid partition"), "{err}");

    // forget_partitions leaves nothing behind.
    locked.forget_partitions().unwrap();
    assert!(locked.partitions_in_kernel().unwrap().is_empty());
    assert!(disk.sysfs_parts().is_empty());
    for n in 1..=3 {
        assert!(!disks::partition_node(disk.path(), n).exists());
    }
}

#[test]
fn reread_works_without_partition_scanning() {
    if !root() {
        return;
    }
    // `losetup` without -P: BLKRRPART is refused (EINVAL), BLKPG still works.
    let disk = LoopDisk::new(64 * MIB, false);
    let spans = disk.sfdisk("label: gpt\n,16M\n,\n");
    let locked = blockdev::open_locked(disk.path(), Hold::Shared).unwrap();
    let nodes = locked.reread(&spans).unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(
        disk.sysfs_parts(),
        spans
            .iter()
            .map(|p| (p.number, p.start / 512, p.len / 512))
            .collect::<Vec<_>>()
    );
    let sys = PathBuf::from("/sys/block").join(disk.name());

    // The kernel keeps the partitions here (no scan drops them), so a node that devtmpfs
    // does not make (here: deleted) is waited for, then made with mknod.
    fs::remove_file(&nodes[1]).unwrap();
    let started = Instant::now();
    assert_eq!(locked.reread(&spans).unwrap(), nodes);
    assert_node(&nodes[1], &sys.join(format!("{}p2", disk.name())));
    assert!(started.elapsed() < Duration::from_secs(8));
    // A stale node (another device's number) is replaced at once.
    fs::remove_file(&nodes[0]).unwrap();
    nix_mknod(&nodes[0], fs::metadata(disk.path()).unwrap().rdev());
    let started = Instant::now();
    locked.reread(&spans).unwrap();
    assert_node(&nodes[0], &sys.join(format!("{}p1", disk.name())));
    assert!(started.elapsed() < Duration::from_secs(1));
    // forget_partitions removes nodes made by mknod too.
    locked.forget_partitions().unwrap();
    assert!(!nodes[0].exists() && !nodes[1].exists());
}

fn nix_mknod(node: &Path, rdev: u64) {
    let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mknod only reads it.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, rdev) };
    assert_eq!(r, 0, "mknod {}", node.display());
}

/// What `wipefs --no-act` finds on `dev`, one line per signature (empty when nothing).
fn wipefs(dev: &str) -> Vec<String> {
    run("wipefs", &["--no-act", "--noheadings", dev])
        .lines()
        .map(String::from)
        .collect()
}

fn blkid_probe(dev: &str, offset: Option<u64>) -> (i32, String) {
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

#[test]
fn wiping_clears_signatures_at_both_ends() {
    if !root() {
        return;
    }
    let disk = LoopDisk::new(128 * MIB, true);
    let spans = disk.sfdisk("label: gpt\n,32M\n,\n");
    let locked = blockdev::open_locked(disk.path(), Hold::Shared).unwrap();
    let nodes = locked.reread(&spans).unwrap();
    mkfs_ext4(&nodes[0]);
    let (code, out) = blkid_probe(disk.s(), None);
    assert_eq!(code, 0);
    assert!(out.contains("PTTYPE=\"gpt\""), "{out}");
    let (_, out) = blkid_probe(disk.s(), Some(MIB));
    assert!(out.contains("TYPE=\"ext4\""), "{out}");

    // Wiping the start alone leaves the backup GPT at the end to be found.
    locked.forget_partitions().unwrap();
    locked.wipe(0, MIB).unwrap();
    let found = wipefs(disk.s());
    assert!(
        found
            .iter()
            .any(|l| l.contains("gpt") && l.contains("0x7fffe00")),
        "{found:?}"
    );

    locked.wipe_signatures().unwrap();
    assert!(wipefs(disk.s()).is_empty(), "{:?}", wipefs(disk.s()));
    let (code, out) = blkid_probe(disk.s(), None);
    assert_eq!(code, 2, "blkid still finds: {out}");
    let err = Command::new("sfdisk")
        .args(["-d", disk.s()])
        .output()
        .unwrap();
    assert!(!err.status.success(), "sfdisk still reads a table");

    // The file system at the partition's start is only gone once that is wiped too.
    let (_, out) = blkid_probe(disk.s(), Some(MIB));
    assert!(out.contains("ext4"), "{out}");
    locked.wipe(MIB, MIB).unwrap();
    let (code, out) = blkid_probe(disk.s(), Some(MIB));
    assert_eq!(code, 2, "{out}");

    // Wiping is clamped to the end of the disk.
    locked.wipe(128 * MIB - 4096, 10 * MIB).unwrap();
    locked.wipe(200 * MIB, MIB).unwrap();
    assert_eq!(locked.size().unwrap(), 128 * MIB);
}

#[test]
fn an_image_file_can_be_locked_sized_and_wiped() {
    // No root needed: a plain file.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    fs::write(&img, vec![0xAAu8; 3 * MIB as usize]).unwrap();
    let disk = blockdev::open_locked(&img, Hold::Shared).unwrap();
    assert_eq!(disk.size().unwrap(), 3 * MIB);
    assert_eq!(disk.logical_block_size().unwrap(), 512);
    assert!(disk.partitions_in_kernel().unwrap().is_empty());
    disk.forget_partitions().unwrap();
    disk.wipe_signatures().unwrap();
    disk.wipe(3 * MIB - 10, 100).unwrap();
    let data = fs::read(&img).unwrap();
    assert_eq!(data.len(), 3 * MIB as usize, "wiping never grows the image");
    assert!(data[..MIB as usize].iter().all(|&b| b == 0));
    assert!(data[MIB as usize..2 * MIB as usize]
        .iter()
        .all(|&b| b == 0xAA));
    assert!(data[2 * MIB as usize..].iter().all(|&b| b == 0));
    let err = disk
        .reread(&[PartSpan {
            number: 1,
            start: MIB,
            len: MIB,
        }])
        .unwrap_err()
        .to_string();
    assert!(err.contains("losetup"), "{err}");
}

#[test]
fn a_locked_disk_cannot_be_locked_twice() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    fs::File::create(&img).unwrap().set_len(4 * MIB).unwrap();
    let first = blockdev::open_locked(&img, Hold::Shared).unwrap();
    let started = Instant::now();
    let err = blockdev::open_locked_within(&img, Hold::Shared, Duration::from_millis(300))
        .expect_err("the second lock must fail")
        .to_string();
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
    assert!(
        err.contains("is locked by another process (another installer or udev?)"),
        "{err}"
    );

    // A holder that lets go in time is waited for.
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
    });
    let second = blockdev::open_locked_within(&img, Hold::Shared, Duration::from_secs(5)).unwrap();
    holder.join().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600));
    drop(second);

    // The same holds for a real disk.
    if !root() {
        return;
    }
    let disk = LoopDisk::new(8 * MIB, false);
    let held = blockdev::open_locked(disk.path(), Hold::Shared).unwrap();
    let err = blockdev::open_locked_within(disk.path(), Hold::Shared, Duration::from_millis(200))
        .expect_err("the second lock must fail")
        .to_string();
    assert!(err.contains("is locked by another process"), "{err}");
    drop(held);
    // A partition is not a disk to lock.
    let spans = disk.sfdisk("label: gpt\n,2M\n");
    let nodes = blockdev::open_locked(disk.path(), Hold::Shared)
        .unwrap()
        .reread(&spans)
        .unwrap();
    let err = blockdev::open_locked(&nodes[0], Hold::Shared)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a partition, not a whole disk"), "{err}");
}

/// A disk someone else holds exclusively (as a VM, ZFS, RAID or a mapper would) is refused
/// with EBUSY and left as it was; one we hold exclusively is refused to everyone else,
/// until we share it.
#[test]
fn a_disk_held_exclusively_is_refused_and_ours_is_refused_to_others() {
    use std::os::unix::fs::OpenOptionsExt;
    if !root() {
        return;
    }
    let disk = LoopDisk::new(8 * MIB, false);
    let excl = |path: &Path| {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(path)
    };
    let other = excl(disk.path()).unwrap();
    let err = blockdev::open_locked(disk.path(), Hold::Exclusive).unwrap_err();
    assert_eq!(err.raw_os_error(), None, "wrapped: {err}");
    assert!(err.to_string().contains("holds it exclusively"), "{err}");
    let err = blockdev::check_not_held(disk.path()).unwrap_err();
    assert!(err.to_string().contains("holds it exclusively"), "{err}");
    drop(other);

    blockdev::check_not_held(disk.path()).unwrap();
    let ours = blockdev::open_locked(disk.path(), Hold::Exclusive).unwrap();
    assert_eq!(
        excl(disk.path()).unwrap_err().raw_os_error(),
        Some(libc::EBUSY)
    );
    let shared = ours.share().unwrap();
    assert_eq!(shared.hold(), Hold::Shared);
    drop(excl(disk.path()).unwrap());
}
