//! CRC-32C (Castagnoli), the way ext4 and jbd2 use it for `metadata_csum`: no inversion
//! inside, so a checksum can continue over several pieces; callers start from a seed or
//! `!0`, as the kernel does.

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

const TABLE: [u32; 256] = table();

pub fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_castagnoli_check_value() {
        assert_eq!(!super::crc32c(!0, b"123456789"), 0xE306_9283);
    }
}
