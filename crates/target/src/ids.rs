//! Fresh identifiers for what the installer writes: GPT disk and partition GUIDs, the ESP's
//! volume ID.
//!
//! They must be unique, not secret, and they must not wait for the kernel's entropy pool:
//! `getrandom(2)` without flags blocks until the pool is seeded, which in an initramfs on a
//! machine without a hardware RNG (QEMU under TCG here; older servers too) took minutes. A
//! read of /dev/urandom never blocks, and on a seeded pool it returns the same quality.

use std::fs::File;
use std::io::{self, Read};

use uuid::Uuid;

/// A random (version 4) UUID from /dev/urandom.
pub fn random_uuid() -> io::Result<Uuid> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| io::Error::new(e.kind(), format!("reading /dev/urandom for a GUID: {e}")))?;
    Ok(uuid::Builder::from_random_bytes(bytes).into_uuid())
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
