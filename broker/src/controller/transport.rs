//! The controller quorum's transport: openraft RPCs, metadata writes and metadata reads as
//! JSON over HTTP on the controller listener (`--controller-listen`).
//!
//! Routes:
//! - `POST /raft/append`, `/raft/vote`, `/raft/snapshot`: Raft RPCs between voters;
//! - `POST /controller/write`: a metadata [`Command`]; applied if this voter leads, else
//!   answered with the leader to ask;
//! - `GET /controller/metadata?after=N`: the metadata once its applied index passes `N`
//!   (long poll, bounded), so brokers that are not voters follow the metadata;
//! - `GET /controller/quorum`: this voter's own view of the quorum ([`QuorumView`]), with the
//!   followers' replication progress when it leads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, RaftMetrics};
use serde::{Deserialize, Serialize};

use super::liveness::{Heartbeat, HeartbeatReply, Liveness};
use super::metadata::{ClusterMetadata, Command, CommandResult};
use super::store::{NodeId, StateMachine};
use super::TypeConfig;

/// Longest wait of a metadata long poll.
pub const METADATA_POLL_MAX: Duration = Duration::from_secs(10);
/// Timeout of one HTTP call between controllers.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Answer to a metadata write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriteReply {
    /// Committed and applied, with the command's result.
    Applied(CommandResult),
    /// This voter does not lead; ask `leader` (id and address) if known.
    NotLeader { leader: Option<(NodeId, String)> },
    /// The quorum could not commit it (no majority, shutting down).
    Unavailable(String),
}

/// A metadata snapshot as served to followers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetadataReply {
    pub applied_index: u64,
    pub metadata: ClusterMetadata,
}

/// One voter's view of the quorum, taken from its Raft metrics.
///
/// Invariant: `matched` is `Some` only in the view of the leader (`leader == Some(id)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumView {
    /// The voter that answers.
    pub id: NodeId,
    pub term: u64,
    /// The leader this voter knows of, with its address.
    pub leader: Option<(NodeId, String)>,
    /// Index of the last entry of this voter's log (`None`: empty log).
    pub last_log_index: Option<u64>,
    /// The voters of the membership in effect.
    pub voters: Vec<NodeId>,
    /// On the leader only: per member, the index of the last entry the leader knows it holds
    /// (`None`: nothing matched yet).
    pub matched: Option<BTreeMap<NodeId, Option<u64>>>,
}

impl QuorumView {
    /// The view in `metrics`.
    pub fn of(metrics: &RaftMetrics<NodeId, BasicNode>) -> Self {
        let membership = metrics.membership_config.membership();
        let leader = metrics.current_leader.map(|id| {
            let address = membership
                .get_node(&id)
                .map(|node| node.addr.clone())
                .unwrap_or_default();
            (id, address)
        });
        let leads = metrics.current_leader == Some(metrics.id);
        Self {
            id: metrics.id,
            term: metrics.current_term,
            leader,
            last_log_index: metrics.last_log_index,
            voters: membership.voter_ids().collect(),
            matched: metrics
                .replication
                .as_ref()
                .filter(|_| leads)
                .map(|replication| {
                    replication
                        .iter()
                        .map(|(id, log)| (*id, log.as_ref().map(|l| l.index)))
                        .collect()
                }),
        }
    }

    /// Whether this is the view of the quorum's leader.
    pub fn leads(&self) -> bool {
        self.leader.as_ref().is_some_and(|(id, _)| *id == self.id)
    }
}

#[derive(Clone)]
pub struct ServerState {
    pub id: NodeId,
    pub raft: Raft<TypeConfig>,
    pub state_machine: StateMachine,
    pub liveness: Arc<Liveness>,
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/controller/write", post(write))
        .route("/controller/metadata", get(metadata))
        .route("/controller/heartbeat", post(heartbeat))
        .route("/controller/quorum", get(quorum))
        .with_state(Arc::new(state))
}

async fn append(
    State(state): State<Arc<ServerState>>,
    Json(request): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    Json(state.raft.append_entries(request).await)
}

async fn vote(
    State(state): State<Arc<ServerState>>,
    Json(request): Json<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(state.raft.vote(request).await)
}

async fn snapshot(
    State(state): State<Arc<ServerState>>,
    Json(request): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(state.raft.install_snapshot(request).await)
}

async fn write(
    State(state): State<Arc<ServerState>>,
    Json(command): Json<Command>,
) -> Json<WriteReply> {
    use openraft::error::ClientWriteError;
    let reply = match state.raft.client_write(command).await {
        Ok(response) => WriteReply::Applied(response.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            WriteReply::NotLeader {
                leader: forward.leader_id.zip(forward.leader_node.map(|n| n.addr)),
            }
        }
        Err(e) => WriteReply::Unavailable(e.to_string()),
    };
    Json(reply)
}

