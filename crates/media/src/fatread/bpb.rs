//! The boot sector's BIOS parameter block, FAT32 only. Every field that places something on
//! the medium is checked against the extent here, once, so the rest of the reader can compute
//! offsets without re-checking them.

/// The FAT specification's bound: a volume with fewer clusters is FAT12 or FAT16, whatever
/// its boot sector says (firmware and fatfs decide by the count alone).
const MIN_FAT32_CLUSTERS: u64 = 65_525;
/// Cluster numbers are 28 bits and the top of the range marks bad clusters and chain ends, so
/// the highest usable cluster number is 0x0FFF_FFF6.
const MAX_FAT32_CLUSTERS: u64 = 0x0FFF_FFF5;
/// Larger clusters exist only on exotic media; 64 KiB bounds what one cluster read costs.
const MAX_CLUSTER_BYTES: u64 = 64 * 1024;
/// Where the boot sector keeps its fields: the BPB proper, then the FAT32 extension.
const BOOT_SECTOR: usize = 512;

/// Where everything is, in bytes from the start of the extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub cluster_bytes: u32,
    /// Offset of the FAT this reader follows (the active one when mirroring is off).
    pub fat_offset: u64,
    /// Bytes of that FAT, all inside the extent.
    pub fat_bytes: u64,
    /// Offset of cluster 2.
    pub data_offset: u64,
    /// Number of data clusters: valid cluster numbers are 2 ..= clusters + 1.
    pub clusters: u32,
    pub root_cluster: u32,
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}

impl Layout {
    /// The size of the boot sector prefix `parse` needs.
    pub const BOOT_BYTES: usize = BOOT_SECTOR;

    /// Parses and checks the boot sector of a volume of `len` bytes. The error is the part of
    /// a sentence that follows the device's name.
    pub fn parse(boot: &[u8], len: u64) -> Result<Layout, String> {
        if boot.len() < BOOT_SECTOR || len < BOOT_SECTOR as u64 {
            return Err(format!(
                "the partition holds {len} bytes, too few for a FAT32 boot sector"
            ));
        }
        let sector = u16_at(boot, 11);
        if ![512, 1024, 2048, 4096].contains(&sector) {
            return Err(format!(
                "the boot sector gives {sector} bytes per sector, not 512, 1024, 2048 or 4096; \
                 this is not a FAT file system"
            ));
        }
        let spc = boot[13] as u64;
        if spc == 0 || !spc.is_power_of_two() {
            return Err(format!(
                "the boot sector gives {spc} sectors per cluster, not a power of two"
            ));
        }
        let cluster_bytes = spc * sector;
        if cluster_bytes > MAX_CLUSTER_BYTES {
            return Err(format!(
                "the boot sector gives clusters of {cluster_bytes} bytes, more than the \
                 {MAX_CLUSTER_BYTES} this reader accepts"
            ));
        }
        let reserved = u16_at(boot, 14);
        if reserved == 0 {
            return Err("the boot sector gives no reserved sectors, so it overlaps the FAT".into());
        }
        let fats = boot[16] as u64;
        if !(1..=2).contains(&fats) {
            return Err(format!("the boot sector gives {fats} FATs, not 1 or 2"));
        }
        let root_entries = u16_at(boot, 17);
        let fat_size_16 = u16_at(boot, 22);
        if root_entries != 0 || fat_size_16 != 0 {
            return Err(format!(
                "the volume is FAT12 or FAT16 (its boot sector gives {root_entries} root \
                 directory entries and {fat_size_16} sectors per FAT), not FAT32"
            ));
        }
        let total_sectors = match u16_at(boot, 19) {
            0 => u32_at(boot, 32),
            n => n,
        };
        if total_sectors == 0 {
            return Err("the boot sector gives the volume no sectors".into());
        }
        let fat_sectors = u32_at(boot, 36);
        if fat_sectors == 0 {
            return Err("the boot sector gives the FAT no sectors".into());
        }
        // Bit 7 of the extended flags turns mirroring off; bits 0-3 then name the one FAT in use.
        let flags = u16_at(boot, 40);
        let active = if flags & 0x80 != 0 { flags & 0x0F } else { 0 };
        if active >= fats {
            return Err(format!(
                "the boot sector names FAT {} as the active one, but there are only {fats}",
                active + 1
            ));
        }
        for n in 0..fats {
            let end = (reserved + (n + 1) * fat_sectors) * sector;
            if end > len {
                return Err(format!(
                    "FAT {} ends at byte {end}, beyond the partition's {len} bytes",
                    n + 1
                ));
            }
        }
        let data_sector = reserved + fats * fat_sectors;
        if data_sector >= total_sectors {
            return Err(format!(
                "the reserved sectors and FATs take {data_sector} sectors, all of the volume's \
                 {total_sectors}, leaving no room for data"
            ));
        }
        let clusters = (total_sectors - data_sector) / spc;
        let data_offset = data_sector * sector;
        let data_end = data_offset + clusters * cluster_bytes;
        if data_end > len {
            return Err(format!(
                "the data region ends at byte {data_end}, beyond the partition's {len} bytes"
            ));
        }
        if clusters < MIN_FAT32_CLUSTERS {
            return Err(format!(
                "the volume has {clusters} clusters, which by the FAT specification makes it \
                 FAT12 or FAT16, not FAT32"
            ));
        }
        if clusters > MAX_FAT32_CLUSTERS {
            return Err(format!(
                "the volume has {clusters} clusters, more than FAT32's {MAX_FAT32_CLUSTERS}"
            ));
        }
        let fat_bytes = fat_sectors * sector;
        if fat_bytes / 4 < clusters + 2 {
            return Err(format!(
                "the FAT of {fat_sectors} sectors has {} entries, too few for the volume's \
                 {clusters} clusters",
                fat_bytes / 4
            ));
        }
        let root_cluster = u32_at(boot, 44);
        if root_cluster < 2 || root_cluster > clusters + 1 {
            return Err(format!(
                "the boot sector puts the root directory at cluster {root_cluster}, outside \
                 the volume's clusters 2 to {}",
                clusters + 1
            ));
        }
        Ok(Layout {
            cluster_bytes: cluster_bytes as u32,
            fat_offset: (reserved + active * fat_sectors) * sector,
            fat_bytes,
            data_offset,
            clusters: clusters as u32,
            root_cluster: root_cluster as u32,
        })
    }

