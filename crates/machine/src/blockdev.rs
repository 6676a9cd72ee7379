//! The syscalls on one whole disk: an exclusive lock, its size, wiping, and telling the kernel
//! about a new partition table (BLKRRPART, and BLKPG where the kernel cannot parse tables
//! itself, as some minimal kernels cannot). Works on loop devices, and — except for the
//! partition calls — on plain image files.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::disks::partition_node;

/// One partition as the kernel should see it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartSpan {
    /// 1-based partition number.
    pub number: u32,
    pub start: u64,
    pub len: u64,
}

/// A whole disk (or image file) opened read-write with `flock(LOCK_EX)` held, as udev and
/// other partitioning tools expect of a program that rewrites a disk. The lock goes with it.
#[derive(Debug)]
pub struct LockedDisk {
    file: Flock<File>,
    path: PathBuf,
    /// The device number when it is a block device; None for an image file.
    rdev: Option<u64>,
    hold: Hold,
}

const MIB: u64 = 1 << 20;

// The block-layer ioctls (linux/fs.h, linux/blkpg.h).
nix::ioctl_read_bad!(
    blk_getsize64,
    nix::request_code_read!(0x12, 114, std::mem::size_of::<libc::size_t>()),
    u64
);
nix::ioctl_read_bad!(blk_sszget, nix::request_code_none!(0x12, 104), libc::c_int);
nix::ioctl_none!(blk_rrpart, 0x12, 95);
nix::ioctl_write_ptr_bad!(blk_pg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);

const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_DEL_PARTITION: libc::c_int = 2;

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// `struct blkpg_partition`: start and length in bytes.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// How a disk is held besides its `flock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Opened with `O_EXCL`: the kernel refuses (EBUSY) if anyone else holds the disk
    /// exclusively (a mounted partition, RAID, LVM or device-mapper on it, ZFS, a virtual
    /// machine), and, while it is held, refuses them. Nothing else can mount its partitions
    /// either, mkfs included: hold a disk so while writing it with our own code only.
    Exclusive,
    /// Opened without `O_EXCL`, so that mkfs and mount can claim its partitions.
    Shared,
}

/// Opens `path` read-write and locks it, waiting up to 5 s for another holder of the lock.
pub fn open_locked(path: &Path, hold: Hold) -> io::Result<LockedDisk> {
    open_locked_within(path, hold, Duration::from_secs(5))
}

/// Whether anyone holds `path` exclusively, without holding it: opens it read-only with
/// `O_EXCL` and closes it. For `--dry-run`, which must not take the disk.
pub fn check_not_held(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_EXCL)
        .open(path)
        .map(drop)
        .map_err(|e| open_error(path, e))
}

/// An error opening a whole disk, with what to do about it.
fn open_error(path: &Path, e: io::Error) -> io::Error {
    let hint = match e.kind() {
        io::ErrorKind::NotFound => "; name an existing disk",
        io::ErrorKind::PermissionDenied => "; run as root, and check it is not read-only",
        _ if e.raw_os_error() == Some(libc::EBUSY) => {
            "; another program holds it exclusively (a mounted file system, RAID, LVM, \
             device-mapper, ZFS or a virtual machine): stop that first, or choose another disk"
        }
        _ => "",
    };
    io::Error::new(e.kind(), format!("opening {}: {e}{hint}", path.display()))
}

