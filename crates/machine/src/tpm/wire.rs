//! TPM 2.0 commands written and their answers read byte by byte (TPM 2.0 Part 3; structures
//! from Part 2), the few this installer needs: CreatePrimary in the endorsement hierarchy
//! (the EK, and the activation key), StartAuthSession and PolicySecret for the EK's policy,
//! ActivateCredential; CreatePrimary in the owner hierarchy, Create and PCR_Read to seal a
//! LUKS key as systemd does; FlushContext. Pure: bytes in, bytes out.

use std::io;

use sha2::{Digest, Sha256};

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_ST_SESSIONS: u16 = 0x8002;
const TPM_CC_CREATE_PRIMARY: u32 = 0x0000_0131;
const TPM_CC_CREATE: u32 = 0x0000_0153;
const TPM_CC_PCR_READ: u32 = 0x0000_017E;
pub(crate) const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
const TPM_CC_ACTIVATE_CREDENTIAL: u32 = 0x0000_0147;
const TPM_CC_POLICY_SECRET: u32 = 0x0000_0151;
const TPM_CC_FLUSH_CONTEXT: u32 = 0x0000_0165;
const TPM_CC_START_AUTH_SESSION: u32 = 0x0000_0176;
const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
const TPM_RH_OWNER: u32 = 0x4000_0001;
const TPM_RH_NULL: u32 = 0x4000_0007;
const TPM_RS_PW: u32 = 0x4000_0009;
const TPM_SE_POLICY: u8 = 0x01;
const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_SHA256: u16 = 0x000B;
const TPM_ALG_AES: u16 = 0x0006;
const TPM_ALG_CFB: u16 = 0x0043;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ALG_KEYEDHASH: u16 = 0x0008;
const TPM_ECC_NIST_P256: u16 = 0x0003;
/// fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt.
const EK_ATTRIBUTES: u32 = 0x0003_00B2;
/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | decrypt.
const ACTIVATION_ATTRIBUTES: u32 = 0x0003_0072;
/// fixedTPM | fixedParent: a sealed object that only its policy opens (no userWithAuth).
const SEALED_ATTRIBUTES: u32 = 0x0000_0012;
/// PolicySecret(TPM_RH_ENDORSEMENT): the EK template's authPolicy.
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
    0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
];

/// Frames a command: tag, size, command code, then `body`.
fn command(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + body.len());
    out.extend(tag.to_be_bytes());
    out.extend((10 + body.len() as u32).to_be_bytes());
    out.extend(code.to_be_bytes());
    out.extend(body);
    out
}

/// A TPM2B: a 16-bit size, then the bytes.
fn tpm2b(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u16).to_be_bytes());
    out.extend(bytes);
}

/// One session of an authorisation area: handle, empty nonce, no attributes (the session
/// ends with the command), empty HMAC or password.
fn session(handle: u32) -> Vec<u8> {
    let mut s = handle.to_be_bytes().to_vec();
    s.extend(0u16.to_be_bytes());
    s.push(0);
    s.extend(0u16.to_be_bytes());
    s
}

/// An authorisation area of `sessions`, with its size first.
fn auth_area(out: &mut Vec<u8>, sessions: &[Vec<u8>]) {
    let all: Vec<u8> = sessions.concat();
    out.extend((all.len() as u32).to_be_bytes());
    out.extend(all);
}

/// The public area of the TCG's default EK template (the EK Credential Profile's RSA 2048,
/// "L-1"): CreatePrimary gives the same key for it on every call.
fn ek_template() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(TPM_ALG_RSA.to_be_bytes());
    p.extend(TPM_ALG_SHA256.to_be_bytes());
    p.extend(EK_ATTRIBUTES.to_be_bytes());
    tpm2b(&mut p, &EK_POLICY);
    p.extend(TPM_ALG_AES.to_be_bytes()); // symmetric: AES-128-CFB
    p.extend(128u16.to_be_bytes());
    p.extend(TPM_ALG_CFB.to_be_bytes());
    p.extend(TPM_ALG_NULL.to_be_bytes()); // scheme
    p.extend(2048u16.to_be_bytes()); // keyBits
    p.extend(0u32.to_be_bytes()); // exponent: the default
    tpm2b(&mut p, &[0u8; 256]); // unique: 256 zero bytes
    p
}

