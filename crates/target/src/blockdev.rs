//! The syscalls on one whole disk: an exclusive lock, its size, wiping, and telling the kernel
//! about a new partition table (BLKRRPART, and BLKPG where the kernel cannot parse tables
//! itself, as this machine's cannot).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::disks::partition_node;

/// One partition as the kernel should see it (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpan {
    pub number: u32,
    pub start: u64,
    pub len: u64,
}

/// A whole disk opened read-write with `flock(LOCK_EX)` held, as udev and other tools
/// expect of a program that rewrites a disk.
pub struct LockedDisk {
    file: Flock<File>,
    path: PathBuf,
    is_device: bool,
}

nix::ioctl_read!(blk_getsize64, 0x12, 114, u64);
nix::ioctl_none!(blk_rrpart, 0x12, 95);
nix::ioctl_read_bad!(blk_sszget, 0x1268, libc::c_int);
nix::ioctl_write_ptr_bad!(blk_pg, 0x1269, BlkpgIoctlArg);

const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_DEL_PARTITION: libc::c_int = 2;

#[repr(C)]
pub struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// Opens and locks `path`, waiting up to 5 s for another holder of the lock.
pub fn open_locked(path: &Path) -> io::Result<LockedDisk> {
    open_locked_within(path, Duration::from_secs(5))
}

pub fn open_locked_within(path: &Path, wait: Duration) -> io::Result<LockedDisk> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    let is_device = file.metadata()?.file_type().is_block_device();
    let start = Instant::now();
    let mut file = file;
    let file = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => break locked,
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if start.elapsed() < wait => {
                file = f;
                std::thread::sleep(Duration::from_millis(100))
            }
            Err((_, e)) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is locked by another process (another installer, or udev probing it): {}; try again",
                        path.display(),
                        e.desc()
                    ),
                ))
            }
        }
    };
    Ok(LockedDisk {
        file,
        path: path.to_path_buf(),
        is_device,
    })
}

