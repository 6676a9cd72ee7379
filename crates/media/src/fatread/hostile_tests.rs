//! Damaged and hostile volumes: each must give an error naming the device, quickly. A reader
//! that followed a looping chain without a bound would hang these tests.

use std::io::Read;
use std::os::unix::fs::FileExt;

use super::tests::{pattern, write_image};
use super::*;
use crate::fat32::{Source, Tree};

const END: u32 = 0x0FFF_FFFF;

/// A volume written by our writer, held in memory to be damaged.
struct Img {
    bytes: Vec<u8>,
    layout: Layout,
}

impl Img {
    fn new(tree: &Tree) -> Img {
        let (f, len) = write_image(tree, None, 0);
        let mut bytes = vec![0u8; len as usize];
        f.read_exact_at(&mut bytes, 0).unwrap();
        let layout = Layout::parse(&bytes[..512], len).unwrap();
        Img { bytes, layout }
    }

    fn vol(&self) -> FatVolume<&[u8]> {
        let len = self.bytes.len() as u64;
        FatVolume::with_source(&self.bytes[..], 0, len, "hostile.img".into()).unwrap()
    }

    fn node(&self, path: &str) -> Node {
        self.vol().resolve(path).unwrap()
    }

    /// The clusters of a directory or file, in chain order.
    fn clusters(&self, path: &str) -> Vec<u32> {
        let vol = self.vol();
        let n = vol.resolve(path).unwrap();
        let runs = if n.is_dir {
            vol.dir_chain(n.cluster, &String::new).unwrap()
        } else {
            vol.file_chain(n, path).unwrap()
        };
        runs.iter()
            .flat_map(|r| r.first..r.first + r.count)
            .collect()
    }

