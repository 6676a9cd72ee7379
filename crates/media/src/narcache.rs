//! A content-addressed cache of compressed NARs, keyed by NAR hash and compression level.
//! A store path's NAR hash comes from the Nix database without reading the path, so a rebuild
//! after one host changed finds every unchanged path here and compresses only the new ones.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use nixstore::binary_cache::{compress_nar, Compressed};
use nixstore::closure::PathInfo;
use nixstore::Sha256Hash;

/// One compressed NAR in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedNar {
    pub file: PathBuf,
    pub file_hash: Sha256Hash,
    pub file_size: u64,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    nar_size: u64,
    file_hash: String,
    file_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("compressed NAR cache {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} changed on disk: its NAR hash is {found}, the Nix database says {expected} (run nix-store --verify --check-contents)")]
    Changed {
        path: String,
        expected: Sha256Hash,
        found: Sha256Hash,
    },
}

pub struct NarCache {
    dir: PathBuf,
    level: i32,
}

/// The default cache directory: `$XDG_CACHE_HOME/mkinstaller`, else `~/.cache/mkinstaller`.
pub fn default_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("mkinstaller");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/mkinstaller")
}

impl NarCache {
    pub fn open(dir: &Path, level: i32) -> Result<NarCache, CacheError> {
        let sub = dir.join(format!("nar-zstd-{level}"));
        fs::create_dir_all(&sub).map_err(|source| CacheError::Io {
            dir: sub.clone(),
            source,
        })?;
        Ok(NarCache { dir: sub, level })
    }

    fn paths(&self, nar_hash: &Sha256Hash) -> (PathBuf, PathBuf) {
        let base = nar_hash
            .to_nix32()
            .trim_start_matches("sha256:")
            .to_string();
        (
            self.dir.join(format!("{base}.nar.zst")),
            self.dir.join(format!("{base}.json")),
        )
    }

    /// The cached NAR for `info`, if a complete one is there.
    pub fn get(&self, info: &PathInfo) -> Option<CachedNar> {
        let (file, meta) = self.paths(&info.nar_hash);
        let meta: Meta = serde_json::from_slice(&fs::read(meta).ok()?).ok()?;
        let len = fs::metadata(&file).ok()?.len();
        (meta.nar_size == info.nar_size && meta.file_size == len).then_some(())?;
        Some(CachedNar {
            file,
            file_hash: Sha256Hash::parse(&meta.file_hash).ok()?,
            file_size: len,
        })
    }

    /// Archives and compresses `info`'s path from the local store into the cache, checking
    /// its NAR hash against the Nix database on the way. `progress` hears NAR bytes.
    pub fn compress(
        &self,
        info: &PathInfo,
        progress: &dyn Fn(u64),
    ) -> Result<CachedNar, CacheError> {
        let io_err = |source| CacheError::Io {
            dir: self.dir.clone(),
            source,
        };
        let (file, meta) = self.paths(&info.nar_hash);
        // Unique per process and thread: two builds may share a cache directory.
        let temp = file.with_extension(
            format!(
                "tmp{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            )
            .replace(['(', ')'], ""),
        );
        let source = PathBuf::from(info.path.to_string());
        let c = match compress_nar(&source, &temp, self.level, 0, progress) {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(io_err(e));
            }
        };
        if c.nar_hash != info.nar_hash || c.nar_size != info.nar_size {
            let _ = fs::remove_file(&temp);
            return Err(CacheError::Changed {
                path: info.path.to_string(),
                expected: info.nar_hash,
                found: c.nar_hash,
            });
        }
        let Compressed {
            nar_size,
            file_hash,
            file_size,
            ..
        } = c;
        fs::rename(&temp, &file).map_err(io_err)?;
        let meta_json = serde_json::to_vec(&Meta {
            nar_size,
            file_hash: file_hash.to_nix32(),
            file_size,
        })
        .expect("meta serialises");
        fs::write(&meta, meta_json).map_err(io_err)?;
        Ok(CachedNar {
            file,
            file_hash,
            file_size,
        })
    }
}
