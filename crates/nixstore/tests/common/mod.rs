//! Helpers shared by the integration tests: the real Nix as an oracle, and the test closure
//! built with it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;

use nixstore::StorePath;

#[allow(unused_imports)]
pub use testkit::{nix_cmd, nix_ok};

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

/// Builds NARs token by token, for archives no honest encoder would write.
#[derive(Default)]
pub struct NarBuilder(pub Vec<u8>);

impl NarBuilder {
    pub fn new() -> Self {
        let mut b = NarBuilder(Vec::new());
        b.s(b"nix-archive-1");
        b
    }
    pub fn s(&mut self, t: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&(t.len() as u64).to_le_bytes());
        self.0.extend_from_slice(t);
        let pad = (8 - t.len() % 8) % 8;
        self.0.resize(self.0.len() + pad, 0);
        self
    }
    pub fn all(&mut self, ts: &[&[u8]]) -> &mut Self {
        for t in ts {
            self.s(t);
        }
        self
    }
    pub fn dir_start(&mut self) -> &mut Self {
        self.all(&[b"(", b"type", b"directory"])
    }
    pub fn entry_start(&mut self, name: &[u8]) -> &mut Self {
        self.all(&[b"entry", b"(", b"name", name, b"node"])
    }
    pub fn file(&mut self, contents: &[u8]) -> &mut Self {
        self.all(&[b"(", b"type", b"regular", b"contents", contents, b")"])
    }
    pub fn symlink(&mut self, target: &[u8]) -> &mut Self {
        self.all(&[b"(", b"type", b"symlink", b"target", target, b")"])
    }
    pub fn entry_file(&mut self, name: &[u8], contents: &[u8]) -> &mut Self {
        self.entry_start(name).file(contents).s(b")")
    }
    pub fn entry_symlink(&mut self, name: &[u8], target: &[u8]) -> &mut Self {
        self.entry_start(name).symlink(target).s(b")")
    }
    pub fn end(&mut self) -> &mut Self {
        self.s(b")")
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}