    /// Sets a FAT entry in both FATs, as a consistent writer would.
    fn set_fat(&mut self, cluster: u32, value: u32) {
        for fat in 0..2 {
            let at = (self.layout.fat_offset + fat * self.layout.fat_bytes) as usize
                + cluster as usize * 4;
            self.bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
    }

    /// The byte offset of `path`'s short entry in its parent directory.
    fn entry(&self, path: &str) -> usize {
        let (parent, _) = path.rsplit_once('/').unwrap_or(("", path));
        let node = self.node(path);
        let cb = self.layout.cluster_bytes as usize;
        for c in self.clusters(parent) {
            let at = self.layout.cluster_offset(c) as usize;
            for e in self.bytes[at..at + cb].chunks_exact(32).enumerate() {
                let (i, e) = e;
                let cluster = (u16::from_le_bytes([e[20], e[21]]) as u32) << 16
                    | u16::from_le_bytes([e[26], e[27]]) as u32;
                let size = u32::from_le_bytes([e[28], e[29], e[30], e[31]]);
                let usable = e[11] != 0x0F && e[11] & 0x08 == 0 && e[0] != 0 && e[0] != b'.';
                if usable && cluster == node.cluster && size == node.size {
                    return at + i * 32;
                }
            }
        }
        panic!("no entry for {path}");
    }

    fn set_entry_cluster(&mut self, path: &str, cluster: u32) {
        let at = self.entry(path);
        self.bytes[at + 20..at + 22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
        self.bytes[at + 26..at + 28].copy_from_slice(&(cluster as u16).to_le_bytes());
    }

    fn set_entry_size(&mut self, path: &str, size: u32) {
        let at = self.entry(path);
        self.bytes[at + 28..at + 32].copy_from_slice(&size.to_le_bytes());
    }
}

fn tree() -> Tree {
    let mut t = Tree::new();
    // Enough long names that the root takes several 512-byte clusters.
    for i in 0..40 {
        t.add_file(&format!("{i:032}.narinfo"), Source::Bytes(pattern(i, 300)));
    }
    t.add_file("file.bin", Source::Bytes(pattern(99, 10 * 512)));
    t.add_file("empty", Source::Bytes(Vec::new()));
    for i in 0..30 {
        t.add_file(
            &format!("sub/entry-with-a-long-name-{i}"),
            Source::Bytes(vec![1; 9]),
        );
    }
    t.add_file("sub/deeper/x", Source::Bytes(b"x".to_vec()));
    t.add_file("other/y", Source::Bytes(b"y".to_vec()));
    t.add_dir("autoinstall/reports");
    t
}

/// Asserts an `InvalidData` error naming the device and saying `what`.
#[track_caller]
fn bad<T>(r: io::Result<T>, what: &str) {
    let Err(e) = r else {
        panic!("expected an error saying {what:?}")
    };
    let msg = e.to_string();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{msg}");
    assert!(msg.starts_with("hostile.img: "), "{msg}");
    assert!(msg.contains(what), "{msg:?} should say {what:?}");
}

#[test]
fn the_undamaged_volume_reads() {
    let img = Img::new(&tree());
    let vol = img.vol();
    assert!(
        img.clusters("").len() > 3,
        "the root should span several clusters"
    );
    assert!(img.clusters("sub").len() > 2);
    assert_eq!(vol.list("sub").unwrap().len(), 31);
    vol.check_dir_chains("autoinstall/reports").unwrap();
    vol.check_dir_chains("sub/deeper").unwrap();
    let mut v = Vec::new();
    vol.open_file("file.bin")
        .unwrap()
        .read_to_end(&mut v)
        .unwrap();
    assert_eq!(v, pattern(99, 10 * 512));
}

#[test]
fn a_looping_root_directory() {
    let mut img = Img::new(&tree());
    let root = img.clusters("");
    img.set_fat(*root.last().unwrap(), root[1]);
    let vol = img.vol();
    bad(
        vol.list(""),
        "the cluster chain of the root directory loops",
    );
    bad(vol.open_file("file.bin"), "root directory loops");
    bad(vol.check_dir_chains(""), "root directory loops");
    bad(vol.check_dir_chains("sub"), "root directory loops");
    // A cluster pointing at itself.
    img.set_fat(root[0], root[0]);
    bad(img.vol().list(""), "loops from cluster 2 back to cluster 2");
}

#[test]
fn a_looping_subdirectory() {
    let mut img = Img::new(&tree());
    let sub = img.clusters("sub");
    img.set_fat(*sub.last().unwrap(), sub[0]);
    let vol = img.vol();
    bad(vol.list("sub"), "the directory sub loops");
    bad(vol.open_file("sub/deeper/x"), "the directory sub loops");
    bad(vol.check_dir_chains(""), "the directory sub loops");
    // Entries elsewhere are unaffected.
    vol.open_file("other/y").unwrap();
    vol.check_dir_chains("other").unwrap_err();
}

#[test]
fn a_looping_file() {
    let mut img = Img::new(&tree());
    let c = img.clusters("file.bin");
    img.set_fat(c[5], c[2]);
    bad(img.vol().open_file("file.bin"), "the file file.bin loops");
    bad(img.vol().check_dir_chains(""), "the file file.bin loops");
    // A loop past the file's last byte is caught too: the chain must end where the size does.
    let mut img = Img::new(&tree());
    img.set_fat(c[9], c[0]);
    bad(img.vol().open_file("file.bin"), "loops from cluster");
    let mut img = Img::new(&tree());
    img.set_fat(c[9], c[9] + 1);
    bad(
        img.vol().open_file("file.bin"),
        "more than the 10 clusters its size needs",
    );
    // A file claiming 4 GiB: the walk is bounded by the volume, not by the size.
    let mut img = Img::new(&tree());
    img.set_entry_size("file.bin", u32::MAX);
    bad(img.vol().open_file("file.bin"), "more than the volume's");
}

#[test]
fn chains_that_leave_the_volume_or_hit_free_or_bad_clusters() {
    let c = Img::new(&tree()).clusters("file.bin");
    let max = Img::new(&tree()).layout.max_cluster();
    for (value, says) in [
        (max + 1, "outside the volume's clusters"),
        (0x0FFF_FFF0, "outside the volume's clusters"),
        (1, "to cluster 1, outside"),
        (0, "reaches a free cluster after cluster"),
        (0x0FFF_FFF7, "reaches a bad-cluster mark"),
    ] {
        let mut img = Img::new(&tree());
        img.set_fat(c[3], value);
        bad(img.vol().open_file("file.bin"), says);
    }
    // The top four bits of an entry are reserved: a chain end with them set is still an end.
    let mut img = Img::new(&tree());
    img.set_fat(c[9], 0xF000_0000 | END);
    img.vol().open_file("file.bin").unwrap();
}

#[test]
fn chains_shorter_than_the_size() {
    let mut img = Img::new(&tree());
    let c = img.clusters("file.bin");
    img.set_fat(c[2], END);
    bad(
        img.vol().open_file("file.bin"),
        "ends after 3 clusters, but its size needs 10",
    );
    let mut img = Img::new(&tree());
    img.set_entry_size("file.bin", 10 * 512 + 1);
    bad(
        img.vol().open_file("file.bin"),
        "ends after 10 clusters, but its size needs 11",
    );
    bad(img.vol().check_dir_chains(""), "file.bin ends after 10");
}

#[test]
fn entries_pointing_nowhere() {
    let mut img = Img::new(&tree());
    img.set_entry_cluster("file.bin", 0x0FFF_FFF0);
    bad(
        img.vol().open_file("file.bin"),
        "starts at cluster 268435440, outside",
    );
    let mut img = Img::new(&tree());
    img.set_entry_cluster("file.bin", 0);
    bad(
        img.vol().open_file("file.bin"),
        "has 5120 bytes but no clusters",
    );
    let mut img = Img::new(&tree());
    img.set_entry_cluster("sub", 0);
    bad(
        img.vol().list("sub"),
        "the directory sub starts at cluster 0",
    );
    bad(
        img.vol().check_dir_chains(""),
        "the directory sub starts at cluster 0",
    );
    // An empty file with clusters.
    let mut img = Img::new(&tree());
    let spare = img.layout.max_cluster();
    img.set_entry_cluster("empty", spare);
    img.set_fat(spare, END);
    bad(img.vol().open_file("empty"), "its size needs no clusters");
}

#[test]
fn truncated_and_cross_linked_directories() {
    // A directory whose chain reaches a free cluster.
    let mut img = Img::new(&tree());
    let sub = img.clusters("sub");
    img.set_fat(sub[1], 0);
    bad(
        img.vol().list("sub"),
        "the directory sub reaches a free cluster",
    );
    // One directory's chain running on into another's: each chain is fine alone, so listing
    // works (up to the end mark in sub's own clusters), but the check finds the shared
    // clusters.
    let mut img = Img::new(&tree());
    let other = img.clusters("other");
    img.set_fat(*sub.last().unwrap(), other[0]);
    let vol = img.vol();
    assert_eq!(vol.list("sub").unwrap().len(), 31);
    bad(vol.check_dir_chains(""), "share cluster");
    bad(
        vol.check_dir_chains("sub/deeper"),
        "other and the directory sub share cluster",
    );
    // A one-cluster file cross-linked into a directory's last cluster.
    let mut img = Img::new(&tree());
    img.set_entry_cluster(&format!("{:032}.narinfo", 0), *sub.last().unwrap());
    bad(img.vol().check_dir_chains(""), "share cluster");
    // A directory that contains itself: paths through it are finite, the check refuses it.
    let mut img = Img::new(&tree());
    let deeper = img.node("sub/deeper").cluster;
    img.set_entry_cluster("sub/deeper/x", deeper);
    let at = img.entry("sub/deeper/x");
    img.bytes[at + 11] = 0x10;
    img.bytes[at + 28..at + 32].fill(0);
    let vol = img.vol();
    assert_eq!(vol.list("sub/deeper/x/x/x/x").unwrap(), ["x"]);
    bad(vol.check_dir_chains("sub/deeper"), "share cluster");
}

#[test]
fn a_damaged_boot_sector() {
    let img = Img::new(&tree());
    let open = |edit: &dyn Fn(&mut Vec<u8>), len: u64| {
        let mut bytes = img.bytes.clone();
        edit(&mut bytes);
        FatVolume::with_source(bytes, 0, len, "hostile.img".into()).map(|_| ())
    };
    let len = img.bytes.len() as u64;
    bad(open(&|b| b[13] = 0, len), "0 sectors per cluster");
    bad(open(&|b| b[17] = 0x02, len), "not FAT32");
    bad(open(&|_| {}, len - 4096), "the data region ends at byte");
    bad(open(&|_| {}, 100 << 10), "FAT 1 ends at byte");
    bad(
        open(&|b| b[36..40].copy_from_slice(&u32::MAX.to_le_bytes()), len),
        "FAT 1 ends",
    );
    bad(
        open(&|b| b[44..48].copy_from_slice(&u32::MAX.to_le_bytes()), len),
        "root directory at",
    );
    bad(
        open(&|b| b.truncate(100), 100),
        "too few for a FAT32 boot sector",
    );
}

#[test]
fn a_device_shorter_than_its_partition() {
    let img = Img::new(&tree());
    let half = &img.bytes[..img.layout.cluster_offset(img.node("file.bin").cluster + 3) as usize];
    let vol = FatVolume::with_source(half, 0, img.bytes.len() as u64, "short.img".into()).unwrap();
    vol.list("").unwrap();
    let mut v = Vec::new();
    let err = vol
        .open_file("file.bin")
        .unwrap()
        .read_to_end(&mut v)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(
        err.to_string()
            .contains("short.img: the device ends at byte"),
        "{err}"
    );
}

#[test]
fn garbage_directories_never_fail_the_parse() {
    // A directory entry pointing at file data: the file's bytes read as entries. Whatever
    // they hold, listing returns and every name found is a plain component.
    let mut img = Img::new(&tree());
    let c = img.node("file.bin").cluster;
    img.set_entry_cluster("sub", c);
    let vol = img.vol();
    for name in vol.list("sub").unwrap() {
        assert!(!name.is_empty() && !name.contains(['/', '\0']) && name != "." && name != "..");
        let _ = vol.open_file(&format!("sub/{name}"));
    }
}
