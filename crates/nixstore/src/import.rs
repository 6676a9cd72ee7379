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
    import_nar_checking(nar, store_dir, path, Some(nar_hash), nar_size)
}

/// [`import_nar`], checking the NAR hash only when `nar_hash` is given (the size always).
fn import_nar_checking<R: Read>(
    nar: R,
    store_dir: &Path,
    path: &StorePath,
    nar_hash: Option<&Sha256Hash>,
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

    let nar_error = |source| ImportError::Nar {
        path: path.clone(),
        source,
    };
    let result = match nar_hash {
        Some(nar_hash) => nar::unpack(HashingReader::new(nar), store_dir, &temp_name(path))
            .map_err(nar_error)
            .and_then(|(stats, reader)| {
                check_sums(path, reader.finish(), nar_hash, nar_size).map(|_| stats)
            }),
        None => nar::unpack(Counted { inner: nar, n: 0 }, store_dir, &temp_name(path))
            .map_err(nar_error)
            .and_then(|(stats, reader)| match reader.n {
                n if n == nar_size => Ok(stats),
                found => Err(ImportError::NarSize {
                    path: path.clone(),
                    expected: nar_size,
                    found,
                }),
            }),
    };
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
    let file = cache_dir.join(&info.url);
    let opened = File::open(&file).map_err(|source| ImportError::Io {
        path: info.store_path.clone(),
        what: "opening",
        file: file.clone(),
        source,
    })?;
    import_compressed(opened, &file, info, store_dir)
}

/// Imports the path `info` describes from its compressed file, read from `compressed` (`file`
/// names it in messages): checks FileHash and FileSize, decompresses, and imports as
/// [`import_nar`] does.
pub fn import_compressed<R: Read>(
    compressed: R,
    file: &Path,
    info: &NarInfo,
    store_dir: &Path,
) -> Result<UnpackStats, ImportError> {
    let result = through_compressed(compressed, file, info, |nar| {
        import_nar(
            nar,
            store_dir,
            &info.store_path,
            &info.nar_hash,
            info.nar_size,
        )
    });
    if result.is_err() {
        // A FileHash mismatch is only known once the NAR is in place: take it out again.
        let _ = remove_tree(&store_dir.join(info.store_path.base_name()));
    }
    result
}

