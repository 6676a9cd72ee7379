//! The firmware's TCG event log (the TCG PC Client Platform Firmware Profile's crypto-agile
//! format, as the kernel gives it in /sys/kernel/security/tpm0/binary_bios_measurements),
//! and the PCR 7 the next boot will have once the installer has written the fleet's Secure
//! Boot keys: the log of this boot replayed with the new PK, KEK and db in place of the
//! variables measured now, Secure Boot on, and the db certificate that verifies the
//! installed boot loader measured after the separator, as the firmware does.
//!
//! Pure: bytes in, digests out. The replay of the log as it stands must give the TPM's
//! PCR 7 before a prediction is trusted (the caller checks).

use sha2::{Digest, Sha256};

const EV_NO_ACTION: u32 = 0x3;
const EV_SEPARATOR: u32 = 0x4;
const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;
const TPM_ALG_SHA256: u16 = 0x000B;

/// EFI_GLOBAL_VARIABLE (8be4df61-93ca-11d2-aa0d-00e098032b8c), in its byte order.
pub const GLOBAL_VARIABLE: [u8; 16] = [
    0x61, 0xdf, 0xe4, 0x8b, 0xca, 0x93, 0xd2, 0x11, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
];
/// EFI_IMAGE_SECURITY_DATABASE_GUID (d719b2cb-3d3a-4596-a3bc-dad00e67656f).
pub const IMAGE_SECURITY_DATABASE: [u8; 16] = [
    0xcb, 0xb2, 0x19, 0xd7, 0x3a, 0x3d, 0x96, 0x45, 0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f,
];
/// EFI_CERT_X509_GUID (a5c059a1-94e4-4aa7-87b5-ab155c2bf072).
const CERT_X509: [u8; 16] = [
    0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72,
];

/// A log larger than this is refused: a firmware's is tens of KiB.
pub const MAX_LOG: usize = 4 << 20;

/// One measurement: the PCR, the event type, its SHA-256 digest as extended, and the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub pcr: u32,
    pub kind: u32,
    pub sha256: [u8; 32],
    pub data: Vec<u8>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "the event log ends inside an event (at byte {} of {}, {n} more wanted)",
                self.at,
                self.bytes.len()
            ));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
}

/// The events of a crypto-agile log, each with its SHA-256 digest. A log in the old SHA-1
/// only format, or without a SHA-256 bank, is refused: PCR 7 is read in the SHA-256 bank.
pub fn parse(log: &[u8]) -> Result<Vec<Event>, String> {
    if log.len() > MAX_LOG {
        return Err(format!(
            "the event log is {} bytes, more than the {MAX_LOG} a firmware writes",
            log.len()
        ));
    }
    let mut r = Reader { bytes: log, at: 0 };
    // The first event, in the SHA-1 format: its data is the Spec ID event, which lists the
    // banks and their digest sizes.
    let (pcr, kind) = (r.u32()?, r.u32()?);
    r.take(20)?;
    let size = r.u32()? as usize;
    let spec = r.take(size)?;
    if pcr != 0 || kind != EV_NO_ACTION || !spec.starts_with(b"Spec ID Event03\0") {
        return Err(
            "the event log does not start with a Spec ID Event03 (not a crypto-agile log: a TPM 1.2, or an old firmware)"
                .into(),
        );
    }
    let mut s = Reader {
        bytes: &spec[16..],
        at: 0,
    };
    s.take(4 + 4)?; // platform class, versions, uintn size
    let banks = s.u32()?;
    if banks == 0 || banks > 16 {
        return Err(format!("the event log names {banks} digest banks"));
    }
    let mut sizes: Vec<(u16, usize)> = Vec::new();
    for _ in 0..banks {
        let (alg, n) = (s.u16()?, s.u16()? as usize);
        if sizes.iter().any(|&(a, _)| a == alg) {
            return Err(format!("the event log names bank {alg:#x} twice"));
        }
        if alg == TPM_ALG_SHA256 && n != 32 {
            return Err(format!(
                "the event log's SHA-256 digests are {n} bytes, not 32"
            ));
        }
        sizes.push((alg, n));
    }
    if !sizes.iter().any(|&(alg, _)| alg == TPM_ALG_SHA256) {
        return Err("the event log has no SHA-256 bank".into());
    }
    let mut events = Vec::new();
    while r.at < log.len() {
        let (pcr, kind) = (r.u32()?, r.u32()?);
        let count = r.u32()?;
        if count as usize != sizes.len() {
            return Err(format!(
                "an event of the log has {count} digests, and the log names {} banks",
                sizes.len()
            ));
        }
        let mut sha256 = None;
        for _ in 0..count {
            let alg = r.u16()?;
            let Some(&(_, n)) = sizes.iter().find(|(a, _)| *a == alg) else {
                return Err(format!(
                    "an event of the log has a digest of bank {alg:#x}, not named at its start"
                ));
            };
            let d = r.take(n)?;
            if alg == TPM_ALG_SHA256 {
                sha256 =
                    Some(<[u8; 32]>::try_from(d).map_err(|_| "a SHA-256 digest of another size")?);
            }
        }
        let size = r.u32()? as usize;
        let data = r.take(size)?.to_vec();
        let Some(sha256) = sha256 else {
            return Err("an event of the log has no SHA-256 digest".into());
        };
        events.push(Event {
            pcr,
            kind,
            sha256,
            data,
        });
    }
    Ok(events)
}

