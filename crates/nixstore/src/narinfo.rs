//! `.narinfo` files: the per-path metadata of a binary cache, and the fingerprint Nix signs.

use std::fmt::Write as _;

use crate::hash::Sha256Hash;
use crate::store_path::StorePath;

/// One narinfo. Field names follow the file's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    /// Relative to the cache root, e.g. `nar/<filehash>.nar.zst`.
    pub url: String,
    /// `none`, `zstd`, `xz`, `bzip2`, … as Nix names them.
    pub compression: String,
    pub file_hash: Option<Sha256Hash>,
    pub file_size: Option<u64>,
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    /// `keyname:base64` signatures over [`NarInfo::fingerprint`].
    pub sigs: Vec<String>,
    pub ca: Option<String>,
}

/// A narinfo that could not be read; `line` is 1-based (0 when the problem is a missing key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("narinfo line {line}: {why}")]
pub struct NarInfoError {
    pub line: usize,
    pub why: String,
}

impl NarInfo {
    /// Parses narinfo text strictly: every known key at most once, the required ones present,
    /// every value well-formed. Unknown keys are skipped, as Nix skips them.
    pub fn parse(text: &str) -> Result<Self, NarInfoError> {
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut deriver = None;
        let mut sigs = Vec::new();
        let mut ca = None;

        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let err = |why: String| NarInfoError { line: n, why };
            if line.is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once(": ")
                .ok_or_else(|| err(format!("expected 'Key: value', found {line:?}")))?;
            fn once<T>(
                slot: &mut Option<T>,
                v: T,
                key: &str,
                n: usize,
            ) -> Result<(), NarInfoError> {
                if slot.replace(v).is_some() {
                    return Err(NarInfoError {
                        line: n,
                        why: format!("{key} appears twice"),
                    });
                }
                Ok(())
            }
            let path = |v: &str| StorePath::parse(v).map_err(|e| err(e.to_string()));
            let hash = |v: &str| Sha256Hash::parse(v).map_err(|e| err(e.to_string()));
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| err(format!("{key} {v:?} is not a whole number")))
            };
            match key {
                "StorePath" => once(&mut store_path, path(value)?, key, n)?,
                "URL" => {
                    if value.is_empty()
                        || value.starts_with('/')
                        || value.split('/').any(|c| c == "..")
                    {
                        return Err(err(format!(
                            "URL {value:?} must be a relative path inside the cache"
                        )));
                    }
                    once(&mut url, value.to_string(), key, n)?
                }
                "Compression" => once(&mut compression, value.to_string(), key, n)?,
                "FileHash" => once(&mut file_hash, hash(value)?, key, n)?,
                "FileSize" => once(&mut file_size, number(value)?, key, n)?,
                "NarHash" => once(&mut nar_hash, hash(value)?, key, n)?,
                "NarSize" => once(&mut nar_size, number(value)?, key, n)?,
                "References" => {
                    let refs = value
                        .split(' ')
                        .filter(|r| !r.is_empty())
                        .map(path)
                        .collect::<Result<Vec<_>, _>>()?;
                    once(&mut references, refs, key, n)?
                }
                "Deriver" if value == "unknown-deriver" => {}
                "Deriver" => once(&mut deriver, path(value)?, key, n)?,
                "Sig" => sigs.push(value.to_string()),
                "CA" => once(&mut ca, value.to_string(), key, n)?,
                _ => {}
            }
        }
        let missing = |key: &str| NarInfoError {
            line: 0,
            why: format!("the required key {key} is missing"),
        };
        Ok(NarInfo {
            store_path: store_path.ok_or_else(|| missing("StorePath"))?,
            url: url.ok_or_else(|| missing("URL"))?,
            compression: compression.unwrap_or_else(|| "bzip2".to_string()),
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or_else(|| missing("NarHash"))?,
            nar_size: nar_size.ok_or_else(|| missing("NarSize"))?,
            references: references.unwrap_or_default(),
            deriver,
            sigs,
            ca,
        })
    }

    /// The narinfo text, keys in the order Nix writes them.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "StorePath: {}", self.store_path);
        let _ = writeln!(s, "URL: {}", self.url);
        let _ = writeln!(s, "Compression: {}", self.compression);
        if let Some(h) = &self.file_hash {
            let _ = writeln!(s, "FileHash: {}", h.to_nix32());
        }
        if let Some(n) = self.file_size {
            let _ = writeln!(s, "FileSize: {n}");
        }
        let _ = writeln!(s, "NarHash: {}", self.nar_hash.to_nix32());
        let _ = writeln!(s, "NarSize: {}", self.nar_size);
        let refs: Vec<&str> = self.references.iter().map(|r| r.base_name()).collect();
        let _ = writeln!(s, "References: {}", refs.join(" "));
        if let Some(d) = &self.deriver {
            let _ = writeln!(s, "Deriver: {}", d.base_name());
        }
        for sig in &self.sigs {
            let _ = writeln!(s, "Sig: {sig}");
        }
        if let Some(ca) = &self.ca {
            let _ = writeln!(s, "CA: {ca}");
        }
        s
    }

    /// What Nix signs: `1;<path>;<narhash>;<narsize>;<ref,ref,…>`.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// The narinfo's file name in a cache: `<hash part>.narinfo`.
    pub fn file_name(&self) -> String {
        format!("{}.narinfo", self.store_path.hash_part())
    }
}

/// The fingerprint of a path's metadata, as Nix signs it.
pub fn fingerprint(
    path: &StorePath,
    nar_hash: &Sha256Hash,
    nar_size: u64,
    references: &[StorePath],
) -> String {
    let refs: Vec<String> = references.iter().map(|r| r.to_string()).collect();
    format!(
        "1;{path};{};{nar_size};{}",
        nar_hash.to_nix32(),
        refs.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "StorePath: /nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8l-test-tree
URL: nar/1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.zst
Compression: zstd
FileHash: sha256:1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3
FileSize: 1234
NarHash: sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73
NarSize: 1984632
References: jysmd2f9rg6kqwrdwflih76wl9pwwm4s-bbdir
Deriver: 4xh2n4yc3c8gjd1dyxj6a8vi13rphcyl-test-tree.drv
Sig: test-1:abc=
";

    #[test]
    fn round_trips() {
        let info = NarInfo::parse(SAMPLE).unwrap();
        assert_eq!(info.nar_size, 1984632);
        assert_eq!(info.references.len(), 1);
        assert_eq!(info.to_text(), SAMPLE);
        assert_eq!(
            info.fingerprint(),
            "1;/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8l-test-tree;\
             sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73;1984632;\
             /nix/store/jysmd2f9rg6kqwrdwflih76wl9pwwm4s-bbdir"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let bad = SAMPLE.replace("NarSize: 1984632", "NarSize: lots");
        let e = NarInfo::parse(&bad).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        let twice = format!("{SAMPLE}NarSize: 1\n");
        assert!(NarInfo::parse(&twice).unwrap_err().why.contains("twice"));
        let no_hash = SAMPLE.replace("NarHash", "X-NarHash");
        assert!(NarInfo::parse(&no_hash)
            .unwrap_err()
            .why
            .contains("NarHash"));
        let escape = SAMPLE.replace("URL: nar/", "URL: ../../etc/");
        assert!(NarInfo::parse(&escape).is_err());
    }
}
