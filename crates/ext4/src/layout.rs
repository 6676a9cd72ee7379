//! Where everything goes: block groups, their metadata, and the encodings of the superblock
//! and group descriptors. Pure: no I/O.
//!
//! The file system made here is what `mkfs.ext4` would make with `-b 4096 -I 256 -O
//! ^flex_bg,^resize_inode`: 4 KiB blocks, 256-byte inodes, extents, a journal, sparse
//! superblock backups, `64bit` (64-byte group descriptors, block numbers past 2^32), and
//! metadata checksums (`metadata_csum`: superblock, group descriptors, bitmaps, inodes,
//! extent and directory blocks), whose group descriptor checksums also let untouched groups
//! go without bitmaps or inode tables written (the kernel initialises them lazily, as it does
//! after mkfs). Without `meta_bg` every descriptor sits after the superblock of group 0 and of
//! each backup, which bounds it at 64 TiB here.

use crate::crc32c::crc32c;

pub const BLOCK: u64 = 4096;
/// The largest file system written here: 64 TiB, 2^34 blocks, whose 524,288 descriptors
/// take 8,192 blocks after each superblock (a quarter of a group of mkfs's size).
pub const MAX_BYTES: u64 = 1 << 46;
/// The smallest.
pub const MIN_BYTES: u64 = 16 << 20;
pub const INODE_SIZE: u64 = 256;
pub const INODES_PER_BLOCK: u64 = BLOCK / INODE_SIZE;
/// A group descriptor's size with `64bit`.
pub const DESC_SIZE: u64 = 64;
/// One inode per this many bytes (mkfs.ext4's default).
pub const INODE_RATIO: u64 = 16384;

pub const ROOT_INO: u32 = 2;
pub const JOURNAL_INO: u32 = 8;
pub const LOST_FOUND_INO: u32 = 11;
pub const FIRST_INO: u32 = 11;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_EXT_ATTR: u32 = 0x8;
const COMPAT_DIR_INDEX: u32 = 0x20;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;

pub const BG_INODE_UNINIT: u16 = 0x1;
pub const BG_BLOCK_UNINIT: u16 = 0x2;

/// The shape of the file system: sizes and the place of every group's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub blocks: u64,
    pub blocks_per_group: u64,
    pub groups: u64,
    pub inodes_per_group: u64,
    pub itable_blocks: u64,
    pub gdt_blocks: u64,
    pub journal_blocks: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("{bytes} bytes is too small for an ext4 file system written here (at least 16 MiB)")]
    TooSmall { bytes: u64 },
    #[error("{bytes} bytes is more than the 64 TiB this writer supports")]
    TooBig { bytes: u64 },
}

impl Geometry {
    /// The layout for a device of `bytes`, in groups of `blocks_per_group` (32768, as mkfs
    /// makes them, except in tests that want many groups from a small image).
    pub fn new(bytes: u64, blocks_per_group: u64) -> Result<Geometry, LayoutError> {
        assert!(blocks_per_group.is_multiple_of(8) && blocks_per_group <= 8 * BLOCK);
        if bytes < MIN_BYTES {
            return Err(LayoutError::TooSmall { bytes });
        }
        if bytes > MAX_BYTES {
            return Err(LayoutError::TooBig { bytes });
        }
        let mut blocks = bytes / BLOCK;
        loop {
            let groups = blocks.div_ceil(blocks_per_group);
            let inodes = (blocks * BLOCK / INODE_RATIO).max(groups * INODES_PER_BLOCK);
            // At most 2^32 - 1 inodes in all: inode numbers are 32 bits.
            let most = (u32::MAX as u64 / groups) / INODES_PER_BLOCK * INODES_PER_BLOCK;
            let inodes_per_group = inodes
                .div_ceil(groups)
                .next_multiple_of(INODES_PER_BLOCK)
                .clamp(INODES_PER_BLOCK * 2, 8 * BLOCK)
                .min(most);
            let geo = Geometry {
                blocks,
                blocks_per_group,
                groups,
                inodes_per_group,
                itable_blocks: inodes_per_group / INODES_PER_BLOCK,
                gdt_blocks: (groups * DESC_SIZE).div_ceil(BLOCK),
                journal_blocks: journal_blocks(blocks),
            };
            // Like mkfs, drop a last group too small to hold its own metadata and a little
            // data, rather than make a group that is all overhead.
            if geo.meta_blocks(0) + 64 > blocks_per_group {
                // The descriptors would not fit in group 0 (small groups, a huge device).
                return Err(LayoutError::TooBig { bytes });
            }
            let last = groups - 1;
            let in_last = blocks - last * blocks_per_group;
            if groups > 1 && in_last < geo.meta_blocks(last) + 64 {
                blocks = last * blocks_per_group;
                continue;
            }
            return Ok(geo);
        }
    }

