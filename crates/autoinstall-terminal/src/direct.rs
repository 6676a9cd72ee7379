//! Copy closure, the direct way: when the partition that holds `/nix/store` is ext4, the
//! closure's NARs are laid out as that file system in one pass (`machine::store`) instead of
//! mkfs, mount and tens of thousands of file creations through the kernel. The checks are
//! those of [`crate::copy::copy`]: every NAR's structure (the parser's rules: no name with a
//! slash, no `..`, bounded depth), sizes, and either the NAR hash or (after the verify pass)
//! the file hash that pass measured. What could not be checked before writing fails the
//! install with the partition half written, which the next run formats again.

use std::path::Path;

use machine::store::StoreWriter;
use media::verify::{each_nar, open_nar, Closure, Pins};
use nixstore::import::{read_compressed, Check};

use crate::source::Source;

/// Where the store goes.
pub struct StoreFs<'a> {
    /// The device node (a partition, an array, a LUKS mapper, a logical volume).
    pub device: &'a Path,
    pub bytes: u64,
    pub label: &'a str,
    /// The UUID the host's configuration names it by, if any.
    pub uuid: Option<&'a str>,
    /// The store directory's path in the file system: `["nix", "store"]` for a root
    /// file system, `["store"]` for one mounted at `/nix`.
    pub store_dir: Vec<&'a str>,
}

/// Writes the file system with `closure` in its store. `pins` as for [`crate::copy::copy`].
pub fn write(
    source: &Source,
    closure: &Closure,
    target: &StoreFs,
    jobs: usize,
    pins: Option<&Pins>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), String> {
    let now = crate::report::now() as u32;
    let store = StoreWriter::create(
        target.device,
        target.bytes,
        target.label,
        target.uuid,
        &target.store_dir,
        now,
    )
    .map_err(|e| e.to_string())?;
    let paths = store.paths();
    // Past eight threads the disk, not decompression, sets the pace; each thread holds a
    // 4 MiB buffer, so more would only cost memory.
    each_nar(source, &closure.infos, jobs.min(8), &|p, info| {
        let file = open_nar(p, info, progress)?;
        let check = pins.map_or(Check::Full, |pins| pins.check(&info.store_path));
        read_compressed(file, Path::new(&info.url), info, check, |nar| {
            paths.put(nar, &info.store_path)
        })
        .map(drop)
        .map_err(|e| e.to_string())
    })?;
    let laid = paths.done().map_err(|e| e.to_string())?;
    store.finish(laid).map_err(|e| e.to_string())
}
