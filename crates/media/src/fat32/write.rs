//! Writing a FAT32 volume in three passes: every directory's and file's clusters allocated
//! (the FAT made in memory), then the reserved area, both FATs and every directory written,
//! then the files' contents, in cluster order so the writes are sequential.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use super::names::{
    dos_datetime, generated_short_name, short_name_as_is, volume_label, EntryWriter,
};
use super::{
    dir_entry_count, Dir, Geometry, Node, Source, Tree, VolumeOptions, ATTR_DIRECTORY,
    ATTR_VOLUME_ID, DIR_ENTRY, END_OF_CHAIN, FATS, RESERVED_SECTORS, SECTOR,
};

/// Writes `tree` as a FAT32 volume of geometry `g` at byte `offset` of `out`.
/// `progress` is told the number of content bytes copied as files are written.
pub fn write(
    out: &File,
    offset: u64,
    g: &Geometry,
    tree: &Tree,
    opts: &VolumeOptions,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let a = allocate(g, tree)?;
    write_metadata(out, offset, g, opts, &a)?;
    write_files(out, offset, g, a.files, progress)
}

/// A directory and where it went.
struct PlannedDir<'t> {
    dir: &'t Dir,
    cluster: u32,
    parent: u32,
    is_root: bool,
}

/// Pass 1's result: the FAT, and the cluster of every directory and file.
struct Allocation<'t> {
    fat: Vec<u32>,
    /// The first cluster not allocated.
    next_cluster: u32,
    dirs: Vec<PlannedDir<'t>>,
    dir_clusters: BTreeMap<*const Dir, u32>,
    files: Vec<(u32, &'t Source)>,
    file_clusters: BTreeMap<*const Source, u32>,
}

/// Pass 1: clusters for every directory (breadth-first, root at cluster 2), then files.
fn allocate<'t>(g: &Geometry, tree: &'t Tree) -> io::Result<Allocation<'t>> {
    let cb = g.cluster_bytes();
    let mut fat = vec![0u32; g.clusters as usize + 2];
    fat[0] = 0x0FFF_FFF8;
    fat[1] = END_OF_CHAIN;
    let mut next_cluster: u32 = 2;
    let mut alloc = |fat: &mut Vec<u32>, bytes: u64| -> io::Result<u32> {
        let n = bytes.div_ceil(cb).max(1) as u32;
        let first = next_cluster;
        if (first + n) as u64 > g.clusters + 2 {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the FAT volume is too small for its files",
            ));
        }
        for c in first..first + n - 1 {
            fat[c as usize] = c + 1;
        }
        fat[(first + n - 1) as usize] = END_OF_CHAIN;
        next_cluster += n;
        Ok(first)
    };

    let mut dirs: Vec<PlannedDir> = Vec::new();
    let root_bytes = dir_entry_count(&tree.root, true) * DIR_ENTRY;
    let root_cluster = alloc(&mut fat, root_bytes)?;
    debug_assert_eq!(root_cluster, 2);
    dirs.push(PlannedDir {
        dir: &tree.root,
        cluster: 2,
        parent: 0,
        is_root: true,
    });
    let mut dir_clusters: BTreeMap<*const Dir, u32> = BTreeMap::new();
    dir_clusters.insert(&tree.root as *const Dir, 2);
    let mut i = 0;
    while i < dirs.len() {
        // A `..` that points at the root holds 0, not the root's cluster.
        let (dir, cluster) = (
            dirs[i].dir,
            if dirs[i].is_root { 0 } else { dirs[i].cluster },
        );
        for node in dir.entries.values() {
            if let Node::Dir(d) = node {
                let c = alloc(&mut fat, dir_entry_count(d, false) * DIR_ENTRY)?;
                dir_clusters.insert(d as *const Dir, c);
                dirs.push(PlannedDir {
                    dir: d,
                    cluster: c,
                    parent: cluster,
                    is_root: false,
                });
            }
        }
        i += 1;
    }
    let mut files: Vec<(u32, &Source)> = Vec::new();
    let mut file_clusters: BTreeMap<*const Source, u32> = BTreeMap::new();
    for pd in &dirs {
        for node in pd.dir.entries.values() {
            if let Node::File(s) = node {
                if s.size() > u32::MAX as u64 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "a file of {} bytes does not fit FAT32's 4 GiB limit",
                            s.size()
                        ),
                    ));
                }
                let c = if s.size() == 0 {
                    0
                } else {
                    alloc(&mut fat, s.size())?
                };
                file_clusters.insert(s as *const Source, c);
                files.push((c, s));
            }
        }
    }
    Ok(Allocation {
        fat,
        next_cluster,
        dirs,
        dir_clusters,
        files,
        file_clusters,
    })
}