/// An ECC P-256 restricted decryption key usable with an empty password (userWithAuth),
/// AES-128-CFB for its children. Two uses:
/// - in the endorsement hierarchy, the activation key: TPM2_ActivateCredential needs an
///   object besides the EK whose name the credential is bound to, and the EK itself does
///   not serve (its admin role asks for a policy it cannot meet twice); derived from the
///   endorsement seed, it is the same key, with the same name, on every call;
/// - in the owner hierarchy, the parent of a sealed LUKS key: systemd (252 and later, for
///   tokens without `tpm2_srk`) derives this very key to unseal a `systemd-tpm2` token
///   whose `tpm2-primary-alg` is "ecc".
fn ecc_primary_template() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend(TPM_ALG_ECC.to_be_bytes());
    p.extend(TPM_ALG_SHA256.to_be_bytes());
    p.extend(ACTIVATION_ATTRIBUTES.to_be_bytes());
    tpm2b(&mut p, &[]); // no policy
    p.extend(TPM_ALG_AES.to_be_bytes());
    p.extend(128u16.to_be_bytes());
    p.extend(TPM_ALG_CFB.to_be_bytes());
    p.extend(TPM_ALG_NULL.to_be_bytes()); // scheme
    p.extend(TPM_ECC_NIST_P256.to_be_bytes());
    p.extend(TPM_ALG_NULL.to_be_bytes()); // kdf
    tpm2b(&mut p, &[]); // unique.x
    tpm2b(&mut p, &[]); // unique.y
    p
}

/// Which primary key to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    /// The endorsement key.
    Ek,
    /// The activation key (endorsement hierarchy).
    Activation,
    /// The parent of sealed LUKS keys (owner hierarchy).
    Storage,
}

/// TPM2_CreatePrimary(the key's hierarchy, its template), with an empty password.
pub fn create_primary(which: Primary) -> Vec<u8> {
    let mut b = Vec::new();
    let hierarchy = match which {
        Primary::Ek | Primary::Activation => TPM_RH_ENDORSEMENT,
        Primary::Storage => TPM_RH_OWNER,
    };
    b.extend(hierarchy.to_be_bytes());
    auth_area(&mut b, &[session(TPM_RS_PW)]);
    // inSensitive: TPM2B_SENSITIVE_CREATE { userAuth: empty, data: empty }.
    b.extend(4u16.to_be_bytes());
    b.extend(0u16.to_be_bytes());
    b.extend(0u16.to_be_bytes());
    let public = match which {
        Primary::Ek => ek_template(),
        Primary::Activation | Primary::Storage => ecc_primary_template(),
    };
    tpm2b(&mut b, &public);
    b.extend(0u16.to_be_bytes()); // outsideInfo
    b.extend(0u32.to_be_bytes()); // creationPCR: no selections
    command(TPM_ST_SESSIONS, TPM_CC_CREATE_PRIMARY, &b)
}

/// TPM2_StartAuthSession: an unbound, unsalted policy session hashing with SHA-256.
pub fn start_policy_session(nonce: &[u8; 16]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(TPM_RH_NULL.to_be_bytes()); // tpmKey
    b.extend(TPM_RH_NULL.to_be_bytes()); // bind
    tpm2b(&mut b, nonce);
    tpm2b(&mut b, &[]); // encryptedSalt
    b.push(TPM_SE_POLICY);
    b.extend(TPM_ALG_NULL.to_be_bytes()); // symmetric: none
    b.extend(TPM_ALG_SHA256.to_be_bytes());
    command(TPM_ST_NO_SESSIONS, TPM_CC_START_AUTH_SESSION, &b)
}

/// TPM2_PolicySecret(TPM_RH_ENDORSEMENT, `session`): the EK's policy, the endorsement
/// hierarchy's password being empty.
pub fn policy_secret(session_handle: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(TPM_RH_ENDORSEMENT.to_be_bytes());
    b.extend(session_handle.to_be_bytes());
    auth_area(&mut b, &[session(TPM_RS_PW)]);
    tpm2b(&mut b, &[]); // nonceTPM
    tpm2b(&mut b, &[]); // cpHashA
    tpm2b(&mut b, &[]); // policyRef
    b.extend(0i32.to_be_bytes()); // expiration
    command(TPM_ST_SESSIONS, TPM_CC_POLICY_SECRET, &b)
}

