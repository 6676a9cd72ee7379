//! The store's ext4 file system written directly: the closure's NARs laid out as that file
//! system in one pass (crate `ext4`), instead of mkfs, mount and tens of thousands of file
//! creations through the kernel. [`StoreWriter`] takes NARs from any number of threads, each
//! checked by the NAR parser's rules as it is laid out (single safe names, bounded depth);
//! the caller checks each NAR's hashes around it (`nixstore::import::read_compressed`).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ext4::{Entry, Fs, Writer, FT_DIR, FT_LNK, FT_REG};
use nixstore::import::ImportError;
use nixstore::nar::{Event, NarError, NarErrorKind, Node, Parser};
use nixstore::StorePath;
use util::io::NoteFailure;

/// An ext4 file system being written with a store in it.
pub struct StoreWriter {
    fs: Fs,
    device: PathBuf,
    /// The store directory's path in the file system: `["nix", "store"]` for a root file
    /// system, `["store"]` for one mounted at `/nix`.
    store_dir: Vec<String>,
    dir_inos: Vec<u32>,
    staging_ino: u32,
    now: u32,
}

/// The store paths being laid out, from any number of threads: writers not in use (each
/// holds a 4 MiB region buffer) and the paths laid out so far.
pub struct Paths<'a> {
    store: &'a StoreWriter,
    writers: Mutex<Vec<Writer<'a>>>,
    laid: Mutex<Vec<Entry>>,
}

impl Paths<'_> {
    /// Lays out one NAR (read to its end from `nar`) as store path `path`.
    pub fn put(&self, nar: &mut dyn Read, path: &StorePath) -> Result<(), ImportError> {
        let s = self.store;
        let mut w = self
            .writers
            .lock()
            .unwrap()
            .pop()
            .unwrap_or_else(|| s.fs.writer());
        let entry = put_nar(&s.fs, &mut w, nar, path, s.staging_ino, &s.device);
        self.writers.lock().unwrap().push(w);
        self.laid.lock().unwrap().push(entry?);
        Ok(())
    }

    /// The paths laid out, once every writer has written what it holds.
    pub fn done(self) -> io::Result<Vec<Entry>> {
        for w in self.writers.into_inner().unwrap() {
            w.finish().map_err(|e| self.store.on(e))?;
        }
        Ok(self.laid.into_inner().unwrap())
    }
}

impl StoreWriter {
    /// Starts the file system on `device` (`bytes` long, labelled `label`, with UUID `uuid`
    /// or a random one), with the store at `store_dir` inside it; every time is `now`.
    pub fn create(
        device: &Path,
        bytes: u64,
        label: &str,
        uuid: Option<&str>,
        store_dir: &[&str],
        now: u32,
    ) -> io::Result<StoreWriter> {
        let on = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", device.display()));
        let random = || media::ids::random_uuid().map(|u| u.into_bytes());
        let uuid = match uuid {
            Some(u) => uuid::Uuid::parse_str(u)
                .map_err(|e| io::Error::other(format!("UUID {u:?}: {e}")))?
                .into_bytes(),
            None => random()?,
        };
        let fs = Fs::create(
            device,
            bytes,
            ext4::Options {
                label: label.to_string(),
                uuid,
                hash_seed: random()?,
                now,
                blocks_per_group: 32768,
            },
        )
        .map_err(on)?;
        let dir_inos = store_dir
            .iter()
            .map(|_| fs.new_inode())
            .collect::<io::Result<Vec<u32>>>()
            .map_err(on)?;
        let staging_ino = fs.new_inode().map_err(on)?;
        Ok(StoreWriter {
            fs,
            device: device.to_path_buf(),
            store_dir: store_dir.iter().map(|s| s.to_string()).collect(),
            dir_inos,
            staging_ino,
            now,
        })
    }

    fn on(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.device.display()))
    }

    /// Where the store paths are laid out, from any number of threads.
    pub fn paths(&self) -> Paths<'_> {
        Paths {
            store: self,
            writers: Mutex::new(Vec::new()),
            laid: Mutex::new(Vec::new()),
        }
    }

    /// Completes the file system with the `laid` paths ([`Paths::done`]): they wait in
    /// [`STAGING`] beside an empty store directory (sticky and group-writable, as on NixOS)
    /// until [`move_into_store`]; then the directories above them, the journal, bitmaps and
    /// superblocks.
    pub fn finish(self, mut entries: Vec<Entry>) -> io::Result<()> {
        let device = self.device.clone();
        let on = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", device.display()));
        let (fs, now) = (&self.fs, self.now);
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let n = self.dir_inos.len();
        let parent_of_store = if n >= 2 {
            self.dir_inos[n - 2]
        } else {
            ext4::ROOT_INO
        };
        let mut w = fs.writer();
        fs.dir(
            &mut w,
            self.staging_ino,
            parent_of_store,
            0o700,
            now,
            &entries,
        )
        .map_err(on)?;
        fs.dir(
            &mut w,
            self.dir_inos[n - 1],
            parent_of_store,
            0o1775,
            now,
            &[],
        )
        .map_err(on)?;
        let dir_entry = |name: &str, ino| Entry {
            name: name.as_bytes().to_vec(),
            ino,
            file_type: FT_DIR,
        };
        let mut below = vec![
            dir_entry(&self.store_dir[n - 1], self.dir_inos[n - 1]),
            dir_entry(STAGING, self.staging_ino),
        ];
        for i in (0..n - 1).rev() {
            let parent = if i == 0 {
                ext4::ROOT_INO
            } else {
                self.dir_inos[i - 1]
            };
            fs.dir(&mut w, self.dir_inos[i], parent, 0o755, now, &below)
                .map_err(on)?;
            below = vec![dir_entry(&self.store_dir[i], self.dir_inos[i])];
        }
        w.finish().map_err(on)?;
        self.fs.finish(below).map_err(on)
    }
}

