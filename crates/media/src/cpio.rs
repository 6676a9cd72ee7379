//! The cpio "newc" archive the Linux kernel unpacks from an initrd: used to carry a small
//! fleet's payload inside a netboot initrd. Directories come before what they hold (the
//! kernel creates files with O_CREAT and no parents); every header and file is padded to four
//! bytes; file sizes are 32-bit in this format, so a file of 4 GiB or more cannot go in.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};

use crate::fat32::{Source, Tree};

/// Writes `tree` under `prefix` (e.g. `autoinstall-payload`) as one newc archive, with the
/// trailer. `mtime` is every entry's time (reproducible archives). Returns the bytes written.
pub fn write_tree(
    out: &mut dyn Write,
    tree: &Tree,
    prefix: &str,
    mtime: u32,
    progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let entries = tree.plain_walk()?;
    // Every directory on the way to every entry, parents first (name order does that: a
    // parent is a prefix of its children).
    let mut dirs = BTreeSet::new();
    dirs.insert(prefix.to_string());
    for (path, source) in &entries {
        let full = format!("{prefix}/{path}");
        let mut at = full.as_str();
        if source.is_none() {
            dirs.insert(full.clone());
        }
        while let Some((parent, _)) = at.rsplit_once('/') {
            dirs.insert(parent.to_string());
            at = parent;
        }
    }
    let mut w = Archive {
        out,
        written: 0,
        ino: 0,
        mtime,
    };
    for d in &dirs {
        w.entry(d, 0o040755, 0)?;
    }
    for (path, source) in entries {
        let Some(source) = source else { continue };
        let name = format!("{prefix}/{path}");
        let size = source.size();
        if size >= 1 << 32 {
            return Err(io::Error::other(format!(
                "{path} is {size} bytes: a cpio archive holds files under 4 GiB; serve this fleet online (--online) instead of embedding it"
            )));
        }
        w.entry(&name, 0o100444, size as u32)?;
        match source {
            Source::Bytes(b) => w.out.write_all(b)?,
            Source::File { path: from, .. } => {
                let copied = io::copy(&mut File::open(from)?, &mut w.out)?;
                if copied != size {
                    return Err(io::Error::other(format!(
                        "{} changed size while it was copied ({size} → {copied} bytes)",
                        from.display()
                    )));
                }
            }
        }
        w.written += size;
        w.pad()?;
        progress(size);
    }
    w.entry("TRAILER!!!", 0, 0)?;
    Ok(w.written)
}

struct Archive<'a> {
    out: &'a mut dyn Write,
    written: u64,
    ino: u32,
    mtime: u32,
}

impl Archive<'_> {
    /// A header and its name; the caller writes `size` bytes of data and pads.
    fn entry(&mut self, name: &str, mode: u32, size: u32) -> io::Result<()> {
        self.ino += 1;
        let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            self.mtime,
            size,
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += header.len() as u64 + name.len() as u64 + 1;
        self.pad()
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - self.written % 4) % 4;
        self.out.write_all(&[0u8; 3][..n as usize])?;
        self.written += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GNU cpio (the reference reader, when installed) lists and extracts what we wrote.
    #[test]
    fn gnu_cpio_reads_it_back() {
        let mut tree = Tree::new();
        tree.add_file(
            "nix-cache-info",
            Source::Bytes(b"StoreDir: /nix/store\n".to_vec()),
        );
        tree.add_file("autoinstall/manifest.json", Source::Bytes(b"{}\n".to_vec()));
        tree.add_file("nar/x.nar.zst", Source::Bytes(vec![7u8; 1001]));
        let mut bytes = Vec::new();
        write_tree(&mut bytes, &tree, "autoinstall-payload", 1, &mut |_| {}).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let dir = tempfile::tempdir().unwrap();
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-i", "--quiet", "-d", "--no-absolute-filenames", "-D"])
            .arg(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("skipped the GNU cpio check: no cpio here");
            return;
        };
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success());
        let root = dir.path().join("autoinstall-payload");
        assert_eq!(
            std::fs::read(root.join("nar/x.nar.zst")).unwrap(),
            vec![7u8; 1001]
        );
        assert_eq!(
            std::fs::read_to_string(root.join("autoinstall/manifest.json")).unwrap(),
            "{}\n"
        );
    }
}