impl LockedDisk {
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> io::Result<u64> {
        if !self.is_device {
            return Ok(self.file.metadata()?.len());
        }
        let mut size = 0u64;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which outlives the call.
        unsafe { blk_getsize64(self.file.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
        Ok(size)
    }

    pub fn logical_block_size(&self) -> io::Result<u64> {
        if !self.is_device {
            return Ok(512);
        }
        let mut size: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes one int through the pointer, which outlives the call.
        unsafe { blk_sszget(self.file.as_raw_fd(), &mut size) }.map_err(io::Error::from)?;
        Ok(size as u64)
    }

    /// Zeroes `len` bytes at `offset` (clamped to the disk).
    pub fn wipe(&self, offset: u64, len: u64) -> io::Result<()> {
        let size = self.size()?;
        let end = (offset + len).min(size);
        let zeros = vec![0u8; 1 << 20];
        let mut at = offset;
        while at < end {
            let n = ((end - at) as usize).min(zeros.len());
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Zeroes the first and last MiB: the MBR, both GPTs and most file-system and RAID
    /// signatures an earlier life of the disk left.
    pub fn wipe_signatures(&self) -> io::Result<()> {
        let size = self.size()?;
        self.wipe(0, 1 << 20)?;
        self.wipe(size.saturating_sub(1 << 20), 1 << 20)?;
        self.file.sync_data()
    }

    fn sys_dir(&self) -> Option<PathBuf> {
        let name = fs::canonicalize(&self.path).ok()?;
        let name = name.file_name()?.to_string_lossy().into_owned();
        let dir = PathBuf::from("/sys/class/block").join(&name);
        dir.exists().then_some(dir)
    }

    /// Partition numbers the kernel has for this disk now, with their start and length in
    /// bytes.
    pub fn kernel_partitions(&self) -> Vec<PartSpan> {
        let Some(dir) = self.sys_dir() else {
            return Vec::new();
        };
        let read = |p: PathBuf| -> Option<u64> { fs::read_to_string(p).ok()?.trim().parse().ok() };
        let mut out: Vec<PartSpan> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                Some(PartSpan {
                    number: read(p.join("partition"))? as u32,
                    start: read(p.join("start"))? * 512,
                    len: read(p.join("size"))? * 512,
                })
            })
            .collect();
        out.sort_by_key(|p| p.number);
        out
    }

    /// Removes every partition the kernel knows of on this disk (none may be in use).
    pub fn forget_partitions(&self) -> io::Result<()> {
        if !self.is_device {
            return Ok(());
        }
        for p in self.kernel_partitions() {
            self.blkpg(
                BLKPG_DEL_PARTITION,
                &PartSpan {
                    start: 0,
                    len: 0,
                    ..p
                },
            )
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "removing partition {} of {} from the kernel: {e} (is it in use?)",
                        p.number,
                        self.path.display()
                    ),
                )
            })?;
        }
        Ok(())
    }

    fn blkpg(&self, op: libc::c_int, p: &PartSpan) -> io::Result<()> {
        let mut part = BlkpgPartition {
            start: p.start as libc::c_longlong,
            length: p.len as libc::c_longlong,
            pno: p.number as libc::c_int,
            devname: [0; 64],
            volname: [0; 64],
        };
        let arg = BlkpgIoctlArg {
            op,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
            data: &mut part as *mut BlkpgPartition as *mut libc::c_void,
        };
        // SAFETY: `arg` points at `part`; both live until the ioctl returns.
        unsafe { blk_pg(self.file.as_raw_fd(), &arg) }.map_err(io::Error::from)?;
        Ok(())
    }

    /// Makes the kernel see `parts` and returns their device nodes, in order. BLKRRPART
    /// first (retried while the disk is busy); if the kernel then does not show exactly these
    /// partitions (it may have no partition-table parser at all), they are set one by one
    /// with BLKPG.
    pub fn reread(&self, parts: &[PartSpan]) -> io::Result<Vec<PathBuf>> {
        let nodes: Vec<PathBuf> = parts
            .iter()
            .map(|p| partition_node(&self.path, p.number))
            .collect();
        if !self.is_device {
            return Err(io::Error::other(format!(
                "{} is a regular file, not a disk; attach it with losetup first",
                self.path.display()
            )));
        }
        for _ in 0..10 {
            // SAFETY: BLKRRPART takes no argument.
            match unsafe { blk_rrpart(self.file.as_raw_fd()) } {
                Err(nix::errno::Errno::EBUSY) => std::thread::sleep(Duration::from_millis(100)),
                _ => break,
            }
        }
        let matches = |have: &[PartSpan]| have == parts;
        let deadline = Instant::now() + Duration::from_secs(2);
        while !matches(&self.kernel_partitions()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !matches(&self.kernel_partitions()) {
            self.forget_partitions()?;
            for p in parts {
                self.blkpg(BLKPG_ADD_PARTITION, p).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("adding partition {} to the kernel: {e}", p.number),
                    )
                })?;
            }
        }
        for (p, node) in parts.iter().zip(&nodes) {
            wait_for_node(node, &self.path, p.number)?;
        }
        Ok(nodes)
    }
}

/// Waits for a partition's device node; makes it from sysfs if devtmpfs does not.
fn wait_for_node(node: &Path, disk: &Path, number: u32) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if fs::metadata(node).is_ok_and(|m| m.file_type().is_block_device()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let name = node
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dev = fs::read_to_string(format!("/sys/class/block/{name}/dev")).map_err(|_| {
        io::Error::other(format!(
            "partition {number} of {} did not appear as {} within 5 s",
            disk.display(),
            node.display()
        ))
    })?;
    let (major, minor) = dev
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .ok_or_else(|| io::Error::other(format!("/sys/class/block/{name}/dev: {dev:?}")))?;
    nix::sys::stat::mknod(
        node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        nix::sys::stat::makedev(major, minor),
    )
    .map_err(|e| io::Error::other(format!("creating {}: {}", node.display(), e.desc())))
}