/// Where [`StoreWriter`] leaves the store paths: beside the store directory, in `/nix`.
pub const STAGING: &str = ".autoinstall-store";

/// Moves the store paths from [`STAGING`] into `/nix/store` of the system mounted at
/// `root`, through the kernel. The writer makes only linear directories, and /nix/store is
/// the directory that keeps growing for the life of the machine: grown by the kernel past
/// one block, it gets a hashed index, so looking up or adding a path stays cheap with tens of
/// thousands of them. A few hundred renames; returns how many.
pub fn move_into_store(root: &Path) -> Result<usize, String> {
    let staging = root.join("nix").join(STAGING);
    let store = root.join("nix/store");
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e: io::Error| format!("{}: {e}", p.display())
    };
    let mut names = std::fs::read_dir(&staging)
        .and_then(|d| {
            d.map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(at(&staging))?;
    names.sort();
    for name in &names {
        std::fs::rename(staging.join(name), store.join(name)).map_err(at(&store.join(name)))?;
    }
    std::fs::remove_dir(&staging).map_err(at(&staging))?;
    Ok(names.len())
}

/// Lays out one NAR as store path `path` (in the directory `store_ino`); returns its entry
/// for that directory. Modes and times are the store's canonical ones.
fn put_nar(
    fs: &Fs,
    w: &mut Writer,
    nar: &mut dyn Read,
    path: &StorePath,
    store_ino: u32,
    device: &Path,
) -> Result<Entry, ImportError> {
    let nar_err = |source| ImportError::Nar {
        path: path.clone(),
        source,
    };
    let io_err = |source| ImportError::Io {
        path: path.clone(),
        what: "writing into",
        file: device.to_path_buf(),
        source,
    };
    let mut parser = Parser::new(nar);
    // The open directories, innermost last: their inodes and entries so far.
    let mut open: Vec<(u32, Vec<Entry>)> = Vec::new();
    let mut top = None;
    while let Some(event) = parser.next_event().map_err(nar_err)? {
        match event {
            Event::Node { name, node } => {
                let ino = fs.new_inode().map_err(io_err)?;
                let file_type = match node {
                    Node::Regular { executable, size } => {
                        let perm = if executable { 0o555 } else { 0o444 };
                        let mut contents = NoteFailure::new(parser.contents());
                        let res = fs.file(w, ino, perm, 1, size, &mut contents);
                        let read_failed = contents.failed();
                        match res {
                            // The archive's fault (it ends inside the file, or its bytes
                            // could not be read): said as the unpacker says it.
                            Err(e) if read_failed => {
                                let kind = if e.kind() == io::ErrorKind::UnexpectedEof {
                                    NarErrorKind::Truncated
                                } else {
                                    NarErrorKind::Io(e)
                                };
                                return Err(nar_err(NarError {
                                    path: parser.entry_path(),
                                    kind,
                                }));
                            }
                            Err(e) => return Err(io_err(e)),
                            Ok(()) => {}
                        }
                        FT_REG
                    }
                    Node::Symlink { target } => {
                        fs.symlink(w, ino, 1, &target).map_err(io_err)?;
                        FT_LNK
                    }
                    Node::Directory => FT_DIR,
                };
                let entry = Entry {
                    name: name.unwrap_or_else(|| path.base_name().as_bytes().to_vec()),
                    ino,
                    file_type,
                };
                match open.last_mut() {
                    Some((_, entries)) => entries.push(entry),
                    None => top = Some(entry),
                }
                if file_type == FT_DIR {
                    open.push((ino, Vec::new()));
                }
            }
            Event::EndDirectory => {
                let (ino, entries) = open.pop().expect("the parser pairs directory ends");
                let parent = open.last().map_or(store_ino, |(i, _)| *i);
                fs.dir(w, ino, parent, 0o555, 1, &entries).map_err(io_err)?;
            }
        }
    }
    Ok(top.expect("a NAR that parsed has a root node"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NAR that ends inside a file is the archive's fault, reported as the unpacker does,
    /// and a full one lays out as its entry.
    #[test]
    fn a_truncated_nar_is_reported_as_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("bin")).unwrap();
        std::fs::write(tree.join("bin/tool"), vec![7u8; 100_000]).unwrap();
        let mut nar = Vec::new();
        nixstore::nar::encode(&tree, &mut nar).unwrap();
        let image = dir.path().join("fs.img");
        let bytes = 64 << 20;
        std::fs::File::create(&image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        let fs = Fs::create(
            &image,
            bytes,
            ext4::Options {
                label: "t".into(),
                uuid: [1; 16],
                hash_seed: [2; 16],
                now: 1,
                blocks_per_group: 8192,
            },
        )
        .unwrap();
        let mut w = fs.writer();
        let path = StorePath::parse("/nix/store/00000000000000000000000000000000-tree").unwrap();
        let entry = put_nar(&fs, &mut w, &mut &nar[..], &path, ext4::ROOT_INO, &image).unwrap();
        assert_eq!(entry.name, path.base_name().as_bytes());
        assert_eq!(entry.file_type, FT_DIR);
        let cut = &nar[..nar.len() - 50_000];
        let e = put_nar(&fs, &mut w, &mut &cut[..], &path, ext4::ROOT_INO, &image).unwrap_err();
        assert!(
            matches!(&e, ImportError::Nar { source, .. } if matches!(source.kind, NarErrorKind::Truncated)),
            "{e}"
        );
        assert!(e.to_string().contains("bin/tool"), "{e}");
    }
}
