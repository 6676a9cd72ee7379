//! Refreshes read back: what the new tree holds is what the volume holds, what stayed was not
//! written, what only the old tree had is free again, and fsck.fat finds nothing to say.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::process::Command;

use super::super::{geometry_for, write, Source, Tree, VolumeOptions};
use super::*;
use crate::fatread::FatVolume;

fn opts() -> VolumeOptions {
    VolumeOptions {
        label: "AIPAYLOAD".into(),
        volume_id: 7,
        hidden_sectors: 0,
        timestamp: 1_700_000_000,
    }
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    testkit::pseudo_random(len, seed)
}

fn tree(files: &BTreeMap<String, Vec<u8>>) -> Tree {
    let mut t = Tree::new();
    for (p, b) in files {
        t.add_file(p, Source::Bytes(b.clone()));
    }
    t.add_dir("autoinstall/reports");
    t
}

fn volume(f: &File, len: u64) -> FatVolume {
    FatVolume::open(f.try_clone().unwrap(), 0, len, "test volume".into()).unwrap()
}

/// Every file of `files` reads back as it is, and nothing else is there.
fn check(f: &File, len: u64, files: &BTreeMap<String, Vec<u8>>) {
    let vol = volume(f, len);
    let on_disk = vol.on_disk().unwrap();
    let found: Vec<&String> = on_disk
        .entries
        .iter()
        .filter_map(|(p, e)| e.as_ref().map(|_| p))
        .collect();
    assert_eq!(found, files.keys().collect::<Vec<_>>());
    for (p, want) in files {
        let mut got = Vec::new();
        vol.open_file(p).unwrap().read_to_end(&mut got).unwrap();
        assert!(got == *want, "{p} reads back other bytes");
    }
    // The FAT holds exactly the chains of what is there: nothing the old tree left behind.
    let used: u64 = on_disk.fat[2..].iter().filter(|&&e| e != 0).count() as u64;
    let g = on_disk.geometry;
    let need = super::super::clusters_needed(&tree(files).root, true, g.cluster_bytes());
    assert_eq!(used, need, "clusters in use");
    if let Ok(out) = Command::new("fsck.fat").arg("-n").arg(fd_path(f)).output() {
        assert!(
            out.status.success(),
            "fsck.fat -n: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn fd_path(f: &File) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/{}/fd/{}", std::process::id(), f.as_raw_fd())
}

fn refresh(f: &File, len: u64, files: &BTreeMap<String, Vec<u8>>) -> (u64, (usize, u64)) {
    refresh_scrubbing(f, len, files, &|_| false)
}

fn refresh_scrubbing(
    f: &File,
    len: u64,
    files: &BTreeMap<String, Vec<u8>>,
    scrub: &dyn Fn(&str) -> bool,
) -> (u64, (usize, u64)) {
    let on_disk = volume(f, len).on_disk().unwrap();
    let t = tree(files);
    let vol = volume(f, len);
    let plan = plan(
        &on_disk,
        &t,
        1_700_000_100,
        &mut |p, s| {
            let mut got = Vec::new();
            vol.open_file(p)?.read_to_end(&mut got)?;
            Ok(matches!(s, Source::Bytes(b) if *b == got))
        },
        scrub,
    )
    .unwrap();
    let written = plan.write(f, 0, &mut |_| {}).unwrap();
    (written, plan.new)
}

#[test]
fn a_refresh_writes_what_changed_and_reads_back_as_the_new_tree() {
    let mut files: BTreeMap<String, Vec<u8>> = (0..40)
        .map(|i| {
            (
                format!("nar/{i:02}.nar.zst"),
                bytes(i, 50_000 + i as usize * 999),
            )
        })
        .collect();
    files.insert("autoinstall/manifest.json".into(), b"{\"v\":1}".to_vec());
    files.insert("autoinstall/reports/S1.json".into(), b"{}".to_vec());
    let f = tempfile::tempfile().unwrap();
    let len = 64 << 20;
    f.set_len(len).unwrap();
    let g = geometry_for(&tree(&files), len).unwrap();
    write(&f, 0, &g, &tree(&files), &opts(), &mut |_| {}).unwrap();
    check(&f, len, &files);

    // Ten NARs go, five come, the manifest changes.
    for i in 0..10 {
        files.remove(&format!("nar/{i:02}.nar.zst"));
    }
    for i in 40..45 {
        files.insert(format!("nar/{i:02}.nar.zst"), bytes(i, 70_000));
    }
    files.insert("autoinstall/manifest.json".into(), b"{\"v\":2}".to_vec());
    let (written, new) = refresh(&f, len, &files);
    assert_eq!(new, (6, 5 * 70_000 + 7));
    // The new files (in whole clusters), the directories, a few FAT sectors and the boot
    // sectors: nothing kept was written again.
    assert!(written < new.1 + 64 * 4096, "{written} bytes written");
    check(&f, len, &files);
    let root = volume(&f, len).on_disk().unwrap().boot[44..48].to_vec();
    assert_ne!(root, 2u32.to_le_bytes(), "the root moved to fresh clusters");

    // The same tree again: nothing to do.
    let (written, new) = refresh(&f, len, &files);
    assert_eq!((written, new), (0, (0, 0)));
    check(&f, len, &files);
}

#[test]
fn a_file_larger_than_any_gap_is_split_over_them() {
    let mut files: BTreeMap<String, Vec<u8>> = (0..8)
        .map(|i| (format!("f{i}"), bytes(i, 6 << 20)))
        .collect();
    let f = tempfile::tempfile().unwrap();
    // Room for the eight files and about six more MiB: after every other file goes, the
    // free space is gaps of 6 MiB and the tail.
    let t = tree(&files);
    let len = crate::fat32::min_geometry(&t, 6 << 20)
        .bytes()
        .div_ceil(1 << 20)
        << 20;
    let g = geometry_for(&t, len).unwrap();
    f.set_len(len).unwrap();
    write(&f, 0, &g, &t, &opts(), &mut |_| {}).unwrap();
    // The old tree keeps its clusters until the new one is committed, so the gaps open on
    // one refresh and are filled on the next.
    for i in (0..8).step_by(2) {
        files.remove(&format!("f{i}"));
    }
    refresh(&f, len, &files);
    files.insert("big".into(), bytes(99, 20 << 20));
    refresh(&f, len, &files);
    check(&f, len, &files);
    let on_disk = volume(&f, len).on_disk().unwrap();
    let big = on_disk.entries["big"].as_ref().unwrap();
    assert!(big.runs.len() > 1, "big fits one gap: {:?}", big.runs);
}

#[test]
fn no_room_beside_the_old_files_is_said_and_nothing_is_written() {
    let mut files: BTreeMap<String, Vec<u8>> = [("a".to_string(), bytes(1, 40 << 20))]
        .into_iter()
        .collect();
    let t = tree(&files);
    let len = crate::fat32::min_geometry(&t, 2 << 20)
        .bytes()
        .div_ceil(1 << 20)
        << 20;
    let g = geometry_for(&t, len).unwrap();
    let f = tempfile::tempfile().unwrap();
    f.set_len(len).unwrap();
    write(&f, 0, &g, &t, &opts(), &mut |_| {}).unwrap();
    let before = std::fs::read(fd_path(&f)).unwrap();
    files.insert("a".into(), bytes(2, 40 << 20));
    let on_disk = volume(&f, len).on_disk().unwrap();
    let t2 = tree(&files);
    let err = plan(&on_disk, &t2, 0, &mut |_, _| Ok(false), &|_| false)
        .err()
        .expect("no room");
    assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    assert!(err.to_string().contains("do not fit"), "{err}");
    assert!(std::fs::read(fd_path(&f)).unwrap() == before);
}

/// An old file the caller says must not linger (a secret that travelled in the clear) is
/// overwritten once the refresh frees it; another freed file is only freed.
#[test]
fn freed_secrets_are_overwritten_and_other_freed_files_only_freed() {
    let secret = b"SECRET-KEY-MATERIAL-0123456789".repeat(200);
    let other = b"ORDINARY-OLD-NAR-BYTES-98765432".repeat(200);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("autoinstall/extra-files/h/key".into(), secret.clone());
    files.insert("nar/old.nar.zst".into(), other.clone());
    files.insert("autoinstall/manifest.json".into(), b"{\"v\":1}".to_vec());
    let f = tempfile::tempfile().unwrap();
    let len = 64 << 20;
    f.set_len(len).unwrap();
    let g = geometry_for(&tree(&files), len).unwrap();
    write(&f, 0, &g, &tree(&files), &opts(), &mut |_| {}).unwrap();
    files.remove("autoinstall/extra-files/h/key");
    files.remove("nar/old.nar.zst");
    files.insert("autoinstall/manifest.json".into(), b"{\"v\":2}".to_vec());
    refresh_scrubbing(&f, len, &files, &|p| {
        p.starts_with("autoinstall/extra-files/")
    });
    check(&f, len, &files);
    let mut image = Vec::new();
    (&f).read_to_end(&mut image).unwrap();
    let has = |needle: &[u8]| image.windows(needle.len()).any(|w| w == needle);
    assert!(
        !has(&secret[..60]),
        "the freed secret is still on the volume"
    );
    assert!(
        has(&other[..62]),
        "only what the caller named is overwritten"
    );
}
