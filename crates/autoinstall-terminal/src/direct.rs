//! The store's file system written directly: when the partition that holds `/nix/store` is
//! ext4, the closure's NARs are laid out as that file system in one pass (crate `ext4`)
//! instead of mkfs, mount and tens of thousands of file creations through the kernel. The
//! checks are those of [`closure::copy`]: every NAR's structure (the parser's rules: no
//! name with a slash, no `..`, bounded depth), sizes, and either the NAR hash or (after the
//! verify pass) the file hash that pass measured. What could not be checked before writing fails the install
//! with the partition half written, which the next run formats again.

use std::io::{self, Read};
use std::path::Path;
use std::sync::Mutex;

use ext4::{Entry, Fs, Writer, FT_DIR, FT_LNK, FT_REG};
use nixstore::import::{read_compressed, Check, ImportError};
use nixstore::nar::{Event, NarError, NarErrorKind, Node, Parser};
use nixstore::StorePath;

use crate::closure::{self, Closure, Pins};
use crate::payload::Source;

/// Where the store goes.
pub struct StoreFs<'a> {
    /// The partition's device node.
    pub device: &'a Path,
    pub bytes: u64,
    pub label: &'a str,
    /// The store directory's path in the file system: `["nix", "store"]` for a root
    /// file system, `["store"]` for one mounted at `/nix`.
    pub store_dir: Vec<&'a str>,
}

/// Writes the file system with `closure` in its store. `pins` as for [`closure::copy`].
pub fn write(
    source: &Source,
    closure: &Closure,
    target: &StoreFs,
    jobs: usize,
    pins: Option<&Pins>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), String> {
    let on = |e: io::Error| format!("{}: {e}", target.device.display());
    let random = || {
        target::ids::random_uuid()
            .map(|u| u.into_bytes())
            .map_err(|e| e.to_string())
    };
    let now = crate::report::now() as u32;
    let fs = Fs::create(
        target.device,
        target.bytes,
        ext4::Options {
            label: target.label.to_string(),
            uuid: random()?,
            hash_seed: random()?,
            now,
            blocks_per_group: 32768,
        },
    )
    .map_err(on)?;
    let dir_inos = target
        .store_dir
        .iter()
        .map(|_| fs.new_inode())
        .collect::<io::Result<Vec<u32>>>()
        .map_err(on)?;
    let staging_ino = fs.new_inode().map_err(on)?;

    let writers: Mutex<Vec<Writer>> = Mutex::new(Vec::new());
    let paths: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    // Past eight threads the disk, not decompression, sets the pace; each thread holds a
    // 4 MiB buffer, so more would only cost memory.
    closure::parallel(source, closure, jobs.min(8), &|p, info| {
        let file = closure::open_counted(p, info, progress)?;
        let mut w = writers.lock().unwrap().pop().unwrap_or_else(|| fs.writer());
        let check = pins.map_or(Check::Full, |pins| pins.check(&info.store_path));
        let entry = read_compressed(file, Path::new(&info.url), info, check, |nar| {
            put_nar(
                &fs,
                &mut w,
                nar,
                &info.store_path,
                staging_ino,
                target.device,
            )
        });
        writers.lock().unwrap().push(w);
        let (entry, _) = entry.map_err(|e| e.to_string())?;
        paths.lock().unwrap().push(entry);
        Ok(())
    })?;
    for w in writers.into_inner().unwrap() {
        w.finish().map_err(on)?;
    }

    // The paths wait in STAGING beside an empty store directory (sticky and group-writable,
    // as on NixOS) until `move_into_store`; then the directories above them.
    let mut entries = paths.into_inner().unwrap();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let n = dir_inos.len();
    let parent_of_store = if n >= 2 {
        dir_inos[n - 2]
    } else {
        ext4::ROOT_INO
    };
    let mut w = fs.writer();
    fs.dir(&mut w, staging_ino, parent_of_store, 0o700, now, &entries)
        .map_err(on)?;
    fs.dir(&mut w, dir_inos[n - 1], parent_of_store, 0o1775, now, &[])
        .map_err(on)?;
    let dir_entry = |name: &str, ino| Entry {
        name: name.as_bytes().to_vec(),
        ino,
        file_type: FT_DIR,
    };
    let mut below = vec![
        dir_entry(target.store_dir[n - 1], dir_inos[n - 1]),
        dir_entry(STAGING, staging_ino),
    ];
    for i in (0..n - 1).rev() {
        let parent = if i == 0 {
            ext4::ROOT_INO
        } else {
            dir_inos[i - 1]
        };
        fs.dir(&mut w, dir_inos[i], parent, 0o755, now, &below)
            .map_err(on)?;
        below = vec![dir_entry(target.store_dir[i], dir_inos[i])];
    }
    w.finish().map_err(on)?;
    fs.finish(below).map_err(on)
}

/// Where [`write`] leaves the store paths: beside the store directory, in `/nix`.
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
                        let mut contents = Reading {
                            inner: parser.contents(),
                            failed: false,
                        };
                        let res = fs.file(w, ino, perm, 1, size, &mut contents);
                        let read_failed = contents.failed;
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

/// A file's contents as the NAR gives them, remembering whether reading failed, so that a
/// truncated or unreadable archive is not reported as the disk's fault.
struct Reading<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Reading<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
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
