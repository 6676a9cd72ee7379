//! The host's closure on the payload: its narinfos, a full check before any disk is touched
//! (hashes, sizes, and the structure of every NAR), and the parallel copy into the target's
//! store. Both passes run on all cores, one payload handle per worker; memory per worker is a
//! few buffers and a zstd window, whatever the closure's size.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use manifest::media::{HostEntry, Manifest};
use nixstore::closure::PathInfo;
use nixstore::import::{check_compressed, import_checked_compressed, import_compressed};
use nixstore::keys::PublicKey;
use nixstore::narinfo::NarInfo;
use nixstore::StorePath;

use crate::payload::Source;

/// A host's closure as the payload describes it.
#[derive(Debug, Clone)]
pub struct Closure {
    pub infos: Vec<NarInfo>,
    pub nar_bytes: u64,
    pub file_bytes: u64,
}

impl Closure {
    /// What registration needs.
    pub fn path_infos(&self) -> Vec<PathInfo> {
        self.infos
            .iter()
            .map(|i| PathInfo {
                path: i.store_path.clone(),
                nar_hash: i.nar_hash,
                nar_size: i.nar_size,
                references: i.references.clone(),
                deriver: i.deriver.clone(),
                sigs: i.sigs.clone(),
            })
            .collect()
    }
}

