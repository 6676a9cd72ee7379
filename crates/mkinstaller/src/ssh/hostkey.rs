//! The installer's SSH host key for one `mkinstaller --ssh` run, made here so that the admin
//! knows it before the installer is up: it travels to the running system inside the
//! installer's initrd (over the SSH connection the admin already trusts), dropbear in the
//! installer serves it, and ssh checks the installer against it and nothing else. Without
//! it, the admin would follow whatever answered on that address after the reboot.

use base64::Engine;
use ed25519_dalek::SigningKey;
use media::fat32::{Source, Tree};

/// Where the installer environment's dropbear reads its ed25519 host key
/// (images/debian/sbin/autoinstall-remote-access makes one only if none is there).
pub const DROPBEAR_KEY: &str = "etc/dropbear/dropbear_ed25519_host_key";

const KIND: &[u8] = b"ssh-ed25519";

pub struct HostKey {
    key: SigningKey,
}

impl HostKey {
    /// A new key from /dev/urandom.
    pub fn generate() -> std::io::Result<HostKey> {
        let seed = media::ids::random_bytes::<32>("the installer's SSH host key")?;
        Ok(HostKey {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The key in dropbear's own file format: the type, then the 32-byte seed followed by
    /// the 32-byte public key, each as an SSH string.
    pub fn dropbear_file(&self) -> Vec<u8> {
        let mut both = self.key.to_bytes().to_vec();
        both.extend_from_slice(self.key.verifying_key().as_bytes());
        let mut out = Vec::new();
        put_string(&mut out, KIND);
        put_string(&mut out, &both);
        out
    }

    /// The public key as OpenSSH writes it: `ssh-ed25519 BASE64`.
    pub fn public_line(&self) -> String {
        let mut blob = Vec::new();
        put_string(&mut blob, KIND);
        put_string(&mut blob, self.key.verifying_key().as_bytes());
        format!(
            "ssh-ed25519 {}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    }

    /// The known_hosts line that lets ssh reach `host` (on `port`) with this key only.
    pub fn known_hosts_line(&self, host: &str, port: u16) -> String {
        let name = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        format!("{name} {}\n", self.public_line())
    }

    /// A newc cpio archive that puts the key where dropbear reads it, to follow the
    /// installer's initrd (the kernel unpacks one archive after another).
    pub fn initrd_archive(&self) -> std::io::Result<Vec<u8>> {
        let mut tree = Tree::new();
        let (dir, name) = DROPBEAR_KEY.rsplit_once('/').expect("a path");
        tree.add_file(name, Source::Bytes(self.dropbear_file()));
        let mut out = Vec::new();
        media::cpio::write_tree(&mut out, &tree, dir, 0, &mut |_| {})?;
        Ok(out)
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dropbear_file_and_the_known_hosts_line_hold_the_same_key() {
        let k = HostKey::generate().unwrap();
        let file = k.dropbear_file();
        assert_eq!(file.len(), 4 + 11 + 4 + 64);
        assert_eq!(&file[4..15], b"ssh-ed25519");
        let public = k.key.verifying_key().to_bytes();
        assert_eq!(&file[file.len() - 32..], &public);
        let line = k.known_hosts_line("10.0.0.5", 2222);
        assert!(line.starts_with("[10.0.0.5]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"));
        assert!(k
            .known_hosts_line("h", 22)
            .starts_with("h ssh-ed25519 AAAA"));
        let blob = base64::engine::general_purpose::STANDARD
            .decode(line.split_whitespace().nth(2).unwrap())
            .unwrap();
        assert_eq!(&blob[blob.len() - 32..], &public);
        assert_ne!(
            HostKey::generate().unwrap().public_line(),
            k.public_line(),
            "a key per run"
        );
    }

    #[test]
    fn the_archive_names_the_key_where_dropbear_reads_it() {
        let a = HostKey::generate().unwrap().initrd_archive().unwrap();
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("etc/dropbear/dropbear_ed25519_host_key"));
        assert!(text.contains("TRAILER!!!"));
    }
}
