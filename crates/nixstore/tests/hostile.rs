//! Hostile NARs: each must be refused with the right reason, and nothing may appear outside
//! the directory we unpack into.

mod common;

use std::fs;
use std::path::Path;

use common::NarBuilder;
use nixstore::nar::{self, NarErrorKind as K};

/// Unpacks `nar` as `sandbox/target/out` and returns the error. Checks that nothing but
/// `target` exists in `sandbox` afterwards, and that `decoy` (a sibling holding one file, and
/// the destination of the symlinks the tests plant) is unchanged.
fn refuse(nar: &[u8]) -> K {
    let tmp = tempfile::tempdir().unwrap();
    let sandbox = tmp.path();
    fs::create_dir(sandbox.join("target")).unwrap();
    fs::create_dir(sandbox.join("decoy")).unwrap();
    fs::write(sandbox.join("decoy/keep"), "untouched").unwrap();
    let result = nar::unpack(nar, &sandbox.join("target"), "out".as_ref());
    let err = match result {
        Ok(_) => panic!("a hostile NAR was accepted"),
        Err(e) => e,
    };
    assert!(!err.to_string().is_empty());
    let mut top: Vec<_> = fs::read_dir(sandbox)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["decoy", "target"],
        "something was created beside the target"
    );
    let decoy: Vec<_> = fs::read_dir(sandbox.join("decoy"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        decoy,
        ["keep"],
        "something was written through to the decoy"
    );
    assert_eq!(
        fs::read_to_string(sandbox.join("decoy/keep")).unwrap(),
        "untouched"
    );
    assert_no_escape(&sandbox.join("target"));
    err.kind
}

/// Everything under `dir` is a plain file, a directory or a symlink: nothing else was made.
fn assert_no_escape(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        assert!(ft.is_file() || ft.is_dir() || ft.is_symlink());
        if ft.is_dir() {
            assert_no_escape(&e.path());
        }
    }
}

fn in_dir(f: impl FnOnce(&mut NarBuilder)) -> Vec<u8> {
    let mut b = NarBuilder::new();
    b.dir_start();
    f(&mut b);
    b.end();
    b.bytes()
}

#[test]
fn empty_name() {
    assert!(matches!(
        refuse(&in_dir(|b| {
            b.entry_file(b"", b"x");
        })),
        K::EmptyName
    ));
}

#[test]
fn dot_and_dot_dot() {
    assert!(matches!(
        refuse(&in_dir(|b| {
            b.entry_file(b".", b"x");
        })),
        K::DotName(_)
    ));
    let k = refuse(&in_dir(|b| {
        b.entry_file(b"..", b"escaped");
    }));
    assert!(matches!(k, K::DotName(ref n) if n == ".."), "{k}");
}

#[test]
fn slash_in_name() {
    let k = refuse(&in_dir(|b| {
        b.entry_file(b"../../decoy/evil", b"x");
    }));
    assert!(matches!(k, K::SlashInName(_)), "{k}");
    let k = refuse(&in_dir(|b| {
        b.entry_file(b"/abs", b"x");
    }));
    assert!(matches!(k, K::SlashInName(_)), "{k}");
}

#[test]
fn nul_in_name() {
    let k = refuse(&in_dir(|b| {
        b.entry_file(b"a\0b", b"x");
    }));
    assert!(matches!(k, K::NulInName(_)), "{k}");
}

#[test]
fn misordered_entries() {
    let k = refuse(&in_dir(|b| {
        b.entry_file(b"b", b"x").entry_file(b"a", b"y");
    }));
    assert!(matches!(k, K::Misordered { .. }), "{k}");
}

#[test]
fn duplicate_entries() {
    let k = refuse(&in_dir(|b| {
        b.entry_file(b"a", b"x").entry_file(b"a", b"y");
    }));
    assert!(matches!(k, K::Duplicate(_)), "{k}");
}

