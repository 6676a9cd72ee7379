//! Legacy BIOS boot for sticks: GRUB's i386-pc boot sector in the protective MBR and its core
//! image in the gap between the GPT and the first partition, as grub-install would place
//! them on a GPT disk without a BIOS boot partition. The BIOS runs the MBR's code, which
//! reads the core image's first sector (diskboot) from the LBA patched into it; diskboot
//! reads the rest from the block list patched into its last bytes. The core image
//! (images/debian/build makes it with grub-mkimage) carries every module it needs and the
//! prefix `(,gpt1)/autoinstall/bios`: partition 1 (the ESP) of the disk it booted from, where
//! the stick's `grub.cfg` for BIOS is.
//!
//! Offsets are GRUB's (include/grub/i386/pc/boot.h and diskboot.S): the core image's sector
//! at 0x5c of the boot sector (8 bytes, little-endian); the block list at the end of
//! diskboot's sector: start (8 bytes), sector count (2), load segment (2).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Where the core image starts: right after the GPT's 32 sectors of partition entries.
pub const CORE_LBA: u64 = 34;
/// Where the first partition starts on our sticks (1 MiB): the core image must end before.
const FIRST_PARTITION_LBA: u64 = 2048;
const SECTOR: usize = 512;
/// The boot code's share of the MBR; the disk signature and partition table follow.
const MBR_CODE: usize = 440;
const KERNEL_SECTOR: usize = 0x5c;
const BLOCKLIST: usize = SECTOR - 12;
/// Names in the installer environment (images/debian/build).
pub const BOOT_IMG: &str = "bios-boot.img";
pub const CORE_IMG: &str = "bios-core.img";
/// GRUB's El Torito image for a CD (`grub-mkimage -O i386-pc-eltorito`, prefix `/boot/grub`).
pub const ELTORITO_IMG: &str = "bios-eltorito.img";
/// GRUB's MBR code for an ISO dd'ed to a disk (`boot_hybrid.img`; xorriso `--grub2-mbr`).
pub const HYBRID_IMG: &str = "bios-hybrid.img";
/// Where the core image looks for its configuration, on the ESP.
pub const CONFIG: &str = "autoinstall/bios/grub.cfg";

/// GRUB's boot sector and core image, checked.
#[derive(Debug, Clone)]
pub struct BiosBoot {
    boot: Vec<u8>,
    core: Vec<u8>,
}

impl BiosBoot {
    /// The pair from an installer environment; None when it has neither (an environment
    /// built before BIOS boot, or without it).
    pub fn load(dir: &Path) -> Result<Option<BiosBoot>, String> {
        let (b, c) = (dir.join(BOOT_IMG), dir.join(CORE_IMG));
        if !b.exists() && !c.exists() {
            return Ok(None);
        }
        let read = |p: &Path| fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        BiosBoot::new(read(&b)?, read(&c)?)
            .map(Some)
            .map_err(|e| format!("the installer environment {}: {e}", dir.display()))
    }

    pub fn new(boot: Vec<u8>, core: Vec<u8>) -> Result<BiosBoot, String> {
        if boot.len() != SECTOR || boot[510..] != [0x55, 0xaa] {
            return Err(format!("{BOOT_IMG} is not a 512-byte boot sector"));
        }
        let room = (FIRST_PARTITION_LBA - CORE_LBA) as usize * SECTOR;
        if core.len() < SECTOR || core.len() > room {
            return Err(format!(
                "{CORE_IMG} is {} bytes: it must fit the {room} bytes before the first partition",
                core.len()
            ));
        }
        let b = BiosBoot { boot, core };
        // As grub-mkimage leaves it: the rest of the image right after diskboot's sector.
        let (start, count) = b.blocklist();
        if start != 2 || count as usize != b.sectors() - 1 {
            return Err(format!(
                "{CORE_IMG} does not begin with GRUB's diskboot as grub-mkimage -O i386-pc writes it (block list {start}+{count})"
            ));
        }
        Ok(b)
    }

    fn sectors(&self) -> usize {
        self.core.len().div_ceil(SECTOR)
    }

    fn blocklist(&self) -> (u64, u16) {
        let s = &self.core[BLOCKLIST..BLOCKLIST + 10];
        (
            u64::from_le_bytes(s[..8].try_into().expect("8 bytes")),
            u16::from_le_bytes(s[8..10].try_into().expect("2 bytes")),
        )
    }

    /// The boot sector's code for a core image at `lba`, to go over the first 440 bytes of
    /// the MBR (the disk signature and the protective partition stay).
    pub fn mbr_code(&self, lba: u64) -> [u8; MBR_CODE] {
        let mut code = [0u8; MBR_CODE];
        code.copy_from_slice(&self.boot[..MBR_CODE]);
        code[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&lba.to_le_bytes());
        code
    }

    /// The core image for `lba`, its block list pointing at its own following sectors,
    /// padded to whole sectors.
    pub fn core_at(&self, lba: u64) -> Vec<u8> {
        let mut core = self.core.clone();
        core.resize(self.sectors() * SECTOR, 0);
        core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&(lba + 1).to_le_bytes());
        core
    }

    /// Writes both to a stick whose GPT (and protective MBR) are already written.
    pub fn install(&self, out: &File) -> io::Result<()> {
        out.write_all_at(&self.core_at(CORE_LBA), CORE_LBA * SECTOR as u64)?;
        out.write_all_at(&self.mbr_code(CORE_LBA), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot sector and a three-sector core image shaped as GRUB's are.
    fn grub_like() -> (Vec<u8>, Vec<u8>) {
        let mut boot = vec![0xeb; SECTOR];
        boot[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&1u64.to_le_bytes());
        boot[510] = 0x55;
        boot[511] = 0xaa;
        let mut core = vec![0x90; 3 * SECTOR - 100];
        core[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&2u64.to_le_bytes());
        core[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&2u16.to_le_bytes());
        core[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&0x820u16.to_le_bytes());
        (boot, core)
    }

    #[test]
    fn the_boot_sector_and_the_block_list_point_at_the_core_image() {
        let (boot, core) = grub_like();
        let b = BiosBoot::new(boot, core).unwrap();
        let code = b.mbr_code(CORE_LBA);
        assert_eq!(code[KERNEL_SECTOR..KERNEL_SECTOR + 8], 34u64.to_le_bytes());
        assert_eq!(code[0], 0xeb);
        let c = b.core_at(CORE_LBA);
        assert_eq!(c.len(), 3 * SECTOR, "padded to whole sectors");
        assert_eq!(c[BLOCKLIST..BLOCKLIST + 8], 35u64.to_le_bytes());
        assert_eq!(
            c[BLOCKLIST + 8..BLOCKLIST + 10],
            2u16.to_le_bytes(),
            "count kept"
        );
        assert_eq!(c[BLOCKLIST + 10..BLOCKLIST + 12], 0x820u16.to_le_bytes());
    }

    #[test]
    fn what_is_not_grubs_is_refused() {
        let (boot, core) = grub_like();
        assert!(BiosBoot::new(boot[..511].to_vec(), core.clone()).is_err());
        let mut moved = core.clone();
        moved[BLOCKLIST] = 9;
        assert!(BiosBoot::new(boot.clone(), moved)
            .unwrap_err()
            .contains("diskboot"));
        let big = vec![0u8; (FIRST_PARTITION_LBA as usize) * SECTOR];
        assert!(BiosBoot::new(boot, big)
            .unwrap_err()
            .contains("before the first partition"));
    }
}
