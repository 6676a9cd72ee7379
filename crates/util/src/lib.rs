//! The small pieces every crate of the workspace shares, each written once: `pool` runs work
//! on all cores and stops at the first error, `io` holds the `Read` adapters (counting,
//! progress, limits, noting failures), `size` parses and prints sizes as people write them, `mountinfo` reads what the kernel says
//! is mounted and swapped on (one parser, one unescaping rule), `time` turns Unix times into
//! calendar dates, `out` writes standard output that may be a closed pipe, `hex` encodes bytes.

pub mod hex;
pub mod io;
pub mod mountinfo;
pub mod out;
pub mod pool;
pub mod size;
pub mod time;
