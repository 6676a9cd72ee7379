//! Reading a payload tree, wherever it lives: the `Payload` view shared by FAT partitions
//! (our own bounded reader, [`crate::fatread`]), ISO 9660 volumes ([`crate::isoread`]), plain
//! directories and, in the installer, cache sites over HTTP.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use manifest::document::{limits, Manifest, MANIFEST_PATH};
use nixstore::narinfo::NarInfo;
use nixstore::StorePath;

use crate::fatread::FatVolume;
use crate::slice::Extent;

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Read access to a payload tree, wherever it lives.
pub trait Payload {
    /// Opens a file by its `/`-separated path in the tree.
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>>;
    /// Names of the entries of a directory of the tree (`""` for the top).
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Where it is, for messages.
    fn describe(&self) -> String;

    /// A whole small file of at most `cap` bytes (see `manifest::document::limits`); a longer
    /// one is an error, read no further: no medium or server can fill the memory.
    fn read_capped(&self, path: &str, cap: u64) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open(path)?
            .take(cap.saturating_add(1))
            .read_to_end(&mut v)
            .map_err(|e| other(format!("reading {path} in {}: {e}", self.describe())))?;
        if v.len() as u64 > cap {
            return Err(other(format!(
                "{}: {path} is longer than {cap} bytes, which no such file is; the payload is damaged or hostile",
                self.describe()
            )));
        }
        Ok(v)
    }

    fn manifest(&self) -> io::Result<Manifest> {
        let text = self.read_capped(MANIFEST_PATH, limits::MANIFEST)?;
        let text = String::from_utf8(text)
            .map_err(|_| other(format!("{}: {MANIFEST_PATH} is not UTF-8", self.describe())))?;
        Manifest::parse(&text)
            .map_err(|e| other(format!("{}: {MANIFEST_PATH}: {e}", self.describe())))
    }

    fn narinfo(&self, path: &StorePath) -> io::Result<NarInfo> {
        let name = format!("{}.narinfo", path.hash_part());
        let text = self.read_capped(&name, limits::NARINFO)?;
        let text = String::from_utf8(text)
            .map_err(|_| other(format!("{}: {name} is not UTF-8", self.describe())))?;
        let info = NarInfo::parse(&text)
            .map_err(|e| other(format!("{}: {name}: {e}", self.describe())))?;
        if info.store_path != *path {
            return Err(other(format!(
                "{}: {name} describes {}, not {path}",
                self.describe(),
                info.store_path
            )));
        }
        Ok(info)
    }
}

/// A payload on a FAT partition of an image or device, read with our own FAT32 reader
/// ([`crate::fatread`]), whose every cluster-chain walk is bounded: a hostile stick with a
/// looping chain yields an error, never a hang.
pub struct FatPayload {
    volume: FatVolume,
}

impl FatPayload {
    pub fn open(path: &Path, extent: Extent) -> io::Result<FatPayload> {
        let file =
            File::open(path).map_err(|e| other(format!("opening {}: {e}", path.display())))?;
        let volume = FatVolume::open(file, extent.start, extent.len, path.display().to_string())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "the partition at byte {} is not a FAT32 payload: {e}",
                        extent.start
                    ),
                )
            })?;
        Ok(FatPayload { volume })
    }

    pub fn volume(&self) -> &FatVolume {
        &self.volume
    }
}

impl Payload for FatPayload {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(self.volume.open_file(path)?))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.volume.list(dir)
    }

    fn describe(&self) -> String {
        self.volume.what().to_string()
    }
}

/// A payload tree in a directory (a `--format cache` output or a mounted stick).
pub struct DirPayload(pub PathBuf);

impl Payload for DirPayload {
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        let p = self.0.join(path);
        let f = File::open(&p)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        std::fs::read_dir(self.0.join(dir))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}
