//! Helpers shared by the integration tests: the real Nix as an oracle, and the test closure
//! built with it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use nixstore::StorePath;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs a Nix command, with the options every daemonless offline call needs.
pub fn nix_cmd(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    if program == "nix" {
        cmd.args(["--extra-experimental-features", "nix-command"]);
    }
    cmd.args(args).args(["--option", "substituters", ""]);
    cmd.output().unwrap_or_else(|e| {
        panic!("running {program}: {e}; the tests need Debian's nix-bin (see .ci/run)")
    })
}

/// Like [`nix_cmd`], and fails the test with Nix's stderr unless it succeeded.
pub fn nix_ok(program: &str, args: &[&str]) -> String {
    let out = nix_cmd(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The test closure of tests/fixtures/nar-tree.nix, built once per test binary.
pub fn fixture() -> StorePath {
    static PATH: OnceLock<StorePath> = OnceLock::new();
    PATH.get_or_init(|| {
        let expr = repo_root().join("tests/fixtures/nar-tree.nix");
        let out = nix_ok(
            "nix-build",
            &[
                expr.to_str().unwrap(),
                "--no-out-link",
                "--arg",
                "busybox",
                "/usr/bin/busybox",
            ],
        );
        StorePath::parse(out.trim()).unwrap()
    })
    .clone()
}

/// `nix-store -qR`, sorted.
pub fn nix_requisites(store: Option<&Path>, path: &StorePath) -> Vec<String> {
    let mut args = vec!["-qR".to_string(), path.to_string()];
    if let Some(root) = store {
        args.extend(["--store".into(), root.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let mut paths: Vec<String> = nix_ok("nix-store", &args)
        .lines()
        .map(String::from)
        .collect();
    paths.sort();
    paths
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