    pub fn inodes(&self) -> u64 {
        self.groups * self.inodes_per_group
    }

    pub fn group_start(&self, g: u64) -> u64 {
        g * self.blocks_per_group
    }

    /// Blocks in group `g` (the last one may be short).
    pub fn group_blocks(&self, g: u64) -> u64 {
        (self.blocks - self.group_start(g)).min(self.blocks_per_group)
    }

    /// Whether group `g` holds a superblock and descriptor backup (`sparse_super`: groups
    /// 0, 1 and the powers of 3, 5 and 7).
    pub fn has_super(&self, g: u64) -> bool {
        if g <= 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                p *= base;
            }
            p == g
        })
    }

    pub fn block_bitmap(&self, g: u64) -> u64 {
        self.group_start(g)
            + if self.has_super(g) {
                1 + self.gdt_blocks
            } else {
                0
            }
    }

    pub fn inode_bitmap(&self, g: u64) -> u64 {
        self.block_bitmap(g) + 1
    }

    pub fn inode_table(&self, g: u64) -> u64 {
        self.block_bitmap(g) + 2
    }

    /// Blocks at the start of group `g` taken by metadata.
    pub fn meta_blocks(&self, g: u64) -> u64 {
        self.inode_table(g) + self.itable_blocks - self.group_start(g)
    }

    /// The first block of group `g` free for data.
    pub fn data_start(&self, g: u64) -> u64 {
        self.group_start(g) + self.meta_blocks(g)
    }

    /// Where inode `ino` lives: its block and the byte offset within it.
    pub fn inode_location(&self, ino: u32) -> (u64, u64) {
        let index = (ino as u64 - 1) % self.inodes_per_group;
        let g = (ino as u64 - 1) / self.inodes_per_group;
        (
            self.inode_table(g) + index / INODES_PER_BLOCK,
            (index % INODES_PER_BLOCK) * INODE_SIZE,
        )
    }
}

/// mkfs.ext4's journal size for a file system of `blocks` 4 KiB blocks.
fn journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 32768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16384,
        b if b < 8192 * 1024 => 32768,
        b if b < 16384 * 1024 => 65536,
        b if b < 32768 * 1024 => 131072,
        _ => 262144,
    }
}

/// What a group descriptor says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupDesc {
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u16,
    pub free_inodes: u16,
    pub used_dirs: u16,
    pub flags: u16,
    pub itable_unused: u16,
    /// The bitmaps' checksums (see [`bitmap_checksum`]).
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
}

/// The seed of every metadata checksum but the superblock's: the CRC of the UUID.
pub fn csum_seed(uuid: &[u8; 16]) -> u32 {
    crc32c(!0, uuid)
}

/// A bitmap's checksum over its first `bytes` bytes (blocks or inodes per group / 8).
pub fn bitmap_checksum(seed: u32, bitmap: &[u8], bytes: usize) -> u32 {
    crc32c(seed, &bitmap[..bytes])
}

