//! Our FAT32 writer against the real tools: fsck.fat finds nothing to fix, Linux mounts the
//! volume and reads back every file, name and size.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;

use media::fat32::{self, Source, Tree, VolumeOptions};

fn sample_tree(dir: &Path) -> (Tree, Vec<(String, Vec<u8>)>) {
    let mut tree = Tree::new();
    let mut expected = Vec::new();
    let mut add = |tree: &mut Tree, path: &str, data: Vec<u8>, via_file: bool| {
        let source = if via_file {
            let host = dir.join(path.replace('/', "_"));
            fs::write(&host, &data).unwrap();
            Source::File {
                path: host,
                size: data.len() as u64,
            }
        } else {
            Source::Bytes(data.clone())
        };
        tree.add_file(path, source);
        expected.push((path.to_string(), data));
    };
    add(&mut tree, "EFI/BOOT/BOOTX64.EFI", vec![0x4d; 70_001], true);
    add(
        &mut tree,
        "loader/entries/autoinstall.conf",
        b"title x\n".to_vec(),
        false,
    );
    add(
        &mut tree,
        "nix-cache-info",
        b"StoreDir: /nix/store\n".to_vec(),
        false,
    );
    add(&mut tree, "empty", Vec::new(), false);
    add(&mut tree, "exactly-one-cluster", vec![7; 4096], true);
    add(
        &mut tree,
        "ünïcødé and spaces.txt",
        b"hello".to_vec(),
        false,
    );
    add(
        &mut tree,
        "a-name-that-is-much-longer-than-thirteen-characters.narinfo",
        b"x".to_vec(),
        false,
    );
    for i in 0..300 {
        add(
            &mut tree,
            &format!("many/{i:04}-{}.nar.zst", "z".repeat(i % 40)),
            vec![i as u8; i * 37],
            i % 2 == 0,
        );
    }
    tree.add_dir("autoinstall/reports");
    (tree, expected)
}

#[test]
fn fsck_and_linux_accept_our_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, expected) = sample_tree(tmp.path());
    let g = fat32::min_geometry(&tree, 1 << 20);
    let img = tmp.path().join("vol.img");
    let f = File::create(&img).unwrap();
    f.set_len(g.bytes()).unwrap();
    let opts = VolumeOptions {
        label: "AIPAYLOAD".into(),
        volume_id: 0x1234_5678,
        hidden_sectors: 0,
        timestamp: 1_700_000_000,
    };
    let mut copied = 0;
    fat32::write(&f, 0, &g, &tree, &opts, &mut |n| copied += n).unwrap();
    assert_eq!(copied, tree.content_bytes());
    drop(f);

    let fsck = Command::new("fsck.fat")
        .args(["-n", "-V"])
        .arg(&img)
        .output()
        .expect("fsck.fat (dosfstools)");
    let report =
        String::from_utf8_lossy(&fsck.stdout).to_string() + &String::from_utf8_lossy(&fsck.stderr);
    assert!(fsck.status.success(), "fsck.fat failed:\n{report}");
    for bad in ["differ", "Warning", "Free cluster summary", "bad", "Orphan"] {
        assert!(!report.contains(bad), "fsck.fat says {bad}:\n{report}");
    }

    let mount = testkit::FatMount::new(img.to_str().unwrap());
    for (path, data) in &expected {
        let got = fs::read(mount.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(got == *data, "{path}: contents differ");
    }
    assert!(mount.path().join("autoinstall/reports").is_dir());
    let blkid = testkit::run(
        "blkid",
        &["-o", "value", "-s", "LABEL", img.to_str().unwrap()],
    );
    assert_eq!(blkid.trim(), "AIPAYLOAD");
}

#[test]
fn fatfs_reads_our_volume_at_any_size() {
    let tmp = tempfile::tempdir().unwrap();
    let (tree, expected) = sample_tree(tmp.path());
    for size in [64u64 << 20, 600 << 20] {
        let g = fat32::geometry_for(&tree, size).unwrap();
        let img = tmp.path().join(format!("vol-{size}.img"));
        let f = File::create(&img).unwrap();
        f.set_len(size).unwrap();
        let opts = VolumeOptions {
            label: "T".into(),
            volume_id: 1,
            hidden_sectors: 0,
            timestamp: 0,
        };
        fat32::write(&f, 0, &g, &tree, &opts, &mut |_| {}).unwrap();
        let fs =
            fatfs::FileSystem::new(File::open(&img).unwrap(), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        for (path, data) in &expected {
            let mut file = fs
                .root_dir()
                .open_file(path)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut got).unwrap();
            assert!(got == *data, "{path}");
        }
    }
}
