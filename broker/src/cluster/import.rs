//! Moves a data directory of the former standalone mode (format 1, see [`crate::data_dir`])
//! into the one-voter quorum of the node alone that now opens it: its topics, the cluster id
//! its clients saw, and its producer-id counter become one
//! [`ImportStandalone`](crate::controller::metadata::Command::ImportStandalone) command; then
//! the directory is marked format 2. Records, committed offsets and producer state need no
//! move: they stay in the partition directories, which the catalog opens as they are.

use std::time::Duration;

use tracing::info;

use crate::config::{BrokerConfig, Voters};
use crate::controller::metadata::Command;
use crate::controller::metadata::{ImportedTopic, StandaloneImport};
use crate::controller::quorum::{QuorumClient, QuorumError};
use crate::data_dir::{self, FORMAT_QUORUM};
use crate::replica::catalog::read_records;

/// The standalone broker's producer-id counter: ids below the number in it may be in use.
const PRODUCER_IDS_FILE: &str = "__tokafka/producer-ids";

/// How long the import waits for the new quorum to commit it.
const IMPORT_DEADLINE: Duration = Duration::from_secs(30);

/// Brings the data directory of `broker` to the quorum's format: a standalone one opened by a
/// node alone is imported first; one written by a broker of a larger cluster (format 1 too)
/// needs nothing but the mark. Does nothing for a directory already in the current format.
///
/// # Errors
/// The directory cannot be read, or the quorum did not commit the import (the directory is
/// then left as it was, and the next start tries again).
pub async fn import_standalone(
    broker: &BrokerConfig,
    quorum: &QuorumClient,
) -> Result<(), QuorumError> {
    let storage = |source: std::io::Error| QuorumError::Storage {
        dir: broker.data_dir.clone(),
        source,
    };
    let mut identity = data_dir::claim(&broker.data_dir, broker.node_id)
        .map_err(|e| storage(std::io::Error::other(e)))?;
    if identity.format >= FORMAT_QUORUM {
        return Ok(());
    }
    if broker.cluster.voters == Voters::Alone {
        import(broker, quorum, &identity.cluster_id).await?;
    }
    identity.format = FORMAT_QUORUM;
    data_dir::write(&broker.data_dir, &identity).map_err(|e| storage(std::io::Error::other(e)))
}

/// Writes the import command of a standalone directory and waits for it to be committed.
async fn import(
    broker: &BrokerConfig,
    quorum: &QuorumClient,
    cluster_id: &str,
) -> Result<(), QuorumError> {
    let storage = |source: std::io::Error| QuorumError::Storage {
        dir: broker.data_dir.clone(),
        source,
    };
    let records = read_records(&broker.data_dir).map_err(|e| storage(std::io::Error::other(e)))?;
    let producer_ids_from = read_producer_ids(&broker.data_dir).map_err(storage)?;
    let import = StandaloneImport {
        broker: broker.node_id,
        cluster_id: cluster_id.to_string(),
        topics: records
            .iter()
            .map(|r| ImportedTopic {
                name: r.name.clone(),
                id: r.id,
                partitions: r.partitions,
                configs: r.configs.clone(),
            })
            .collect(),
        producer_ids_from,
    };
    let topics = import.topics.len();
    match quorum
        .write(&Command::ImportStandalone(import), IMPORT_DEADLINE)
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(QuorumError::Raft(format!("import refused: {e}"))),
        Err(e) => return Err(e),
    }
    info!(
        topics,
        producer_ids_from,
        cluster_id,
        "imported a standalone data directory into the controller quorum"
    );
    Ok(())
}

/// The standalone counter's value (0 when there is none).
fn read_producer_ids(data_dir: &std::path::Path) -> std::io::Result<i64> {
    match std::fs::read_to_string(data_dir.join(PRODUCER_IDS_FILE)) {
        Ok(text) => text.trim().parse::<i64>().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{PRODUCER_IDS_FILE}: {e}"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}
