//! The keys of the plan's LUKS containers: a key file from the payload (checked against the
//! manifest's hash and size), or a passphrase typed twice on the console. Each is written to
//! a file only root can read, under /run (a tmpfs: never on a disk), for cryptsetup's
//! `--key-file`, and removed when the keys are dropped, whatever happens.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use manifest::document::HostEntry;

use crate::plan::{KeySource, Plan};
use crate::source::Source;
use crate::ui::Ui;

const KEYS_DIR: &str = "/run/nixos-autoinstall/keys";

/// Key files by LUKS name, removed on drop.
#[derive(Debug, Default)]
pub struct Keys {
    files: BTreeMap<String, PathBuf>,
}

impl Keys {
    pub fn get(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let dir = Path::new(KEYS_DIR);
        let on = |e: std::io::Error| {
            format!("writing the key of LUKS device {name} under {KEYS_DIR}: {e}")
        };
        fs::create_dir_all(dir).map_err(on)?;
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(on)?;
        let path = dir.join(name);
        let _ = fs::remove_file(&path);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(on)?;
        self.files.insert(name.to_string(), path);
        f.write_all(bytes).map_err(on)
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        for p in self.files.values() {
            // Overwritten first: a tmpfs page may outlive the file.
            if let Ok(len) = fs::metadata(p).map(|m| m.len()) {
                let _ = fs::write(p, vec![0u8; len as usize]);
            }
            let _ = fs::remove_file(p);
        }
    }
}

/// The keys the plan needs, from the payload or the console.
pub fn gather(plan: &Plan, host: &HostEntry, source: &Source, ui: &Ui) -> Result<Keys, String> {
    let mut keys = Keys::default();
    for k in &plan.luks_keys {
        match k.from {
            KeySource::Payload => {
                let entry = host
                    .luks_keys
                    .iter()
                    .find(|e| e.name == k.name)
                    .expect("planned from the manifest");
                let what = format!("the key of LUKS device {}", k.name);
                let bytes = source.read_checked(&entry.source, entry.size, &entry.sha256, &what)?;
                keys.put(&k.name, &bytes)?;
            }
            KeySource::Prompt => {
                let ask = |p: &str| {
                    ui.secret(p).ok_or_else(|| {
                        format!(
                            "no passphrase for LUKS device {} was given; nothing was touched",
                            k.name
                        )
                    })
                };
                let first = ask(&format!("passphrase for LUKS device {}: ", k.name))?;
                let again = ask(&format!("passphrase for LUKS device {} again: ", k.name))?;
                if first != again {
                    return Err(format!(
                        "the two passphrases for LUKS device {} differ; nothing was touched",
                        k.name
                    ));
                }
                keys.put(&k.name, first.as_bytes())?;
            }
        }
    }
    Ok(keys)
}
