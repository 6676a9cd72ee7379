//! Writing a FAT32 volume in three passes: every directory's and file's clusters allocated
//! (the FAT made in memory), then the reserved area, both FATs and every directory written,
//! then the files' contents, in cluster order so the writes are sequential.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use super::alloc::{link, FreeSpace, Run};
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
    let mut space = FreeSpace::whole(g.clusters);
    let a = allocate(g, tree, &mut space, &|_, _| None)?;
    let reserved = reserved_area(g, opts, a.root, space.free(), space.next());
    out.write_all_at(&reserved, offset)?;
    let fat = fat_image(&a.fat, g);
    for n in 0..FATS {
        out.write_all_at(&fat, offset + fat_offset(g, n))?;
    }
    write_dirs(
        out,
        offset,
        g,
        &a,
        &volume_label(&opts.label),
        opts.timestamp,
    )?;
    write_files(out, offset, g, &a.files, progress)
}

/// A directory and where it went.
pub(super) struct PlannedDir<'t> {
    dir: &'t Dir,
    path: String,
    runs: Vec<Run>,
    parent: u32,
    is_root: bool,
}

impl PlannedDir<'_> {
    fn cluster(&self) -> u32 {
        self.runs[0].first
    }
}

/// Pass 1's result: the FAT, and the clusters of every directory and of every file.
pub(super) struct Allocation<'t> {
    pub fat: Vec<u32>,
    /// The root directory's first cluster.
    pub root: u32,
    pub dirs: Vec<PlannedDir<'t>>,
    dir_clusters: BTreeMap<*const Dir, u32>,
    /// The files to write (not those kept where they are), with their clusters.
    pub files: Vec<(Vec<Run>, &'t Source)>,
    file_clusters: BTreeMap<*const Source, u32>,
}

impl Allocation<'_> {
    /// The clusters of every directory.
    pub fn dirs_clusters(&self) -> u64 {
        self.dirs
            .iter()
            .map(|d| d.runs.iter().map(|r| r.count as u64).sum::<u64>())
            .sum()
    }
}

fn full(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        format!("the FAT volume is too small for {what}"),
    )
}

/// Pass 1: clusters for every directory (breadth-first, root first), then for every file,
/// from `space`. A file for which `keep` gives clusters stays on them: its chain goes into
/// the FAT, and it is not written.
pub(super) fn allocate<'t>(
    g: &Geometry,
    tree: &'t Tree,
    space: &mut FreeSpace,
    keep: &dyn Fn(&str, &Source) -> Option<Vec<Run>>,
) -> io::Result<Allocation<'t>> {
    let cb = g.cluster_bytes();
    let mut fat = vec![0u32; g.clusters as usize + 2];
    fat[0] = 0x0FFF_FFF8;
    fat[1] = END_OF_CHAIN;
    let mut alloc = |fat: &mut Vec<u32>, bytes: u64, what: &str| -> io::Result<Vec<Run>> {
        let n = bytes.div_ceil(cb).max(1) as u32;
        let runs = space.take(n).ok_or_else(|| full(what))?;
        link(fat, &runs);
        Ok(runs)
    };

    let root_bytes = dir_entry_count(&tree.root, true) * DIR_ENTRY;
    let root_runs = alloc(&mut fat, root_bytes, "the root directory")?;
    let root = root_runs[0].first;
    let mut dirs: Vec<PlannedDir> = vec![PlannedDir {
        dir: &tree.root,
        path: String::new(),
        runs: root_runs,
        parent: 0,
        is_root: true,
    }];
    let mut dir_clusters: BTreeMap<*const Dir, u32> = BTreeMap::new();
    dir_clusters.insert(&tree.root as *const Dir, root);
    let mut i = 0;
    while i < dirs.len() {
        // A `..` that points at the root holds 0, not the root's cluster.
        let parent = if dirs[i].is_root {
            0
        } else {
            dirs[i].cluster()
        };
        let (dir, prefix) = (dirs[i].dir, dirs[i].path.clone());
        for (name, node) in &dir.entries {
            if let Node::Dir(d) = node {
                let path = join(&prefix, name);
                let runs = alloc(&mut fat, dir_entry_count(d, false) * DIR_ENTRY, &path)?;
                dir_clusters.insert(d as *const Dir, runs[0].first);
                dirs.push(PlannedDir {
                    dir: d,
                    path,
                    runs,
                    parent,
                    is_root: false,
                });
            }
        }
        i += 1;
    }
    let mut files: Vec<(Vec<Run>, &Source)> = Vec::new();
    let mut file_clusters: BTreeMap<*const Source, u32> = BTreeMap::new();
    for pd in &dirs {
        for (name, node) in &pd.dir.entries {
            let Node::File(s) = node else { continue };
            let path = join(&pd.path, name);
            if s.size() > super::MAX_FILE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{path}: a file of {} bytes does not fit FAT32's 4 GiB limit",
                        s.size()
                    ),
                ));
            }
            let first = if s.size() == 0 {
                0
            } else if let Some(runs) = keep(&path, s) {
                link(&mut fat, &runs);
                runs[0].first
            } else {
                let runs = alloc(&mut fat, s.size(), &path)?;
                let first = runs[0].first;
                files.push((runs, s));
                first
            };
            file_clusters.insert(s as *const Source, first);
        }
    }
    Ok(Allocation {
        fat,
        root,
        dirs,
        dir_clusters,
        files,
        file_clusters,
    })
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Where FAT number `n` starts in the volume.
pub(super) fn fat_offset(g: &Geometry, n: u64) -> u64 {
    (RESERVED_SECTORS + n * g.fat_sectors) * SECTOR
}

