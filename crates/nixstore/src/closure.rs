//! Closures of a local Nix store, asked of `nix-store` through interfaces that have not
//! changed from Nix 2.3 to 2.2x: `--query --requisites` and the registration format that
//! `--dump-db PATHS` prints (path, NAR hash in hex, NAR size, deriver, references).

use std::collections::BTreeSet;
use std::io;
use std::process::Command;

use crate::hash::Sha256Hash;
use crate::store_path::StorePath;

/// What a store knows of one valid path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    pub nar_hash: Sha256Hash,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    /// Signatures carried over from a narinfo (empty when the source is a local store).
    pub sigs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error("running {command}: {source} (is Nix installed and nix-store on PATH?)")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("reading the output of nix-store --dump-db, line {line}: {why}")]
    Registration { line: usize, why: String },
}

/// Every path in the closures of `roots`, sorted, each once.
pub fn requisites(roots: &[StorePath]) -> Result<Vec<StorePath>, ClosureError> {
    let mut all = BTreeSet::new();
    for chunk in roots.chunks(CHUNK) {
        let out = nix_store(&["--query", "--requisites"], chunk)?;
        for line in out.lines().filter(|l| !l.is_empty()) {
            all.insert(
                StorePath::parse(line).map_err(|e| ClosureError::Registration {
                    line: 0,
                    why: e.to_string(),
                })?,
            );
        }
    }
    Ok(all.into_iter().collect())
}

/// Hash, size, references and deriver of each of `paths`, in the same order.
pub fn path_infos(paths: &[StorePath]) -> Result<Vec<PathInfo>, ClosureError> {
    let mut infos = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(CHUNK) {
        infos.extend(parse_registration(&nix_store(&["--dump-db"], chunk)?)?);
    }
    Ok(infos)
}

/// The closure of `roots` with every path's metadata, sorted by path.
pub fn closure(roots: &[StorePath]) -> Result<Vec<PathInfo>, ClosureError> {
    path_infos(&requisites(roots)?)
}

/// The closure of `root` within `infos` (which must hold it), sorted, by following references.
pub fn walk(infos: &[PathInfo], root: &StorePath) -> Vec<StorePath> {
    let by_path: std::collections::HashMap<&StorePath, &PathInfo> =
        infos.iter().map(|i| (&i.path, i)).collect();
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if seen.insert(p.clone()) {
            if let Some(info) = by_path.get(p) {
                stack.extend(info.references.iter());
            }
        }
    }
    seen.into_iter().collect()
}

/// Paths per nix-store call: keeps the command line well under ARG_MAX.
const CHUNK: usize = 1000;

fn nix_store(args: &[&str], paths: &[StorePath]) -> Result<String, ClosureError> {
    let mut cmd = Command::new("nix-store");
    cmd.args(args).args(paths.iter().map(|p| p.to_string()));
    let command = format!("nix-store {}", args.join(" "));
    let out = cmd.output().map_err(|source| ClosureError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(ClosureError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    String::from_utf8(out.stdout).map_err(|_| ClosureError::Failed {
        command,
        stderr: "its output is not UTF-8".into(),
    })
}

/// Parses Nix's registration format: for each path, its path, NAR hash, NAR size, deriver
/// (possibly empty), the number of references, and the references, one per line.
pub fn parse_registration(text: &str) -> Result<Vec<PathInfo>, ClosureError> {
    let mut lines = text.lines().enumerate().peekable();
    let mut infos = Vec::new();
    let mut next = |what: &str| -> Result<(usize, &str), ClosureError> {
        lines
            .next()
            .map(|(i, l)| (i + 1, l))
            .ok_or_else(|| ClosureError::Registration {
                line: text.lines().count() + 1,
                why: format!("the output ends where {what} was expected"),
            })
    };
    let err = |line, why: String| ClosureError::Registration { line, why };
    loop {
        let (n, path) = match next("a store path") {
            Ok((_, "")) | Err(_) => break,
            Ok(v) => v,
        };
        let path = StorePath::parse(path).map_err(|e| err(n, e.to_string()))?;
        let (n, hash) = next("a NAR hash")?;
        let nar_hash = Sha256Hash::parse(hash).map_err(|e| err(n, e.to_string()))?;
        let (n, size) = next("a NAR size")?;
        let nar_size = size
            .parse()
            .map_err(|_| err(n, format!("NAR size {size:?} is not a number")))?;
        let (n, deriver) = next("a deriver")?;
        let deriver = match deriver {
            "" => None,
            d => Some(StorePath::parse(d).map_err(|e| err(n, e.to_string()))?),
        };
        let (n, count) = next("a reference count")?;
        let count: usize = count
            .parse()
            .map_err(|_| err(n, format!("reference count {count:?} is not a number")))?;
        let mut references = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            let (n, r) = next("a reference")?;
            references.push(StorePath::parse(r).map_err(|e| err(n, e.to_string()))?);
        }
        infos.push(PathInfo {
            path,
            nar_hash,
            nar_size,
            references,
            deriver,
            sigs: Vec::new(),
        });
    }
    Ok(infos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dump_db_output() {
        let text = "/nix/store/dbv3hzd4a1yasfn0ld098wdrg2bzvd8l-test-tree
db1c0227b2816f223f0d77be1ceecfb6b86144bff063de2f1f992437cb8f6ab5
1984632
/nix/store/4xh2n4yc3c8gjd1dyxj6a8vi13rphcyl-test-tree.drv
1
/nix/store/jysmd2f9rg6kqwrdwflih76wl9pwwm4s-bbdir
/nix/store/jysmd2f9rg6kqwrdwflih76wl9pwwm4s-bbdir
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
120

0
";
        let infos = parse_registration(text).unwrap();
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[0].nar_size, 1984632);
        assert_eq!(infos[0].references, vec![infos[1].path.clone()]);
        assert_eq!(infos[1].deriver, None);
        assert!(
            parse_registration("/nix/store/jysmd2f9rg6kqwrdwflih76wl9pwwm4s-bbdir\nzz\n").is_err()
        );
    }
}
