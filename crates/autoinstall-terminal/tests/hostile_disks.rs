//! The installer against hostile disk states: a disk another program holds exclusively, and
//! an old RAID superblock where a new partition ends. Root only (loop disks).

mod common;

use std::fs;

use common::*;
use testkit::run;

/// A disk another program holds exclusively (as a VM, ZFS, a mapper or RAID would, with
/// O_EXCL) is refused at the plan, before anything is written; also by a dry run.
#[test]
fn a_disk_held_exclusively_by_another_program_is_refused() {
    use std::os::unix::fs::OpenOptionsExt;
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")]);
    let disk = LoopDisk::new(env.path("disk.img"), "9G");
    let _held = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&disk.dev)
        .unwrap();
    for more in [&["--yes"][..], &["--dry-run"][..]] {
        let mut args = vec![
            "--payload",
            stick.to_str().unwrap(),
            "--host",
            "demo-1",
            "--disk",
            &disk.dev,
        ];
        args.extend(more);
        assert_refused(&env.install(&args), "holds it exclusively", &disk);
    }
}

/// An md RAID member's superblock (v1.0: 8 KiB before the end) where the new root partition
/// will end: after the install, blkid sees only the new ext4 there, so udev and the
/// installed system find the root. Both ways of writing it.
#[test]
fn an_old_raid_superblock_at_the_end_of_a_partition_is_wiped() {
    let Some((_serial, env, tops)) = root_env() else {
        return;
    };
    let stick = env.stick(&[("demo-1", "DEMO-SN-0001", &tops[0], "uefi-ext4")]);
    let s = stick.to_str().unwrap();
    for kernel_copy in [false, true] {
        let disk = LoopDisk::new(env.path("disk.img"), "9G");
        let plan = env.plan(&stick, ["--host", "demo-1"], &disk);
        let root = plan["disks"][0]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["holds"] == "ext4 /")
            .unwrap();
        let start = root["first_lba"].as_u64().unwrap() * 512;
        let len = (root["last_lba"].as_u64().unwrap() + 1) * 512 - start;
        let at = start + (len & !0xfff) - 0x2000;
        fs::OpenOptions::new()
            .write(true)
            .open(&disk.image)
            .map(|f| {
                std::os::unix::fs::FileExt::write_all_at(&f, &md_v1_0_superblock(at - start), at)
            })
            .unwrap()
            .unwrap();
        // The fixture is what blkid knows as a RAID member, there.
        let before = run(
            "blkid",
            &[
                "-p",
                "-O",
                &start.to_string(),
                "-S",
                &len.to_string(),
                &disk.dev,
            ],
        );
        assert!(before.contains("linux_raid_member"), "{before}");

        let mut args = vec![
            "--payload",
            s,
            "--host",
            "demo-1",
            "--disk",
            &disk.dev,
            "--yes",
        ];
        if kernel_copy {
            args.push("--kernel-copy");
        }
        assert_ok(&env.install(&args));
        let after = run("blkid", &["-p", "-o", "export", &disk.part(2)]);
        assert!(
            after.contains("TYPE=ext4"),
            "kernel_copy={kernel_copy}: {after}"
        );
        assert!(
            !after.contains("raid"),
            "kernel_copy={kernel_copy}: the old RAID signature survived: {after}"
        );
    }
}

/// An md v1.0 superblock for a member whose superblock sits at byte `offset` of it.
fn md_v1_0_superblock(offset: u64) -> Vec<u8> {
    let mut b = vec![0u8; 256 + 2 * 2];
    let put32 =
        |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put32(&mut b, 0, 0xa92b_4efc); // magic
    put32(&mut b, 4, 1); // major version
    b[16..32].copy_from_slice(&[0x11; 16]); // array UUID
    b[32..40].copy_from_slice(b"old:root");
    put32(&mut b, 72, 1); // RAID1
    put64(&mut b, 80, offset >> 9); // size
    put32(&mut b, 92, 2); // raid disks
    put64(&mut b, 136, offset >> 9); // data size
    put64(&mut b, 144, offset >> 9); // super offset, in sectors
    b[168..184].copy_from_slice(&[0x22; 16]); // device UUID
    put32(&mut b, 220, 2); // max_dev: two roles follow
    let sum: u64 = b
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as u64)
        .sum();
    put32(&mut b, 216, ((sum & 0xffff_ffff) + (sum >> 32)) as u32);
    b
}