async fn heartbeat(
    State(state): State<Arc<ServerState>>,
    Json(beat): Json<Heartbeat>,
) -> Json<HeartbeatReply> {
    let metrics = state.raft.metrics().borrow().clone();
    if metrics.current_leader != Some(state.id) {
        let leader = metrics.current_leader.and_then(|id| {
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|node| (id, node.addr.clone()))
        });
        return Json(HeartbeatReply::NotLeader { leader });
    }
    state.liveness.record(beat);
    let metadata = state.state_machine.metadata();
    let broker = metadata
        .brokers
        .get(&beat.broker_id)
        .filter(|b| b.incarnation == beat.incarnation);
    if broker.is_some_and(|b| b.fenced && !b.shutting_down) {
        state.liveness.wake();
    }
    Json(HeartbeatReply::Recorded {
        registered: broker.is_some(),
        fenced: broker.is_none_or(|b| b.fenced),
    })
}

async fn quorum(State(state): State<Arc<ServerState>>) -> Json<QuorumView> {
    let metrics = state.raft.metrics().borrow().clone();
    Json(QuorumView::of(&metrics))
}

#[derive(Debug, Deserialize)]
struct MetadataQuery {
    after: Option<u64>,
    /// Longest wait for a newer state, capped at [`METADATA_POLL_MAX`].
    wait_ms: Option<u64>,
}

async fn metadata(
    State(state): State<Arc<ServerState>>,
    Query(query): Query<MetadataQuery>,
) -> Json<MetadataReply> {
    let mut rx = state.state_machine.subscribe();
    let after = query.after.unwrap_or(0);
    let wait = rx.wait_for(|(index, _)| *index > after);
    let max_wait = query
        .wait_ms
        .map_or(METADATA_POLL_MAX, Duration::from_millis)
        .min(METADATA_POLL_MAX);
    let _ = tokio::time::timeout(max_wait, wait).await;
    let (applied_index, metadata) = rx.borrow().clone();
    Json(MetadataReply {
        applied_index,
        metadata: (*metadata).clone(),
    })
}

/// Creates HTTP clients to the other voters.
#[derive(Clone)]
pub struct HttpNetwork {
    client: reqwest::Client,
}

impl HttpNetwork {
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(RPC_TIMEOUT).build()?,
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = HttpPeer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        HttpPeer {
            target,
            address: node.addr.clone(),
            client: self.client.clone(),
        }
    }
}

pub struct HttpPeer {
    target: NodeId,
    address: String,
    client: reqwest::Client,
}

impl HttpPeer {
    async fn call<Req, Resp, Err>(
        &self,
        path: &str,
        request: &Req,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, Err>>
    where
        Req: Serialize,
        Resp: for<'de> Deserialize<'de>,
        Err: std::error::Error + for<'de> Deserialize<'de>,
    {
        let url = format!("http://{}/{path}", self.address);
        let response = self
            .client
            .post(&url)
            .json(request)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let result: Result<Resp, Err> = response
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for HttpPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("raft/append", &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("raft/snapshot", &rpc).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("raft/vote", &rpc).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};

    use super::*;

    fn metrics(id: NodeId, leader: NodeId) -> RaftMetrics<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> = (1..=3)
            .map(|n| {
                (
                    n,
                    BasicNode {
                        addr: format!("c{n}:9093"),
                    },
                )
            })
            .collect();
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
        let mut m = RaftMetrics::new_initial(id);
        m.current_term = 4;
        m.current_leader = Some(leader);
        m.last_log_index = Some(120);
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m
    }

    fn log(index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(4, 1), index))
    }

    #[test]
    fn the_leaders_view_carries_what_each_member_matched() {
        let mut m = metrics(1, 1);
        m.replication = Some(BTreeMap::from([(1, log(120)), (2, log(100)), (3, None)]));
        let view = QuorumView::of(&m);
        assert!(view.leads());
        assert_eq!(view.leader, Some((1, "c1:9093".to_string())));
        assert_eq!(view.voters, [1, 2, 3]);
        assert_eq!(
            view.matched,
            Some(BTreeMap::from([(1, Some(120)), (2, Some(100)), (3, None)]))
        );
    }

    #[test]
    fn a_followers_view_names_the_leader_and_no_progress() {
        let mut m = metrics(2, 1);
        // Stale replication metrics of a former leader are not shown.
        m.replication = Some(BTreeMap::from([(1, log(3))]));
        let view = QuorumView::of(&m);
        assert!(!view.leads());
        assert_eq!(view.leader, Some((1, "c1:9093".to_string())));
        assert_eq!(view.matched, None);
    }
}
