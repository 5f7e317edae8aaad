//! A broker as a member of its cluster: it runs a controller voter when it is one, follows the
//! metadata the controller quorum agrees on ([`crate::controller`]), registers and
//! heartbeats, and brings its replicas in line with each new metadata state.
//!
//! A single node is the smallest cluster: a one-voter quorum on loopback (KRaft's combined
//! mode), through the same code as any other.
//!
//! - [`roles`]: what this broker should be for each partition (pure);
//! - [`applier`]: applies each metadata state to the hosted replicas and to the group
//!   coordinator;
//! - [`fetcher`]: followers copy their leaders' logs;
//! - [`isr`]: carries the leaders' ISR changes to the quorum;
//! - [`log_dirs`]: reports the replicas of a log directory gone offline;
//! - [`import`]: moves a data directory of the former standalone mode into the quorum;
//! - [`node`]: [`Cluster`], the handle the protocol and HTTP handlers use for metadata and
//!   for writes to the quorum;
//! - this module: starting it all ([`Cluster::start`]).
//!
//! It never appends records or moves a high watermark: that is the replica layer's.

pub mod applier;
pub mod fetcher;
pub mod import;
pub mod isr;
pub mod log_dirs;
pub mod node;
pub mod roles;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{BrokerConfig, ClusterConfig, Voters};
use crate::controller::quorum::{LivenessTiming, QuorumClient, QuorumError, Voter};
use crate::group::GroupCoordinator;
use crate::replica::{IsrProposal, ReplicaManager};
pub use node::{command_error_code, spread_replicas, Cluster, Refusal, ADMIN_DEADLINE};

impl Cluster {
    /// Joins the cluster: starts this node's controller voter when it is one (a node alone
    /// bootstraps a one-voter quorum), imports a former standalone data directory, follows
    /// the metadata, registers and heartbeats, and starts applying each metadata state to
    /// `replicas` and `groups`.
    ///
    /// # Errors
    /// The voter could not start (storage, listener), or the import failed.
    pub async fn start(
        broker: &BrokerConfig,
        replicas: Arc<ReplicaManager>,
        groups: Arc<GroupCoordinator>,
        isr_proposals: tokio::sync::mpsc::UnboundedReceiver<IsrProposal>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, QuorumError> {
        let config = broker.cluster.clone();
        let me = broker.node_id;
        let timing = LivenessTiming {
            session_timeout: Duration::from_millis(config.session_timeout_ms),
            heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
        };
        let (voter, voters) = start_voter(broker, &config, timing, &shutdown).await?;
        let quorum = QuorumClient::new(voters)?;
        import::import_standalone(broker, &quorum).await?;
        let followed = quorum.follow(shutdown.clone());
        let incarnation = crate::controller::quorum::new_incarnation();
        let _fenced = quorum.run_broker_session_as(
            me,
            incarnation,
            broker.advertised_host.clone(),
            broker.advertised_port,
            broker
                .listeners
                .listeners
                .iter()
                .map(|l| {
                    let address = crate::controller::metadata::ListenerAddress {
                        host: l.advertised.host.clone(),
                        port: i32::from(l.advertised.port),
                    };
                    (l.bind.name.clone(), address)
                })
                .collect(),
            config.rack.clone(),
            timing,
            shutdown.clone(),
        );
        let cluster = Arc::new(Self::new(me, incarnation, config, quorum, followed, voter));
        tokio::spawn(applier::run(
            Arc::clone(&cluster),
            Arc::clone(&replicas),
            groups,
            shutdown.clone(),
        ));
        tokio::spawn(isr::run(
            Arc::clone(&cluster),
            Arc::clone(&replicas),
            isr_proposals,
            shutdown.clone(),
        ));
        tokio::spawn(log_dirs::run(
            Arc::clone(&cluster),
            Arc::clone(&replicas),
            shutdown.clone(),
        ));
        fetcher::spawn_fetchers(replicas, Arc::clone(&cluster), shutdown);
        Ok(cluster)
    }
}

/// Starts this node's controller voter when it is one; returns it with the voters' addresses
/// (a node alone learns its own once its listener is bound).
async fn start_voter(
    broker: &BrokerConfig,
    config: &ClusterConfig,
    timing: LivenessTiming,
    shutdown: &CancellationToken,
) -> Result<(Option<Voter>, BTreeMap<u64, String>), QuorumError> {
    let me = broker.node_id;
    let listed = match &config.voters {
        Voters::Listed(voters) => Some(voters.clone()),
        Voters::Alone => None,
    };
    let listen = match (&config.controller_listen, u64::try_from(me)) {
        (Some(listen), Ok(_)) if config.is_voter(me) => listen.clone(),
        _ => return Ok((None, listed.unwrap_or_default())),
    };
    let id = u64::try_from(me).map_err(|_| QuorumError::Raft(format!("node id {me}")))?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|source| QuorumError::Storage {
            dir: listen.clone().into(),
            source,
        })?;
    let voters = match listed {
        Some(voters) => voters,
        None => {
            let bound = listener
                .local_addr()
                .map_err(|source| QuorumError::Storage {
                    dir: listen.clone().into(),
                    source,
                })?;
            BTreeMap::from([(id, bound.to_string())])
        }
    };
    let dir = broker.data_dir.join("__tokafka").join("controller");
    std::fs::create_dir_all(&dir).map_err(|source| QuorumError::Storage {
        dir: dir.clone(),
        source,
    })?;
    info!(node = me, address = %voters.get(&id).map_or(listen.as_str(), String::as_str), voters = voters.len(), "starting controller voter");
    let voter = Voter::start(
        id,
        dir,
        listener,
        &voters,
        timing,
        config.controller_policy(),
        shutdown.clone(),
    )
    .await?;
    Ok((Some(voter), voters))
}
