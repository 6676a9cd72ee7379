//! Copy closure, the kernel way: each NAR decompressed and unpacked under a temporary name in
//! the mounted target's `/nix/store`, checked, and renamed into place, on all cores (for
//! btrfs and xfs stores, and `--kernel-copy`; an ext4 store is written directly: `direct`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use media::verify::{each_nar, open_nar, Closure, Pins};
use nixstore::import::{import_compressed, Check};

use crate::source::Source;

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
        let result = each_nar(source, &closure.infos, jobs, &|p, info| {
            let file = open_nar(p, info, progress)?;
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
