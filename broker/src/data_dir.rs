//! A broker's claim on its data directory: `__tokafka/meta.json` says which node the
//! directory belongs to, the cluster id it was created with, and the format of what is in it.
//!
//! Formats: 1 — written by tokafka 0.1.0, whose single node ran standalone (topics in a local
//! file, producer ids from a local counter); 2 — every node takes part in a controller quorum.
//! A format-1 directory started as a node alone is imported into its quorum once
//! ([`crate::cluster::import`]) and then marked format 2.
//!
//! Invariant: a directory of one node is never opened by another (a mismatched `node.id` is
//! refused before anything is read or written).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::controller::metadata::new_cluster_id;
use crate::log::durable::write_atomically;

const META_DIR: &str = "__tokafka";
const IDENTITY_FILE: &str = "meta.json";
/// The data directory format this version writes.
pub const FORMAT_QUORUM: u32 = 2;
/// The format of tokafka 0.1.0 (no `format` field in the file).
pub const FORMAT_STANDALONE: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a tokafka identity file: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("data directory {path} belongs to node {found}, not node {configured}")]
    NodeIdMismatch {
        path: PathBuf,
        found: i32,
        configured: i32,
    },
    #[error("data directory {path} has format {found}, newer than this broker knows ({known})")]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
}

/// Who a data directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: i32,
    #[serde(default = "standalone_format")]
    pub format: u32,
}

fn standalone_format() -> u32 {
    FORMAT_STANDALONE
}

fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(META_DIR).join(IDENTITY_FILE)
}

/// Opens `data_dir` for node `node_id`: creates it with a new identity (current format) when
/// it has none, else checks that it is this node's.
///
/// # Errors
/// I/O errors, an unreadable identity, a directory of another node or of a newer format.
pub fn claim(data_dir: &Path, node_id: i32) -> Result<Identity, DataDirError> {
    let path = identity_path(data_dir);
    let identity = match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice::<Identity>(&bytes).map_err(|e| DataDirError::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity {
                cluster_id: new_cluster_id(),
                node_id,
                format: FORMAT_QUORUM,
            };
            write(data_dir, &identity)?;
            return Ok(identity);
        }
        Err(source) => return Err(DataDirError::Io { path, source }),
    };
    if identity.node_id != node_id {
        return Err(DataDirError::NodeIdMismatch {
            path: data_dir.to_path_buf(),
            found: identity.node_id,
            configured: node_id,
        });
    }
    if identity.format > FORMAT_QUORUM {
        return Err(DataDirError::TooNew {
            path: data_dir.to_path_buf(),
            found: identity.format,
            known: FORMAT_QUORUM,
        });
    }
    Ok(identity)
}

/// Records `identity` durably (atomically replacing the file).
///
/// # Errors
/// I/O errors; the previous file then stays.
pub fn write(data_dir: &Path, identity: &Identity) -> Result<(), DataDirError> {
    let dir = data_dir.join(META_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| DataDirError::Io {
        path: dir.clone(),
        source,
    })?;
    let bytes = serde_json::to_vec(identity).map_err(|e| DataDirError::Unreadable {
        path: identity_path(data_dir),
        reason: e.to_string(),
    })?;
    write_atomically(&identity_path(data_dir), &bytes).map_err(|e| DataDirError::Io {
        path: identity_path(data_dir),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_gets_an_identity_that_survives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = claim(dir.path(), 1).expect("claim");
        assert_eq!(first.format, FORMAT_QUORUM);
        assert_eq!(first.cluster_id.len(), 22);
        assert_eq!(claim(dir.path(), 1).expect("again"), first);
    }

    #[test]
    fn a_directory_of_another_node_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        claim(dir.path(), 1).expect("claim");
        assert!(matches!(
            claim(dir.path(), 7),
            Err(DataDirError::NodeIdMismatch {
                found: 1,
                configured: 7,
                ..
            })
        ));
    }

    #[test]
    fn a_file_without_format_is_the_standalone_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(META_DIR)).expect("mkdir");
        std::fs::write(
            identity_path(dir.path()),
            br#"{"cluster_id":"abc","node_id":1}"#,
        )
        .expect("write");
        let identity = claim(dir.path(), 1).expect("claim");
        assert_eq!(identity.format, FORMAT_STANDALONE);
        assert_eq!(identity.cluster_id, "abc");
    }
}
