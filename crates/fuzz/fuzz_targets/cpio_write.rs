//! The cpio writer, given any tree of names and contents (the payload's paths come from the
//! fleet: host names and the file names of extra-files directories), must either refuse it
//! or write an archive the kernel unpacks to exactly that tree under the prefix: every name
//! a plain relative path, every file's bytes as given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::fat32::{Source, Tree};

/// Splits the input into (name, contents) pairs: a length byte, the name, a length byte, the
/// contents.
fn entries(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let n = (data[0] as usize % 40).min(data.len() - 1);
        let name = String::from_utf8_lossy(&data[1..1 + n]).into_owned();
        data = &data[1 + n..];
        let Some((&m, rest)) = data.split_first() else {
            break;
        };
        let m = (m as usize).min(rest.len());
        out.push((name, rest[..m].to_vec()));
        data = &rest[m..];
    }
    out
}

/// The newc archive's entries: name, mode and data.
fn read_newc(mut a: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
    let pad = |n: usize| (4 - n % 4) % 4;
    loop {
        assert_eq!(&a[..6], b"070701");
        let mode = hex(&a[14..22]);
        let size = hex(&a[54..62]) as usize;
        let namesize = hex(&a[94..102]) as usize;
        let name_end = 110 + namesize;
        assert_eq!(a[name_end - 1], 0, "names end in one NUL");
        let name = std::str::from_utf8(&a[110..name_end - 1])
            .unwrap()
            .to_string();
        assert!(
            !name.contains('\0'),
            "{name:?} holds a NUL: the kernel would cut it"
        );
        let data_at = name_end + pad(name_end);
        let data = a[data_at..data_at + size].to_vec();
        a = &a[data_at + size + pad(data_at + size)..];
        if name == "TRAILER!!!" {
            assert!(a.is_empty());
            return out;
        }
        out.push((name, mode, data));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut tree = Tree::new();
    let mut files = Vec::new();
    for (name, contents) in entries(data) {
        // The tree joins a path's non-empty components, as the kernel would.
        let name: String = name
            .split('/')
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        // A name that makes a file and a directory of the same path is not a tree.
        let clash = files.iter().any(|(f, _): &(String, Vec<u8>)| {
            f == &name || name.starts_with(&format!("{f}/")) || f.starts_with(&format!("{name}/"))
        });
        if clash || name.is_empty() {
            continue;
        }
        files.push((name.clone(), contents.clone()));
        tree.add_file(&name, Source::Bytes(contents));
    }
    let mut out = Vec::new();
    if media::cpio::write_tree(&mut out, &tree, "p", 1, &mut |_| {}).is_err() {
        return;
    }
    for (name, mode, bytes) in read_newc(&out) {
        assert!(
            name == "p" || name.starts_with("p/"),
            "{name:?} escapes the prefix"
        );
        for c in name.split('/') {
            assert!(
                !c.is_empty() && c != "." && c != "..",
                "{name:?} is not a plain path"
            );
        }
        if mode & 0o100000 != 0 {
            let rel = &name[2..];
            let given = files.iter().find(|(f, _)| f == rel);
            assert!(given.is_some_and(|(_, b)| *b == bytes), "{name:?} differs");
        }
    }
});
