//! Writing a plain binary cache directory that `nix copy --from file://DIR` reads:
//! `nix-cache-info`, `<hash>.narinfo` and `nar/<filehash>.nar.zst`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::closure::PathInfo;
use crate::hash::HashingWriter;
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

/// Creates `dir` with its `nix-cache-info` if needed.
pub fn init(dir: &Path) -> Result<(), CacheError> {
    let io_err = |source| CacheError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir.join("nar")).map_err(io_err)?;
    let info = dir.join("nix-cache-info");
    if !info.exists() {
        fs::write(
            &info,
            format!("StoreDir: {STORE_DIR}\nWantMassQuery: 1\nPriority: 40\n"),
        )
        .map_err(io_err)?;
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
    let file = File::create(&temp).map_err(io_err)?;
    let file = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
    let mut encoder = zstd::stream::write::Encoder::new(file, opts.level).map_err(io_err)?;
    if opts.threads > 0 {
        encoder.multithread(opts.threads).map_err(io_err)?;
    }
    let mut nar_writer = HashingWriter::new(encoder);
    nar::encode(source, &mut nar_writer).map_err(io_err)?;
    let (encoder, nar_hash, nar_size) = nar_writer.finish();
    let (file, file_hash, file_size) = encoder.finish().map_err(io_err)?.finish();
    file.into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(io_err)?;
    if nar_hash != info.nar_hash || nar_size != info.nar_size {
        let _ = fs::remove_file(&temp);
        return Err(CacheError::Changed {
            path: info.path.to_string(),
            expected: info.nar_hash.to_nix32(),
            found: nar_hash.to_nix32(),
        });
    }
    let url = format!(
        "nar/{}.nar.zst",
        file_hash.to_nix32().trim_start_matches("sha256:")
    );
    fs::rename(&temp, dir.join(&url)).map_err(io_err)?;

    let mut narinfo = NarInfo {
        store_path: info.path.clone(),
        url,
        compression: "zstd".into(),
        file_hash: Some(file_hash),
        file_size: Some(file_size),
        nar_hash,
        nar_size,
        references: info.references.clone(),
        deriver: info.deriver.clone(),
        sigs: Vec::new(),
        ca: None,
    };
    if let Some(key) = opts.key {
        narinfo.sigs.push(key.sign(&narinfo.fingerprint()));
    }
    write_atomically(&dir.join(narinfo.file_name()), narinfo.to_text().as_bytes())
        .map_err(io_err)?;
    Ok(narinfo)
}

fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let temp = path.with_extension("tmp");
    let mut f = File::create(&temp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&temp, path)
}
