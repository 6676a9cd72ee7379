//! SMBIOS system serial numbers: normalising what firmware reports, recognising the junk that
//! vendors leave in unset fields, and the key two serials are compared by.

/// Placeholders seen in real firmware instead of a serial. Compared case- and
/// space-insensitively; a serial of one repeated character or shorter than 3 is junk too.
pub const JUNK: &[&str] = &[
    "To Be Filled By O.E.M.",
    "To be filled by O.E.M",
    "Default string",
    "Default",
    "System Serial Number",
    "Chassis Serial Number",
    "Serial Number",
    "SerialNumber",
    "Not Specified",
    "Not Applicable",
    "Not Available",
    "N/A",
    "NA",
    "None",
    "Null",
    "Unknown",
    "Invalid",
    "Empty",
    "OEM",
    "O.E.M.",
    "Base Board Serial Number",
    "0123456789",
    "123456789",
    "1234567890",
    "12345678",
    "0123456789ABCDEF",
];

/// Trims and drops non-printable characters (firmware pads with NULs, spaces and 0xFF).
pub fn normalise(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_control() && *c != '\u{FFFD}' && *c != '\u{FF}')
        .collect::<String>()
        .trim()
        .to_string()
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Why a (normalised) serial cannot identify a machine, or `None` when it can.
pub fn junk_reason(serial: &str) -> Option<String> {
    let s = squash(serial);
    if s.chars().count() < 3 {
        return Some(format!("{serial:?} is shorter than 3 characters"));
    }
    let first = s.chars().next()?;
    if s.chars().all(|c| c == first) {
        return Some(format!("{serial:?} is one character repeated"));
    }
    if JUNK.iter().any(|j| squash(j) == s) {
        return Some(format!(
            "{serial:?} is a firmware placeholder, not a serial"
        ));
    }
    None
}

/// The serial as identity: normalised, or `None` when it is junk.
pub fn identity(raw: &str) -> Option<String> {
    let n = normalise(raw);
    junk_reason(&n).is_none().then_some(n)
}

/// The key two serials compare by: case-insensitive, spaces ignored. Firmware and people
/// disagree on case and spacing; two real machines never differ by those alone.
pub fn key(serial: &str) -> String {
    squash(&normalise(serial)).to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_is_recognised_whatever_the_case_and_spaces() {
        for j in [
            "To Be Filled By O.E.M.",
            "to be filled by o.e.m.",
            "TOBEFILLEDBYO.E.M.",
            "  Default string ",
            "System Serial Number",
            "Not Specified",
            "0123456789",
            "0000000000",
            "FFFFFFFF",
            "ab",
            "",
            "   ",
        ] {
            assert!(identity(j).is_none(), "{j:?} should be junk");
        }
    }

    #[test]
    fn real_serials_pass_and_are_normalised() {
        assert_eq!(identity(" PF3ABC12\0\0 ").as_deref(), Some("PF3ABC12"));
        assert_eq!(identity("DEMO-SN-0001").as_deref(), Some("DEMO-SN-0001"));
        assert_eq!(key("pf3 abc12"), key("PF3ABC12"));
        assert_ne!(key("PF3ABC12"), key("PF3ABC13"));
    }
}