/// TPM2_ActivateCredential: the activation key by password, the EK by `policy_session`.
pub fn activate_credential(
    activation: u32,
    ek: u32,
    policy_session: u32,
    blob: &[u8],
    secret: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(activation.to_be_bytes());
    b.extend(ek.to_be_bytes());
    auth_area(&mut b, &[session(TPM_RS_PW), session(policy_session)]);
    tpm2b(&mut b, blob);
    tpm2b(&mut b, secret);
    command(TPM_ST_SESSIONS, TPM_CC_ACTIVATE_CREDENTIAL, &b)
}

/// A TPML_PCR_SELECTION of `pcrs` in the SHA-256 bank (three bytes of bitmap: PCRs 0-23;
/// the manifest takes no others, and any past 23 are left out).
pub fn pcr_selection(pcrs: &[u8]) -> Vec<u8> {
    let mut map = [0u8; 3];
    for &p in pcrs.iter().filter(|&&p| p < 24) {
        map[usize::from(p / 8)] |= 1 << (p % 8);
    }
    let mut b = 1u32.to_be_bytes().to_vec();
    b.extend(TPM_ALG_SHA256.to_be_bytes());
    b.push(3);
    b.extend(map);
    b
}

/// TPM2_PCR_Read of one PCR (`index` < 24) in the SHA-256 bank.
pub fn pcr_read(index: u8) -> Vec<u8> {
    command(
        TPM_ST_NO_SESSIONS,
        TPM_CC_PCR_READ,
        &pcr_selection(&[index]),
    )
}

/// TPM2_Create under `parent` (by an empty password): a keyed-hash object sealing `secret`
/// that only a session meeting `policy` unseals.
pub fn create_sealed(parent: u32, policy: &[u8; 32], secret: &[u8]) -> Vec<u8> {
    // Sized once, so that no copy of the secret is left behind by a reallocation; the
    // caller wipes the command, this wipes its body.
    let mut b = Vec::with_capacity(128 + secret.len());
    b.extend(parent.to_be_bytes());
    auth_area(&mut b, &[session(TPM_RS_PW)]);
    // inSensitive: TPM2B_SENSITIVE_CREATE { userAuth: empty, data: the secret }.
    b.extend((4 + secret.len() as u16).to_be_bytes());
    b.extend(0u16.to_be_bytes());
    tpm2b(&mut b, secret);
    let mut p = Vec::new();
    p.extend(TPM_ALG_KEYEDHASH.to_be_bytes());
    p.extend(TPM_ALG_SHA256.to_be_bytes());
    p.extend(SEALED_ATTRIBUTES.to_be_bytes());
    tpm2b(&mut p, policy);
    p.extend(TPM_ALG_NULL.to_be_bytes()); // scheme
    tpm2b(&mut p, &[0u8; 32]); // unique: the TPM fills it
    tpm2b(&mut b, &p);
    b.extend(0u16.to_be_bytes()); // outsideInfo
    b.extend(0u32.to_be_bytes()); // creationPCR: no selections
    let c = command(TPM_ST_SESSIONS, TPM_CC_CREATE, &b);
    b.fill(0);
    c
}

pub fn flush(handle: u32) -> Vec<u8> {
    command(
        TPM_ST_NO_SESSIONS,
        TPM_CC_FLUSH_CONTEXT,
        &handle.to_be_bytes(),
    )
}

/// Reads an answer: its header checked, then what follows it.
struct Answer<'a> {
    a: &'a [u8],
    at: usize,
}

fn bad(what: &str) -> io::Error {
    io::Error::other(format!("a malformed TPM answer: {what}"))
}

impl<'a> Answer<'a> {
    fn new(a: &'a [u8]) -> Answer<'a> {
        Answer { a, at: 10 }
    }
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let b = self
            .a
            .get(self.at..self.at + n)
            .ok_or_else(|| bad("too short"))?;
        self.at += n;
        Ok(b)
    }
    fn u16(&mut self) -> io::Result<u16> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn tpm2b(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
}

/// What CreatePrimary made: its handle, its public area, and its name (TPM_ALG_SHA256 and
/// the SHA-256 of the public area).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub handle: u32,
    pub public: Vec<u8>,
    pub name: Vec<u8>,
}

