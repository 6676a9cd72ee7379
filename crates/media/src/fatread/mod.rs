//! A read-only FAT32 reader for payload partitions, written for media we did not necessarily
//! write ourselves: a stick can be corrupted or hostile, and the installer reads it unattended.
//! So every cluster chain walk is bounded by the volume's cluster count (and a file's by its
//! size), and a loop, a cluster out of range, a free or bad cluster inside a chain, or a chain
//! of the wrong length is an `InvalidData` error naming the device, never a hang. (fatfs,
//! which we used before, follows directory chains without a bound.)
//!
//! Choices:
//! - A file's chain must be exactly as long as its size needs: a longer chain is rejected as
//!   fsck.fat would flag it, so reading a file walks its whole chain to its end mark and a loop
//!   past the file's last byte is caught too. An empty file must have no clusters.
//! - Names are matched exactly first, then ignoring ASCII case, then by 8.3 short name; names
//!   that cannot be path components (`/`, NUL, `.`, `..`, empty) are neither listed nor found.
//! - Directories are bounded at 64 MiB. Parsed directories and FAT windows are cached, and
//!   a file's chain is resolved into contiguous runs when it is opened, so reading is plain
//!   `pread`s, straight into the caller's buffer for large reads.
//! - Cross-linked chains (two owners sharing clusters) cannot be seen from one chain; only
//!   `check_dir_chains` looks for them, among the chains it walks.

mod bpb;
mod chain;
mod dir;
mod file;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
mod walk;

use std::fs::File;
use std::io;
use std::sync::Mutex;

use bpb::Layout;
use chain::{FatCache, Length, Run};
use dir::{DirCache, Entry};

pub use crate::readat::ReadAt;
pub use file::FatFile;

/// A FAT32 volume on a byte extent of a file or device, opened read-only.
pub struct FatVolume<S: ReadAt = File> {
    src: S,
    /// The extent: the volume's first byte in `src`, and how many bytes it may use.
    start: u64,
    len: u64,
    /// The device or image, for messages.
    what: String,
    layout: Layout,
    fat: Mutex<FatCache>,
    dirs: Mutex<DirCache>,
}

/// What a path leads to.
#[derive(Debug, Clone, Copy)]
struct Node {
    cluster: u32,
    size: u32,
    is_dir: bool,
}

