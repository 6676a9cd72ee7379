//! The TPM 2.0's endorsement key, for the inventory: TPM2_CreatePrimary in the endorsement
//! hierarchy with the TCG's default EK template (the EK Credential Profile's RSA 2048
//! template, "L-1"), which gives the same key on every call, then TPM2_FlushContext. The
//! commands are written and their answers read here, byte by byte (TPM 2.0 Part 3), through
//! the kernel's resource manager (/dev/tpmrm0, else /dev/tpm0); no TPM library is needed in
//! the installer environment. The key is only read, never used.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_ST_SESSIONS: u16 = 0x8002;
const TPM_CC_CREATE_PRIMARY: u32 = 0x0000_0131;
const TPM_CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
const TPM_RS_PW: u32 = 0x4000_0009;
const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_AES: u16 = 0x0006;
const TPM_ALG_CFB: u16 = 0x0043;
const TPM_ALG_NULL: u16 = 0x0010;
/// fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt.
const EK_ATTRIBUTES: u32 = 0x0003_00B2;
/// PolicySecret(TPM_RH_ENDORSEMENT): the EK template's authPolicy.
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// Whether the kernel sees a TPM 2.0 (its resource manager, or the device itself).
pub fn present() -> bool {
    ["/dev/tpmrm0", "/dev/tpm0"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

/// The SHA-256 (hex) of the EK's RSA modulus.
pub fn ek_sha256() -> io::Result<String> {
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tpmrm0")
        .or_else(|_| OpenOptions::new().read(true).write(true).open("/dev/tpm0"))
        .map_err(|e| io::Error::new(e.kind(), format!("opening /dev/tpmrm0 or /dev/tpm0: {e}")))?;
    let answer = transact(&mut dev, &create_primary_ek())?;
    let (handle, modulus) = parse_create_primary(&answer)?;
    // The key stays in the TPM's memory until flushed; a full TPM refuses the next one.
    let _ = transact(&mut dev, &flush(handle));
    Ok(format!("{:x}", Sha256::digest(modulus)))
}

fn transact(dev: &mut std::fs::File, command: &[u8]) -> io::Result<Vec<u8>> {
    dev.write_all(command)?;
    let mut buf = vec![0u8; 4096];
    let n = dev.read(&mut buf)?;
    buf.truncate(n);
    if n < 10 {
        return Err(io::Error::other(format!("a TPM answer of {n} bytes")));
    }
    let rc = u32::from_be_bytes(buf[6..10].try_into().expect("4 bytes"));
    if rc != 0 {
        return Err(io::Error::other(format!(
            "the TPM answered with code {rc:#x}"
        )));
    }
    Ok(buf)
}

/// Frames a command: tag, size, command code, then `body`.
fn command(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + body.len());
    out.extend(tag.to_be_bytes());
    out.extend((10 + body.len() as u32).to_be_bytes());
    out.extend(code.to_be_bytes());
    out.extend(body);
    out
}

/// TPM2_CreatePrimary(TPM_RH_ENDORSEMENT, the default EK template), with an empty password.
pub fn create_primary_ek() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(TPM_RH_ENDORSEMENT.to_be_bytes());
    // The authorisation area: one password session, empty.
    let mut auth = Vec::new();
    auth.extend(TPM_RS_PW.to_be_bytes());
    auth.extend(0u16.to_be_bytes()); // nonce
    auth.push(0); // session attributes
    auth.extend(0u16.to_be_bytes()); // hmac (the password)
    b.extend((auth.len() as u32).to_be_bytes());
    b.extend(auth);
    // inSensitive: TPM2B_SENSITIVE_CREATE { userAuth: empty, data: empty }.
    b.extend(4u16.to_be_bytes());
    b.extend(0u16.to_be_bytes());
    b.extend(0u16.to_be_bytes());
    // inPublic: TPM2B_PUBLIC of the EK template.
    let mut public = Vec::new();
    public.extend(TPM_ALG_RSA.to_be_bytes());
    public.extend(TPM_ALG_SHA256.to_be_bytes());
    public.extend(EK_ATTRIBUTES.to_be_bytes());
    public.extend((EK_POLICY.len() as u16).to_be_bytes());
    public.extend(EK_POLICY);
    public.extend(TPM_ALG_AES.to_be_bytes()); // symmetric: AES-128-CFB
    public.extend(128u16.to_be_bytes());
    public.extend(TPM_ALG_CFB.to_be_bytes());
    public.extend(TPM_ALG_NULL.to_be_bytes()); // scheme
    public.extend(2048u16.to_be_bytes()); // keyBits
    public.extend(0u32.to_be_bytes()); // exponent: the default
    public.extend(256u16.to_be_bytes()); // unique: 256 zero bytes
    public.extend([0u8; 256]);
    b.extend((public.len() as u16).to_be_bytes());
    b.extend(public);
    b.extend(0u16.to_be_bytes()); // outsideInfo
    b.extend(0u32.to_be_bytes()); // creationPCR: no selections
    command(TPM_ST_SESSIONS, TPM_CC_CREATE_PRIMARY, &b)
}