/// TPM2_PCR_Extend's arithmetic in the SHA-256 bank.
pub fn extend(pcr: &mut [u8; 32], digest: &[u8; 32]) {
    let mut h = Sha256::new();
    h.update(*pcr);
    h.update(digest);
    *pcr = h.finalize().into();
}

/// PCR `index` as the events measured into it make it (EV_NO_ACTION events are logged,
/// never extended).
pub fn replay(events: &[Event], index: u32) -> [u8; 32] {
    let mut pcr = [0u8; 32];
    for e in events
        .iter()
        .filter(|e| e.pcr == index && e.kind != EV_NO_ACTION)
    {
        extend(&mut pcr, &e.sha256);
    }
    pcr
}

/// A UEFI_VARIABLE_DATA: the variable's GUID, the lengths of its name (in UTF-16 units) and
/// data, the name in UTF-16LE, the data. What the firmware measures for a variable.
pub fn variable_data(guid: &[u8; 16], name: &str, data: &[u8]) -> Vec<u8> {
    let name: Vec<u16> = name.encode_utf16().collect();
    let mut out = guid.to_vec();
    out.extend((name.len() as u64).to_le_bytes());
    out.extend((data.len() as u64).to_le_bytes());
    for c in name {
        out.extend(c.to_le_bytes());
    }
    out.extend(data);
    out
}

/// The GUID and name of the variable a UEFI_VARIABLE_DATA measures.
fn variable_of(data: &[u8]) -> Option<([u8; 16], String)> {
    let len = u64::from_le_bytes(data.get(16..24)?.try_into().ok()?) as usize;
    let units: Vec<u16> = data
        .get(32..32usize.checked_add(len.checked_mul(2)?)?)?
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some((
        data[..16].try_into().ok()?,
        String::from_utf16(&units).ok()?,
    ))
}

/// The fleet's keys as the variables will hold them (the signature lists, without the
/// .auth files' signing header: `media::efi_auth::signature_list`).
pub struct NewKeys<'a> {
    pub pk: &'a [u8],
    pub kek: &'a [u8],
    pub db: &'a [u8],
}

/// The EFI_SIGNATURE_DATA (owner GUID and certificate) of db's one X.509 certificate: what
/// the firmware measures as the authority that verified a boot file. A db of several
/// entries is refused: which of them signs the installed boot loader cannot be told here.
pub fn db_authority(db: &[u8]) -> Result<Vec<u8>, String> {
    let mut found = Vec::new();
    let mut rest = db;
    while !rest.is_empty() {
        let h = |at: usize| {
            rest.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize)
                .ok_or("db ends inside a signature list's header")
        };
        let (list, header, each) = (h(16)?, h(20)?, h(24)?);
        let body = 28usize
            .checked_add(header)
            .filter(|&b| list <= rest.len() && b <= list && each >= 16)
            .ok_or("db holds a signature list whose sizes do not fit")?;
        if (list - body) % each != 0 {
            return Err("db holds a signature list whose entries do not fill it".into());
        }
        if rest[..16] == CERT_X509 {
            found.extend(rest[body..list].chunks(each).map(<[u8]>::to_vec));
        } else if list > body {
            found.push(Vec::new()); // a hash entry: verifies only its own file
        }
        rest = &rest[list..];
    }
    match found.as_slice() {
        [one] if !one.is_empty() => Ok(one.clone()),
        _ => Err(format!(
            "the fleet's db holds {} entries, not one X.509 certificate: which of them verifies the host's boot loader cannot be told",
            found.len()
        )),
    }
}

