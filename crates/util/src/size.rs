//! Sizes as people write them (`512M`, `1G`, `1.5GiB`, `4096K`, or plain bytes) and as they
//! read them (`1.5 GiB`).

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// Parses a size. Units are binary (K, M, G, T, with optional `iB` or `B`).
pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let mult = match unit.trim_end_matches("iB").trim_end_matches('B') {
        "" => 1,
        "K" | "k" => KIB,
        "M" => MIB,
        "G" => GIB,
        "T" => TIB,
        _ => {
            return Err(format!(
                "size {text:?} has an unknown unit {unit:?} (use K, M, G or T)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("size {text:?} does not start with a number"))?;
    if value.is_nan() || value <= 0.0 {
        return Err(format!("size {text:?} must be greater than zero"));
    }
    Ok((value * mult as f64).round() as u64)
}

/// Bytes as a short human figure: `1.5 GiB`, `512 MiB`, `734 B`.
pub fn human(bytes: u64) -> String {
    let units = [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
    for (m, u) in units {
        if bytes >= m {
            let v = bytes as f64 / m as f64;
            return if v >= 100.0 || v.fract() < 0.05 {
                format!("{v:.0} {u}")
            } else {
                format!("{v:.1} {u}")
            };
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("512M"), Ok(512 * MIB));
        assert_eq!(parse("1G"), Ok(GIB));
        assert_eq!(parse("1.5GiB"), Ok(3 * GIB / 2));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse(" 8 GB"), Ok(8 * GIB));
        assert!(parse("8 parsecs").is_err());
        assert!(parse("0M").is_err());
        assert!(parse("G").is_err());
    }

    #[test]
    fn humanises() {
        assert_eq!(human(512 * MIB), "512 MiB");
        assert_eq!(human(3 * GIB / 2), "1.5 GiB");
        assert_eq!(human(12), "12 B");
    }
}
