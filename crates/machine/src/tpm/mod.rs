//! The machine's TPM 2.0, spoken to directly (`wire` writes the commands) through the
//! kernel's resource manager (/dev/tpmrm0, else /dev/tpm0); no TPM library is needed in the
//! installer environment. Three uses:
//! - the inventory reads the endorsement key (EK, the TCG's default template) and the
//!   activation key (`wire::Primary::Activation`), which the TPM derives again on every call,
//!   so an enrolled machine's record says which TPM it has and how to seal to it;
//! - the installer gives back a credential sealed to that TPM at build (the `secrets`
//!   crate's MakeCredential) with TPM2_ActivateCredential: only that TPM can;
//! - the installer seals a LUKS key to PCR values it predicted (`seal`, `eventlog`) where
//!   systemd-cryptenroll could only seal to the values of this boot.
//!
//! Objects and sessions loaded are flushed when the [`Tpm`] is dropped: a TPM holds only a
//! few at once.

pub mod eventlog;
pub mod seal;
mod wire;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

pub use wire::Primary;

/// Whether the kernel sees a TPM 2.0 (its resource manager, or the device itself).
pub fn present() -> bool {
    ["/dev/tpmrm0", "/dev/tpm0"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

/// What an enrolment records of a TPM to seal secrets to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The EK's RSA 2048 modulus.
    pub ek_modulus: Vec<u8>,
    /// The activation key's name.
    pub activation_name: Vec<u8>,
}

impl Identity {
    pub fn ek_sha256(&self) -> String {
        modulus_sha256(&self.ek_modulus)
    }
}

fn modulus_sha256(modulus: &[u8]) -> String {
    format!("{:x}", Sha256::digest(modulus))
}

/// A TPM on a command channel: the device, or (in tests) swtpm's socket.
pub struct Tpm<T: Read + Write> {
    io: T,
    /// Handles of what this loaded, flushed on drop.
    loaded: Vec<u32>,
}

impl Tpm<File> {
    /// The machine's TPM.
    pub fn open() -> io::Result<Tpm<File>> {
        let open = |p: &str| OpenOptions::new().read(true).write(true).open(p);
        let io = open("/dev/tpmrm0")
            .or_else(|_| open("/dev/tpm0"))
            .map_err(|e| {
                io::Error::new(e.kind(), format!("opening /dev/tpmrm0 or /dev/tpm0: {e}"))
            })?;
        Ok(Tpm::new(io))
    }
}

impl<T: Read + Write> Tpm<T> {
    pub fn new(io: T) -> Tpm<T> {
        Tpm {
            io,
            loaded: Vec::new(),
        }
    }

    /// Sends `command`, returns the answer if its code is success, sending it again while the
    /// TPM answers that it could not start it yet (TPM_RC_RETRY, YIELDED, TESTING: a TPM
    /// busy with a key or a self test says so rather than wait).
    fn transact(&mut self, what: &str, command: &[u8]) -> io::Result<Vec<u8>> {
        const RETRY: [u32; 3] = [0x922, 0x908, 0x90A];
        for _ in 0..100 {
            match self.transact_once(what, command) {
                Err((Some(rc), _)) if RETRY.contains(&rc) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other.map_err(|(_, e)| e),
            }
        }
        Err(io::Error::other(format!(
            "the TPM kept answering that it cannot start {what} yet"
        )))
    }

    /// One exchange; an error with the TPM's code where it gave one. The device gives a
    /// whole answer in one read (and drops what a short read leaves); a socket may take
    /// several.
    fn transact_once(
        &mut self,
        what: &str,
        command: &[u8],
    ) -> Result<Vec<u8>, (Option<u32>, io::Error)> {
        let io = |e: io::Error| (None, e);
        self.io.write_all(command).map_err(io)?;
        let mut buf = vec![0u8; 4096];
        let mut n = self.io.read(&mut buf).map_err(io)?;
        while n >= 6 && n < buf.len() {
            let size = u32::from_be_bytes(buf[2..6].try_into().expect("4 bytes")) as usize;
            if n >= size {
                break;
            }
            match self.io.read(&mut buf[n..]).map_err(io)? {
                0 => break,
                more => n += more,
            }
        }
        buf.truncate(n);
        if n < 10 {
            return Err(io(io::Error::other(format!(
                "the TPM's answer to {what} is {n} bytes"
            ))));
        }
        let rc = u32::from_be_bytes(buf[6..10].try_into().expect("4 bytes"));
        if rc != 0 {
            return Err((
                Some(rc),
                io::Error::other(format!("the TPM refused {what} (code {rc:#x})")),
            ));
        }
        Ok(buf)
    }

    fn create_primary(&mut self, which: Primary) -> io::Result<wire::Created> {
        let what = match which {
            Primary::Ek => "creating the endorsement key",
            Primary::Activation => "creating the activation key",
            Primary::Storage => "creating the storage key (owner hierarchy: is its password set?)",
        };
        let answer = self.transact(what, &wire::create_primary(which))?;
        let created = wire::parse_create_primary(&answer)?;
        self.loaded.push(created.handle);
        Ok(created)
    }

    /// The EK and the activation key, as an enrolment records them.
    pub fn identity(&mut self) -> io::Result<Identity> {
        let ek = self.create_primary(Primary::Ek)?;
        let activation = self.create_primary(Primary::Activation)?;
        // A TPM holds three objects or so: what the next command needs must fit.
        self.flush_loaded();
        Ok(Identity {
            ek_modulus: wire::rsa_modulus(&ek.public)?.to_vec(),
            activation_name: activation.name,
        })
    }

    fn flush_loaded(&mut self) {
        for h in std::mem::take(&mut self.loaded) {
            // A session ended by its command is gone already: its flush fails, harmlessly.
            let _ = self.transact("flushing", &wire::flush(h));
        }
    }

    /// TPM2_ActivateCredential: the credential sealed to the TPM whose EK's modulus hashes to
    /// `ek_sha256` (`blob` and `secret` as `secrets::tpm::Credential` holds them). Fails,
    /// saying so, if this is another TPM. (The EK is made once: on a hardware TPM an RSA
    /// CreatePrimary can take seconds.)
    pub fn activate(&mut self, ek_sha256: &str, blob: &[u8], secret: &[u8]) -> io::Result<Vec<u8>> {
        let ek = self.create_primary(Primary::Ek)?;
        let mine = modulus_sha256(wire::rsa_modulus(&ek.public)?);
        if mine != ek_sha256 {
            return Err(io::Error::other(format!(
                "they are sealed to another machine's TPM (endorsement key sha256:{ek_sha256}), and this one's is sha256:{mine}: a host's secrets open only on the machine it enrolled"
            )));
        }
        let activation = self.create_primary(Primary::Activation)?;
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&std::process::id().to_be_bytes().repeat(2));
        let answer = self.transact(
            "starting a policy session",
            &wire::start_policy_session(&nonce),
        )?;
        let session = wire::parse_start_auth_session(&answer)?;
        self.loaded.push(session);
        self.transact(
            "the endorsement key's policy (PolicySecret)",
            &wire::policy_secret(session),
        )?;
        let answer = self.transact(
            "activating the credential (it was sealed to another TPM, or altered)",
            &wire::activate_credential(activation.handle, ek.handle, session, blob, secret),
        );
        // Room for the next command on a TPM that holds three objects or so.
        self.flush_loaded();
        wire::parse_activate_credential(&answer?)
    }
}

