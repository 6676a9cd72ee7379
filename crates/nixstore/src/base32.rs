//! Nix's base32: its own alphabet (no e, o, u, t) and its own bit order, which reads the hash
//! from the last byte to the first. Store path hashes and narinfo hashes use it.

const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the nixbase32 text for `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n * 8 - 1) / 5 + 1
    }
}

/// Encodes bytes as nixbase32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let low = u16::from(bytes[i]) >> j;
        let high = match bytes.get(i + 1) {
            Some(&next) => u16::from(next) << (8 - j),
            None => 0,
        };
        out.push(ALPHABET[usize::from((low | high) & 0x1f)] as char);
    }
    out
}

/// Why a nixbase32 string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("character {0:?} is not in Nix's base32 alphabet")]
    BadChar(char),
    #[error("length {0} is not the nixbase32 length of any whole number of bytes")]
    BadLength(usize),
    #[error("the text encodes more bits than its bytes can hold")]
    Overflow,
}

/// Decodes nixbase32 into `encoded_len⁻¹(s.len())` bytes.
pub fn decode(s: &str) -> Result<Vec<u8>, DecodeError> {
    let size = s.len() * 5 / 8;
    if encoded_len(size) != s.len() {
        return Err(DecodeError::BadLength(s.len()));
    }
    let mut out = vec![0u8; size];
    for (n, c) in s.bytes().rev().enumerate() {
        let digit = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or(DecodeError::BadChar(c as char))? as u16;
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        out[i] |= (digit << j) as u8;
        let carry = digit >> (8 - j);
        match out.get_mut(i + 1) {
            Some(next) => *next |= carry as u8,
            None if carry != 0 => return Err(DecodeError::Overflow),
            None => {}
        }
    }
    Ok(out)
}

/// Whether `c` may appear in nixbase32 text.
pub fn is_digit(c: u8) -> bool {
    ALPHABET.contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // sha256("") in nixbase32, as `nix-hash --type sha256 --to-base32` prints it.
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(
            encode(&bytes),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn round_trips_every_length() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode(&bytes);
            assert_eq!(text.len(), encoded_len(n));
            assert_eq!(decode(&text).unwrap(), bytes, "length {n}");
        }
    }

    #[test]
    fn refuses_bad_text() {
        assert_eq!(decode("e"), Err(DecodeError::BadLength(1)));
        let mut s = "0".repeat(52);
        s.replace_range(3..4, "e");
        assert_eq!(decode(&s), Err(DecodeError::BadChar('e')));
        // The top digit of a 32-byte hash has only one usable bit.
        let s = format!("z{}", "0".repeat(51));
        assert_eq!(decode(&s), Err(DecodeError::Overflow));
    }
}
