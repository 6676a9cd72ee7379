//! What a stick carries and why: the fleet file (`hosts.toml`), the disk layouts
//! (`installer-profiles/*.toml`), the rules for SMBIOS serials, and the manifest written to
//! the payload. Everything here is pure: text in, validated values or a located error out.

pub mod hosts;
pub mod location;
pub mod media;
pub mod profile;
pub mod serial;
pub mod size;

pub use hosts::{AfterInstall, Fleet, Host, SystemSource, UnknownSerial};
pub use location::LocatedError;
pub use media::Manifest;
pub use profile::Profile;
