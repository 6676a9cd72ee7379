//! Why a NAR was refused, and where in the archive.

use std::io;

/// A NAR that could not be read or unpacked. `path` is the entry inside the archive
/// (empty for the root), so a message reads "NAR entry bin/ls: …".
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", if path.is_empty() { "NAR root".to_string() } else { format!("NAR entry {path}") })]
pub struct NarError {
    pub path: String,
    pub kind: NarErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum NarErrorKind {
    #[error("the archive ends early (truncated)")]
    Truncated,
    #[error("not a NAR: it does not start with nix-archive-1")]
    BadMagic,
    #[error("expected {expected:?}, found {found:?}")]
    Unexpected {
        expected: &'static str,
        found: String,
    },
    #[error("unknown node type {0:?}")]
    UnknownType(String),
    #[error("string padding is not zero")]
    BadPadding,
    #[error("a string of {len} bytes is longer than the {max} allowed here")]
    TooLong { len: u64, max: u64 },
    #[error("an entry has an empty name")]
    EmptyName,
    #[error("an entry is named {0:?}, which would leave its directory")]
    DotName(String),
    #[error("entry name {0:?} contains a slash")]
    SlashInName(String),
    #[error("entry name {0:?} contains a NUL byte")]
    NulInName(String),
    #[error("entry {name:?} comes after {previous:?}; NAR entries must be sorted")]
    Misordered { previous: String, name: String },
    #[error("entry {0:?} appears twice")]
    Duplicate(String),
    #[error("symlink target {0:?} is empty or contains a NUL byte")]
    BadTarget(String),
    #[error("directories nest deeper than {0} levels")]
    TooDeep(usize),
    #[error("data follows the end of the archive")]
    TrailingGarbage,
    #[error("{0}")]
    Io(#[source] io::Error),
}

impl NarError {
    pub(crate) fn new(path: String, kind: NarErrorKind) -> Self {
        NarError { path, kind }
    }
}
