//! Holding a disk: `flock` against other installers and udev, `O_EXCL` against programs
//! that claim disks (a VM, ZFS, RAID, a mapper), an image file as a disk. Root only.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use machine::blockdev::{self, Hold, PartSpan};

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
