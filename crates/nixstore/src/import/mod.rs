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
use util::io::Counted;

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
    #[error("{path}: the compressed file {file} goes on after the end of its NAR (one zstd frame); the payload is corrupt or was tampered with")]
    Trailing { path: StorePath, file: PathBuf },
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
        None => nar::unpack(Counted::new(nar), store_dir, &temp_name(path))
            .map_err(nar_error)
            .and_then(|(stats, reader)| match reader.count() {
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

/// What a pass over a compressed NAR checks besides its structure, its NarSize and the
/// bounds every pass keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Everything: the NAR hash, and FileHash and FileSize where the narinfo gives them. The
    /// first (or only) pass over a file.
    Full,
    /// The compressed file must be exactly the bytes an earlier [`Check::Full`] pass read, as
    /// that pass measured them ([`FilePin`], kept in the installer's memory and never read
    /// from the medium again). The NAR those bytes decompress to is then the one that pass
    /// checked, so its hash (two to three times as many bytes as the file, a sixth of an
    /// install's time) is not computed again.
    Pinned(FilePin),
}

/// The SHA-256 and size of a compressed NAR file as a full pass computed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePin {
    pub file_hash: Sha256Hash,
    pub file_size: u64,
}

/// The largest zstd window a compressed NAR may ask for: 16 MiB (`zstd -19` uses 8 MiB).
/// A hostile file asking for more would make every decompressing thread hold that much.
pub const MAX_WINDOW_LOG: u32 = 24;

/// The most bytes a compressed file of a NAR of `nar_size` bytes can take: zstd never needs
/// more than the input plus 1/256 and a few block headers, so a stream that goes on past
/// this is not a compressed NAR of that size, whatever its (unsigned) FileSize says.
pub fn max_compressed_size(nar_size: u64) -> u64 {
    nar_size
        .saturating_add(nar_size / 128)
        .saturating_add(64 << 10)
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
    import_compressed(opened, &file, info, store_dir, Check::Full)
}

/// Imports the path `info` describes from its compressed file, read from `compressed` (`file`
/// names it in messages): decompresses, unpacks under a temporary name, and renames into
/// place once every check of `check` passed (see [`import_nar`]).
pub fn import_compressed<R: Read>(
    compressed: R,
    file: &Path,
    info: &NarInfo,
    store_dir: &Path,
    check: Check,
) -> Result<UnpackStats, ImportError> {
    let nar_hash = match check {
        Check::Full => Some(&info.nar_hash),
        Check::Pinned(_) => None,
    };
    let result = through_compressed(compressed, file, info, check, |nar| {
        import_nar_checking(nar, store_dir, &info.store_path, nar_hash, info.nar_size)
    });
    if result.is_err() {
        // A FileHash mismatch is only known once the NAR is in place: take it out again.
        let _ = remove_tree(&store_dir.join(info.store_path.base_name()));
    }
    result.map(|(stats, _)| stats)
}

