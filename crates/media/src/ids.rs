//! Identifiers derived from content (disk and partition GUIDs, FAT volume IDs), so that the
//! same inputs give the same image bytes.

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