fn flush(handle: u32) -> Vec<u8> {
    command(
        TPM_ST_NO_SESSIONS,
        TPM_CC_FLUSH_CONTEXT,
        &handle.to_be_bytes(),
    )
}

/// The new object's handle and its RSA modulus, from CreatePrimary's answer.
pub fn parse_create_primary(a: &[u8]) -> io::Result<(u32, &[u8])> {
    let bad = |what: &str| io::Error::other(format!("a malformed TPM answer: {what}"));
    let u16_at = |at: usize| {
        a.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .ok_or_else(|| bad("too short"))
    };
    let handle = a
        .get(10..14)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| bad("no handle"))?;
    // parameterSize (4), then outPublic: size (2), type, nameAlg, attributes, authPolicy.
    let mut at = 14 + 4 + 2;
    if u16_at(at)? != TPM_ALG_RSA as usize {
        return Err(bad("not an RSA key"));
    }
    at += 2 + 2 + 4;
    at += 2 + u16_at(at)?; // authPolicy
    at += 6 + 2 + 2 + 4; // symmetric, scheme, keyBits, exponent
    let n = u16_at(at)?;
    let modulus = a
        .get(at + 2..at + 2 + n)
        .ok_or_else(|| bad("a short modulus"))?;
    if n == 0 {
        return Err(bad("an empty modulus"));
    }
    Ok((handle, modulus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ek_command_is_framed_as_part_3_says() {
        let c = create_primary_ek();
        assert_eq!(&c[0..2], &[0x80, 0x02]);
        assert_eq!(
            u32::from_be_bytes(c[2..6].try_into().unwrap()) as usize,
            c.len()
        );
        assert_eq!(&c[6..10], &[0, 0, 0x01, 0x31]);
        assert_eq!(&c[10..14], &[0x40, 0, 0, 0x0B]);
        assert_eq!(&c[14..18], &[0, 0, 0, 9], "one empty password session");
        // inPublic's size: 2+2+4 + 2+32 + 6+2+2+4 + 2+256.
        let public_at = 18 + 9 + 6;
        assert_eq!(u16::from_be_bytes([c[public_at], c[public_at + 1]]), 314);
        assert_eq!(c.len(), public_at + 2 + 314 + 2 + 4);
    }

    #[test]
    fn reads_the_modulus_from_an_answer_and_refuses_a_short_one() {
        // An answer shaped as a TPM gives it: header, handle, parameterSize, outPublic.
        let mut a = vec![0x80, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
        a.extend(0x8000_0000u32.to_be_bytes());
        a.extend(0u32.to_be_bytes());
        let mut public = Vec::new();
        public.extend(TPM_ALG_RSA.to_be_bytes());
        public.extend(TPM_ALG_SHA256.to_be_bytes());
        public.extend(EK_ATTRIBUTES.to_be_bytes());
        public.extend(32u16.to_be_bytes());
        public.extend(EK_POLICY);
        public.extend([0, 6, 0, 128, 0, 0x43, 0, 0x10, 8, 0, 0, 0, 0, 0]);
        public.extend(4u16.to_be_bytes());
        public.extend([1, 2, 3, 4]);
        a.extend((public.len() as u16).to_be_bytes());
        a.extend(public);
        let (h, m) = parse_create_primary(&a).unwrap();
        assert_eq!((h, m), (0x8000_0000, &[1u8, 2, 3, 4][..]));
        assert!(parse_create_primary(&a[..a.len() - 2]).is_err());
        assert!(parse_create_primary(&a[..12]).is_err());
    }
}
