//! SHA-256 digests as Nix writes them, and I/O adapters that hash and count what passes.

use std::fmt;
use std::io::{self, Read, Write};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::base32;

/// A SHA-256 digest (the only hash Nix uses for NARs and files in binary caches).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash(pub [u8; 32]);

/// Why a hash string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a SHA-256 hash: {why} (expected sha256:<nixbase32|hex|base64> or sha256-<base64>)")]
pub struct ParseHashError {
    text: String,
    why: &'static str,
}

impl Sha256Hash {
    pub fn of(data: &[u8]) -> Self {
        Sha256Hash(Sha256::digest(data).into())
    }

    /// `sha256:<nixbase32>`: the form narinfo files use.
    pub fn to_nix32(&self) -> String {
        format!("sha256:{}", base32::encode(&self.0))
    }

    /// Bare lowercase hex: the form of Nix's registration format.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `sha256:<hex>`: the form Nix's SQLite database keeps.
    pub fn to_db(&self) -> String {
        format!("sha256:{}", self.to_hex())
    }

    /// Parses `sha256:` followed by nixbase32, hex or base64, or an SRI `sha256-<base64>`,
    /// or a bare hex or nixbase32 digest.
    pub fn parse(text: &str) -> Result<Self, ParseHashError> {
        let err = |why| ParseHashError {
            text: text.to_string(),
            why,
        };
        let (body, sri) = if let Some(rest) = text.strip_prefix("sha256:") {
            (rest, false)
        } else if let Some(rest) = text.strip_prefix("sha256-") {
            (rest, true)
        } else if text.contains(':') || text.contains('-') {
            return Err(err("only sha256 is supported"));
        } else {
            (text, false)
        };
        let bytes = if sri {
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|_| err("bad base64"))?
        } else {
            match body.len() {
                64 => decode_hex(body).ok_or_else(|| err("bad hex digit"))?,
                52 => base32::decode(body).map_err(|_| err("bad nixbase32"))?,
                44 => base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .map_err(|_| err("bad base64"))?,
                _ => return Err(err("wrong length")),
            }
        };
        let array: [u8; 32] = bytes.try_into().map_err(|_| err("wrong length"))?;
        Ok(Sha256Hash(array))
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl fmt::Display for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32())
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hash({})", self.to_nix32())
    }
}

/// A `Write` that hashes and counts every byte on its way to the inner writer.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the digest and the byte count.
    pub fn finish(self) -> (W, Sha256Hash, u64) {
        (
            self.inner,
            Sha256Hash(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A `Read` that hashes and counts every byte it hands out.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The inner reader, the digest and the byte count.
    pub fn finish(self) -> (R, Sha256Hash, u64) {
        (
            self.inner,
            Sha256Hash(self.hasher.finalize().into()),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_nix_writes() {
        let h = Sha256Hash::of(b"");
        for text in [
            h.to_nix32(),
            h.to_hex(),
            h.to_db(),
            format!(
                "sha256-{}",
                base64::engine::general_purpose::STANDARD.encode(h.0)
            ),
        ] {
            assert_eq!(Sha256Hash::parse(&text).unwrap(), h, "{text}");
        }
        assert!(Sha256Hash::parse("md5:abc").is_err());
        assert!(Sha256Hash::parse("sha256:abc").is_err());
    }

    #[test]
    fn adapters_hash_what_passes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (inner, hash, n) = w.finish();
        assert_eq!(
            (inner.as_slice(), hash, n),
            (&b"hello"[..], Sha256Hash::of(b"hello"), 5)
        );
        let mut r = HashingReader::new(&b"hello"[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        let (_, hash, n) = r.finish();
        assert_eq!((hash, n), (Sha256Hash::of(b"hello"), 5));
    }
}