impl GroupDesc {
    /// The 64 bytes of group `g`'s descriptor, checksummed with the file system's `seed`.
    /// (The counts' high halves stay zero: a group holds at most 32,768 blocks and inodes.)
    pub fn encode(&self, g: u32, seed: u32) -> [u8; DESC_SIZE as usize] {
        let mut d = [0u8; DESC_SIZE as usize];
        put32(&mut d, 0x00, self.block_bitmap as u32);
        put32(&mut d, 0x04, self.inode_bitmap as u32);
        put32(&mut d, 0x08, self.inode_table as u32);
        put16(&mut d, 0x0C, self.free_blocks);
        put16(&mut d, 0x0E, self.free_inodes);
        put16(&mut d, 0x10, self.used_dirs);
        put16(&mut d, 0x12, self.flags);
        put16(&mut d, 0x18, self.block_bitmap_csum as u16);
        put16(&mut d, 0x1A, self.inode_bitmap_csum as u16);
        put16(&mut d, 0x1C, self.itable_unused);
        put32(&mut d, 0x20, (self.block_bitmap >> 32) as u32);
        put32(&mut d, 0x24, (self.inode_bitmap >> 32) as u32);
        put32(&mut d, 0x28, (self.inode_table >> 32) as u32);
        put16(&mut d, 0x38, (self.block_bitmap_csum >> 16) as u16);
        put16(&mut d, 0x3A, (self.inode_bitmap_csum >> 16) as u16);
        // Over the group number and the descriptor with its checksum field as zero.
        let crc = crc32c(crc32c(seed, &g.to_le_bytes()), &d);
        put16(&mut d, 0x1E, crc as u16);
        d
    }
}

/// What the superblock says beyond the geometry.
#[derive(Debug, Clone)]
pub struct Super {
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    pub label: String,
    pub now: u32,
    /// The journal inode's `i_block` and size, which the superblock keeps a copy of.
    pub journal_backup: [u32; 17],
}

impl Super {
    /// The 1024 bytes of the superblock as group `group` keeps it.
    pub fn encode(&self, geo: &Geometry, group: u16) -> [u8; 1024] {
        let mut s = [0u8; 1024];
        put32(&mut s, 0x00, geo.inodes() as u32);
        put32(&mut s, 0x04, geo.blocks as u32);
        put32(&mut s, 0x08, (geo.blocks / 20) as u32); // 5% reserved for root
        put32(&mut s, 0x0C, self.free_blocks as u32);
        put32(&mut s, 0x150, (geo.blocks >> 32) as u32);
        put32(&mut s, 0x154, ((geo.blocks / 20) >> 32) as u32);
        put32(&mut s, 0x158, (self.free_blocks >> 32) as u32);
        put32(&mut s, 0x10, self.free_inodes as u32);
        put32(&mut s, 0x14, 0); // first data block: 0 with 4 KiB blocks
        put32(&mut s, 0x18, 2); // 1024 << 2
        put32(&mut s, 0x1C, 2);
        put32(&mut s, 0x20, geo.blocks_per_group as u32);
        put32(&mut s, 0x24, geo.blocks_per_group as u32);
        put32(&mut s, 0x28, geo.inodes_per_group as u32);
        put32(&mut s, 0x30, self.now); // last write
        put16(&mut s, 0x36, 0xFFFF); // no mount-count checks
        put16(&mut s, 0x38, 0xEF53);
        put16(&mut s, 0x3A, 1); // cleanly unmounted
        put16(&mut s, 0x3C, 1); // errors=continue
        put32(&mut s, 0x40, self.now); // last check
        put32(&mut s, 0x4C, 1); // dynamic revision
        put32(&mut s, 0x54, FIRST_INO);
        put16(&mut s, 0x58, INODE_SIZE as u16);
        put16(&mut s, 0x5A, group);
        put32(
            &mut s,
            0x5C,
            COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX,
        );
        put32(
            &mut s,
            0x60,
            INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT,
        );
        put32(
            &mut s,
            0x64,
            RO_COMPAT_SPARSE_SUPER
                | RO_COMPAT_LARGE_FILE
                | RO_COMPAT_METADATA_CSUM
                | RO_COMPAT_DIR_NLINK
                | RO_COMPAT_EXTRA_ISIZE,
        );
        s[0x68..0x78].copy_from_slice(&self.uuid);
        let label = self.label.as_bytes();
        let n = label.len().min(16);
        s[0x78..0x78 + n].copy_from_slice(&label[..n]);
        put32(&mut s, 0xE0, JOURNAL_INO);
        s[0xEC..0xFC].copy_from_slice(&self.hash_seed);
        s[0xFC] = 1; // half_md4 directory hashes
        s[0xFD] = 1; // s_jnl_blocks holds a copy of the journal inode's blocks
        put16(&mut s, 0xFE, DESC_SIZE as u16);
        put32(&mut s, 0x100, 0x0C); // default mount options: user_xattr, acl
        put32(&mut s, 0x108, self.now); // mkfs time
        for (i, w) in self.journal_backup.iter().enumerate() {
            put32(&mut s, 0x10C + 4 * i, *w);
        }
        put16(&mut s, 0x15C, 32); // extra inode size
        put16(&mut s, 0x15E, 32);
        put32(&mut s, 0x160, 0x1); // signed directory hash (x86's char)
        s[0x175] = 1; // checksums are CRC-32C
        let crc = crc32c(!0, &s[..0x3FC]);
        put32(&mut s, 0x3FC, crc);
        s
    }
}

pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_16_gib_disk_is_laid_out_as_mkfs_would() {
        let g = Geometry::new(16 << 30, 32768).unwrap();
        assert_eq!(g.blocks, 4 << 20);
        assert_eq!(g.groups, 128);
        assert_eq!(g.inodes_per_group, 8192);
        assert_eq!(g.itable_blocks, 512);
        assert_eq!(g.gdt_blocks, 2);
        assert_eq!(g.journal_blocks, 32768);
        // Group 0: superblock, descriptors, bitmaps, inode table.
        assert_eq!(g.block_bitmap(0), 3);
        assert_eq!(g.data_start(0), 3 + 2 + 512);
        // Group 2 keeps no backup; group 3, 9, 25, 27 and 49 do.
        assert!(!g.has_super(2));
        assert!([1, 3, 5, 7, 9, 25, 27, 49, 81, 125]
            .iter()
            .all(|&n| g.has_super(n)));
        assert!(!g.has_super(10) && !g.has_super(126));
        assert_eq!(g.block_bitmap(2), 2 * 32768);
        assert_eq!(g.inode_location(1), (5, 0));
        assert_eq!(g.inode_location(18), (6, 256));
        assert_eq!(g.inode_location(8193), (g.inode_table(1), 0));
    }

    #[test]
    fn a_last_group_too_small_for_its_metadata_is_dropped() {
        let g = Geometry::new((32768 + 100) * BLOCK, 32768).unwrap();
        assert_eq!(g.groups, 1);
        assert_eq!(g.blocks, 32768);
        assert!(Geometry::new(1 << 20, 32768).is_err());
        assert_eq!(
            Geometry::new(MAX_BYTES + BLOCK, 32768),
            Err(LayoutError::TooBig {
                bytes: MAX_BYTES + BLOCK
            })
        );
        let biggest = Geometry::new(MAX_BYTES, 32768).unwrap();
        assert_eq!(biggest.groups, 524288);
        assert_eq!(biggest.gdt_blocks, 8192);
        // Past 2^32 blocks, and no more than 2^32 - 1 inodes.
        assert!(biggest.blocks > u32::MAX as u64);
        assert!(biggest.inodes() <= u32::MAX as u64);
        // Small groups cannot hold a huge device's descriptors.
        assert!(Geometry::new(1 << 44, 8192).is_err());
    }
}
