//! Writing a plain binary cache directory that `nix copy --from file://DIR` reads:
//! `nix-cache-info`, `<hash>.narinfo` and `nar/<filehash>.nar.zst`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::closure::PathInfo;
use crate::hash::{HashingWriter, Sha256Hash};
use crate::keys::SecretKey;
use crate::nar;
use crate::narinfo::NarInfo;
use crate::store_path::STORE_DIR;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("writing the binary cache at {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} changed on disk: its NAR hash is now {found}, the store says {expected}")]
    Changed {
        path: String,
        expected: String,
        found: String,
    },
}

/// Options for [`add_path`].
pub struct CacheOptions<'a> {
    /// zstd level (3 is zstd's and Nix's default).
    pub level: i32,
    /// Compression threads (0: single-threaded in the caller's thread).
    pub threads: u32,
    pub key: Option<&'a SecretKey>,
}

impl Default for CacheOptions<'_> {
    fn default() -> Self {
        CacheOptions {
            level: 3,
            threads: 0,
            key: None,
        }
    }
}

/// The file that makes a directory a binary cache.
pub const CACHE_INFO: &str = "nix-cache-info";

/// Its text: our store directory, and `priority` among substituters (lower wins; Nix's own
/// cache.nixos.org is 40).
pub fn cache_info(priority: u32) -> String {
    format!("StoreDir: {STORE_DIR}\nWantMassQuery: 1\nPriority: {priority}\n")
}

/// Creates `dir` with its `nix-cache-info` if needed.
pub fn init(dir: &Path) -> Result<(), CacheError> {
    let io_err = |source| CacheError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir.join("nar")).map_err(io_err)?;
    let info = dir.join(CACHE_INFO);
    if !info.exists() {
        fs::write(&info, cache_info(40)).map_err(io_err)?;
    }
    Ok(())
}

/// Archives the path `info` describes from `source` (normally the path itself), compresses it
/// with zstd into `dir/nar/`, and writes its narinfo (signed when a key is given). The NAR
/// is checked against the store's hash on the way, so a path altered on disk is refused.
pub fn add_path(
    dir: &Path,
    info: &PathInfo,
    source: &Path,
    opts: &CacheOptions,
) -> Result<NarInfo, CacheError> {
    init(dir)?;
    let io_err = |source| CacheError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let temp = dir
        .join("nar")
        .join(format!(".tmp-{}.nar.zst", info.path.hash_part()));
    let c = compress_nar(source, &temp, opts.level, opts.threads, &|_| {}).map_err(io_err)?;
    File::open(&temp)
        .and_then(|f| f.sync_all())
        .map_err(io_err)?;
    if c.nar_hash != info.nar_hash || c.nar_size != info.nar_size {
        let _ = fs::remove_file(&temp);
        return Err(CacheError::Changed {
            path: info.path.to_string(),
            expected: info.nar_hash.to_nix32(),
            found: c.nar_hash.to_nix32(),
        });
    }
    let narinfo = narinfo(info, c.file_hash, c.file_size, opts.key);
    fs::rename(&temp, dir.join(&narinfo.url)).map_err(io_err)?;
    write_atomically(&dir.join(narinfo.file_name()), narinfo.to_text().as_bytes())
        .map_err(io_err)?;
    Ok(narinfo)
}

/// A NAR archived and compressed: the hashes and sizes a narinfo records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressed {
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    pub file_hash: Sha256Hash,
    pub file_size: u64,
}

/// Archives `source` as a zstd-compressed NAR into the new file `out`, hashing the NAR and the
/// compressed bytes on the way (one pass, bounded memory). `threads` > 0 lets zstd use that
/// many workers; `progress` hears NAR bytes. The file is not synced: the caller decides.
pub fn compress_nar(
    source: &Path,
    out: &Path,
    level: i32,
    threads: u32,
    progress: &dyn Fn(u64),
) -> io::Result<Compressed> {
    let file = HashingWriter::new(BufWriter::with_capacity(1 << 20, File::create(out)?));
    let mut encoder = zstd::stream::write::Encoder::new(file, level)?;
    if threads > 0 {
        encoder.multithread(threads)?;
    }
    let mut nar_writer = HashingWriter::new(Progress {
        inner: encoder,
        progress,
    });
    nar::encode(source, &mut nar_writer)?;
    let (counted, nar_hash, nar_size) = nar_writer.finish();
    let (buffered, file_hash, file_size) = counted.inner.finish()?.finish();
    buffered.into_inner().map_err(|e| e.into_error())?;
    Ok(Compressed {
        nar_hash,
        nar_size,
        file_hash,
        file_size,
    })
}

/// Where a compressed NAR lives in a cache: `nar/<file hash>.nar.zst`.
pub fn nar_url(file_hash: &Sha256Hash) -> String {
    format!(
        "nar/{}.nar.zst",
        file_hash.to_nix32().trim_start_matches("sha256:")
    )
}

/// The narinfo of `info` stored as a zstd file with this hash and size, signed when a key is
/// given.
pub fn narinfo(
    info: &PathInfo,
    file_hash: Sha256Hash,
    file_size: u64,
    key: Option<&SecretKey>,
) -> NarInfo {
    let mut narinfo = NarInfo {
        store_path: info.path.clone(),
        url: nar_url(&file_hash),
        compression: "zstd".into(),
        file_hash: Some(file_hash),
        file_size: Some(file_size),
        nar_hash: info.nar_hash,
        nar_size: info.nar_size,
        references: info.references.clone(),
        deriver: info.deriver.clone(),
        sigs: Vec::new(),
        ca: None,
    };
    if let Some(key) = key {
        narinfo.sigs.push(key.sign(&narinfo.fingerprint()));
    }
    narinfo
}

/// A `Write` that reports how many bytes pass.
struct Progress<'a, W> {
    inner: W,
    progress: &'a dyn Fn(u64),
}

impl<W: Write> Write for Progress<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let temp = path.with_extension("tmp");
    let mut f = File::create(&temp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&temp, path)
}
