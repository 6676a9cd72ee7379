//! Bytes as lower-case hex digits and back, as inventories and hosts.toml write keys.

pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of `text` (hex digits, either case, an even number of them).
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("{} hex digits, an odd number", text.len()));
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            // from_str_radix alone would take a sign ("+1").
            std::str::from_utf8(pair)
                .ok()
                .filter(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "{:?} is not a hex digit pair",
                        String::from_utf8_lossy(pair)
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(super::encode(&[0, 0x0b, 0xff]), "000bff");
        assert_eq!(super::decode("000BfF"), Ok(vec![0, 0x0b, 0xff]));
        assert!(super::decode("abc").is_err());
        assert!(super::decode("zz").is_err());
        assert!(super::decode("+1").is_err());
    }
}
