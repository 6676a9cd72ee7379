//! Times reading a hosts.toml (parsing and every check of `Fleet::parse`), for the large-fleet
//! benchmark (tests/bench/large-fleet): prints the hosts and the median of 5 reads.
//!
//!     cargo run --release -q -p manifest --example parse-fleet -- hosts.toml

use std::time::Instant;

fn main() {
    let Some(file) = std::env::args().nth(1) else {
        eprintln!("usage: parse-fleet HOSTS.TOML");
        std::process::exit(2);
    };
    let path = std::path::Path::new(&file);
    let mut secs = Vec::new();
    let mut hosts = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            eprintln!("parse-fleet: {file}: {e}");
            std::process::exit(1);
        });
        let fleet = manifest::Fleet::parse(path, &text).unwrap_or_else(|e| {
            eprintln!("parse-fleet: {e}");
            std::process::exit(1);
        });
        secs.push(t.elapsed().as_secs_f64());
        hosts = fleet.hosts.len();
    }
    secs.sort_by(f64::total_cmp);
    println!("{hosts} hosts, read in {:.4} s (median of 5)", secs[2]);
}
