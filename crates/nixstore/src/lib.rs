//! The Nix store core shared by `mkinstaller` and `autoinstall-terminal`.
//!
//! Pure formats (nixbase32, hashes, store paths, NAR, narinfo, signing keys) sit beside the
//! few modules that touch a real store: [`closure`] asks the local Nix about a closure,
//! [`import`] unpacks NARs into a store directory and [`register`] makes them valid there.

pub mod base32;
pub mod binary_cache;
pub mod closure;
pub mod hash;
pub mod import;
pub mod keys;
pub mod nar;
pub mod narinfo;
pub mod register;
pub mod store_path;

pub use hash::Sha256Hash;
pub use store_path::StorePath;
