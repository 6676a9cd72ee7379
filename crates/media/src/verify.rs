//! The one payload verifier, for `mkinstaller verify` and the installer's verify pass alike:
//! the manifest read from the very bytes whose signature was checked, each host's closure
//! loaded from its narinfos (signed when keys are trusted, and whole: the toplevel in it,
//! every reference inside it), and every compressed NAR checked in full (FileHash, FileSize,
//! NarHash, NarSize, and every structural rule of the NAR reader) on all cores, one payload
//! handle per worker. Memory per worker is a few buffers and a zstd window.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use manifest::document::{limits, Expected, HostEntry, Manifest, MANIFEST_PATH};
use nixstore::closure::PathInfo;
use nixstore::import::{check_compressed, Check, FilePin};
use nixstore::keys::PublicKey;
use nixstore::narinfo::NarInfo;
use nixstore::StorePath;
use util::io::Progress;

use crate::read::Payload;

/// Where a payload is, opened as many times as there are workers (a reader of a FAT volume,
/// an ISO or a site is one handle per thread).
pub trait Opener: Sync {
    fn open(&self) -> io::Result<Box<dyn Payload + '_>>;
    /// Where it is, for messages.
    fn describe(&self) -> String;
    /// Whether each file is a round trip (a site over HTTP): then narinfos are fetched eight
    /// at a time.
    fn remote(&self) -> bool {
        false
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
/// per-serial lookup, a manifest of one host), read to at most `cap` bytes. With trusted
/// `keys`, it is parsed from the very bytes whose signature (`<path>.sig`) was checked against
/// them. Then it must be what `expected` says (see [`Manifest::answers`]). A missing file
/// keeps its `NotFound` kind, so a caller can tell "not there" from "not valid".
pub fn read_manifest(
    p: &dyn Payload,
    path: &str,
    cap: u64,
    keys: &[PublicKey],
    expected: &Expected,
) -> io::Result<Manifest> {
    let at = |what: String| io::Error::other(format!("{}: {path}: {what}", p.describe()));
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
                "the manifest is not signed, but only signed payloads are trusted (keys: {}); rebuild the payload with mkinstaller --sign-key",
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

/// A host's closure as the payload describes it.
#[derive(Debug, Clone)]
pub struct Closure {
    pub infos: Vec<NarInfo>,
    pub nar_bytes: u64,
    /// Compressed bytes, as the (unsigned) narinfos say: for progress bars only.
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

/// Reads the narinfo of every path of `host`'s closure and checks that the closure is whole:
/// the toplevel is in it and every reference stays inside it. With trusted `keys`, every
/// narinfo must carry a valid signature by one of them (its NarHash, hence the NAR, is then
/// vouched for).
pub fn load_closure(
    open: &dyn Opener,
    host: &HostEntry,
    keys: &[PublicKey],
) -> Result<Closure, String> {
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
    let fetched = read_narinfos(open, &paths)?;
    let mut infos = Vec::with_capacity(host.closure.len());
    for (path, info) in host.closure.iter().zip(fetched) {
        if !keys.is_empty() && !nixstore::keys::verify_any(keys, &info.fingerprint(), &info.sigs) {
            return Err(format!(
                "{path}: {} (keys: {}); the payload was altered or signed with another key",
                if info.sigs.is_empty() {
                    "not signed, but only signed paths are trusted"
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

/// The narinfos of `paths`, in order. A remote payload is read eight at a time (each is a
/// round trip), a local one in one pass. Each narinfo is capped (`limits::NARINFO`), and so is
/// their sum: a hostile payload's narinfos cannot take more memory than a closure of this
/// many paths could need.
fn read_narinfos(open: &dyn Opener, paths: &[StorePath]) -> Result<Vec<NarInfo>, String> {
    let budget = (paths.len() as u64 * limits::NARINFOS_PER_PATH).max(limits::NARINFOS_MIN_TOTAL);
    let spent = AtomicU64::new(0);
    let read = |p: &dyn Payload, sp: &StorePath| {
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
    let threads = if open.remote() { 8 } else { 1 };
    util::pool::map(
        paths,
        threads,
        || open.open().map_err(|e| e.to_string()),
        |p, sp| read(p.as_ref(), sp),
    )
}

/// What the verify pass measured of each compressed file: its hash and size, computed from
/// the bytes it checked in full, kept in memory. A later pass that reads the same bytes again
/// (see [`Check::Pinned`]) needs no NAR hash; one that reads other bytes (a medium swapped or
/// altered between the passes) fails. Never taken from the medium itself: a narinfo's
/// FileHash is not signed.
#[derive(Debug, Default)]
pub struct Pins(HashMap<StorePath, FilePin>);

impl Pins {
    /// How a later pass checks `path`: against its pin, or in full when it has none.
    pub fn check(&self, path: &StorePath) -> Check {
        self.0.get(path).map_or(Check::Full, |p| Check::Pinned(*p))
    }
}

/// Runs `work` over every narinfo of `infos` on `jobs` threads, largest first (so one big
/// path does not finish alone at the end), each thread with its own payload handle. Stops at
/// the first error and returns it.
pub fn each_nar(
    open: &dyn Opener,
    infos: &[NarInfo],
    jobs: usize,
    work: &(dyn Fn(&dyn Payload, &NarInfo) -> Result<(), String> + Sync),
) -> Result<(), String> {
    let mut order: Vec<&NarInfo> = infos.iter().collect();
    order.sort_by_key(|i| std::cmp::Reverse(i.file_size.unwrap_or(i.nar_size)));
    util::pool::map(
        &order,
        jobs,
        || open.open().map_err(|e| e.to_string()),
        |p, info| work(p.as_ref(), info),
    )
    .map(drop)
}

/// The compressed file of `info` on the payload, its bytes told to `progress`. (How much is
/// read of it is bounded by the reader: see `nixstore::import`.)
pub fn open_nar<'a>(
    p: &'a dyn Payload,
    info: &NarInfo,
    progress: &'a (dyn Fn(u64) + Sync),
) -> Result<Progress<'a, Box<dyn io::Read + 'a>>, String> {
    let inner = p
        .open(&info.url)
        .map_err(|e| format!("{}: {e}", info.store_path))?;
    Ok(Progress::new(inner, progress))
}

/// Checks the compressed NAR of every one of `infos` in full, writing nothing, and pins each
/// (see [`Pins`]). Stops at the first that fails. `progress` hears compressed bytes.
pub fn check_nars(
    open: &dyn Opener,
    infos: &[NarInfo],
    jobs: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Pins, String> {
    let pins = Mutex::new(HashMap::new());
    each_nar(open, infos, jobs, &|p, info| {
        let (_, pin) = check_compressed(open_nar(p, info, progress)?, Path::new(&info.url), info)
            .map_err(|e| e.to_string())?;
        pins.lock().unwrap().insert(info.store_path.clone(), pin);
        Ok(())
    })?;
    Ok(Pins(pins.into_inner().unwrap()))
}

/// What verifying a whole payload found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Verification {
    pub hosts: usize,
    pub paths: usize,
    pub compressed_bytes: u64,
    pub nar_bytes: u64,
    /// The keys the manifest and every narinfo were checked against (none: unsigned checks).
    pub signed_by: Vec<String>,
    pub problems: Vec<String>,
}

/// Checks a whole payload, as `mkinstaller verify` does: the manifest (signed, with `keys`),
/// each host's closure (signed and whole), and every distinct compressed NAR in full, on
/// `jobs` threads. Every problem is listed (one per path), not only the first. `progress`
/// hears compressed bytes.
pub fn verify_payload(
    open: &dyn Opener,
    keys: &[PublicKey],
    jobs: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<Verification> {
    let p = open.open()?;
    let m = read_manifest(
        p.as_ref(),
        MANIFEST_PATH,
        limits::MANIFEST,
        keys,
        &Expected::default(),
    )?;
    let mut v = Verification {
        hosts: m.hosts.len(),
        signed_by: keys.iter().map(|k| k.name.clone()).collect(),
        ..Verification::default()
    };
    let mut all: BTreeMap<StorePath, NarInfo> = BTreeMap::new();
    for h in &m.hosts {
        match load_closure(open, h, keys) {
            Ok(c) => all.extend(c.infos.into_iter().map(|i| (i.store_path.clone(), i))),
            Err(e) => v.problems.push(format!("host {}: {e}", h.name)),
        }
    }
    let infos: Vec<NarInfo> = all.into_values().collect();
    v.paths = infos.len();
    v.nar_bytes = infos.iter().map(|i| i.nar_size).sum();
    v.compressed_bytes = infos.iter().filter_map(|i| i.file_size).sum();
    let problems = Mutex::new(Vec::new());
    each_nar(open, &infos, jobs, &|p, info| {
        let checked = open_nar(p, info, progress).and_then(|f| {
            check_compressed(f, Path::new(&info.url), info).map_err(|e| e.to_string())
        });
        if let Err(e) = checked {
            problems.lock().unwrap().push(e);
        }
        Ok(())
    })
    .map_err(io::Error::other)?;
    let mut problems = problems.into_inner().unwrap();
    problems.sort();
    v.problems.extend(problems);
    Ok(v)
}
