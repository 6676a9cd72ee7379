//! Importing NARs into a store directory: unpack under a temporary name, check the NAR hash
//! and size (and the compressed file's hash), and only then rename into place. A path that
//! exists under its real name has therefore always been checked in full.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::hash::{HashingReader, Sha256Hash};
use crate::nar::{self, NarError, UnpackStats};
use crate::narinfo::NarInfo;
use crate::store_path::StorePath;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Nar {
        path: StorePath,
        #[source]
        source: NarError,
    },
    #[error("{path}: the NAR hash is {found}, but {expected} was expected; the payload is corrupt or was tampered with")]
    NarHash {
        path: StorePath,
        expected: Sha256Hash,
        found: Sha256Hash,
    },
    #[error("{path}: the NAR is {found} bytes, but {expected} were expected")]
    NarSize {
        path: StorePath,
        expected: u64,
        found: u64,
    },
    #[error("{path}: the compressed file {file} has hash {found}, but its narinfo says {expected}; the payload is corrupt or was tampered with")]
    FileHash {
        path: StorePath,
        file: PathBuf,
        expected: Sha256Hash,
        found: Sha256Hash,
    },
    #[error("{path}: compression {compression:?} is not supported (only zstd and none)")]
    Compression {
        path: StorePath,
        compression: String,
    },
    #[error("{path}: {what} {file}: {source}")]
    Io {
        path: StorePath,
        what: &'static str,
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: the compressed file {file} is {found} bytes, but its narinfo says {expected}"
    )]
    FileSize {
        path: StorePath,
        file: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{path} already exists in {store}")]
    Exists { path: StorePath, store: PathBuf },
}

/// The temporary name a path is unpacked under. It starts with a period, which no store
/// path name may, so it can never collide with a real path.
pub fn temp_name(path: &StorePath) -> OsString {
    format!(".import-{}", path.base_name()).into()
}

/// Unpacks the uncompressed NAR `nar` as `path` in `store_dir` (e.g. `/mnt/nix/store`),
/// checking its hash and size before renaming it into place. Leftovers of an earlier,
/// interrupted import of the same path are removed first.
pub fn import_nar<R: Read>(
    nar: R,
    store_dir: &Path,
    path: &StorePath,
    nar_hash: &Sha256Hash,
    nar_size: u64,
) -> Result<UnpackStats, ImportError> {
    let io_err = |what, file: &Path| {
        let file = file.to_path_buf();
        move |source| ImportError::Io {
            path: path.clone(),
            what,
            file,
            source,
        }
    };
    let final_path = store_dir.join(path.base_name());
    if fs::symlink_metadata(&final_path).is_ok() {
        return Err(ImportError::Exists {
            path: path.clone(),
            store: store_dir.to_path_buf(),
        });
    }
    let temp = store_dir.join(temp_name(path));
    remove_tree(&temp).map_err(io_err("removing leftover", &temp))?;

    let result = (|| {
        let (stats, reader) = nar::unpack(HashingReader::new(nar), store_dir, &temp_name(path))
            .map_err(|source| ImportError::Nar {
                path: path.clone(),
                source,
            })?;
        let (_, found, size) = reader.finish();
        if size != nar_size {
            return Err(ImportError::NarSize {
                path: path.clone(),
                expected: nar_size,
                found: size,
            });
        }
        if found != *nar_hash {
            return Err(ImportError::NarHash {
                path: path.clone(),
                expected: *nar_hash,
                found,
            });
        }
        Ok(stats)
    })();
    match result {
        Ok(stats) => {
            fs::rename(&temp, &final_path).map_err(io_err("renaming into place", &final_path))?;
            Ok(stats)
        }
        Err(e) => {
            let _ = remove_tree(&temp);
            Err(e)
        }
    }
}

/// Imports the path a narinfo describes from a binary cache directory: checks the compressed
/// file's hash and size, decompresses, and imports as [`import_nar`] does.
pub fn import_from_cache(
    cache_dir: &Path,
    info: &NarInfo,
    store_dir: &Path,
) -> Result<UnpackStats, ImportError> {
    let path = &info.store_path;
    let file = cache_dir.join(&info.url);
    let opened = File::open(&file).map_err(|source| ImportError::Io {
        path: path.clone(),
        what: "opening",
        file: file.clone(),
        source,
    })?;
    let mut hashed = BufReader::with_capacity(256 * 1024, HashingReader::new(opened));
    let stats = match info.compression.as_str() {
        "zstd" => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(hashed).map_err(|source| {
                    ImportError::Io {
                        path: path.clone(),
                        what: "starting to decompress",
                        file: file.clone(),
                        source,
                    }
                })?;
            let stats = import_nar(&mut decoder, store_dir, path, &info.nar_hash, info.nar_size);
            hashed = decoder.finish();
            stats
        }
        "none" => import_nar(&mut hashed, store_dir, path, &info.nar_hash, info.nar_size),
        other => {
            return Err(ImportError::Compression {
                path: path.clone(),
                compression: other.to_string(),
            })
        }
    };
    // Whatever the decompressor did not need still counts toward the file hash.
    let drained = io::copy(&mut hashed, &mut io::sink());
    let (_, found, size) = hashed.into_inner().finish();
    let stats = stats?;
    let check = drained
        .map_err(|source| ImportError::Io {
            path: path.clone(),
            what: "reading",
            file: file.clone(),
            source,
        })
        .and_then(|_| match (info.file_hash, info.file_size) {
            (Some(expected), _) if expected != found => Err(ImportError::FileHash {
                path: path.clone(),
                file: file.clone(),
                expected,
                found,
            }),
            (_, Some(expected)) if expected != size => Err(ImportError::FileSize {
                path: path.clone(),
                file: file.clone(),
                expected,
                found: size,
            }),
            _ => Ok(()),
        });
    if let Err(e) = check {
        let _ = remove_tree(&store_dir.join(path.base_name()));
        return Err(e);
    }
    Ok(stats)
}

/// Removes a tree that may hold read-only directories (as store paths do). Never follows
/// symlinks. A missing path is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(path)? {
            remove_tree(&entry?.path())?;
        }
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    }
}