#[test]
fn symlink_then_directory_of_the_same_name() {
    // The classic escape: plant a symlink to the outside, then write "through" it.
    let k = refuse(&in_dir(|b| {
        let outside = b"../../decoy";
        b.entry_symlink(b"link", outside);
        b.entry_start(b"link")
            .dir_start()
            .entry_file(b"evil", b"pwned")
            .end()
            .s(b")");
    }));
    assert!(matches!(k, K::Duplicate(_)), "{k}");
}

#[test]
fn existing_symlink_at_the_target_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("decoy")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("decoy"), tmp.path().join("out")).unwrap();
    let nar = in_dir(|b| {
        b.entry_file(b"evil", b"pwned");
    });
    let err = nar::unpack(nar.as_slice(), tmp.path(), "out".as_ref()).unwrap_err();
    assert!(matches!(err.kind, K::Io(_)), "{err}");
    assert_eq!(fs::read_dir(tmp.path().join("decoy")).unwrap().count(), 0);
}

#[test]
fn trailing_garbage() {
    let mut nar = NarBuilder::new();
    nar.file(b"hello");
    let mut bytes = nar.bytes();
    bytes.extend_from_slice(b"more");
    assert!(matches!(refuse(&bytes), K::TrailingGarbage));
}

#[test]
fn truncation_anywhere() {
    let full = in_dir(|b| {
        b.entry_file(b"a", b"some contents that span more than eight bytes");
        b.entry_symlink(b"b", b"a");
    });
    // Every strict prefix must be refused as truncated, never accepted.
    for cut in (0..full.len()).step_by(3) {
        let k = refuse(&full[..cut]);
        assert!(matches!(k, K::Truncated | K::BadMagic), "cut at {cut}: {k}");
    }
}

#[test]
fn not_a_nar_and_unknown_types() {
    assert!(matches!(
        refuse(b"hello world, this is not a NAR at all"),
        K::BadMagic
    ));
    let mut b = NarBuilder::new();
    b.all(&[b"(", b"type", b"fifo", b")"]);
    assert!(matches!(refuse(&b.bytes()), K::UnknownType(_)));
}

#[test]
fn nonzero_padding() {
    let mut b = NarBuilder::new();
    b.file(b"abc");
    let mut bytes = b.bytes();
    // The padding after the 3 content bytes.
    let pos = bytes.windows(3).position(|w| w == b"abc").unwrap() + 3;
    bytes[pos] = 1;
    assert!(matches!(refuse(&bytes), K::BadPadding));
}

#[test]
fn oversized_strings_and_bad_targets() {
    let long = vec![b'x'; 256];
    assert!(matches!(
        refuse(&in_dir(|b| {
            b.entry_file(&long, b"x");
        })),
        K::TooLong { .. }
    ));
    let mut b = NarBuilder::new();
    b.symlink(b"");
    assert!(matches!(refuse(&b.bytes()), K::BadTarget(_)));
    let mut b = NarBuilder::new();
    b.symlink(b"a\0b");
    assert!(matches!(refuse(&b.bytes()), K::BadTarget(_)));
}

#[test]
fn absurd_nesting() {
    let mut b = NarBuilder::new();
    for _ in 0..=nar::MAX_DEPTH {
        b.dir_start().entry_start(b"d");
    }
    assert!(matches!(refuse(&b.bytes()), K::TooDeep(_)));
}

#[test]
fn errors_name_the_entry() {
    let nar = in_dir(|b| {
        b.entry_start(b"sub")
            .dir_start()
            .entry_file(b"z", b"x")
            .entry_file(b"y", b"x")
            .end()
            .s(b")");
    });
    let tmp = tempfile::tempdir().unwrap();
    let err = nar::unpack(nar.as_slice(), tmp.path(), "out".as_ref()).unwrap_err();
    assert_eq!(err.path, "sub");
    assert!(
        err.to_string()
            .starts_with("NAR entry sub: entry \"y\" comes after \"z\""),
        "{err}"
    );
}
