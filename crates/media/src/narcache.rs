//! A content-addressed cache of compressed NARs, keyed by NAR hash and compression level.
//! A store path's NAR hash comes from the Nix database without reading the path, so a rebuild
//! after one host changed finds every unchanged path here and compresses only the new ones.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
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
    /// The file as it was when its hash was last computed: a file whose inode, size, mtime or
    /// ctime differs since (written in place by anyone: an rsync, an upload, a hand) is hashed
    /// again before it is used, and dropped if it no longer matches.
    #[serde(default)]
    seen: Option<Seen>,
}

/// What `stat` says of a cached file; ctime cannot be set back by its writer.
#[derive(Serialize, Deserialize, PartialEq, Eq, Debug, Clone, Copy)]
struct Seen {
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Seen {
    fn of(m: &fs::Metadata) -> Seen {
        use std::os::unix::fs::MetadataExt;
        Seen {
            ino: m.ino(),
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        }
    }
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

    /// The cached NAR for `info`, if a complete one is there and is still the file that was
    /// recorded: one changed since (see [`Meta::seen`]) is hashed again, kept if it still
    /// matches and removed if not, so a damaged or altered entry is compressed afresh rather
    /// than carried into every later stick under its old FileHash.
    pub fn get(&self, info: &PathInfo) -> Option<CachedNar> {
        let (file, meta_path) = self.paths(&info.nar_hash);
        let mut meta: Meta = serde_json::from_slice(&fs::read(&meta_path).ok()?).ok()?;
        let stat = fs::metadata(&file).ok()?;
        let file_hash = Sha256Hash::parse(&meta.file_hash).ok()?;
        if meta.nar_size != info.nar_size || meta.file_size != stat.len() {
            self.drop_entry(&file, &meta_path);
            return None;
        }
        let seen = Seen::of(&stat);
        if meta.seen != Some(seen) {
            match hash_file(&file) {
                Ok(h) if h == file_hash => {
                    meta.seen = Some(seen);
                    let _ = write_meta(&meta_path, &meta);
                }
                _ => {
                    self.drop_entry(&file, &meta_path);
                    return None;
                }
            }
        }
        Some(CachedNar {
            file,
            file_hash,
            file_size: stat.len(),
        })
    }

    fn drop_entry(&self, file: &Path, meta: &Path) {
        let _ = fs::remove_file(meta);
        let _ = fs::remove_file(file);
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
        // Read-only: nothing of ours writes a cached file again (outputs get copies, never
        // links), and its recorded stat catches anyone who does.
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o444)).map_err(io_err)?;
        fs::rename(&temp, &file).map_err(io_err)?;
        let seen = fs::metadata(&file).map(|m| Seen::of(&m)).map_err(io_err)?;
        write_meta(
            &meta,
            &Meta {
                nar_size,
                file_hash: file_hash.to_nix32(),
                file_size,
                seen: Some(seen),
            },
        )
        .map_err(io_err)?;
        Ok(CachedNar {
            file,
            file_hash,
            file_size,
        })
    }
}

/// Writes a cache entry's record beside it, atomically (a crash leaves the old one or none).
fn write_meta(path: &Path, meta: &Meta) -> io::Result<()> {
    let temp = path.with_extension(format!("json.tmp{}", std::process::id()));
    fs::write(&temp, serde_json::to_vec(meta).expect("meta serialises"))?;
    fs::rename(&temp, path)
}

/// The SHA-256 of a file's bytes.
fn hash_file(path: &Path) -> io::Result<Sha256Hash> {
    let mut r = nixstore::hash::HashingReader::new(fs::File::open(path)?);
    io::copy(&mut r, &mut io::sink())?;
    Ok(r.finish().1)
}
