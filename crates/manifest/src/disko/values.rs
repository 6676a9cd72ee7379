//! The values of a disko tree: sizes as sgdisk and lvcreate read them, GPT type codes, and
//! the JSON accessors that name the place of every refusal.

use serde_json::{Map, Value};

use super::{err, DiskoError, R};

/// A size as sgdisk and lvcreate read them: a number with an optional binary unit (K, M,
/// G, T, P, in either case, with or without B/iB).
pub(super) fn bytes(s: &str, path: &str) -> R<u64> {
    let t = s.trim();
    let number = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = t[number.len()..].to_ascii_uppercase();
    let mult: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "P" => 1 << 50,
        _ => {
            return err(
                path,
                format!("{s:?} has an unknown unit (use K, M, G, T or P)"),
            )
        }
    };
    let n: f64 = number.trim().parse().map_err(|_| DiskoError {
        path: path.into(),
        message: format!("{s:?} is not a size"),
    })?;
    if !(n > 0.0 && n.is_finite()) {
        return err(path, format!("{s:?} is not a size greater than zero"));
    }
    Ok((n * mult as f64).round() as u64)
}

/// GPT type codes as sgdisk names them, and GUIDs as they are.
pub fn type_guid(code: &str) -> Result<String, String> {
    const CODES: &[(&str, &str)] = &[
        ("EF00", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        ("EF01", "024DEE41-33E7-11D3-9D69-0008C781F39F"),
        ("EF02", "21686148-6449-6E6F-744E-656564454649"),
        ("EA00", "BC13C2FF-59E6-4262-A352-B275FD6F7172"),
        ("8200", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),
        ("8300", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
        ("8302", "933AC7E1-2EB4-4F13-B844-0E14E2AEF915"),
        ("8303", "44479540-F297-41B2-9AF7-D131D5F0458A"),
        ("8304", "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        ("8305", "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
        ("8306", "3B8F8425-20E0-4F3B-907F-1A25A76F98E8"),
        ("8309", "CA7D7CCB-63ED-4C53-861C-1742536059CC"),
        ("8310", "4D21B016-B534-45C2-A9FB-5C16E091FD2D"),
        ("8314", "8484680C-9521-48C6-9C11-B0720656F69E"),
        ("8E00", "E6D6D379-F507-44C2-A23C-238F2A3DF928"),
        ("FD00", "A19D880F-05FC-4D3B-A006-743F0F84911E"),
        ("0700", "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"),
        ("A504", "516E7CB4-6ECF-11D6-8FF8-00022D09712B"),
    ];
    if crate::profile::is_guid(code) {
        return Ok(code.to_uppercase());
    }
    CODES
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code))
        .map(|(_, g)| g.to_string())
        .ok_or_else(|| {
            format!(
                "partition type {code:?} is not a type code this installer knows ({}); give the type's GUID",
                CODES.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
            )
        })
}

// --- reading the JSON ---------------------------------------------------------------------

pub(super) fn object<'a>(v: &'a Value, path: &str) -> R<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| DiskoError {
        path: path.to_string(),
        message: "is not an attribute set".into(),
    })
}

/// The attributes that are not disko's internal ones (`_meta`, `_create`…).
pub(super) fn visible(o: &Map<String, Value>) -> impl Iterator<Item = (&str, &Value)> {
    o.iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .map(|(k, v)| (k.as_str(), v))
}

pub(super) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.keys().all(|k| k.starts_with('_')),
        Value::Array(a) => a.is_empty(),
        Value::Bool(b) => !b,
        _ => false,
    }
}

pub(super) fn type_of<'a>(v: &'a Value, path: &str) -> R<&'a str> {
    object(v, path)?
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| DiskoError {
            path: path.into(),
            message: "has no type".into(),
        })
}

pub(super) fn expect_type(o: &Map<String, Value>, path: &str, allowed: &[&str]) -> R<()> {
    match o.get("type").and_then(Value::as_str) {
        None => Ok(()),
        Some(t) if allowed.contains(&t) => Ok(()),
        Some(t) => err(
            path,
            format!("type {t:?} where {} was expected", allowed.join(" or ")),
        ),
    }
}

pub(super) fn opt_str(o: &Map<String, Value>, key: &str, path: &str) -> R<Option<String>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => err(&format!("{path}.{key}"), "is not a string"),
    }
}

pub(super) fn str_field(o: &Map<String, Value>, key: &str, path: &str) -> R<String> {
    opt_str(o, key, path)?.ok_or_else(|| DiskoError {
        path: path.into(),
        message: format!("has no {key}"),
    })
}

pub(super) fn str_list(o: &Map<String, Value>, key: &str, path: &str) -> R<Vec<String>> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| DiskoError {
                    path: format!("{path}.{key}"),
                    message: "holds something that is not a string".into(),
                })
            })
            .collect(),
        Some(_) => err(&format!("{path}.{key}"), "is not a list of strings"),
    }
}
