//! The installer's security settings: trusted keys, the fleet's CA, the fleet and the oldest
//! generation it accepts. Read from the command line, the environment (the kernel's
//! `autoinstall.*=`) and the installer environment's files, all before anything else, and
//! fail closed: a setting that exists but cannot be read stops the installer, never reads
//! as "no setting".

use std::path::Path;

use nixstore::keys::PublicKey;

/// Where the installer environment keeps a fleet's private CA, if it has one.
pub const CA_FILE: &str = "/etc/nixos-autoinstall/ca.pem";

/// Where the installer environment keeps the public keys it trusts (one per line).
pub const TRUSTED_KEYS_FILE: &str = "/etc/nixos-autoinstall/trusted-keys";

/// What the operator gave on the command line.
pub struct Asked<'a> {
    pub trusted_keys: &'a [String],
    pub trusted_keys_file: &'a Path,
    pub ca_file: Option<&'a Path>,
    pub fleet: Option<&'a str>,
    pub min_generation: Option<u64>,
}

/// The settings, read and parsed.
#[derive(Debug)]
pub struct Settings {
    pub trusted_keys: Vec<PublicKey>,
    pub ca_pem: Option<Vec<u8>>,
    pub fleet: Option<String>,
    pub min_generation: Option<u64>,
}

impl Settings {
    pub fn read(asked: &Asked) -> Result<Settings, String> {
        let trusted_keys = trusted_keys(asked.trusted_keys, asked.trusted_keys_file)?;
        let ca_pem = match asked.ca_file {
            Some(f) => {
                Some(std::fs::read(f).map_err(|e| format!("--ca-file {}: {e}", f.display()))?)
            }
            None => read_setting(Path::new(CA_FILE))?,
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let fleet = asked
            .fleet
            .map(str::to_string)
            .or_else(|| env("AUTOINSTALL_FLEET"));
        let min_generation = match (asked.min_generation, env("AUTOINSTALL_MIN_GENERATION")) {
            (Some(n), _) => Some(n),
            (None, Some(v)) => Some(v.trim().parse().map_err(|_| {
                format!(
                    "autoinstall.min-generation={v:?} is not a whole number; fix the kernel command line"
                )
            })?),
            (None, None) => None,
        };
        Ok(Settings {
            trusted_keys,
            ca_pem,
            fleet,
            min_generation,
        })
    }
}

/// A security setting's file: its bytes, or `None` only when it does not exist. Any other
/// error (permissions, an unreadable medium, a directory in its place) stops the installer.
fn read_setting(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "{}: {e}; it holds a security setting, and the installer stops rather than run without it",
            path.display()
        )),
    }
}

/// `--trusted-key` and the keys file, parsed; an unreadable key or file is an error, not a
/// key quietly ignored.
fn trusted_keys(given: &[String], file: &Path) -> Result<Vec<PublicKey>, String> {
    let from_file: Vec<(String, String)> = match read_setting(file)? {
        None => Vec::new(),
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|e| {
                format!(
                    "{}: not UTF-8 text (at byte {}); it holds the trusted keys, and the installer stops rather than run without them",
                    file.display(),
                    e.utf8_error().valid_up_to()
                )
            })?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| (file.display().to_string(), l.to_string()))
            .collect(),
    };
    given
        .iter()
        .map(|k| ("--trusted-key".to_string(), k.clone()))
        .chain(from_file)
        .map(|(from, k)| {
            PublicKey::parse(&k).map_err(|e| format!("{from} {k:?}: {e}; a key reads name:base64"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_keys_file_means_no_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trusted-keys");
        let key = nixstore::keys::SecretKey::generate("fleet-1")
            .unwrap()
            .public()
            .to_text();
        assert!(trusted_keys(&[], &file).unwrap().is_empty());
        std::fs::write(&file, format!("# the fleet\n{key}\n")).unwrap();
        assert_eq!(trusted_keys(&[], &file).unwrap().len(), 1);
        // One byte that is not UTF-8: the whole file is refused, not read as "no keys".
        let mut bytes = format!("{key}\n# ").into_bytes();
        bytes.push(0xff);
        std::fs::write(&file, bytes).unwrap();
        let e = trusted_keys(&[], &file).unwrap_err();
        assert!(e.contains("not UTF-8") && e.contains("stops"), "{e}");
        // Unreadable (a directory in its place): refused too.
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let e = trusted_keys(&[], &file).unwrap_err();
        assert!(e.contains("stops"), "{e}");
        // A malformed key line is an error, not a key skipped.
        std::fs::remove_dir(&file).unwrap();
        std::fs::write(&file, "fleet-1:not-base64\n").unwrap();
        assert!(trusted_keys(&[], &file).is_err());
    }
}
