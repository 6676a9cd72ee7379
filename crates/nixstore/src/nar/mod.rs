//! The Nix ARchive format: a canonical, deterministic serialisation of a file system tree.
//!
//! Every token is a string: a little-endian u64 length, the bytes, then zero padding to a
//! multiple of eight. A node is `( type regular [executable ""] contents <data> )`,
//! `( type symlink target <t> )` or `( type directory (entry ( name <n> node <node> ))* )`,
//! with the whole archive prefixed by `nix-archive-1`.

mod encode;
mod error;
mod parse;
mod unpack;

pub use encode::{dump, encode};
pub use error::{NarError, NarErrorKind};
pub use parse::{Event, Node, Parser, MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN};
pub use unpack::{check, unpack, UnpackStats};

pub(crate) const MAGIC: &[u8] = b"nix-archive-1";

/// Length of the zero padding after a string of `len` bytes.
pub(crate) const fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}