/// The reserved area: boot sector and FSInfo, and their backups at sector 6.
fn reserved_area(g: &Geometry, opts: &VolumeOptions, root: u32, free: u64, next: u32) -> Vec<u8> {
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
    set_root(&mut boot, root);
    boot[48..50].copy_from_slice(&1u16.to_le_bytes());
    boot[50..52].copy_from_slice(&6u16.to_le_bytes());
    boot[64] = 0x80;
    boot[66] = 0x29;
    boot[67..71].copy_from_slice(&opts.volume_id.to_le_bytes());
    boot[71..82].copy_from_slice(&volume_label(&opts.label));
    boot[82..90].copy_from_slice(b"FAT32   ");
    boot[510] = 0x55;
    boot[511] = 0xAA;
    let mut fsinfo = [0u8; 512];
    fsinfo[..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    fsinfo[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    set_free(&mut fsinfo, free, next);
    fsinfo[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    let mut reserved = vec![0u8; (RESERVED_SECTORS * SECTOR) as usize];
    for base in [0, BACKUP_BOOT] {
        reserved[base..base + 512].copy_from_slice(&boot);
        reserved[base + 512..base + 1024].copy_from_slice(&fsinfo);
    }
    reserved
}

/// Byte offset of the backup boot sector (sector 6, FSInfo's backup after it).
pub(super) const BACKUP_BOOT: usize = 6 * SECTOR as usize;

/// Sets the root directory's cluster in a boot sector.
pub(super) fn set_root(boot: &mut [u8], root: u32) {
    boot[44..48].copy_from_slice(&root.to_le_bytes());
}

/// Sets FSInfo's free cluster count and next-free hint.
pub(super) fn set_free(fsinfo: &mut [u8], free: u64, next: u32) {
    fsinfo[488..492].copy_from_slice(&(free as u32).to_le_bytes());
    fsinfo[492..496].copy_from_slice(&next.to_le_bytes());
}

/// The bytes of one FAT.
pub(super) fn fat_image(fat: &[u32], g: &Geometry) -> Vec<u8> {
    let mut v: Vec<u8> = fat.iter().flat_map(|e| e.to_le_bytes()).collect();
    v.resize((g.fat_sectors * SECTOR) as usize, 0);
    v
}

/// Pass 2's directories: every directory's entries, over its clusters.
pub(super) fn write_dirs(
    out: &File,
    offset: u64,
    g: &Geometry,
    a: &Allocation,
    label: &[u8; 11],
    timestamp: u64,
) -> io::Result<()> {
    let cb = g.cluster_bytes();
    let (date, time) = dos_datetime(timestamp);
    for pd in &a.dirs {
        let mut buf = Vec::new();
        let mut w = EntryWriter {
            buf: &mut buf,
            date,
            time,
        };
        if pd.is_root {
            w.short(label, ATTR_VOLUME_ID, 0, 0);
        } else {
            w.short(b".          ", ATTR_DIRECTORY, pd.cluster(), 0);
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
        let clusters: u64 = pd.runs.iter().map(|r| r.count as u64).sum();
        buf.resize((clusters * cb) as usize, 0);
        let mut at = 0usize;
        for r in &pd.runs {
            let len = (r.count as u64 * cb) as usize;
            out.write_all_at(&buf[at..at + len], offset + g.cluster_offset(r.first))?;
            at += len;
        }
    }
    Ok(())
}

/// Pass 3: file contents, in cluster order so the writes are sequential.
pub(super) fn write_files(
    out: &File,
    offset: u64,
    g: &Geometry,
    files: &[(Vec<Run>, &Source)],
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let cb = g.cluster_bytes();
    let mut order: Vec<&(Vec<Run>, &Source)> = files.iter().collect();
    order.sort_by_key(|(runs, _)| runs[0].first);
    for (runs, source) in order {
        let src = match source {
            Source::Bytes(_) => None,
            Source::File { path, .. } => Some(File::open(path).map_err(|e| {
                io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
            })?),
        };
        let size = source.size();
        let mut from = 0u64;
        for r in runs {
            let len = (r.count as u64 * cb).min(size - from);
            let at = offset + g.cluster_offset(r.first);
            match (source, &src) {
                (Source::Bytes(b), _) => {
                    out.write_all_at(&b[from as usize..(from + len) as usize], at)?;
                    progress(len);
                }
                (Source::File { path, .. }, Some(src)) => {
                    copy_range_from(src, from, out, at, len, progress).map_err(|e| {
                        io::Error::new(e.kind(), format!("copying {}: {e}", path.display()))
                    })?
                }
                (Source::File { .. }, None) => unreachable!("opened above"),
            }
            from += len;
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
    copy_range_from(src, 0, dst, at, len, progress)
}

/// As [`copy_range`], from byte `from` of `src`.
fn copy_range_from(
    src: &File,
    from: u64,
    dst: &File,
    at: u64,
    len: u64,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = (from + done) as i64;
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
                    src.read_exact_at(&mut buf[..n], from + done)?;
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
