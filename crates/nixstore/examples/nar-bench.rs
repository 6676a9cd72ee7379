//! NAR throughput on a real closure, against `nix-store --dump | sha256sum`.
//!
//!     cargo run --release -p nixstore --example nar-bench -- TOPLEVEL... [--scratch DIR]
//!
//! Measures, over the union of the closures of the given store paths:
//! - encode+hash: our NAR encoder into SHA-256 (one thread, then all cores);
//! - the anchor: `nix-store --dump P | sha256sum` for every path, one after the other;
//! - decode+write: our unpacker (with NAR hash check) from NAR files in the scratch
//!   directory into a fresh store directory there, all cores; then the same with syncfs.
//!
//! Caches are warm (the page cache holds the store), as they are in a real build.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use nixstore::closure::{self, PathInfo};
use nixstore::{import, nar, StorePath};

fn parallel<T: Sync>(items: &[T], threads: usize, f: impl Fn(&T) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                f(item);
            });
        }
    });
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn main() -> io::Result<()> {
    let mut roots = Vec::new();
    let mut scratch = PathBuf::from("/var/tmp/nar-bench");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--scratch" {
            scratch = args.next().expect("--scratch DIR").into();
        } else {
            roots.push(StorePath::parse(&a).expect("a store path"));
        }
    }
    let mut infos = closure::closure(&roots).expect("querying the closure");
    // Largest first, so that the threads finish together.
    infos.sort_by_key(|i| std::cmp::Reverse(i.nar_size));
    let total: u64 = infos.iter().map(|i| i.nar_size).sum();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "closure: {} paths, {:.0} MiB of NAR; {threads} threads",
        infos.len(),
        total as f64 / (1 << 20) as f64
    );

    let encode_all = |threads: usize| {
        let t = Instant::now();
        parallel(&infos, threads, |i: &PathInfo| {
            let (hash, size) = nar::dump(Path::new(&i.path.to_string())).unwrap();
            assert_eq!((hash, size), (i.nar_hash, i.nar_size), "{}", i.path);
        });
        t.elapsed().as_secs_f64()
    };
    encode_all(threads); // warm the page cache, as a real build finds it
    let quick = std::env::var_os("NAR_BENCH_DECODE_ONLY").is_some();
    let one = if quick { 1.0 } else { encode_all(1) };
    let all = if quick { 1.0 } else { encode_all(threads) };

    let t = Instant::now();
    for i in infos.iter().filter(|_| !quick) {
        let dump = Command::new("nix-store")
            .args(["--dump", &i.path.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let status = Command::new("sha256sum")
            .stdin(dump.stdout.unwrap())
            .stdout(Stdio::null())
            .status()?;
        assert!(status.success());
    }
    let anchor = t.elapsed().as_secs_f64();

    // Decode: write the NARs once, then time unpacking them.
    let nars = scratch.join("nars");
    let store = scratch.join("store");
    let _ = import::remove_tree(&scratch);
    fs::create_dir_all(&nars)?;
    fs::create_dir_all(&store)?;
    parallel(&infos, threads, |i: &PathInfo| {
        let f = BufWriter::new(File::create(nars.join(i.path.hash_part())).unwrap());
        nar::encode(Path::new(&i.path.to_string()), f).unwrap();
    });
    let t = Instant::now();
    parallel(&infos, threads, |i: &PathInfo| {
        let f = File::open(nars.join(i.path.hash_part())).unwrap();
        import::import_nar(f, &store, &i.path, &i.nar_hash, i.nar_size).unwrap();
    });
    let decode = t.elapsed().as_secs_f64();
    let fd = File::open(&store)?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(io::Error::from)?;
    let synced = t.elapsed().as_secs_f64();
    let _ = import::remove_tree(&scratch);

    println!("| job | wall (s) | MiB/s | vs anchor |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| nix-store --dump \\| sha256sum (anchor, sequential) | {anchor:.2} | {:.0} | 1.00x |",
        mib_s(total, anchor)
    );
    println!(
        "| encode+hash, 1 thread | {one:.2} | {:.0} | {:.2}x |",
        mib_s(total, one),
        one / anchor
    );
    println!(
        "| encode+hash, {threads} threads | {all:.2} | {:.0} | {:.2}x |",
        mib_s(total, all),
        all / anchor
    );
    println!(
        "| decode+hash check+write, {threads} threads | {decode:.2} | {:.0} | |",
        mib_s(total, decode)
    );
    println!(
        "| the same, then syncfs (disk-bound) | {synced:.2} | {:.0} | |",
        mib_s(total, synced)
    );
    Ok(())
}