    /// The offset in the extent of a cluster, which must be in range.
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        debug_assert!(cluster >= 2 && cluster <= self.max_cluster());
        self.data_offset + (cluster as u64 - 2) * self.cluster_bytes as u64
    }

    pub fn max_cluster(&self) -> u32 {
        self.clusters + 1
    }

    pub fn in_range(&self, cluster: u32) -> bool {
        cluster >= 2 && cluster <= self.max_cluster()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot sector as our writer makes it: 512-byte sectors, 8 per cluster, 32 reserved,
    /// two FATs of 1,024 sectors, 100,000 clusters.
    fn good() -> (Vec<u8>, u64) {
        let mut b = vec![0u8; 512];
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 8;
        b[14..16].copy_from_slice(&32u16.to_le_bytes());
        b[16] = 2;
        let total: u32 = 32 + 2 * 1024 + 100_000 * 8;
        b[32..36].copy_from_slice(&total.to_le_bytes());
        b[36..40].copy_from_slice(&1024u32.to_le_bytes());
        b[44..48].copy_from_slice(&2u32.to_le_bytes());
        b[510] = 0x55;
        b[511] = 0xAA;
        (b, total as u64 * 512)
    }

    fn err(edit: impl FnOnce(&mut Vec<u8>), len: Option<u64>) -> String {
        let (mut b, full) = good();
        edit(&mut b);
        Layout::parse(&b, len.unwrap_or(full)).unwrap_err()
    }

    #[test]
    fn accepts_what_our_writer_makes() {
        let (b, len) = good();
        let l = Layout::parse(&b, len).unwrap();
        assert_eq!(l.clusters, 100_000);
        assert_eq!(l.cluster_bytes, 4096);
        assert_eq!(l.fat_offset, 32 * 512);
        assert_eq!(l.data_offset, (32 + 2048) * 512);
        assert_eq!(l.cluster_offset(3), l.data_offset + 4096);
    }

    #[test]
    fn rejects_bad_fields_with_a_reason() {
        let cases: Vec<(String, &str)> = vec![
            (
                err(|b| b[11..13].copy_from_slice(&256u16.to_le_bytes()), None),
                "256 bytes per sector",
            ),
            (err(|b| b[13] = 0, None), "0 sectors per cluster"),
            (err(|b| b[13] = 3, None), "3 sectors per cluster"),
            (
                err(
                    |b| {
                        b[11..13].copy_from_slice(&1024u16.to_le_bytes());
                        b[13] = 128;
                    },
                    None,
                ),
                "clusters of 131072 bytes",
            ),
            (err(|b| b[14] = 0, None), "no reserved sectors"),
            (err(|b| b[16] = 0, None), "0 FATs"),
            (err(|b| b[16] = 3, None), "3 FATs"),
            (err(|b| b[17] = 2, None), "not FAT32"),
            (err(|b| b[22] = 9, None), "not FAT32"),
            (err(|b| b[32..36].fill(0), None), "no sectors"),
            (err(|b| b[36..40].fill(0), None), "the FAT no sectors"),
            (err(|b| b[40] = 0x83, None), "FAT 4 as the active one"),
            (
                err(
                    |b| b[36..40].copy_from_slice(&0x0100_0000u32.to_le_bytes()),
                    None,
                ),
                "FAT 1 ends at byte",
            ),
            (
                err(|_| {}, Some(32 * 512 + 1500 * 512)),
                "FAT 2 ends at byte",
            ),
            (err(|_| {}, Some(4 << 20)), "the data region ends at byte"),
            (
                err(
                    |b| b[32..36].copy_from_slice(&(32u32 + 2048).to_le_bytes()),
                    None,
                ),
                "leaving no room",
            ),
            (
                err(
                    |b| b[32..36].copy_from_slice(&(32u32 + 2048 + 8 * 1000).to_le_bytes()),
                    None,
                ),
                "makes it FAT12 or FAT16",
            ),
            (
                err(|b| b[36..40].copy_from_slice(&700u32.to_le_bytes()), None),
                "too few for the volume's",
            ),
            (
                err(|b| b[44..48].copy_from_slice(&1u32.to_le_bytes()), None),
                "root directory at cluster 1",
            ),
            (
                err(
                    |b| b[44..48].copy_from_slice(&100_002u32.to_le_bytes()),
                    None,
                ),
                "at cluster 100002",
            ),
            (
                err(|b| b.truncate(100), None),
                "too few for a FAT32 boot sector",
            ),
        ];
        for (msg, want) in cases {
            assert!(msg.contains(want), "{msg:?} should say {want:?}");
        }
    }

    #[test]
    fn a_second_fat_can_be_the_active_one() {
        let (mut b, len) = good();
        b[40] = 0x81;
        let l = Layout::parse(&b, len).unwrap();
        assert_eq!(l.fat_offset, (32 + 1024) * 512);
    }
}
