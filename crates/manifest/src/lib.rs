//! What a stick carries and why: the fleet file (`hosts.toml`), the disk layouts
//! (`installer-profiles/*.toml`), the rules for SMBIOS serials, and the manifest written to
//! the payload. Everything here is pure: text in, validated values or a located error out.

pub mod devices;
pub mod disko;
pub mod document;
pub mod fstab;
pub mod hosts;
pub mod inventory;
pub mod location;
pub mod profile;
pub mod serial;

pub use document::Manifest;
pub use hosts::{AfterInstall, Fleet, Host, Reinstall, SystemSource, UnknownSerial, Verify};
pub use location::LocatedError;
pub use profile::Profile;
