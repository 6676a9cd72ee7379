//! The on-target installer, as a library the thin binary drives: `identify` (who is this
//! machine), `payload` (where the stick is), `choose` (which host, pure), `closure` (verify and
//! copy the host's store paths), `install` (the state machine), `report` and `ui`.

pub mod choose;
pub mod closure;
pub mod identify;
pub mod install;
pub mod payload;
pub mod report;
pub mod ui;