/// Pass 2: the reserved area (boot sector and FSInfo, and their backups), both FATs, and
/// every directory's entries.
fn write_metadata(
    out: &File,
    offset: u64,
    g: &Geometry,
    opts: &VolumeOptions,
    a: &Allocation,
) -> io::Result<()> {
    let (fat, next_cluster) = (&a.fat, a.next_cluster);
    let used = next_cluster as u64 - 2;
    let cb = g.cluster_bytes();
    let mut boot = [0u8; 512];
    boot[..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    boot[3..11].copy_from_slice(b"MKINSTLR");
    boot[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    boot[13] = g.sectors_per_cluster as u8;
    boot[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    boot[16] = FATS as u8;
    boot[21] = 0xF8;
    boot[24..26].copy_from_slice(&63u16.to_le_bytes());
    boot[26..28].copy_from_slice(&255u16.to_le_bytes());
    boot[28..32].copy_from_slice(&opts.hidden_sectors.to_le_bytes());
    boot[32..36].copy_from_slice(&(g.total_sectors as u32).to_le_bytes());
    boot[36..40].copy_from_slice(&(g.fat_sectors as u32).to_le_bytes());
    boot[44..48].copy_from_slice(&2u32.to_le_bytes());
    boot[48..50].copy_from_slice(&1u16.to_le_bytes());
    boot[50..52].copy_from_slice(&6u16.to_le_bytes());
    boot[64] = 0x80;
    boot[66] = 0x29;
    boot[67..71].copy_from_slice(&opts.volume_id.to_le_bytes());
    let label = volume_label(&opts.label);
    boot[71..82].copy_from_slice(&label);
    boot[82..90].copy_from_slice(b"FAT32   ");
    boot[510] = 0x55;
    boot[511] = 0xAA;
    let mut fsinfo = [0u8; 512];
    fsinfo[..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    fsinfo[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    fsinfo[488..492].copy_from_slice(&((g.clusters - used) as u32).to_le_bytes());
    fsinfo[492..496].copy_from_slice(&next_cluster.to_le_bytes());
    fsinfo[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    let mut reserved = vec![0u8; (RESERVED_SECTORS * SECTOR) as usize];
    for base in [0, 6 * SECTOR as usize] {
        reserved[base..base + 512].copy_from_slice(&boot);
        reserved[base + 512..base + 1024].copy_from_slice(&fsinfo);
    }
    out.write_all_at(&reserved, offset)?;
    let fat_bytes: Vec<u8> = {
        let mut v: Vec<u8> = fat.iter().flat_map(|e| e.to_le_bytes()).collect();
        v.resize((g.fat_sectors * SECTOR) as usize, 0);
        v
    };
    for n in 0..FATS {
        out.write_all_at(
            &fat_bytes,
            offset + (RESERVED_SECTORS + n * g.fat_sectors) * SECTOR,
        )?;
    }

    let (date, time) = dos_datetime(opts.timestamp);
    for pd in &a.dirs {
        let mut buf = Vec::new();
        let mut w = EntryWriter {
            buf: &mut buf,
            date,
            time,
        };
        if pd.is_root {
            w.short(&label, ATTR_VOLUME_ID, 0, 0);
        } else {
            w.short(b".          ", ATTR_DIRECTORY, pd.cluster, 0);
            w.short(b"..         ", ATTR_DIRECTORY, pd.parent, 0);
        }
        for (index, (name, node)) in pd.dir.entries.iter().enumerate() {
            let short = match short_name_as_is(name) {
                Some(s) => s,
                None => {
                    let s = generated_short_name(name, index as u32);
                    w.long(name, &s);
                    s
                }
            };
            match node {
                Node::Dir(d) => w.short(
                    &short,
                    ATTR_DIRECTORY,
                    a.dir_clusters[&(d as *const Dir)],
                    0,
                ),
                Node::File(s) => w.short(
                    &short,
                    0,
                    a.file_clusters[&(s as *const Source)],
                    s.size() as u32,
                ),
            }
        }
        // Zero the rest of the directory's clusters: a zero entry ends the listing.
        let len = (dir_entry_count(pd.dir, pd.is_root) * DIR_ENTRY)
            .div_ceil(cb)
            .max(1)
            * cb;
        buf.resize(len as usize, 0);
        out.write_all_at(&buf, offset + g.cluster_offset(pd.cluster))?;
    }
    Ok(())
}

/// Pass 3: file contents, in cluster order so the writes are sequential.
fn write_files(
    out: &File,
    offset: u64,
    g: &Geometry,
    mut files: Vec<(u32, &Source)>,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    files.sort_by_key(|(c, _)| *c);
    for (cluster, source) in files {
        if source.size() == 0 {
            continue;
        }
        let at = offset + g.cluster_offset(cluster);
        match source {
            Source::Bytes(b) => {
                out.write_all_at(b, at)?;
                progress(b.len() as u64);
            }
            Source::File { path, size } => {
                let src = File::open(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
                })?;
                copy_range(&src, out, at, *size, progress).map_err(|e| {
                    io::Error::new(e.kind(), format!("copying {}: {e}", path.display()))
                })?;
            }
        }
    }
    Ok(())
}

/// Copies `len` bytes of `src` to `dst` at `at`: in the kernel when it can
/// (copy_file_range), by reads and writes when it cannot (a block device, another file system).
pub fn copy_range(
    src: &File,
    dst: &File,
    at: u64,
    len: u64,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = done as i64;
        let mut off_out = (at + done) as i64;
        let chunk = (len - done).min(64 << 20) as usize;
        match nix::fcntl::copy_file_range(
            src.as_fd(),
            Some(&mut off_in),
            dst.as_fd(),
            Some(&mut off_out),
            chunk,
        ) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the source is shorter than expected",
                ))
            }
            Ok(n) => {
                done += n as u64;
                progress(n as u64);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(
                nix::errno::Errno::EXDEV
                | nix::errno::Errno::EINVAL
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::EOPNOTSUPP,
            ) => {
                let mut buf = vec![0u8; 4 << 20];
                while done < len {
                    let n = ((len - done) as usize).min(buf.len());
                    src.read_exact_at(&mut buf[..n], done)?;
                    dst.write_all_at(&buf[..n], at + done)?;
                    done += n as u64;
                    progress(n as u64);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