fn describe_dir(path: &str) -> String {
    if path.is_empty() {
        "the root directory".to_string()
    } else {
        format!("the directory {path}")
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

impl FatVolume<File> {
    /// Opens the FAT32 volume on bytes `start .. start + len` of `file`; `what` names the
    /// device in messages.
    pub fn open(file: File, start: u64, len: u64, what: String) -> io::Result<FatVolume> {
        Self::with_source(file, start, len, what)
    }
}

impl<S: ReadAt> FatVolume<S> {
    /// The device or image it is on, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// As `open`, on any source of positioned reads.
    pub fn with_source(src: S, start: u64, len: u64, what: String) -> io::Result<Self> {
        if start.checked_add(len).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{what}: a partition of {len} bytes at byte {start} is past any device's end"
                ),
            ));
        }
        let mut vol = FatVolume {
            src,
            start,
            len,
            what,
            layout: Layout {
                cluster_bytes: 512,
                fat_offset: 0,
                fat_bytes: 0,
                data_offset: 0,
                clusters: 0,
                root_cluster: 0,
            },
            fat: Mutex::default(),
            dirs: Mutex::default(),
        };
        let mut boot = vec![0u8; Layout::BOOT_BYTES.min(len as usize)];
        vol.read_exact_at(&mut boot, 0)?;
        vol.layout = Layout::parse(&boot, len).map_err(|e| vol.bad(e))?;
        Ok(vol)
    }

    /// Opens a file by `/`-separated path; the reader returns exactly the file's bytes.
    pub fn open_file(&self, path: &str) -> io::Result<FatFile<'_, S>> {
        let node = self.resolve(path)?;
        if node.is_dir {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: {path} is a directory, not a file", self.what),
            ));
        }
        let runs = self.file_chain(node, path)?;
        Ok(FatFile::new(self, &runs, node.size as u64))
    }

    /// The names in a directory (`""` is the root), long names where there are any, without
    /// `.` and `..`, in the directory's order.
    pub fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let node = self.resolve(dir)?;
        if !node.is_dir {
            return Err(self.not_a_dir(dir));
        }
        let d = self.dir(node.cluster, &|| describe_dir(dir))?;
        Ok(d.entries
            .iter()
            .filter(|e| e.plain)
            .map(|e| e.name.to_string())
            .collect())
    }

    /// Walks the cluster chains of every directory on `dir`'s path (the root included) and of
    /// every entry in them, checking that each is in range, loop-free and terminated and that
    /// no two share a cluster: fatfs, which writes the reports, follows these chains without
    /// a bound, so this is what makes handing it the volume safe.
    pub fn check_dir_chains(&self, dir: &str) -> io::Result<()> {
        let mut owners: Vec<String> = vec![describe_dir("")];
        let mut chains: Vec<(usize, Run)> = Vec::new();
        let root = self.layout.root_cluster;
        for run in self.dir_chain(root, &|| describe_dir(""))? {
            chains.push((0, run));
        }
        let mut node = root;
        let mut prefix = String::new();
        let mut parts = dir.split('/').filter(|p| !p.is_empty());
        loop {
            let d = self.dir(node, &|| describe_dir(&prefix))?;
            for e in d.entries.iter() {
                let path = join(&prefix, &e.name);
                let runs = if e.is_dir {
                    self.dir_chain(e.cluster, &|| describe_dir(&path))?
                } else {
                    self.file_chain(node_of(e), &path)?
                };
                chains.extend(runs.into_iter().map(|r| (owners.len(), r)));
                owners.push(if e.is_dir {
                    describe_dir(&path)
                } else {
                    format!("the file {path}")
                });
            }
            let Some(part) = parts.next() else { break };
            let e = self.child(&d, part, &prefix, dir)?;
            prefix = join(&prefix, part);
            if !e.is_dir {
                return Err(self.not_a_dir(&prefix));
            }
            node = e.cluster;
        }
        match chain::find_cross_link(&chains) {
            Some((a, b, cluster)) => Err(self.bad(format!(
                "{} and {} share cluster {cluster}: their chains are cross-linked",
                owners[a], owners[b]
            ))),
            None => Ok(()),
        }
    }

    /// Follows `path` from the root.
    fn resolve(&self, path: &str) -> io::Result<Node> {
        let mut node = Node {
            cluster: self.layout.root_cluster,
            size: 0,
            is_dir: true,
        };
        let mut prefix = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !node.is_dir {
                return Err(self.not_a_dir(&prefix));
            }
            let d = self.dir(node.cluster, &|| describe_dir(&prefix))?;
            node = node_of(self.child(&d, part, &prefix, path)?);
            prefix = join(&prefix, part);
        }
        Ok(node)
    }

    fn child<'d>(
        &self,
        d: &'d dir::Dir,
        part: &str,
        prefix: &str,
        path: &str,
    ) -> io::Result<&'d Entry> {
        d.lookup(part).ok_or_else(|| {
            let msg = if path.trim_matches('/') == join(prefix, part) {
                format!("{}: {path} does not exist", self.what)
            } else {
                format!(
                    "{}: {path}: {} does not exist",
                    self.what,
                    join(prefix, part)
                )
            };
            io::Error::new(io::ErrorKind::NotFound, msg)
        })
    }

    /// The runs of a file's chain, which must be exactly as long as its size needs.
    fn file_chain(&self, node: Node, path: &str) -> io::Result<Vec<Run>> {
        let whose = || format!("the file {path}");
        let need = (node.size as u64).div_ceil(self.layout.cluster_bytes as u64);
        match (node.cluster, need) {
            (0, 0) => Ok(Vec::new()),
            (0, _) => Err(self.bad(format!(
                "{} has {} bytes but no clusters",
                whose(),
                node.size
            ))),
            (first, need) => self.chain(first, Length::Exact(need), &whose),
        }
    }

    fn not_a_dir(&self, path: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: {path} is a file, not a directory", self.what),
        )
    }

    /// An error about the volume's structure, as a sentence naming the device.
    fn bad(&self, msg: impl std::fmt::Display) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, format!("{}: {msg}", self.what))
    }

    /// Fills `buf` from `offset` in the extent; the end of the source inside it is an error.
    fn read_exact_at(&self, mut buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.len {
            return Err(self.bad(format!(
                "a read up to byte {end} goes past the partition's {} bytes",
                self.len
            )));
        }
        let mut at = self.start + offset;
        while !buf.is_empty() {
            match self.src.read_at(buf, at) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{}: the device ends at byte {at}, inside the FAT volume that \
                             should reach byte {}",
                            self.what,
                            self.start + self.len
                        ),
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    at += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{}: reading byte {at}: {e}", self.what),
                    ))
                }
            }
        }
        Ok(())
    }
}

fn node_of(e: &Entry) -> Node {
    Node {
        cluster: e.cluster,
        size: e.size,
        is_dir: e.is_dir,
    }
}
