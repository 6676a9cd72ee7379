//! A write-once ext4 builder. It lays out a whole file system, contents included, straight
//! onto a block device in one mostly ascending pass: no kernel file system code runs while it
//! is filled, so creating tens of thousands of files costs what writing their bytes costs.
//! An installer uses it to write the target's root file system with the store already in it.
//!
//! Threads share one [`Fs`]; each has its own [`Writer`], which packs small files into a
//! region of a few MiB and writes it with one direct write. Inode numbers and blocks are
//! handed out in ascending order; each inode is written once, when its contents are known
//! (a directory's when its last entry is), and the inode table block it sits in goes to the
//! device as soon as all its inodes are final, so memory stays bounded whatever the tree.
//!
//! [`layout`] says where things go, [`inode`] and [`dir`] encode them; this module does the
//! I/O. Nothing reaches the device outside `[0, bytes)` of the file it is given.

mod crc32c;
mod device;
pub mod dir;
pub mod inode;
pub mod layout;
mod writer;

pub use writer::Writer;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use crate::device::{err, Io};
pub use dir::{Entry, FT_DIR, FT_LNK, FT_REG};
pub use inode::Run;
use inode::{Data, Inode, S_IFDIR, S_IFLNK, S_IFREG};
use layout::{Geometry, GroupDesc, Super, BLOCK, INODES_PER_BLOCK, INODE_SIZE};
pub use layout::{LayoutError, MAX_BYTES, MIN_BYTES, ROOT_INO};

/// Blocks a writer packs before it writes them out: 4 MiB.
const REGION_BLOCKS: u64 = 1024;
/// Zeros written at a time where the device cannot zero by itself.
const CHUNK: usize = 1 << 20;

/// How to make the file system.
#[derive(Debug, Clone)]
pub struct Options {
    pub label: String,
    pub uuid: [u8; 16],
    /// Seeds the directory hashes the kernel uses once a directory grows an index.
    pub hash_seed: [u8; 16],
    /// Seconds since the epoch, for the superblock and the times of what [`Fs`] creates.
    pub now: u32,
    /// 32768 as mkfs makes them; tests use fewer to get many groups from a small image.
    pub blocks_per_group: u64,
}

/// A file system being written. See the crate documentation.
pub struct Fs {
    geo: Geometry,
    opts: Options,
    /// The seed of the metadata checksums (from the UUID).
    seed: u32,
    /// Data goes through this one, with `O_DIRECT` where the device allows it.
    direct: File,
    /// Metadata goes through the page cache: small writes, merged by the kernel.
    meta: File,
    alloc: Mutex<Alloc>,
    /// Inode table blocks not yet complete, by block number.
    table: Mutex<HashMap<u64, TableBlock>>,
    io: Io,
}

/// An inode table block being filled: how many of its inodes are in, and its bytes.
type TableBlock = (u8, Box<[u8]>);

struct Alloc {
    group: u64,
    next: u64,
    /// Every block handed out for data, as runs.
    used: Vec<Run>,
    next_ino: u32,
    dirs: Vec<u16>,
}