/// The new object from CreatePrimary's answer.
pub fn parse_create_primary(a: &[u8]) -> io::Result<Created> {
    let mut r = Answer::new(a);
    let handle = r.u32()?;
    r.u32()?; // parameterSize
    let public = r.tpm2b()?.to_vec();
    let mut name = TPM_ALG_SHA256.to_be_bytes().to_vec();
    name.extend(Sha256::digest(&public));
    Ok(Created {
        handle,
        public,
        name,
    })
}

/// The RSA modulus of an EK's public area.
pub fn rsa_modulus(public: &[u8]) -> io::Result<&[u8]> {
    let mut r = Answer { a: public, at: 0 };
    if r.u16()? != TPM_ALG_RSA {
        return Err(bad("not an RSA key"));
    }
    r.take(2 + 4)?; // nameAlg, attributes
    r.tpm2b()?; // authPolicy
    r.take(6 + 2 + 2 + 4)?; // symmetric, scheme, keyBits, exponent
    let modulus = r.tpm2b()?;
    if modulus.is_empty() {
        return Err(bad("an empty modulus"));
    }
    Ok(modulus)
}

/// The PCR's value from PCR_Read's answer (one PCR, SHA-256).
pub fn parse_pcr_read(a: &[u8]) -> io::Result<[u8; 32]> {
    let mut r = Answer::new(a);
    r.u32()?; // pcrUpdateCounter
    let selections = r.u32()?;
    for _ in 0..selections {
        r.take(2)?;
        let n = r.take(1)?[0] as usize;
        r.take(n)?;
    }
    if r.u32()? != 1 {
        return Err(bad("PCR_Read gave no value (is the SHA-256 bank active?)"));
    }
    r.tpm2b()?
        .try_into()
        .map_err(|_| bad("a PCR value that is not 32 bytes"))
}

/// The sealed object from Create's answer: its TPM2B_PRIVATE and TPM2B_PUBLIC, each with
/// its size, one after the other (what a `systemd-tpm2` token's `tpm2-blob` holds).
pub fn parse_create(a: &[u8]) -> io::Result<Vec<u8>> {
    let mut r = Answer::new(a);
    r.u32()?; // parameterSize
    let private = r.tpm2b()?;
    let public = r.tpm2b()?;
    let mut blob = Vec::with_capacity(4 + private.len() + public.len());
    tpm2b(&mut blob, private);
    tpm2b(&mut blob, public);
    Ok(blob)
}

/// The session handle from StartAuthSession's answer.
pub fn parse_start_auth_session(a: &[u8]) -> io::Result<u32> {
    Answer::new(a).u32()
}

/// The credential from ActivateCredential's answer.
pub fn parse_activate_credential(a: &[u8]) -> io::Result<Vec<u8>> {
    let mut r = Answer::new(a);
    r.u32()?; // parameterSize
    Ok(r.tpm2b()?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ek_command_is_framed_as_part_3_says() {
        let c = create_primary(Primary::Ek);
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
    fn activate_credential_carries_two_sessions_and_both_parts() {
        let c = activate_credential(0x8000_0001, 0x8000_0000, 0x0300_0000, &[1; 68], &[2; 256]);
        assert_eq!(&c[6..10], &[0, 0, 0x01, 0x47]);
        assert_eq!(&c[18..22], &[0, 0, 0, 18], "two sessions of 9 bytes");
        assert_eq!(&c[22..26], &[0x40, 0, 0, 9]);
        assert_eq!(&c[31..35], &[0x03, 0, 0, 0]);
        assert_eq!(c.len(), 40 + 2 + 68 + 2 + 256);
    }

    #[test]
    fn reads_the_modulus_and_name_from_an_answer_and_refuses_a_short_one() {
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
        a.extend(&public);
        let c = parse_create_primary(&a).unwrap();
        assert_eq!(c.handle, 0x8000_0000);
        assert_eq!(rsa_modulus(&c.public).unwrap(), &[1u8, 2, 3, 4][..]);
        assert_eq!(c.name[..2], [0, 0x0B]);
        assert_eq!(c.name[2..], Sha256::digest(&public)[..]);
        assert!(parse_create_primary(&a[..a.len() - 2]).is_err());
        assert!(parse_create_primary(&a[..12]).is_err());
        assert!(rsa_modulus(&ecc_primary_template()).is_err());
    }
}
