//! Helpers shared by the integration tests: the real Nix as an oracle, and the test closure
//! built with it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;

use nixstore::StorePath;

#[allow(unused_imports)]
pub use testkit::{nix_cmd, nix_ok, NarBuilder};

/// The test closure of tests/fixtures/nar-tree.nix, built once per test binary.
pub fn fixture() -> StorePath {
    static PATH: OnceLock<StorePath> = OnceLock::new();
    PATH.get_or_init(|| {
        StorePath::parse(&testkit::build_fixture("nar-tree.nix", None, &[])).unwrap()
    })
    .clone()
}

/// `nix-store -qR`, sorted.
pub fn nix_requisites(store: Option<&Path>, path: &StorePath) -> Vec<String> {
    testkit::requisites(store, &path.to_string())
}
