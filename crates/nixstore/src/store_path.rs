//! Store paths: `/nix/store/<32 nixbase32 chars>-<name>`, validated as Nix validates them.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::base32;

/// The store directory. Every NixOS system and every binary cache we write uses this one.
pub const STORE_DIR: &str = "/nix/store";

const HASH_LEN: usize = 32;
const MAX_NAME_LEN: usize = 211;

/// A validated store path, kept as its base name (`<hash>-<name>`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    base: String,
}

/// Why a store path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a valid Nix store path: {why}")]
pub struct StorePathError {
    pub text: String,
    pub why: String,
}

impl StorePath {
    /// Parses a full path under /nix/store (no trailing components) or a bare base name.
    pub fn parse(text: &str) -> Result<Self, StorePathError> {
        let base = match text.strip_prefix(STORE_DIR) {
            Some(rest) => rest.strip_prefix('/').ok_or_else(|| StorePathError {
                text: text.to_string(),
                why: format!("expected {STORE_DIR}/<hash>-<name>"),
            })?,
            None if text.starts_with('/') => {
                return Err(StorePathError {
                    text: text.to_string(),
                    why: format!("it is not under {STORE_DIR}"),
                })
            }
            None => text,
        };
        Self::from_base_name(base).map_err(|why| StorePathError {
            text: text.to_string(),
            why,
        })
    }

    fn from_base_name(base: &str) -> Result<Self, String> {
        let bytes = base.as_bytes();
        if bytes.len() < HASH_LEN + 2 || bytes[HASH_LEN] != b'-' {
            return Err("expected a 32-character hash, a dash and a name".into());
        }
        if let Some(&c) = bytes[..HASH_LEN].iter().find(|&&c| !base32::is_digit(c)) {
            return Err(format!(
                "the hash part has {:?}, which is not in Nix's base32 alphabet",
                c as char
            ));
        }
        let name = &base[HASH_LEN + 1..];
        check_name(name)?;
        Ok(StorePath {
            base: base.to_string(),
        })
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.base
    }

    /// The 32-character hash part.
    pub fn hash_part(&self) -> &str {
        &self.base[..HASH_LEN]
    }

    /// The name after the hash.
    pub fn name(&self) -> &str {
        &self.base[HASH_LEN + 1..]
    }

    /// `/nix/store/<hash>-<name>`.
    pub fn to_absolute(&self) -> String {
        format!("{STORE_DIR}/{}", self.base)
    }

    /// Where this path lives in a store rooted at `root` (`/mnt` gives `/mnt/nix/store/…`).
    pub fn under_root(&self, root: &Path) -> PathBuf {
        root.join(STORE_DIR.trim_start_matches('/'))
            .join(&self.base)
    }
}

/// Checks the name part as Nix does: 1 to 211 characters of `A-Za-z0-9+-._?=`, not starting
/// with a period.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("the name is longer than {MAX_NAME_LEN} characters"));
    }
    if name.starts_with('.') {
        return Err("the name starts with a period".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(*c)))
    {
        return Err(format!("the name has the character {c:?}"));
    }
    Ok(())
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl std::str::FromStr for StorePath {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8l-test-tree";

    #[test]
    fn parses_full_and_base() {
        let p = StorePath::parse(GOOD).unwrap();
        assert_eq!(p.hash_part(), "dbv3hzd4a1yasfn0ld098wdrg2bzvd8l");
        assert_eq!(p.name(), "test-tree");
        assert_eq!(p.to_string(), GOOD);
        assert_eq!(StorePath::parse(p.base_name()).unwrap(), p);
        assert_eq!(
            p.under_root(Path::new("/mnt")),
            Path::new("/mnt/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8l-test-tree")
        );
    }

    #[test]
    fn refuses_what_nix_refuses() {
        for bad in [
            "/nix/store/",
            "/usr/bin/foo",
            "/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8l-test-tree/bin",
            "/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8e-x", // 'e' is not nixbase32
            "/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8l-",
            "/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8l-.hidden",
            "/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8l-sp ace",
            "/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8lxname",
            "/nix/storefoo",
        ] {
            assert!(StorePath::parse(bad).is_err(), "{bad} was accepted");
        }
        let long = format!("{}-{}", "0".repeat(32), "a".repeat(212));
        assert!(StorePath::parse(&long).is_err());
    }
}
