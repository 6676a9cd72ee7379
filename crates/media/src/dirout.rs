//! Writing a tree to a directory: the `--format cache` output, a payload any static HTTP
//! server or object store can serve. Files from the host (the NAR cache) are hard-linked when
//! they are on the same file system and copied otherwise (copy_file_range, by `fs::copy`).

use std::fs;
use std::io;
use std::path::Path;

use crate::fat32::{Source, Tree};

/// Writes `tree` under `dir` (which must exist and be empty). Returns the bytes of file
/// contents written or linked.
pub fn write_tree(tree: &Tree, dir: &Path, progress: &mut dyn FnMut(u64)) -> io::Result<u64> {
    let mut total = 0;
    for (path, node) in tree.walk() {
        let at = dir.join(&path);
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", at.display()));
        match node {
            None => fs::create_dir_all(&at).map_err(ctx)?,
            Some(source) => {
                fs::create_dir_all(at.parent().expect("a file has a parent")).map_err(ctx)?;
                match source {
                    Source::Bytes(b) => fs::write(&at, b).map_err(ctx)?,
                    Source::File { path: from, .. } => {
                        if fs::hard_link(from, &at).is_err() {
                            fs::copy(from, &at).map_err(ctx)?;
                        }
                    }
                }
                total += source.size();
                progress(source.size());
            }
        }
    }
    Ok(total)
}
