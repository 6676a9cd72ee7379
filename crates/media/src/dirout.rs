//! Writing a tree to a directory: the `--format cache` output, a payload any static HTTP
//! server or object store can serve. Files from the host (the NAR cache) are copied, never
//! hard-linked: a site's files are written by whoever publishes it (rsync, uploads, the web
//! root's other users), and a shared inode would carry their writes back into the cache and
//! into every later stick. `fs::copy` uses copy_file_range, which reflinks where the file
//! system can (btrfs, xfs) and copies in the kernel elsewhere.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::fat32::{Source, Tree};

/// Writes `tree` under `dir` (which must exist and be empty). Returns the bytes of file
/// contents written or linked.
pub fn write_tree(tree: &Tree, dir: &Path, progress: &mut dyn FnMut(u64)) -> io::Result<u64> {
    let mut total = 0;
    for (path, node) in tree.plain_walk()? {
        let at = dir.join(&path);
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", at.display()));
        match node {
            None => fs::create_dir_all(&at).map_err(ctx)?,
            Some(source) => {
                fs::create_dir_all(at.parent().expect("a file has a parent")).map_err(ctx)?;
                match source {
                    Source::Bytes(b) => fs::write(&at, b).map_err(ctx)?,
                    Source::File { path: from, .. } => {
                        fs::copy(from, &at).map_err(ctx)?;
                        // The cache's files are read-only; the site's are the publisher's.
                        fs::set_permissions(&at, fs::Permissions::from_mode(0o644)).map_err(ctx)?;
                    }
                }
                total += source.size();
                progress(source.size());
            }
        }
    }
    Ok(total)
}
