//! The host's closure on the payload: its narinfos, a full check before any disk is touched
//! (hashes, sizes, and the structure of every NAR), and the parallel copy into the target's
//! store. Both passes run on all cores, one payload handle per worker; memory per worker is a
//! few buffers and a zstd window, whatever the closure's size.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use manifest::media::{limits, Expected, HostEntry, Manifest};
use nixstore::closure::PathInfo;
use nixstore::import::{check_compressed, import_compressed, Check, FilePin};
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
/// per-serial lookup, which is a manifest of one host), read to at most `cap` bytes. With
/// trusted `keys`, it is parsed from the very bytes whose signature (`<path>.sig`) was checked
/// against them. Then it must be what `expected` says: the kind of file, the serial a lookup
/// answers for, the fleet and a generation no older than the installer was told (see
/// [`Manifest::answers`]). A missing file keeps its `NotFound` kind, so a caller can tell
/// "not there" from "not valid".
pub fn read_manifest(
    source: &Source,
    path: &str,
    cap: u64,
    keys: &[PublicKey],
    expected: &Expected,
) -> io::Result<Manifest> {
    let p = source.open()?;
    let at = |what: String| io::Error::other(format!("{}: {path}: {what}", source.describe()));
    let bytes = p.read_capped(path, cap)?;
    let text = String::from_utf8(bytes).map_err(|_| at("it is not UTF-8".into()))?;
    if !keys.is_empty() {
        let sigs: Vec<String> = match p.read_capped(&format!("{path}.sig"), limits::SIGNATURE) {
            Ok(b) => String::from_utf8_lossy(&b)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        if sigs.is_empty() {
            return Err(at(format!(
                "the manifest is not signed, but this installer trusts only signed payloads (keys: {}); rebuild the payload with mkinstaller --sign-key",
                key_names(keys)
            )));
        }
        if !nixstore::keys::verify_any(keys, &text, &sigs) {
            return Err(at(format!(
                "the manifest's signature is not valid for any trusted key ({}); the payload was altered or signed with another key",
                key_names(keys)
            )));
        }
    }
    let m = Manifest::parse(&text).map_err(at)?;
    m.answers(expected).map_err(at)?;
    Ok(m)
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
    // Each narinfo is capped (limits::NARINFO), and so is their sum: a hostile payload's
    // narinfos cannot take more memory than a closure of this many paths could need.
    let budget = (paths.len() as u64 * limits::NARINFOS_PER_PATH).max(limits::NARINFOS_MIN_TOTAL);
    let spent = std::sync::atomic::AtomicU64::new(0);
    let read = |p: &dyn media::read::Payload, sp: &StorePath| {
        let info = p.narinfo(sp).map_err(|e| format!("{sp}: {e}"))?;
        let size = info.to_text().len() as u64;
        if spent.fetch_add(size, Ordering::SeqCst) + size > budget {
            return Err(format!(
                "{sp}: the closure's narinfos take more than {budget} bytes together, far more than {} paths need; the payload is damaged or hostile",
                paths.len()
            ));
        }
        Ok(info)
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

/// What the verify pass measured of each compressed file: its hash and size, computed from
/// the bytes it checked in full, kept in memory. A later pass that reads the same bytes
/// again (see [`Check::Pinned`]) needs no NAR hash; one that reads other bytes (a medium
/// swapped or altered between the passes) fails. Never taken from the medium itself: a
/// narinfo's FileHash is not signed.
#[derive(Debug, Default)]
pub struct Pins(HashMap<StorePath, FilePin>);

impl Pins {
    /// How the writing pass checks `path`: against its pin, or in full when it has none.
    pub fn check(&self, path: &StorePath) -> Check {
        self.0.get(path).map_or(Check::Full, |p| Check::Pinned(*p))
    }
}

/// Checks every file of the closure in full (FileHash, FileSize, NarHash, NarSize, NAR
/// structure), writing nothing, and returns what it measured of each file. `progress`
/// hears compressed bytes.
pub fn verify(
    source: &Source,
    closure: &Closure,
    jobs: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Pins, String> {
    let pins = Mutex::new(HashMap::new());
    parallel(source, closure, jobs, &|p, info| {
        let (_, pin) =
            check_compressed(open_counted(p, info, progress)?, Path::new(&info.url), info)
                .map_err(|e| e.to_string())?;
        pins.lock().unwrap().insert(info.store_path.clone(), pin);
        Ok(())
    })?;
    Ok(Pins(pins.into_inner().unwrap()))
}

/// The compressed file of `info` on the payload, its bytes counted into `progress`. (How
/// much is read of it is bounded by the reader: see `nixstore::import`.)
pub(crate) fn open_counted<'a>(
    p: &'a dyn media::read::Payload,
    info: &NarInfo,
    progress: &'a (dyn Fn(u64) + Sync),
) -> Result<Counting<'a, Box<dyn std::io::Read + 'a>>, String> {
    let inner = p
        .open(&info.url)
        .map_err(|e| format!("{}: {e}", info.store_path))?;
    Ok(Counting { inner, progress })
}

/// Copies the closure into `store_dir` (the target's `/nix/store`): per path, decompress,
/// unpack safely under a temporary name, check, and rename into place. With `pins` (the
/// verify pass ran), each file must be the very bytes that pass checked; without (online,
/// where reading everything twice would fetch it twice), each is checked in full as it is
/// unpacked.
pub fn copy(
    source: &Source,
    closure: &Closure,
    store_dir: &Path,
    jobs: usize,
    pins: Option<&Pins>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), String> {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let flusher = s.spawn(|| flush_while_copying(store_dir, &done));
        let result = parallel(source, closure, jobs, &|p, info| {
            let file = open_counted(p, info, progress)?;
            let check = pins.map_or(Check::Full, |pins| pins.check(&info.store_path));
            import_compressed(file, Path::new(&info.url), info, store_dir, check)
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        done.store(true, Ordering::SeqCst);
        flusher.thread().unpark();
        let flushed = flusher.join().expect("the flusher does not panic");
        result.and(flushed)
    })
}

/// Keeps the target's disk busy while the closure is unpacked. With plenty of memory the
/// kernel starts writing dirty pages only when a tenth of RAM is dirty, so a whole closure
/// could sit in the page cache and be written only by the final sync, with the processors
/// idle. Flushing the file system every quarter second overlaps the writes with the
/// decompression and leaves the final sync little to do.
fn flush_while_copying(store_dir: &Path, done: &AtomicBool) -> Result<(), String> {
    // Opening fails only if the store directory vanished, which the copy reports itself.
    let Ok(dir) = std::fs::File::open(store_dir) else {
        return Ok(());
    };
    while !done.load(Ordering::SeqCst) {
        std::thread::park_timeout(std::time::Duration::from_millis(250));
        if done.load(Ordering::SeqCst) {
            break;
        }
        // A failed writeback (an I/O error on the target disk) is reported here, once: the
        // install must not carry on as if the files were on the disk.
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)).map_err(|e| {
            format!(
                "writing the closure to {}: the disk reported an error: {}",
                store_dir.display(),
                e.desc()
            )
        })?;
    }
    Ok(())
}