impl<T: Read + Write> Tpm<T> {
    /// PCR `index`'s value in the SHA-256 bank.
    pub fn pcr(&mut self, index: u8) -> io::Result<[u8; 32]> {
        let answer = self.transact(&format!("reading PCR {index}"), &wire::pcr_read(index))?;
        wire::parse_pcr_read(&answer)
    }

    /// Seals `secret` under the owner hierarchy's ECC primary to `policy` (from
    /// [`seal::policy_pcr`]): the `tpm2-blob` of a `systemd-tpm2` token.
    pub fn seal(&mut self, policy: &[u8; 32], secret: &[u8]) -> io::Result<Vec<u8>> {
        let parent = self.create_primary(Primary::Storage)?;
        let mut command = wire::create_sealed(parent.handle, policy, secret);
        let answer = self.transact("sealing the key", &command);
        command.fill(0);
        self.flush_loaded();
        wire::parse_create(&answer?)
    }
}

impl<T: Read + Write> Drop for Tpm<T> {
    fn drop(&mut self) {
        self.flush_loaded();
    }
}

/// Where the kernel gives the firmware's event log.
const EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// This boot's event log, securityfs mounted first if it is not (the installer
/// environment's init mounts only what it needs).
fn read_event_log() -> io::Result<Vec<u8>> {
    use nix::mount::{mount, MsFlags};
    let security = std::path::Path::new("/sys/kernel/security");
    if !security.join("tpm0").exists() {
        // Already mounted, or no securityfs: the read below says so.
        let _ = mount(
            Some("securityfs"),
            security,
            Some("securityfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        );
    }
    let mut log = Vec::new();
    File::open(EVENT_LOG)
        .and_then(|f| f.take(eventlog::MAX_LOG as u64 + 1).read_to_end(&mut log))
        .map_err(|e| {
            let why = match e.kind() {
                io::ErrorKind::NotFound => {
                    "the kernel was given none (GRUB, the stick's default boot loader, does not pass it on; a stick written with --boot-loader systemd-boot does)".to_string()
                }
                _ => e.to_string(),
            };
            io::Error::new(e.kind(), format!("reading the firmware's TPM event log ({EVENT_LOG}): {why}"))
        })?;
    Ok(log)
}

/// The PCR 7 the next boot will have once the fleet's `keys` are enrolled (see
/// [`eventlog::predict_pcr7`]), from this boot's event log, which must first replay to
/// the TPM's PCR 7 as it stands: a log that does not is not the firmware's account of this
/// boot, and predicts nothing.
pub fn next_boot_pcr7(keys: &eventlog::NewKeys) -> Result<[u8; 32], PredictError> {
    let log = read_event_log().map_err(|e| PredictError::Log(e.to_string()))?;
    let events = eventlog::parse(&log).map_err(PredictError::Log)?;
    let now = Tpm::open()
        .and_then(|mut tpm| tpm.pcr(7))
        .map_err(PredictError::Tpm)?;
    let replayed = eventlog::replay(&events, 7);
    if replayed != now {
        return Err(PredictError::Log(format!(
            "the firmware's event log does not account for PCR 7 (it replays to {}, the TPM holds {})",
            util::hex::encode(&replayed),
            util::hex::encode(&now)
        )));
    }
    eventlog::predict_pcr7(&events, keys).map_err(PredictError::Log)
}

/// Why the next boot's PCR 7 could not be predicted.
#[derive(Debug)]
pub enum PredictError {
    /// The event log is missing, malformed, or does not allow it.
    Log(String),
    /// The TPM could not be opened, or refused to be read.
    Tpm(io::Error),
}

impl std::fmt::Display for PredictError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            PredictError::Log(e) => f.write_str(e),
            PredictError::Tpm(e) => write!(f, "the TPM: {e}"),
        }
    }
}

/// The SHA-256 (hex) of the EK's RSA modulus.
pub fn ek_sha256() -> io::Result<String> {
    Ok(Tpm::open()?.identity()?.ek_sha256())
}
