//! CRC-16 (polynomial 0x8005, reflected), as ext4 uses for group descriptor checksums
//! (the `uninit_bg` feature).

const fn table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u16;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xA001
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

const TABLE: [u16; 256] = table();

pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc = (crc >> 8) ^ TABLE[((crc ^ b as u16) & 0xff) as usize];
    }
    crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_arc_check_value() {
        // CRC-16/ARC of "123456789" is 0xBB3D (initial value 0).
        assert_eq!(super::crc16(0, b"123456789"), 0xBB3D);
    }
}
