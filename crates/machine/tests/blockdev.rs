//! The disk executors against real loop devices: facts from sysfs, partitions told to the
//! kernel (BLKRRPART, else BLKPG), wiping, locking. They need root (loop devices, mount,
//! BLKPG) and print a note and pass without it.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use machine::blockdev::{self, Hold, PartSpan};
use machine::disks;
use testkit::run;

use common::*;

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
