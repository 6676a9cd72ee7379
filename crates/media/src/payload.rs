//! The payload tree: a standard Nix binary cache (`nix-cache-info`, `<hash>.narinfo`,
//! `nar/<filehash>.nar.zst`) with the autoinstall manifest, reports folder and extra files
//! beside it. Every store path appears once, however many hosts share it.

use std::path::PathBuf;

use manifest::document::{Manifest, MANIFEST_PATH, MANIFEST_SIG_PATH, REPORTS_DIR};
use nixstore::binary_cache;
use nixstore::closure::PathInfo;
use nixstore::keys::SecretKey;

use crate::fat32::{Source, Tree};
use crate::narcache::CachedNar;

/// A store path with its compressed NAR.
pub struct PayloadPath {
    pub info: PathInfo,
    pub nar: CachedNar,
}

/// A host file copied to the payload.
#[derive(Debug, Clone)]
pub struct PayloadFile {
    pub payload_path: String,
    pub source: PathBuf,
    pub size: u64,
}

/// The whole payload tree.
pub fn payload_tree(
    manifest: &Manifest,
    paths: &[PayloadPath],
    files: &[PayloadFile],
    key: Option<&SecretKey>,
) -> Tree {
    let mut tree = Tree::new();
    // Priority 30 ranks ahead of cache.nixos.org (40) when a mounted stick serves as a
    // substituter.
    tree.add_file(
        binary_cache::CACHE_INFO,
        Source::Bytes(binary_cache::cache_info(30).into_bytes()),
    );
    for p in paths {
        let info = binary_cache::narinfo(&p.info, p.nar.file_hash, p.nar.file_size, key);
        tree.add_file(
            &info.file_name(),
            Source::Bytes(info.to_text().into_bytes()),
        );
        tree.add_file(
            &info.url,
            Source::File {
                path: p.nar.file.clone(),
                size: p.nar.file_size,
            },
        );
    }
    for f in files {
        tree.add_file(
            &f.payload_path,
            Source::File {
                path: f.source.clone(),
                size: f.size,
            },
        );
    }
    // Nix creates these when it opens a file:// cache and fails on a read-only medium
    // (a write-protected stick, an ISO) if they are missing.
    for dir in ["nar", "realisations", "log", "debuginfo"] {
        tree.add_dir(dir);
    }
    let json = manifest.to_json();
    if let Some(key) = key {
        // Detached, over the exact bytes: the installer checks them before it trusts a word.
        tree.add_file(
            MANIFEST_SIG_PATH,
            Source::Bytes(format!("{}\n", key.sign(&json)).into_bytes()),
        );
    }
    tree.add_file(MANIFEST_PATH, Source::Bytes(json.into_bytes()));
    tree.add_dir(REPORTS_DIR);
    tree
}