/// Imports a path whose compressed file [`check_compressed`] has already checked in full, from
/// a second read of that file: this pass checks FileHash, FileSize and NarSize but does not
/// hash the NAR again. A matching FileHash pins the compressed bytes, and so the NAR that was
/// checked (hash and structure) in the first pass; the NAR hash is two to three times as many
/// bytes, a sixth of an install's time. Without a FileHash in `info`, it imports as
/// [`import_compressed`] does.
pub fn import_checked_compressed<R: Read>(
    compressed: R,
    file: &Path,
    info: &NarInfo,
    store_dir: &Path,
) -> Result<UnpackStats, ImportError> {
    if info.file_hash.is_none() {
        return import_compressed(compressed, file, info, store_dir);
    }
    let result = through_compressed(compressed, file, info, |nar| {
        import_nar_checking(nar, store_dir, &info.store_path, None, info.nar_size)
    });
    if result.is_err() {
        let _ = remove_tree(&store_dir.join(info.store_path.base_name()));
    }
    result
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Checks the compressed file of the path `info` describes without writing anything: FileHash,
/// FileSize, NarHash, NarSize and every structural rule of the NAR (see [`nar::check`]).
pub fn check_compressed<R: Read>(
    compressed: R,
    file: &Path,
    info: &NarInfo,
) -> Result<UnpackStats, ImportError> {
    through_compressed(compressed, file, info, |nar| {
        check_nar(nar, &info.store_path, &info.nar_hash, info.nar_size)
    })
}

/// Checks an uncompressed NAR as [`import_nar`] would, writing nothing.
pub fn check_nar<R: Read>(
    nar: R,
    path: &StorePath,
    nar_hash: &Sha256Hash,
    nar_size: u64,
) -> Result<UnpackStats, ImportError> {
    let (stats, reader) =
        nar::check(HashingReader::new(nar)).map_err(|source| ImportError::Nar {
            path: path.clone(),
            source,
        })?;
    check_sums(path, reader.finish(), nar_hash, nar_size)?;
    Ok(stats)
}

fn check_sums<R>(
    path: &StorePath,
    (_, found, size): (R, Sha256Hash, u64),
    nar_hash: &Sha256Hash,
    nar_size: u64,
) -> Result<(), ImportError> {
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
    Ok(())
}

/// Runs `visit` over the NAR in the compressed file of the path `info` describes, for a
/// caller that puts the NAR somewhere other than a store directory (e.g. straight into a
/// file system image). `visit` must read the NAR to its end. Checked: FileHash, FileSize and
/// NarSize, and NarHash when `nar_hash` is set (leave it unset only when a full check of the
/// same compressed bytes already passed, as [`import_checked_compressed`] explains). The
/// caller must treat whatever `visit` wrote as garbage if this fails.
pub fn read_compressed<R: Read, T>(
    compressed: R,
    file: &Path,
    info: &NarInfo,
    nar_hash: bool,
    visit: impl FnOnce(&mut dyn Read) -> Result<T, ImportError>,
) -> Result<T, ImportError> {
    through_compressed(compressed, file, info, |nar| {
        if nar_hash {
            let mut hashing = HashingReader::new(nar);
            let out = visit(&mut hashing)?;
            check_sums(
                &info.store_path,
                hashing.finish(),
                &info.nar_hash,
                info.nar_size,
            )?;
            Ok(out)
        } else {
            let mut counted = Counted { inner: nar, n: 0 };
            let out = visit(&mut counted)?;
            if counted.n != info.nar_size {
                return Err(ImportError::NarSize {
                    path: info.store_path.clone(),
                    expected: info.nar_size,
                    found: counted.n,
                });
            }
            Ok(out)
        }
    })
}

/// Runs `nar_step` over the decompressed stream of `compressed`, then checks the compressed
/// file's own hash and size (all of it, including whatever the decompressor did not need).
fn through_compressed<R: Read, T>(
    compressed: R,
    file: &Path,
    info: &NarInfo,
    nar_step: impl FnOnce(&mut dyn Read) -> Result<T, ImportError>,
) -> Result<T, ImportError> {
    let path = &info.store_path;
    let io_err = |what: &'static str| {
        move |source| ImportError::Io {
            path: path.clone(),
            what,
            file: file.to_path_buf(),
            source,
        }
    };
    let mut hashed = BufReader::with_capacity(256 * 1024, HashingReader::new(compressed));
    let stats = match info.compression.as_str() {
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(hashed)
                .map_err(io_err("starting to decompress"))?;
            let stats = nar_step(&mut decoder);
            hashed = decoder.finish();
            stats
        }
        "none" => nar_step(&mut hashed),
        other => {
            return Err(ImportError::Compression {
                path: path.clone(),
                compression: other.to_string(),
            })
        }
    };
    let drained = io::copy(&mut hashed, &mut io::sink());
    let (_, found, size) = hashed.into_inner().finish();
    // A corrupt file usually breaks decompression first; say that it is the file's fault.
    if let Some(expected) = info.file_hash {
        if expected != found && drained.is_ok() {
            return Err(ImportError::FileHash {
                path: path.clone(),
                file: file.to_path_buf(),
                expected,
                found,
            });
        }
    }
    let stats = stats?;
    drained.map_err(io_err("reading"))?;
    match info.file_size {
        Some(expected) if expected != size => Err(ImportError::FileSize {
            path: path.clone(),
            file: file.to_path_buf(),
            expected,
            found: size,
        }),
        _ => Ok(stats),
    }
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