/// [`open_locked`], waiting at most `wait` for the lock.
pub fn open_locked_within(path: &Path, hold: Hold, wait: Duration) -> io::Result<LockedDisk> {
    let excl = match hold {
        Hold::Exclusive => libc::O_EXCL,
        Hold::Shared => 0,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | excl)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    let meta = file.metadata()?;
    let rdev = meta.file_type().is_block_device().then(|| meta.rdev());
    if let Some(rdev) = rdev {
        if sys_dir_of(rdev).is_some_and(|d| d.join("partition").exists()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a partition, not a whole disk: name the disk",
                    path.display()
                ),
            ));
        }
    }
    let start = Instant::now();
    let file = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => break locked,
            Err((f, Errno::EWOULDBLOCK)) if start.elapsed() < wait => {
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is locked by another process (another installer or udev?): still \
                         locked after {:.1} s; stop that process and run again",
                        path.display(),
                        wait.as_secs_f64()
                    ),
                ))
            }
            Err((_, e)) => {
                return Err(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("locking {}: {}", path.display(), e.desc()),
                ))
            }
        }
    };
    Ok(LockedDisk {
        file,
        path: path.to_path_buf(),
        rdev,
        hold,
    })
}

/// The canonical sysfs directory of block device `rdev`.
fn sys_dir_of(rdev: u64) -> Option<PathBuf> {
    let (ma, mi) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    fs::canonicalize(format!("/sys/dev/block/{ma}:{mi}")).ok()
}

