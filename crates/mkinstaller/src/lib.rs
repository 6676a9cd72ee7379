//! The host side: building installer images from a fleet file or one system, and reading
//! them back. `main.rs` only parses arguments and prints. `options` says what a build is
//! asked and how it fails, `fleet` reads and checks the fleet (`flake` makes it from a flake), `build` runs a build,
//! `outputs` writes each kind of output, `envs` picks the installer environments, `online` makes boot media for the online installer,
//! `output` checks the output before anything is written, `profiles` finds profiles, `layouts` resolves each host's layout and checks it against the
//! host's own mounts, `seal` how each host's secrets travel, `show`
//! reads an image back (`inspect`, `verify`), `reports` the reports installers wrote back, `ssh`
//! installs a running Linux machine over SSH with a kexec bundle, `cli` is the command line.

pub mod build;
pub mod cli;
pub mod envs;
pub mod flake;
pub mod fleet;
pub mod layouts;
pub mod online;
pub mod options;
pub mod output;
pub mod outputs;
pub mod profiles;
pub mod refresh;
pub mod reports;
pub mod seal;
pub mod secure_boot;
pub mod show;
pub mod ssh;
pub mod ui;
