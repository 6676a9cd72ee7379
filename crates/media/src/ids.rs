//! Identifiers, each kind made in one place: for images, derived from their content (disk and
//! partition GUIDs, FAT volume IDs), so that the same inputs give the same bytes; for what the
//! installer writes on a target, fresh random ones.

use std::fs::File;
use std::io::{self, Read};

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A UUID (version 4 layout) derived from `seed` and `purpose`.
pub fn uuid(seed: &[u8], purpose: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update(purpose.as_bytes())
        .finalize();
    let bytes: [u8; 16] = digest[..16].try_into().expect("16 bytes");
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A 32-bit FAT volume ID derived from `seed` and `purpose`.
pub fn volume_id(seed: &[u8], purpose: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update(purpose.as_bytes())
        .finalize();
    u32::from_le_bytes(digest[..4].try_into().expect("4 bytes"))
}

/// The GPT disk GUID the installer gives the disk `disk` (the layout's name for it) of `host`
/// installed from `fleet`: the same inputs give the same GUID, so a later boot of the stick
/// recognises a disk that already holds this host from this fleet (and does not reinstall it
/// unasked). Distinct for each disk of a host, so GUIDs within one machine stay unique.
pub fn install_marker(fleet: Option<&str>, host: &str, disk: &str) -> Uuid {
    let seed = format!("{}\0{host}\0{disk}", fleet.unwrap_or(""));
    uuid(seed.as_bytes(), "nixos-autoinstall install marker")
}

// Fresh identifiers for what the installer writes on a target (GPT disk and partition GUIDs,
// file system UUIDs and volume IDs): unique, not secret, and never waiting for the kernel's
// entropy pool. `getrandom(2)` without flags blocks until the pool is seeded, which in an
// initramfs on a machine without a hardware RNG (QEMU under TCG here; older servers too) took
// minutes; a read of /dev/urandom never blocks, and on a seeded pool it gives the same
// quality.

/// `N` random bytes from /dev/urandom, for `what` (named in the error).
pub fn random_bytes<const N: usize>(what: &str) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| io::Error::new(e.kind(), format!("reading /dev/urandom for {what}: {e}")))?;
    Ok(bytes)
}

/// A random (version 4) UUID from /dev/urandom.
pub fn random_uuid() -> io::Result<Uuid> {
    Ok(uuid::Builder::from_random_bytes(random_bytes("a GUID")?).into_uuid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_differ() {
        let a = random_uuid().unwrap();
        let b = random_uuid().unwrap();
        assert_eq!(a.get_version_num(), 4);
        assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
        assert_ne!(a, b);
    }
}