/// The names of `keys`, for messages.
fn key_names(keys: &[PublicKey]) -> String {
    keys.iter()
        .map(|k| k.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The manifest at `path` of the payload (`autoinstall/manifest.json`, or a cache site's
/// per-serial lookup, which is a manifest of one host). With trusted `keys`, it is parsed from
/// the very bytes whose signature (`<path>.sig`) was checked against them. A missing file
/// keeps its `NotFound` kind, so a caller can tell "not there" from "not valid".
pub fn read_manifest(source: &Source, path: &str, keys: &[PublicKey]) -> io::Result<Manifest> {
    let p = source.open()?;
    let bytes = p.read_all(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| io::Error::other(format!("{}: {path} is not UTF-8", source.describe())))?;
    if !keys.is_empty() {
        let sigs: Vec<String> = match p.read_all(&format!("{path}.sig")) {
            Ok(b) => String::from_utf8_lossy(&b)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect(),
            Err(_) => Vec::new(),
        };
        if sigs.is_empty() {
            return Err(io::Error::other(format!(
                "{}: {path}: the manifest is not signed, but this installer trusts only signed payloads (keys: {}); rebuild the payload with mkinstaller --sign-key",
                source.describe(),
                key_names(keys)
            )));
        }
        if !nixstore::keys::verify_any(keys, &text, &sigs) {
            return Err(io::Error::other(format!(
                "{}: {path}: the manifest's signature is not valid for any trusted key ({}); the payload was altered or signed with another key",
                source.describe(),
                key_names(keys)
            )));
        }
    }
    Manifest::parse(&text)
        .map_err(|e| io::Error::other(format!("{}: {path}: {e}", source.describe())))
}

/// Reads the narinfo of every path of `host`'s closure and checks that the closure is whole:
/// the toplevel is in it and every reference stays inside it. With trusted `keys`, every
/// narinfo must carry a valid signature by one of them (its NarHash, hence the NAR, is then
/// vouched for).
pub fn load(source: &Source, host: &HostEntry, keys: &[PublicKey]) -> Result<Closure, String> {
    let p = source.open().map_err(|e| e.to_string())?;
    let members: BTreeSet<&str> = host.closure.iter().map(String::as_str).collect();
    if !members.contains(host.toplevel.as_str()) {
        return Err(format!(
            "host {}: the manifest's closure does not contain the toplevel {}",
            host.name, host.toplevel
        ));
    }
    let paths = host
        .closure
        .iter()
        .map(|path| {
            StorePath::parse(path)
                .map_err(|e| format!("host {}: {path:?} is not a store path: {e}", host.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fetched = read_narinfos(source, p.as_ref(), &paths)?;
    let mut infos = Vec::with_capacity(host.closure.len());
    for (path, info) in host.closure.iter().zip(fetched) {
        if !keys.is_empty() && !nixstore::keys::verify_any(keys, &info.fingerprint(), &info.sigs) {
            return Err(format!(
                "{path}: {} (keys: {}); the payload was altered or signed with another key",
                if info.sigs.is_empty() {
                    "not signed, but this installer trusts only signed paths"
                } else {
                    "no valid signature by a trusted key"
                },
                key_names(keys)
            ));
        }
        for r in &info.references {
            if !members.contains(r.to_string().as_str()) {
                return Err(format!(
                    "{path} refers to {r}, which is not in host {}'s closure on the payload",
                    host.name
                ));
            }
        }
        infos.push(info);
    }
    let nar_bytes = infos.iter().map(|i| i.nar_size).sum();
    let file_bytes = infos
        .iter()
        .map(|i| i.file_size.unwrap_or(i.nar_size))
        .sum();
    Ok(Closure {
        infos,
        nar_bytes,
        file_bytes,
    })
}

/// The narinfos of `paths`, in order. Online, each is a round trip, so eight requests are in
/// flight at a time (a few hundred paths then take a fraction of a second on a LAN); a local
/// payload is read in one pass.
fn read_narinfos(
    source: &Source,
    p: &dyn media::read::Payload,
    paths: &[StorePath],
) -> Result<Vec<NarInfo>, String> {
    let read = |p: &dyn media::read::Payload, sp: &StorePath| {
        p.narinfo(sp).map_err(|e| format!("{sp}: {e}"))
    };
    if !source.is_online() {
        return paths.iter().map(|sp| read(p, sp)).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<NarInfo, String>>>> =
        paths.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..8.min(paths.len()) {
            s.spawn(|| {
                let p = source.open().map_err(|e| e.to_string());
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(sp) = paths.get(i) else { break };
                    let r = match &p {
                        Ok(p) => read(p.as_ref(), sp),
                        Err(e) => Err(e.clone()),
                    };
                    *slots[i].lock().unwrap() = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().unwrap().expect("every slot filled"))
        .collect()
}

/// Runs `work` over every narinfo of the closure on `jobs` threads, largest first (so one big
/// path does not finish alone at the end), each thread with its own payload handle. Stops at
/// the first error and returns it.
pub(crate) fn parallel(
    source: &Source,
    closure: &Closure,
    jobs: usize,
    work: &(dyn Fn(&dyn media::read::Payload, &NarInfo) -> Result<(), String> + Sync),
) -> Result<(), String> {
    let mut order: Vec<&NarInfo> = closure.infos.iter().collect();
    order.sort_by_key(|i| std::cmp::Reverse(i.file_size.unwrap_or(i.nar_size)));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(order.len().max(1)) {
            s.spawn(|| {
                let fail = |e: String| {
                    failed.store(true, Ordering::SeqCst);
                    first_error.lock().unwrap().get_or_insert(e);
                };
                let p = match source.open() {
                    Ok(p) => p,
                    Err(e) => return fail(e.to_string()),
                };
                while !failed.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(info) = order.get(i) else { break };
                    if let Err(e) = work(p.as_ref(), info) {
                        return fail(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Counts bytes read through it into a progress callback.
pub(crate) struct Counting<'a, R> {
    inner: R,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// Checks every file of the closure in full (FileHash, FileSize, NarHash, NarSize, NAR
/// structure), writing nothing. `progress` hears compressed bytes.
pub fn verify(
    source: &Source,
    closure: &Closure,
    jobs: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), String> {
    parallel(source, closure, jobs, &|p, info| {
        check_compressed(open_counted(p, info, progress)?, Path::new(&info.url), info)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// The compressed file of `info` on the payload, its bytes counted into `progress`.
pub(crate) fn open_counted<'a>(
    p: &'a dyn media::read::Payload,
    info: &NarInfo,
    progress: &'a (dyn Fn(u64) + Sync),
) -> Result<Counting<'a, io::Take<Box<dyn std::io::Read + 'a>>>, String> {
    let inner = p
        .open(&info.url)
        .map_err(|e| format!("{}: {e}", info.store_path))?;
    // One byte past FileSize is enough to see it is too long: a server (or a device) that
    // sends without end cannot keep the install reading forever.
    let limit = info.file_size.map_or(u64::MAX, |s| s.saturating_add(1));
    Ok(Counting {
        inner: io::Read::take(inner, limit),
        progress,
    })
}

/// Copies the closure into `store_dir` (the target's `/nix/store`): per path, decompress,
/// unpack safely under a temporary name, check, and rename into place. `verified` says that
/// [`verify`] passed on this payload, so the FileHash suffices to know each file is the one
/// verified (see [`import_checked_compressed`]); otherwise (online, where reading everything
/// twice would fetch it twice) every file is checked in full as it is unpacked.
pub fn copy(
    source: &Source,
    closure: &Closure,
    store_dir: &Path,
    jobs: usize,
    verified: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), String> {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let flusher = s.spawn(|| flush_while_copying(store_dir, &done));
        let result = parallel(source, closure, jobs, &|p, info| {
            let file = open_counted(p, info, progress)?;
            let name = Path::new(&info.url);
            if verified {
                import_checked_compressed(file, name, info, store_dir)
            } else {
                import_compressed(file, name, info, store_dir)
            }
            .map(|_| ())
            .map_err(|e| e.to_string())
        });
        done.store(true, Ordering::SeqCst);
        flusher.thread().unpark();
        result
    })
}

/// Keeps the target's disk busy while the closure is unpacked. With plenty of memory the
/// kernel starts writing dirty pages only when a tenth of RAM is dirty, so a whole closure
/// could sit in the page cache and be written only by the final sync, with the processors
/// idle. Flushing the file system every quarter second overlaps the writes with the
/// decompression and leaves the final sync little to do.
fn flush_while_copying(store_dir: &Path, done: &AtomicBool) {
    let Ok(dir) = std::fs::File::open(store_dir) else {
        return; // nothing lost: the final sync writes everything anyway
    };
    while !done.load(Ordering::SeqCst) {
        std::thread::park_timeout(std::time::Duration::from_millis(250));
        if done.load(Ordering::SeqCst) {
            break;
        }
        let _ = nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir));
    }
}
