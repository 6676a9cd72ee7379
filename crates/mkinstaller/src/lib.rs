//! The host side: building installer images from a fleet file or one system, and reading
//! them back. `main.rs` only parses arguments and prints.

pub mod build;
pub mod output;
pub mod profiles;
pub mod ui;