/// A number from a sysfs attribute.
fn read_num(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl LockedDisk {
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn hold(&self) -> Hold {
        self.hold
    }

    /// The same disk, held [`Hold::Shared`] from now on (with its lock), so that mkfs and
    /// mount can claim its partitions. The exclusive descriptor is closed only once the new
    /// one is open, and the lock taken again at once.
    pub fn share(self) -> io::Result<LockedDisk> {
        if self.hold == Hold::Shared {
            return Ok(self);
        }
        let path = self.path.clone();
        drop(self);
        open_locked(&path, Hold::Shared)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes (BLKGETSIZE64; an image file's length).
    pub fn size(&self) -> io::Result<u64> {
        if self.rdev.is_none() {
            return Ok(self.file.metadata()?.len());
        }
        let mut size = 0u64;
        // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which outlives the call.
        unsafe { blk_getsize64(self.file.as_raw_fd(), &mut size) }
            .map_err(|e| self.err(e.into(), "reading its size (BLKGETSIZE64)"))?;
        Ok(size)
    }

    /// Logical sector size in bytes (BLKSSZGET; 512 for an image file).
    pub fn logical_block_size(&self) -> io::Result<u64> {
        if self.rdev.is_none() {
            return Ok(512);
        }
        let mut size: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes one int through the pointer, which outlives the call.
        unsafe { blk_sszget(self.file.as_raw_fd(), &mut size) }
            .map_err(|e| self.err(e.into(), "reading its sector size (BLKSSZGET)"))?;
        Ok(size as u64)
    }

    fn err(&self, e: io::Error, doing: &str) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {doing}: {e}", self.path.display()))
    }

    /// Zeroes `len` bytes at `offset`, clamped to the end of the disk, 1 MiB at a time.
    pub fn wipe(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset.saturating_add(len).min(self.size()?);
        let zeros = vec![0u8; MIB as usize];
        let mut at = offset;
        while at < end {
            let n = (end - at).min(MIB) as usize;
            self.file
                .write_all_at(&zeros[..n], at)
                .map_err(|e| self.err(e, &format!("zeroing {n} bytes at {at}")))?;
            at += n as u64;
        }
        Ok(())
    }

    /// Zeroes the first and the last MiB — the protective MBR, the primary and backup GPT
    /// and most file-system and RAID signatures an earlier life of the disk left there — and
    /// flushes them to the disk.
    pub fn wipe_signatures(&self) -> io::Result<()> {
        let size = self.size()?;
        self.wipe(0, MIB)?;
        self.wipe(size.saturating_sub(MIB), MIB)?;
        self.file
            .sync_data()
            .map_err(|e| self.err(e, "flushing the wiped signatures"))
    }

    fn sys_dir(&self) -> Option<PathBuf> {
        sys_dir_of(self.rdev?)
    }

    /// The kernel's name for the disk (`loop3`, `nvme0n1`), from its device number.
    fn kernel_name(&self) -> io::Result<String> {
        self.sys_dir()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{}: the kernel shows no such disk in /sys/dev/block",
                    self.path.display()
                ))
            })
    }

    /// The partitions the kernel has for this disk now (from sysfs), by number, with their
    /// sysfs directories. None for an image file.
    fn kernel_partition_dirs(&self) -> io::Result<Vec<(PartSpan, PathBuf)>> {
        let Some(dir) = self.sys_dir() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            let Some(number) = read_num(&p.join("partition")) else {
                continue;
            };
            // sysfs counts start and size in 512-byte units whatever the sector size.
            let (Some(start), Some(size)) = (read_num(&p.join("start")), read_num(&p.join("size")))
            else {
                continue;
            };
            let span = PartSpan {
                number: number as u32,
                start: start * 512,
                len: size * 512,
            };
            out.push((span, p));
        }
        out.sort_by_key(|(s, _)| s.number);
        Ok(out)
    }

    /// The partitions the kernel has for this disk now, start and length in bytes.
    pub fn kernel_partitions(&self) -> io::Result<Vec<PartSpan>> {
        Ok(self
            .kernel_partition_dirs()?
            .into_iter()
            .map(|(s, _)| s)
            .collect())
    }

    /// The numbers of the partitions the kernel has for this disk now.
    pub fn partitions_in_kernel(&self) -> io::Result<Vec<u32>> {
        Ok(self.kernel_partitions()?.iter().map(|p| p.number).collect())
    }

    /// Removes every partition the kernel has of this disk (BLKPG_DEL_PARTITION), and any
    /// node left behind for them in /dev, so no stale partition survives a wipe. Fails when
    /// one is in use.
    pub fn forget_partitions(&self) -> io::Result<()> {
        for (p, dir) in self.kernel_partition_dirs()? {
            let node = dir
                .file_name()
                .map(|n| Path::new("/dev").join(n))
                .unwrap_or_default();
            let dev = fs::read_to_string(dir.join("dev")).unwrap_or_default();
            self.blkpg(
                BLKPG_DEL_PARTITION,
                &PartSpan {
                    start: 0,
                    len: 0,
                    ..p
                },
            )
            .map_err(|e| {
                let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                    ": it is in use (mounted, swap, or held by device-mapper or RAID); tear \
                         that down first"
                } else {
                    ""
                };
                io::Error::new(
                    e.kind(),
                    format!(
                        "removing partition {} ({}) of {} from the kernel: {e}{hint}",
                        p.number,
                        node.display(),
                        self.path.display()
                    ),
                )
            })?;
            // devtmpfs removes the nodes it made; one made by mknod stays: remove it.
            if let Ok(m) = fs::metadata(&node) {
                if m.file_type().is_block_device() && dev_string(m.rdev()) == dev.trim() {
                    let _ = fs::remove_file(&node);
                }
            }
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
        // SAFETY: `arg` points at `part`; both live until the ioctl returns, and the kernel
        // only reads `datalen` bytes of it.
        unsafe { blk_pg(self.file.as_raw_fd(), &arg) }.map_err(io::Error::from)?;
        Ok(())
    }

    /// Makes the kernel see exactly `parts` (the table just written) and returns their device
    /// nodes, in `parts` order. BLKRRPART first, retried while the disk is busy; BLKRRPART
    /// registers the partitions before it returns, so if the kernel then does not show these
    /// partitions with these starts and sizes (it has no parser for the table, the loop device
    /// has no partition scanning, or BLKRRPART failed), every kernel partition of the disk is
    /// deleted and `parts` are added one by one with BLKPG. Then each node is awaited in /dev
    /// (up to 5 s) and made with mknod from sysfs if devtmpfs does not make it.
    pub fn reread(&self, parts: &[PartSpan]) -> io::Result<Vec<PathBuf>> {
        if self.rdev.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is an image file, not a disk: attach it first (`losetup -f --show {}`)",
                    self.path.display(),
                    self.path.display()
                ),
            ));
        }
        let mut want = parts.to_vec();
        want.sort_by_key(|p| p.number);
        for (i, p) in want.iter().enumerate() {
            if p.number == 0
                || (i > 0 && want[i - 1].number == p.number)
                || p.len == 0
                || p.start % 512 != 0
                || p.len % 512 != 0
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: partition {} (start {}, {} bytes) is not a valid partition: \
                         numbers must be unique and from 1, offsets and sizes whole sectors",
                        self.path.display(),
                        p.number,
                        p.start,
                        p.len
                    ),
                ));
            }
        }

        let mut rrpart = Ok(());
        for attempt in 0..10 {
            // SAFETY: BLKRRPART takes no argument.
            match unsafe { blk_rrpart(self.file.as_raw_fd()) } {
                Err(Errno::EBUSY) if attempt < 9 => std::thread::sleep(Duration::from_millis(100)),
                r => {
                    rrpart = r.map(drop);
                    break;
                }
            }
        }

        if self.kernel_partitions()? != want {
            self.forget_partitions().map_err(|e| {
                let why = match rrpart {
                    Ok(()) => String::new(),
                    Err(rr) => format!(" (BLKRRPART failed too: {})", rr.desc()),
                };
                io::Error::new(e.kind(), format!("{e}{why}"))
            })?;
            for p in &want {
                self.blkpg(BLKPG_ADD_PARTITION, p).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "telling the kernel about partition {} of {} (start {}, {} bytes) \
                             with BLKPG: {e}; check the table with `sfdisk -d {}`",
                            p.number,
                            self.path.display(),
                            p.start,
                            p.len,
                            self.path.display()
                        ),
                    )
                })?;
            }
            let have = self.kernel_partitions()?;
            if have != want {
                return Err(io::Error::other(format!(
                    "{}: the kernel shows partitions {have:?} after adding {want:?}; \
                     is something else changing the disk?",
                    self.path.display()
                )));
            }
        }

        let disk_node = Path::new("/dev").join(self.kernel_name()?);
        let dirs = self.kernel_partition_dirs()?;
        parts
            .iter()
            .map(|p| {
                let node = partition_node(&disk_node, p.number);
                let dir = dirs
                    .iter()
                    .find(|(s, _)| s.number == p.number)
                    .map(|(_, d)| d.clone())
                    .unwrap_or_default();
                self.wait_for_node(&node, &dir, p.number)?;
                Ok(node)
            })
            .collect()
    }

    /// Waits up to 5 s for `node` to be the block device of partition `number` (sysfs
    /// directory `dir`); makes it with mknod when devtmpfs did not, and replaces a stale node
    /// (another device number) at once.
    fn wait_for_node(&self, node: &Path, dir: &Path, number: u32) -> io::Result<()> {
        let fail = |what: String| {
            io::Error::other(format!(
                "partition {number} of {}: {what}; check that /dev is writable (devtmpfs) and \
                 run again",
                self.path.display()
            ))
        };
        let dev = fs::read_to_string(dir.join("dev"))
            .map(|s| s.trim().to_string())
            .map_err(|e| fail(format!("the kernel shows no device number for it ({e})")))?;
        let (major, minor) = dev
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .ok_or_else(|| fail(format!("{}/dev reads {dev:?}", dir.display())))?;
        let rdev = nix::sys::stat::makedev(major, minor);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match fs::symlink_metadata(node) {
                Ok(m) if m.file_type().is_block_device() && m.rdev() == rdev => return Ok(()),
                Ok(_) => {
                    // Another device's node (left by an earlier mknod) or not a device at all.
                    fs::remove_file(node)
                        .map_err(|e| fail(format!("removing the stale {}: {e}", node.display())))?;
                    break;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => break,
            }
        }
        nix::sys::stat::mknod(
            node,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            rdev,
        )
        .map_err(|e| fail(format!("creating {} ({dev}): {}", node.display(), e.desc())))
    }
}

fn dev_string(rdev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    )
}
