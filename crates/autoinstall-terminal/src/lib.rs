//! The on-target installer, as a library the thin binary drives: `identify` (who is this
//! machine), `payload` (where the stick is), `online` (a cache site over HTTP), `choose`
//! (which host, pure), `closure` (verify and copy the host's store paths), `direct` (or write
//! the store's ext4 file system with them in it), `install` (the state machine), `report` and `ui`.

pub mod choose;
pub mod closure;
pub mod direct;
pub mod identify;
pub mod install;
pub mod online;
pub mod payload;
pub mod report;
pub mod settings;
pub mod ui;