/// PCR 7 of the next boot, from this boot's `events`: each EV_EFI_VARIABLE_DRIVER_CONFIG of
/// SecureBoot, PK, KEK or db measured again with the value it will have (Secure Boot on,
/// the fleet's keys), every other event up to the separator as it was, and after the
/// separator the one authority event of the db certificate that verifies the boot files.
/// Fails if this boot's log has no separator in PCR 7, does not measure each of the four
/// variables exactly once before it, or measures one of them otherwise than as the SHA-256
/// of its UEFI_VARIABLE_DATA (the new value's digest would then be computed wrong).
pub fn predict_pcr7(events: &[Event], keys: &NewKeys) -> Result<[u8; 32], String> {
    let authority = db_authority(keys.db)?;
    let mut pcr = [0u8; 32];
    let mut replaced: Vec<String> = Vec::new();
    let mut separator = false;
    for e in events
        .iter()
        .filter(|e| e.pcr == 7 && e.kind != EV_NO_ACTION)
    {
        match e.kind {
            EV_EFI_VARIABLE_DRIVER_CONFIG => {
                let Some((guid, name)) = variable_of(&e.data) else {
                    return Err("PCR 7 holds a variable measurement that cannot be read".into());
                };
                let new: Option<&[u8]> = match (guid, name.as_str()) {
                    (GLOBAL_VARIABLE, "SecureBoot") => Some(&[1]),
                    (GLOBAL_VARIABLE, "PK") => Some(keys.pk),
                    (GLOBAL_VARIABLE, "KEK") => Some(keys.kek),
                    (IMAGE_SECURITY_DATABASE, "db") => Some(keys.db),
                    _ => None,
                };
                match new {
                    Some(data) => {
                        if replaced.contains(&name) {
                            return Err(format!("PCR 7 measures variable {name} twice"));
                        }
                        if <[u8; 32]>::from(Sha256::digest(&e.data)) != e.sha256 {
                            return Err(format!(
                                "this firmware measures variable {name} other than as the digest of its UEFI_VARIABLE_DATA"
                            ));
                        }
                        replaced.push(name.clone());
                        let m = variable_data(&guid, &name, data);
                        extend(&mut pcr, &Sha256::digest(m).into());
                    }
                    None => extend(&mut pcr, &e.sha256),
                }
            }
            EV_SEPARATOR => {
                extend(&mut pcr, &e.sha256);
                separator = true;
                break;
            }
            // Before the separator, the firmware's own (the same next time); the authority
            // events of this boot (Secure Boot off: none) are not carried over.
            EV_EFI_VARIABLE_AUTHORITY => {}
            _ => extend(&mut pcr, &e.sha256),
        }
    }
    if !separator {
        return Err("this boot's event log has no separator in PCR 7".into());
    }
    if replaced.len() != 4 {
        return Err(format!(
            "this boot's event log measured {} of SecureBoot, PK, KEK and db into PCR 7, not all four",
            replaced.len()
        ));
    }
    let m = variable_data(&IMAGE_SECURITY_DATABASE, "db", &authority);
    extend(&mut pcr, &Sha256::digest(m).into());
    Ok(pcr)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crypto-agile log of `events` (pcr, type, data) with SHA-1 and SHA-256 banks, each
    /// event's digest the hash of its data, as firmware logs variables.
    fn log(events: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend([0, 0, 0, 0, 0, 2, 0, 2]); // class, minor, major, errata, uintn
        spec.extend(2u32.to_le_bytes());
        spec.extend(0x0004u16.to_le_bytes());
        spec.extend(20u16.to_le_bytes());
        spec.extend(TPM_ALG_SHA256.to_le_bytes());
        spec.extend(32u16.to_le_bytes());
        spec.push(0);
        let mut out = Vec::new();
        out.extend(0u32.to_le_bytes());
        out.extend(EV_NO_ACTION.to_le_bytes());
        out.extend([0u8; 20]);
        out.extend((spec.len() as u32).to_le_bytes());
        out.extend(spec);
        for (pcr, kind, data) in events {
            out.extend(pcr.to_le_bytes());
            out.extend(kind.to_le_bytes());
            out.extend(2u32.to_le_bytes());
            out.extend(0x0004u16.to_le_bytes());
            out.extend(sha1_stand_in(data));
            out.extend(TPM_ALG_SHA256.to_le_bytes());
            out.extend(Sha256::digest(data));
            out.extend((data.len() as u32).to_le_bytes());
            out.extend(data);
        }
        out
    }

    /// The SHA-1 bank is skipped by the parser: any 20 bytes do.
    fn sha1_stand_in(data: &[u8]) -> [u8; 20] {
        Sha256::digest(data)[..20].try_into().unwrap()
    }

    fn var(guid: &[u8; 16], name: &str, data: &[u8]) -> (u32, u32, Vec<u8>) {
        (
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            variable_data(guid, name, data),
        )
    }

    fn esl_x509(owner: [u8; 16], certs: &[&[u8]]) -> Vec<u8> {
        let each = 16 + certs[0].len();
        let mut out = CERT_X509.to_vec();
        out.extend(((28 + each * certs.len()) as u32).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((each as u32).to_le_bytes());
        for c in certs {
            out.extend(owner);
            out.extend(*c);
        }
        out
    }

    /// A setup-mode boot as OVMF logs it: the five variables (PK, KEK, db empty, Secure
    /// Boot off), a separator in every PCR, then the boot loader's own measurements.
    fn setup_mode_log() -> Vec<u8> {
        log(&[
            (0, 0x8, b"firmware".to_vec()),
            var(&GLOBAL_VARIABLE, "SecureBoot", &[0]),
            var(&GLOBAL_VARIABLE, "PK", &[]),
            var(&GLOBAL_VARIABLE, "KEK", &[]),
            var(&IMAGE_SECURITY_DATABASE, "db", &[]),
            var(&IMAGE_SECURITY_DATABASE, "dbx", b"dbx as shipped"),
            (0, EV_SEPARATOR, vec![0; 4]),
            (7, EV_SEPARATOR, vec![0; 4]),
            (4, 0x8000_0003, b"BOOTX64.EFI".to_vec()),
        ])
    }

    #[test]
    fn a_log_replays_to_its_pcrs_and_bad_logs_are_refused() {
        let events = parse(&setup_mode_log()).unwrap();
        assert_eq!(events.len(), 9);
        let mut pcr0 = [0u8; 32];
        extend(&mut pcr0, &Sha256::digest(b"firmware").into());
        extend(&mut pcr0, &Sha256::digest([0u8; 4]).into());
        assert_eq!(replay(&events, 0), pcr0);

        let whole = setup_mode_log();
        for cut in [3, 40, whole.len() - 1] {
            assert!(parse(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let mut old = whole.clone();
        old[32] = b'X'; // "Spec ID Event03" no more
        assert!(parse(&old).unwrap_err().contains("Spec ID Event03"));
        // An event size that points past the end is an error, never a read out of bounds.
        // SHA-256 named twice, or with another size (in place of SHA-1, the first bank):
        // refused, never a panic.
        let mut twice = whole.clone();
        twice[60..64].copy_from_slice(&[0x0B, 0, 32, 0]);
        assert!(parse(&twice).unwrap_err().contains("twice"));
        twice[60..64].copy_from_slice(&[0x0B, 0, 48, 0]);
        assert!(parse(&twice).unwrap_err().contains("48 bytes"));
        let mut huge = whole.clone();
        let n = huge.len();
        huge[n - 11 - 4..n - 11].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge).is_err());
    }

    #[test]
    fn the_next_boots_pcr_7_measures_the_new_keys_and_the_db_certificate() {
        let events = parse(&setup_mode_log()).unwrap();
        let owner = [7u8; 16];
        let (pk, kek) = (
            esl_x509(owner, &[b"pk cert"]),
            esl_x509(owner, &[b"kek cert"]),
        );
        let db = esl_x509(owner, &[b"db cert"]);
        let keys = NewKeys {
            pk: &pk,
            kek: &kek,
            db: &db,
        };
        // What a firmware under the fleet's keys measures, written out in full.
        let mut want = [0u8; 32];
        for m in [
            variable_data(&GLOBAL_VARIABLE, "SecureBoot", &[1]),
            variable_data(&GLOBAL_VARIABLE, "PK", &pk),
            variable_data(&GLOBAL_VARIABLE, "KEK", &kek),
            variable_data(&IMAGE_SECURITY_DATABASE, "db", &db),
            variable_data(&IMAGE_SECURITY_DATABASE, "dbx", b"dbx as shipped"),
            vec![0; 4],
            variable_data(
                &IMAGE_SECURITY_DATABASE,
                "db",
                &[&owner[..], b"db cert"].concat(),
            ),
        ] {
            extend(&mut want, &Sha256::digest(m).into());
        }
        assert_eq!(predict_pcr7(&events, &keys).unwrap(), want);
        assert_ne!(want, replay(&events, 7));

        // A db of two certificates: which one signs cannot be told.
        let two = esl_x509(owner, &[b"db cert", b"db cer2"]);
        let e = predict_pcr7(&events, &NewKeys { db: &two, ..keys }).unwrap_err();
        assert!(e.contains("2 entries"), "{e}");
        // A variable measured twice, or not as the digest of its UEFI_VARIABLE_DATA.
        let twice = parse(&log(&[
            var(&GLOBAL_VARIABLE, "SecureBoot", &[0]),
            var(&GLOBAL_VARIABLE, "SecureBoot", &[0]),
            (7, EV_SEPARATOR, vec![0; 4]),
        ]))
        .unwrap();
        assert!(predict_pcr7(&twice, &keys).unwrap_err().contains("twice"));
        let mut other = parse(&setup_mode_log()).unwrap();
        other[1].sha256 = Sha256::digest([0u8]).into();
        assert!(predict_pcr7(&other, &keys)
            .unwrap_err()
            .contains("other than"));
        // A log without the variables (a firmware that measures none) predicts nothing.
        let bare = parse(&log(&[(7, EV_SEPARATOR, vec![0; 4])])).unwrap();
        assert!(predict_pcr7(&bare, &keys).unwrap_err().contains("0 of"));
    }
}
