//! Installer media: the write-once FAT32 builder, USB images (GPT + ESP + payload), hybrid
//! ISOs (through xorriso), the payload tree (a Nix binary cache plus the autoinstall
//! manifest), the compressed NAR cache, and reading images back for `inspect` and `verify`.

pub mod bios;
pub mod cpio;
pub mod dirout;
pub mod efi_auth;
pub mod esp;
pub mod fat32;
pub mod fatread;
pub mod gpt;
pub mod ids;
pub mod image;
pub mod iso;
pub mod isoread;
pub mod kexec;
pub mod narcache;
pub mod netboot;
pub mod payload;
pub mod read;
pub mod readat;
pub mod refresh;
pub mod slice;
pub mod summary;
pub mod usb;
pub mod verify;