impl Fs {
    /// Starts a file system of `bytes` on `device` (a partition, or a file in tests).
    /// The start and end of the device are cleared first, so no older file system's
    /// signature survives to confuse blkid.
    pub fn create(device: &Path, bytes: u64, opts: Options) -> io::Result<Fs> {
        let geo = Geometry::new(bytes, opts.blocks_per_group)
            .map_err(|e| io::Error::other(format!("{}: {e}", device.display())))?;
        let open = |flags| {
            OpenOptions::new()
                .write(true)
                .custom_flags(flags)
                .open(device)
                .map_err(err(format!("opening {}", device.display())))
        };
        let meta = open(0)?;
        // tmpfs and some others refuse O_DIRECT: then data goes through the page cache too.
        let direct = open(libc::O_DIRECT).or_else(|_| open(0))?;
        let io = Io::start(
            direct
                .try_clone()
                .map_err(err("duplicating a descriptor"))?,
            geo.blocks * BLOCK,
        );
        let fs = Fs {
            seed: layout::csum_seed(&opts.uuid),
            io,
            opts,
            direct,
            meta,
            alloc: Mutex::new(Alloc {
                group: 0,
                next: geo.data_start(0),
                used: Vec::new(),
                next_ino: layout::FIRST_INO + 1,
                dirs: vec![0; geo.groups as usize],
            }),
            table: Mutex::new(HashMap::new()),
            geo,
        };
        let clear = 1u64 << 20;
        let zeros = vec![0u8; clear as usize];
        fs.write_meta(&zeros, 0)?;
        fs.write_meta(&zeros, fs.geo.blocks * BLOCK - clear)?;
        Ok(fs)
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    fn write_meta(&self, data: &[u8], offset: u64) -> io::Result<()> {
        assert!(offset + data.len() as u64 <= self.geo.blocks * BLOCK);
        self.meta
            .write_all_at(data, offset)
            .map_err(err(format_args!("writing metadata at byte {offset}")))
    }

    /// A new inode number, for a node whose contents come later.
    pub fn new_inode(&self) -> io::Result<u32> {
        let mut a = self.alloc.lock().unwrap();
        if a.next_ino as u64 > self.geo.inodes() {
            return Err(io::Error::other(format!(
                "the file system has room for {} files and directories; the tree has more",
                self.geo.inodes()
            )));
        }
        a.next_ino += 1;
        Ok(a.next_ino - 1)
    }

    fn no_space(&self, wanted: u64) -> io::Error {
        io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "the file system ({} MiB) is full: {wanted} more blocks of 4 KiB were wanted",
                (self.geo.blocks * BLOCK) >> 20
            ),
        )
    }

    /// One contiguous run of at least `min` and at most `max` blocks, within one group.
    fn alloc_region(&self, min: u64, max: u64) -> io::Result<Run> {
        let mut a = self.alloc.lock().unwrap();
        loop {
            let end = self.geo.group_start(a.group) + self.geo.group_blocks(a.group);
            if end - a.next >= min {
                let len = (end - a.next).min(max);
                let run = Run { start: a.next, len };
                a.next += len;
                return Ok(run);
            }
            if a.group + 1 >= self.geo.groups {
                return Err(self.no_space(min));
            }
            a.group += 1;
            a.next = self.geo.data_start(a.group);
        }
    }

    /// `n` blocks in as few runs as the groups' metadata allows, recorded as used.
    fn alloc_runs(&self, mut n: u64) -> io::Result<Vec<Run>> {
        let mut runs = Vec::new();
        while n > 0 {
            let r = self.alloc_region(1, n)?;
            n -= r.len;
            runs.push(r);
        }
        self.alloc.lock().unwrap().used.extend(&runs);
        Ok(runs)
    }

    /// Writes inode `ino`. Its table block goes out once all sixteen of its inodes are in.
    fn put_inode(&self, w: &mut Writer, ino: u32, inode: &Inode) -> io::Result<()> {
        self.put_inode_encoded(w, ino, inode).map(drop)
    }

    /// [`Fs::put_inode`], returning the inode as written (its `i_block` names the extent
    /// leaves the inode points to, if any).
    fn put_inode_encoded(
        &self,
        w: &mut Writer,
        ino: u32,
        inode: &Inode,
    ) -> io::Result<[u8; INODE_SIZE as usize]> {
        let leaves_needed = match &inode.data {
            Data::Blocks(runs) => inode::leaves_needed(runs),
            Data::InlineLink(_) => 0,
        };
        if leaves_needed > inode::MAX_LEAVES {
            return Err(io::Error::other(format!(
                "inode {ino}: {} bytes in {} pieces is more than one file can have here",
                inode.size,
                leaves_needed * inode::PER_LEAF
            )));
        }
        let inode_seed = inode::inode_seed(self.seed, ino);
        let leaf_blocks = if leaves_needed > 0 {
            let (_, mut leaves) = inode.encode(&vec![0; leaves_needed]);
            for leaf in &mut leaves {
                inode::set_leaf_checksum(leaf, inode_seed);
            }
            let runs = w.bytes(&leaves.concat())?;
            runs.iter().flat_map(|r| r.start..r.start + r.len).collect()
        } else {
            Vec::new()
        };
        let (bytes, _) = inode.encode(&leaf_blocks);
        if inode.mode & 0o170000 == S_IFDIR {
            let g = (ino as u64 - 1) / self.geo.inodes_per_group;
            self.alloc.lock().unwrap().dirs[g as usize] += 1;
        }
        self.put_inode_bytes(ino, bytes)?;
        Ok(bytes)
    }

    /// Checksums the inode and files it into its table block.
    fn put_inode_bytes(&self, ino: u32, mut bytes: [u8; INODE_SIZE as usize]) -> io::Result<()> {
        inode::set_inode_checksum(&mut bytes, inode::inode_seed(self.seed, ino));
        let (block, offset) = self.geo.inode_location(ino);
        let full = {
            let mut t = self.table.lock().unwrap();
            let slot = t
                .entry(block)
                .or_insert_with(|| (0, vec![0u8; BLOCK as usize].into_boxed_slice()));
            slot.1[offset as usize..(offset + INODE_SIZE) as usize].copy_from_slice(&bytes);
            slot.0 += 1;
            if slot.0 as u64 == INODES_PER_BLOCK {
                t.remove(&block)
            } else {
                None
            }
        };
        match full {
            Some((_, data)) => self.write_meta(&data, block * BLOCK),
            None => Ok(()),
        }
    }

    /// A regular file of `size` bytes read from `contents`, as inode `ino`.
    pub fn file(
        &self,
        w: &mut Writer,
        ino: u32,
        perm: u16,
        mtime: u32,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        let runs = w.file(size, contents)?;
        self.put_inode(
            w,
            ino,
            &Inode {
                mode: S_IFREG | perm,
                size,
                links: 1,
                mtime,
                ctime: self.opts.now,
                data: Data::Blocks(runs),
            },
        )
    }

    /// A symlink to `target`, as inode `ino`.
    pub fn symlink(&self, w: &mut Writer, ino: u32, mtime: u32, target: &[u8]) -> io::Result<()> {
        let data = if target.len() < 60 {
            Data::InlineLink(target.to_vec())
        } else {
            Data::Blocks(w.bytes(target)?)
        };
        self.put_inode(
            w,
            ino,
            &Inode {
                mode: S_IFLNK | 0o777,
                size: target.len() as u64,
                links: 1,
                mtime,
                ctime: self.opts.now,
                data,
            },
        )
    }

    /// Directory `ino` in `parent`, holding `entries` (without `.` and `..`).
    pub fn dir(
        &self,
        w: &mut Writer,
        ino: u32,
        parent: u32,
        perm: u16,
        mtime: u32,
        entries: &[Entry],
    ) -> io::Result<()> {
        let mut blocks = dir::encode(ino, parent, entries);
        dir::set_checksums(&mut blocks, inode::inode_seed(self.seed, ino));
        let subdirs = entries.iter().filter(|e| e.file_type == FT_DIR).count();
        let runs = w.bytes(&blocks)?;
        self.put_inode(
            w,
            ino,
            &Inode {
                mode: S_IFDIR | perm,
                size: blocks.len() as u64,
                // Past 65,000 subdirectories ext4 counts 1 ("many", the dir_nlink feature).
                links: u16::try_from(2 + subdirs)
                    .ok()
                    .filter(|&n| n < 65000)
                    .unwrap_or(1),
                mtime,
                ctime: self.opts.now,
                data: Data::Blocks(runs),
            },
        )
    }

    /// A writer for one thread.
    pub fn writer(&self) -> Writer<'_> {
        self.io.add_writer();
        Writer::new(self)
    }

    /// Completes the file system: the root directory holding `root_entries` and
    /// `lost+found`, the journal, the bitmaps, the group descriptors and the superblocks;
    /// then flushes it all to the device. Every writer must have been finished, and every
    /// inode from [`Fs::new_inode`] written.
    pub fn finish(self, root_entries: Vec<Entry>) -> io::Result<()> {
        let now = self.opts.now;
        let mut w = self.writer();
        // lost+found gets four blocks, as mkfs makes it, so fsck has room to put things.
        let mut lf = dir::encode(layout::LOST_FOUND_INO, ROOT_INO, &[]);
        for _ in 0..3 {
            lf.extend(dir::empty_block());
        }
        dir::set_checksums(
            &mut lf,
            inode::inode_seed(self.seed, layout::LOST_FOUND_INO),
        );
        let runs = w.bytes(&lf)?;
        self.put_inode(
            &mut w,
            layout::LOST_FOUND_INO,
            &Inode {
                mode: S_IFDIR | 0o700,
                size: lf.len() as u64,
                links: 2,
                mtime: now,
                ctime: now,
                data: Data::Blocks(runs),
            },
        )?;
        let mut entries = vec![Entry {
            name: b"lost+found".to_vec(),
            ino: layout::LOST_FOUND_INO,
            file_type: FT_DIR,
        }];
        entries.extend(root_entries);
        self.dir(&mut w, ROOT_INO, ROOT_INO, 0o755, now, &entries)?;
        let journal_backup = self.journal(&mut w)?;
        w.finish()?;
        self.io.drain()?;
        // The reserved inodes other than the root and the journal stay empty.
        for ino in (1..layout::FIRST_INO).filter(|&i| i != ROOT_INO && i != layout::JOURNAL_INO) {
            self.put_inode_bytes(ino, [0u8; INODE_SIZE as usize])?;
        }
        let next_ino = self.alloc.lock().unwrap().next_ino;
        let pending: Vec<(u64, TableBlock)> = self.table.lock().unwrap().drain().collect();
        // Only the table block of the last inodes may be partly filled.
        let (last, _) = self.geo.inode_location(next_ino - 1);
        for (block, (_, data)) in pending {
            if block != last {
                return Err(io::Error::other(format!(
                    "inode table block {block} has inodes that were never written (a bug)"
                )));
            }
            self.write_meta(&data, block * BLOCK)?;
        }
        self.write_groups(next_ino, journal_backup)?;
        self.meta.sync_all().map_err(err("flushing metadata"))?;
        self.direct.sync_all().map_err(err("flushing data"))?;
        Ok(())
    }

    /// The journal: contiguous blocks, cleared, with a jbd2 superblock in the first.
    /// Returns the superblock's copy of the journal inode's block map.
    fn journal(&self, w: &mut Writer) -> io::Result<[u32; 17]> {
        let n = self.geo.journal_blocks;
        let runs = self.alloc_runs(n)?;
        for r in &runs {
            self.zero(r.start, r.len)?;
        }
        let mut sb = vec![0u8; BLOCK as usize];
        let be = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        be(&mut sb, 0x0, 0xC03B_3998); // magic
        be(&mut sb, 0x4, 4); // superblock, version 2
        be(&mut sb, 0xC, BLOCK as u32);
        be(&mut sb, 0x10, n as u32);
        be(&mut sb, 0x14, 1); // first log block
        be(&mut sb, 0x18, 1); // first transaction expected
        sb[0x30..0x40].copy_from_slice(&self.opts.uuid);
        be(&mut sb, 0x40, 1); // one user: this file system
                              // As mkfs does with metadata_csum: journal checksums v3, CRC-32C, and the journal
                              // superblock's own checksum over its 1024 bytes.
        be(&mut sb, 0x28, 0x10); // incompat: csum v3
        sb[0x50] = 4; // CRC-32C
        let crc = crc32c::crc32c(!0, &sb[..1024]);
        be(&mut sb, 0xFC, crc);
        self.write_meta(&sb, runs[0].start * BLOCK)?;
        let inode = Inode {
            mode: S_IFREG | 0o600,
            size: n * BLOCK,
            links: 1,
            mtime: self.opts.now,
            ctime: self.opts.now,
            data: Data::Blocks(runs),
        };
        // The journal crosses groups (each starts with its bitmaps and inode table), so past
        // four pieces (file systems from 128 GiB, whose journal is 1 GiB) its inode points to
        // an extent leaf: the superblock's copy must be of the inode as written.
        let bytes = self.put_inode_encoded(w, layout::JOURNAL_INO, &inode)?;
        let mut backup = [0u32; 17];
        for (i, word) in backup.iter_mut().take(15).enumerate() {
            *word = u32::from_le_bytes(bytes[0x28 + 4 * i..0x2C + 4 * i].try_into().unwrap());
        }
        backup[15] = (inode.size >> 32) as u32;
        backup[16] = inode.size as u32;
        Ok(backup)
    }

    /// Zeroes `len` blocks from `start`: the device does it if it can (BLKZEROOUT),
    /// else zeros are written.
    fn zero(&self, start: u64, len: u64) -> io::Result<()> {
        let range = [start * BLOCK, len * BLOCK];
        // BLKZEROOUT = _IO(0x12, 127)
        // Safety: the ioctl reads two u64s from `range`.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&self.meta),
                0x127F,
                range.as_ptr(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let zeros = vec![0u8; CHUNK];
        let mut at = start * BLOCK;
        let end = (start + len) * BLOCK;
        while at < end {
            let n = (end - at).min(CHUNK as u64) as usize;
            self.write_meta(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }

    /// Bitmaps, group descriptors and superblocks, from what was handed out.
    fn write_groups(&self, next_ino: u32, journal_backup: [u32; 17]) -> io::Result<()> {
        let geo = &self.geo;
        let a = self.alloc.lock().unwrap();
        let mut used = a.used.clone();
        used.sort_by_key(|r| r.start);
        let used_inodes = next_ino as u64 - 1;
        let mut descs = Vec::with_capacity(geo.groups as usize);
        let (mut free_blocks, mut free_inodes) = (0u64, 0u64);
        let mut runs = used.iter().peekable();
        for g in 0..geo.groups {
            let start = geo.group_start(g);
            let blocks = geo.group_blocks(g);
            let meta = geo.meta_blocks(g);
            let mut bitmap = vec![0u8; BLOCK as usize];
            let mut set = |bit: u64| bitmap[(bit / 8) as usize] |= 1 << (bit % 8);
            (0..meta).for_each(&mut set);
            let mut data = 0;
            while let Some(r) = runs.peek() {
                if r.start >= start + blocks {
                    break;
                }
                assert!(r.start >= start + meta && r.start + r.len <= start + blocks);
                (r.start - start..r.start - start + r.len).for_each(&mut set);
                data += r.len;
                runs.next();
            }
            // Bits past the end of a short last group count as used.
            (blocks..8 * BLOCK).for_each(&mut set);
            let inodes_here = used_inodes
                .saturating_sub(g * geo.inodes_per_group)
                .min(geo.inodes_per_group);
            let mut flags = 0;
            let (mut block_csum, mut inode_csum) = (0, 0);
            if inodes_here == 0 {
                flags |= layout::BG_INODE_UNINIT;
            } else {
                let mut ib = vec![0u8; BLOCK as usize];
                for bit in (0..inodes_here).chain(geo.inodes_per_group..8 * BLOCK) {
                    ib[(bit / 8) as usize] |= 1 << (bit % 8);
                }
                let bytes = (geo.inodes_per_group / 8) as usize;
                inode_csum = layout::bitmap_checksum(self.seed, &ib, bytes);
                self.write_meta(&ib, geo.inode_bitmap(g) * BLOCK)?;
            }
            if data == 0 && inodes_here == 0 && g + 1 < geo.groups {
                flags |= layout::BG_BLOCK_UNINIT;
            } else {
                let bytes = (geo.blocks_per_group / 8) as usize;
                block_csum = layout::bitmap_checksum(self.seed, &bitmap, bytes);
                self.write_meta(&bitmap, geo.block_bitmap(g) * BLOCK)?;
            }
            let free = blocks - meta - data;
            free_blocks += free;
            free_inodes += geo.inodes_per_group - inodes_here;
            descs.push(GroupDesc {
                block_bitmap: geo.block_bitmap(g),
                inode_bitmap: geo.inode_bitmap(g),
                inode_table: geo.inode_table(g),
                free_blocks: free as u16,
                free_inodes: (geo.inodes_per_group - inodes_here) as u16,
                used_dirs: a.dirs[g as usize],
                flags,
                itable_unused: (geo.inodes_per_group - inodes_here) as u16,
                block_bitmap_csum: block_csum,
                inode_bitmap_csum: inode_csum,
            });
        }
        let mut gdt = vec![0u8; (geo.gdt_blocks * BLOCK) as usize];
        for (g, d) in descs.iter().enumerate() {
            let at = g * layout::DESC_SIZE as usize;
            gdt[at..at + layout::DESC_SIZE as usize]
                .copy_from_slice(&d.encode(g as u32, self.seed));
        }
        let sup = Super {
            free_blocks,
            free_inodes,
            uuid: self.opts.uuid,
            hash_seed: self.opts.hash_seed,
            label: self.opts.label.clone(),
            now: self.opts.now,
            journal_backup,
        };
        for g in (0..geo.groups).filter(|&g| geo.has_super(g)) {
            let start = geo.group_start(g);
            let mut first = vec![0u8; BLOCK as usize];
            let at = if g == 0 { 1024 } else { 0 };
            first[at..at + 1024].copy_from_slice(&sup.encode(geo, g as u16));
            self.write_meta(&first, start * BLOCK)?;
            self.write_meta(&gdt, (start + 1) * BLOCK)?;
        }
        Ok(())
    }
}