/// Checks the compressed file of the path `info` describes without writing anything: FileHash,
/// FileSize, NarHash, NarSize and every structural rule of the NAR (see [`nar::check`]).
/// Returns what it measured of the file, for a later [`Check::Pinned`] pass.
pub fn check_compressed<R: Read>(
    compressed: R,
    file: &Path,
    info: &NarInfo,
) -> Result<(UnpackStats, FilePin), ImportError> {
    through_compressed(compressed, file, info, Check::Full, |nar| {
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
/// file system image). `visit` must read the NAR to its end. Checked: NarSize, the bounds of
/// [`through_compressed`], and what `check` asks. The caller must treat whatever `visit`
/// wrote as garbage if this fails.
pub fn read_compressed<R: Read, T>(
    compressed: R,
    file: &Path,
    info: &NarInfo,
    check: Check,
    visit: impl FnOnce(&mut dyn Read) -> Result<T, ImportError>,
) -> Result<(T, FilePin), ImportError> {
    through_compressed(compressed, file, info, check, |nar| match check {
        Check::Full => {
            let mut hashing = HashingReader::new(nar);
            let out = visit(&mut hashing)?;
            check_sums(
                &info.store_path,
                hashing.finish(),
                &info.nar_hash,
                info.nar_size,
            )?;
            Ok(out)
        }
        Check::Pinned(_) => {
            let mut counted = Counted::new(nar);
            let out = visit(&mut counted)?;
            if counted.count() != info.nar_size {
                return Err(ImportError::NarSize {
                    path: info.store_path.clone(),
                    expected: info.nar_size,
                    found: counted.count(),
                });
            }
            Ok(out)
        }
    })
}

/// Runs `nar_step` over the decompressed stream of `compressed`, then checks the compressed
/// file's own hash and size (all of it, including whatever the decompressor did not need)
/// against the narinfo (`Check::Full`) or the pin (`Check::Pinned`).
///
/// Whatever the source sends, every read is bounded by signed facts or by the pin: the NAR
/// stream by NarSize (one byte more shows it is too long), the compressed file by the pin's
/// size, else by FileSize and by the most a NAR of NarSize can compress to, and the zstd
/// stream ends with its one frame (anything after it is refused). A medium or server that
/// sends without end makes the pass fail, never run forever.
fn through_compressed<R: Read, T>(
    compressed: R,
    file: &Path,
    info: &NarInfo,
    check: Check,
    nar_step: impl FnOnce(&mut dyn Read) -> Result<T, ImportError>,
) -> Result<(T, FilePin), ImportError> {
    let path = &info.store_path;
    let io_err = |what: &'static str| {
        move |source| ImportError::Io {
            path: path.clone(),
            what,
            file: file.to_path_buf(),
            source,
        }
    };
    let bound = match (check, info.compression.as_str()) {
        (Check::Pinned(pin), _) => pin.file_size,
        (Check::Full, "none") => info.nar_size,
        (Check::Full, _) => max_compressed_size(info.nar_size),
    };
    let bound = match (check, info.file_size) {
        (Check::Full, Some(size)) => bound.min(size),
        _ => bound,
    };
    let mut hashed = BufReader::with_capacity(
        256 * 1024,
        HashingReader::new(compressed.take(bound.saturating_add(1))),
    );
    let nar_bound = info.nar_size.saturating_add(1);
    let stats = match info.compression.as_str() {
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(hashed)
                .map_err(io_err("starting to decompress"))?
                .single_frame();
            decoder
                .window_log_max(MAX_WINDOW_LOG)
                .map_err(io_err("starting to decompress"))?;
            let stats = nar_step(&mut (&mut decoder).take(nar_bound));
            hashed = decoder.finish();
            stats
        }
        "none" => nar_step(&mut (&mut hashed).take(nar_bound)),
        other => {
            return Err(ImportError::Compression {
                path: path.clone(),
                compression: other.to_string(),
            })
        }
    };
    // The NAR ended (the parser saw its end, and nothing after it): so did its zstd frame.
    // Whatever follows is not part of it.
    let mut after = [0u8; 1];
    let trailing = match (&stats, hashed.read(&mut after)) {
        (Ok(_), Ok(0)) => Ok(false),
        (Ok(_), Ok(_)) => Ok(true),
        (_, Ok(_)) => Ok(false),
        (_, Err(e)) => Err(e),
    };
    // On failure, read what is left (bounded) so the file's hash can tell whether the file
    // itself was damaged.
    let drained = match &stats {
        Ok(_) => Ok(0),
        Err(_) => io::copy(&mut hashed, &mut io::sink()),
    };
    let (_, found, size) = hashed.into_inner().finish();
    let found = FilePin {
        file_hash: found,
        file_size: size,
    };
    let expected = match check {
        Check::Pinned(pin) => Some(pin),
        Check::Full => info.file_hash.map(|file_hash| FilePin {
            file_hash,
            file_size: info.file_size.unwrap_or(size),
        }),
    };
    // A corrupt file usually breaks decompression first; say that it is the file's fault.
    if let Some(expected) = expected {
        if expected.file_hash != found.file_hash && drained.is_ok() && stats.is_err() {
            return Err(ImportError::FileHash {
                path: path.clone(),
                file: file.to_path_buf(),
                expected: expected.file_hash,
                found: found.file_hash,
            });
        }
    }
    let stats = stats?;
    if trailing.map_err(io_err("reading"))? {
        return Err(ImportError::Trailing {
            path: path.clone(),
            file: file.to_path_buf(),
        });
    }
    if let Some(expected) = expected {
        if expected.file_hash != found.file_hash {
            return Err(ImportError::FileHash {
                path: path.clone(),
                file: file.to_path_buf(),
                expected: expected.file_hash,
                found: found.file_hash,
            });
        }
    }
    let expected_size = match check {
        Check::Pinned(pin) => Some(pin.file_size),
        Check::Full => info.file_size,
    };
    match expected_size {
        Some(expected) if expected != found.file_size => Err(ImportError::FileSize {
            path: path.clone(),
            file: file.to_path_buf(),
            expected,
            found: found.file_size,
        }),
        _ => Ok((stats, found)),
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

#[cfg(test)]
mod tests;
