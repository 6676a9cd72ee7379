//! Registration: making unpacked store paths valid in a store rooted at a directory, by
//! writing Nix's SQLite database (schema 10, used from Nix 2.0 to today) the way Nix does,
//! so that the target's own Nix accepts the paths at first boot.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::closure::PathInfo;
use crate::store_path::StorePath;

/// The schema version Nix keeps in `nix/var/nix/db/schema`.
pub const SCHEMA_VERSION: &str = "10";

const SCHEMA: &str = "
create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer,
    sigs             text,
    ca               text
);
create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);
create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;
create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null,
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);
create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
";

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("preparing the Nix database under {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the Nix database {db} has schema {found}; only schema {SCHEMA_VERSION} is supported")]
    Schema { db: PathBuf, found: String },
    #[error("writing the Nix database {db}: {source}")]
    Db {
        db: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path} is not in the target store at {root} (unpack it before registering it)")]
    Missing { root: PathBuf, path: StorePath },
    #[error("{path} refers to {reference}, which is neither being registered nor valid in the target store")]
    IncompleteClosure {
        path: StorePath,
        reference: StorePath,
    },
    #[error("{path} is already valid in the target store with another NAR hash ({existing}); refusing to replace it")]
    Conflict { path: StorePath, existing: String },
}

/// Paths to the database of a store rooted at `root`.
pub fn db_dir(root: &Path) -> PathBuf {
    root.join("nix/var/nix/db")
}

/// Creates the store skeleton Nix expects under `root` (`nix/store`, `nix/var/nix/db`, …).
pub fn prepare_root(root: &Path) -> Result<(), RegisterError> {
    let io_err = |source| RegisterError::Io {
        dir: root.to_path_buf(),
        source,
    };
    let store = root.join("nix/store");
    fs::create_dir_all(&store).map_err(io_err)?;
    // As on NixOS: sticky and group-writable, so build users can add paths but not remove
    // other users' paths.
    fs::set_permissions(&store, fs::Permissions::from_mode(0o1775)).map_err(io_err)?;
    for dir in [
        "nix/var/nix/db",
        "nix/var/nix/gcroots",
        "nix/var/nix/profiles",
    ] {
        fs::create_dir_all(root.join(dir)).map_err(io_err)?;
    }
    Ok(())
}

/// Registers `infos` as valid in the store rooted at `root`. Each path must already be
/// unpacked there; each reference must be among `infos` or already valid. Paths already valid
/// with the same hash are left as they are, so a rerun after an interruption succeeds.
pub fn register(root: &Path, infos: &[PathInfo]) -> Result<(), RegisterError> {
    prepare_root(root)?;
    let dir = db_dir(root);
    let db_path = dir.join("db.sqlite");
    let schema_path = dir.join("schema");
    match fs::read_to_string(&schema_path) {
        Ok(found) if found.trim() != SCHEMA_VERSION => {
            return Err(RegisterError::Schema {
                db: db_path,
                found: found.trim().to_string(),
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(RegisterError::Io { dir, source }),
    }
    for info in infos {
        if fs::symlink_metadata(info.path.under_root(root)).is_err() {
            return Err(RegisterError::Missing {
                root: root.to_path_buf(),
                path: info.path.clone(),
            });
        }
    }

    let db_err = |source| RegisterError::Db {
        db: db_path.clone(),
        source,
    };
    let mut conn = Connection::open(&db_path).map_err(db_err)?;
    conn.execute_batch("pragma foreign_keys = on;")
        .map_err(db_err)?;
    conn.execute_batch(SCHEMA).map_err(db_err)?;
    let tx = conn.transaction().map_err(db_err)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut ids: HashMap<&StorePath, i64> = HashMap::new();
    {
        let mut find = tx
            .prepare("select id, hash from ValidPaths where path = ?1")
            .map_err(db_err)?;
        let mut insert = tx
            .prepare(
                "insert into ValidPaths (path, hash, registrationTime, deriver, narSize, sigs) \
                 values (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(db_err)?;
        for info in infos {
            let path = info.path.to_string();
            let hash = info.nar_hash.to_db();
            let existing: Option<(i64, String)> = find
                .query_row([&path], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db_err)?;
            let id = match existing {
                Some((id, h)) if h == hash => id,
                Some((_, h)) => {
                    return Err(RegisterError::Conflict {
                        path: info.path.clone(),
                        existing: h,
                    })
                }
                None => {
                    let sigs = (!info.sigs.is_empty()).then(|| info.sigs.join(" "));
                    insert
                        .execute(params![
                            path,
                            hash,
                            now,
                            info.deriver.as_ref().map(|d| d.to_string()),
                            info.nar_size as i64,
                            sigs,
                        ])
                        .map_err(db_err)?;
                    tx.last_insert_rowid()
                }
            };
            ids.insert(&info.path, id);
        }
        let mut find_id = tx
            .prepare("select id from ValidPaths where path = ?1")
            .map_err(db_err)?;
        let mut add_ref = tx
            .prepare("insert or ignore into Refs (referrer, reference) values (?1, ?2)")
            .map_err(db_err)?;
        for info in infos {
            let referrer = ids[&info.path];
            for reference in &info.references {
                let id = match ids.get(reference) {
                    Some(&id) => id,
                    None => find_id
                        .query_row([reference.to_string()], |r| r.get(0))
                        .optional()
                        .map_err(db_err)?
                        .ok_or_else(|| RegisterError::IncompleteClosure {
                            path: info.path.clone(),
                            reference: reference.clone(),
                        })?,
                };
                add_ref.execute(params![referrer, id]).map_err(db_err)?;
            }
        }
    }
    tx.commit().map_err(db_err)?;
    drop(conn);
    fs::write(&schema_path, SCHEMA_VERSION).map_err(|source| RegisterError::Io { dir, source })?;
    Ok(())
}

/// The paths valid in the store rooted at `root` (empty when it has no database yet).
pub fn valid_paths(root: &Path) -> Result<Vec<StorePath>, RegisterError> {
    let db_path = db_dir(root).join("db.sqlite");
    if !db_path.exists() {
        return Ok(Vec::new());
    }
    let db_err = |source| RegisterError::Db {
        db: db_path.clone(),
        source,
    };
    let conn = Connection::open(&db_path).map_err(db_err)?;
    let mut stmt = conn
        .prepare("select path from ValidPaths order by path")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(db_err)?;
    let mut out = Vec::new();
    for row in rows {
        if let Ok(p) = StorePath::parse(&row.map_err(db_err)?) {
            out.push(p);
        }
    }
    Ok(out)
}
