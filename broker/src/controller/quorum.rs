//! Running the controller quorum: a voter runs an openraft node and serves the transport; any
//! broker (voter or not) writes metadata commands through [`QuorumClient`] and follows the
//! applied metadata through a watch channel.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::liveness::{run_fencing, Heartbeat, HeartbeatReply, Liveness};
use super::metadata::{ClusterMetadata, Command, CommandResult, ListenerAddress};
use super::policy::ControllerPolicy;
use super::store::{LogStore, NodeId, StateMachine};
use super::transport::{
    router, HttpNetwork, MetadataReply, QuorumView, ServerState, WriteReply, METADATA_POLL_MAX,
};
use super::TypeConfig;

/// Metadata as followed by a broker: the applied index and the state at that index.
pub type MetadataWatch = watch::Receiver<(u64, Arc<ClusterMetadata>)>;

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("controller storage in {dir}: {source}")]
    Storage {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("controller quorum: {0}")]
    Raft(String),
    #[error("no controller answered within {0:?}: {1}")]
    Unavailable(Duration, String),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Raft timing for a quorum on a LAN or loopback.
fn raft_config() -> Result<Arc<Config>, QuorumError> {
    let config = Config {
        cluster_name: "tokafka".into(),
        heartbeat_interval: 150,
        election_timeout_min: 600,
        election_timeout_max: 1200,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| QuorumError::Raft(e.to_string()))
}

/// A new broker incarnation: distinct for every start of a broker process.
pub fn new_incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Longest long-poll of a broker following the metadata.
const FOLLOW_POLL: Duration = Duration::from_secs(2);

/// Timing of broker liveness.
#[derive(Debug, Clone, Copy)]
pub struct LivenessTiming {
    /// A broker silent for this long is fenced (`broker.session.timeout.ms`).
    pub session_timeout: Duration,
    /// How often brokers heartbeat (`broker.heartbeat.interval.ms`).
    pub heartbeat_interval: Duration,
}

impl Default for LivenessTiming {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(9),
            heartbeat_interval: Duration::from_secs(2),
        }
    }
}

/// A running controller voter.
pub struct Voter {
    pub raft: Raft<TypeConfig>,
    pub state_machine: StateMachine,
    server: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl Voter {
    /// Starts voter `id` with its storage in `dir`, serving the transport on `listener`;
    /// bootstraps the quorum of `voters` when the storage is new.
    ///
    /// # Errors
    /// Storage or Raft start-up failures.
    pub async fn start(
        id: NodeId,
        dir: PathBuf,
        listener: TcpListener,
        voters: &BTreeMap<NodeId, String>,
        timing: LivenessTiming,
        policy: ControllerPolicy,
        shutdown: CancellationToken,
    ) -> Result<Self, QuorumError> {
        let storage = |source| QuorumError::Storage {
            dir: dir.clone(),
            source,
        };
        let log = LogStore::open(&dir).map_err(storage)?;
        let state_machine = StateMachine::open(&dir).map_err(storage)?;
        let network = HttpNetwork::new()?;
        let raft = Raft::new(id, raft_config()?, network, log, state_machine.clone())
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let liveness = Arc::new(Liveness::default());
        let app = router(ServerState {
            id,
            raft: raft.clone(),
            state_machine: state_machine.clone(),
            liveness: Arc::clone(&liveness),
        });
        let stop = shutdown.child_token();
        tokio::spawn(run_fencing(
            raft.clone(),
            state_machine.clone(),
            liveness,
            id,
            timing.session_timeout,
            (timing.heartbeat_interval / 2).max(Duration::from_millis(50)),
            policy,
            stop.clone(),
        ));
        let server_stop = stop.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { server_stop.cancelled().await });
            if let Err(e) = serve.await {
                warn!(error = %e, "controller listener stopped");
            }
        });
        let members: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|(id, address)| {
                (
                    *id,
                    BasicNode {
                        addr: address.clone(),
                    },
                )
            })
            .collect();
        // Every voter may bootstrap with the same membership; a node with state has been
        // bootstrapped before (asking again would only make openraft log an error).
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        if !initialized {
            match raft.initialize(members).await {
                Ok(()) => info!(node = id, "controller quorum bootstrapped"),
                Err(e) => debug!(node = id, error = %e, "quorum already initialized"),
            }
        }
        Ok(Self {
            raft,
            state_machine,
            server,
            stop,
        })
    }

    /// Stops the Raft node and its listener, closing every open connection (peers must not
    /// keep talking to a stopped node over a kept-alive connection).
    pub async fn shutdown(mut self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "raft shutdown failed");
        }
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.server)
            .await
            .is_err()
        {
            self.server.abort();
            let _ = (&mut self.server).await;
        }
    }

    /// The current leader, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }
}

/// Longest wait for one voter's view of the quorum: a voter slower than this is taken as not
/// following the leader.
const QUORUM_VIEW_TIMEOUT: Duration = Duration::from_millis(300);

/// The quorum as its leader sees it, and which voters follow that leader right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumState {
    /// The leader's own view (`leader.leads()` holds).
    pub leader: QuorumView,
    /// Voters, the leader included, that answered within [`QUORUM_VIEW_TIMEOUT`] naming the
    /// same leader in the same term.
    pub following: BTreeSet<NodeId>,
}

/// Writes metadata commands to the quorum and follows the applied metadata, from any broker.
#[derive(Clone)]
pub struct QuorumClient {
    voters: BTreeMap<NodeId, String>,
    client: reqwest::Client,
    /// The voter that last answered as leader: asked first, so that a voter that stopped
    /// answering (frozen, cut off) does not delay every call by its timeout.
    leader_hint: Arc<parking_lot::Mutex<Option<String>>>,
}

impl QuorumClient {
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(voters: BTreeMap<NodeId, String>) -> Result<Self, QuorumError> {
        let client = reqwest::Client::builder()
            .timeout(METADATA_POLL_MAX + Duration::from_secs(5))
            .build()?;
        Ok(Self {
            voters,
            client,
            leader_hint: Arc::new(parking_lot::Mutex::new(None)),
        })
    }

    /// Commits `command` and returns its result, following leader redirects and retrying
    /// (with backoff) until `deadline` passes.
    ///
    /// # Errors
    /// [`QuorumError::Unavailable`] when no leader committed it in time.
    pub async fn write(
        &self,
        command: &Command,
        deadline: Duration,
    ) -> Result<CommandResult, QuorumError> {
        self.call_leader(
            "controller/write",
            command,
            Duration::from_secs(5),
            deadline,
            |reply| match reply {
                WriteReply::Applied(result) => Answer::Done(result),
                WriteReply::NotLeader { leader } => {
                    Answer::NotLeader(leader.map(|(_, address)| address))
                }
                WriteReply::Unavailable(reason) => Answer::Retry(reason),
            },
        )
        .await
    }

    /// Sends one heartbeat to the leader, following redirects, within `deadline`; returns
    /// (registered, fenced).
    ///
    /// # Errors
    /// [`QuorumError::Unavailable`] when no leader answered in time.
    pub async fn heartbeat(
        &self,
        beat: Heartbeat,
        deadline: Duration,
    ) -> Result<(bool, bool), QuorumError> {
        self.call_leader(
            "controller/heartbeat",
            &beat,
            Duration::from_secs(1),
            deadline,
            |reply| match reply {
                HeartbeatReply::Recorded { registered, fenced } => {
                    Answer::Done((registered, fenced))
                }
                HeartbeatReply::NotLeader { leader } => {
                    Answer::NotLeader(leader.map(|(_, address)| address))
                }
            },
        )
        .await
    }

    /// The leader's view of the quorum, learned within about `deadline`: asks the voter that
    /// last answered as leader first, then the leader a voter names, then every voter in turn
    /// (each at most once, each within [`QUORUM_VIEW_TIMEOUT`]); then asks the other voters
    /// concurrently whether they follow that leader (one more [`QUORUM_VIEW_TIMEOUT`] at most).
    /// Read-only: nothing is written to the quorum.
    ///
    /// # Errors
    /// [`QuorumError::Unavailable`] when no leader answered in time.
    pub async fn quorum_state(&self, deadline: Duration) -> Result<QuorumState, QuorumError> {
        let started = tokio::time::Instant::now();
        let hint = self.leader_hint.lock().clone();
        let mut queue: VecDeque<String> = hint.into_iter().collect();
        queue.extend(self.voters.values().cloned());
        let mut asked = BTreeSet::new();
        let mut last_error = String::from("no voter tried");
        let mut found = None;
        // Bounded: an address is asked at most once, and only an answer adds one.
        while let Some(address) = queue.pop_front() {
            let remaining = deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            if !asked.insert(address.clone()) {
                continue;
            }
            match self
                .quorum_view(&address, QUORUM_VIEW_TIMEOUT.min(remaining))
                .await
            {
                Ok(view) if view.leads() => {
                    found = Some((address, view));
                    break;
                }
                Ok(view) => {
                    last_error = format!("{address} is not the leader");
                    if let Some((_, leader)) = view.leader.filter(|(_, a)| !a.is_empty()) {
                        queue.push_front(leader);
                    }
                }
                Err(e) => last_error = format!("{address}: {e}"),
            }
        }
        let Some((leader_address, leader)) = found else {
            return Err(QuorumError::Unavailable(deadline, last_error));
        };
        *self.leader_hint.lock() = Some(leader_address);
        let others = leader
            .voters
            .iter()
            .filter(|id| **id != leader.id)
            .filter_map(|id| self.voters.get(id).map(|address| (*id, address.clone())));
        let answers = futures::future::join_all(others.map(|(id, address)| async move {
            (id, self.quorum_view(&address, QUORUM_VIEW_TIMEOUT).await)
        }))
        .await;
        let mut following = BTreeSet::from([leader.id]);
        for (id, answer) in answers {
            match answer {
                Ok(view)
                    if view.term == leader.term
                        && view.leader.as_ref().map(|(l, _)| *l) == Some(leader.id) =>
                {
                    following.insert(id);
                }
                Ok(view) => debug!(voter = id, term = view.term, "voter follows another leader"),
                Err(e) => debug!(voter = id, error = %e, "voter did not answer"),
            }
        }
        Ok(QuorumState { leader, following })
    }

    /// `GET /controller/quorum` on the voter at `address`.
    async fn quorum_view(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<QuorumView, reqwest::Error> {
        self.client
            .get(format!("http://{address}/controller/quorum"))
            .timeout(timeout)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// Posts `body` to `path` on the quorum leader: tries the voters in turn, jumps to the
    /// leader a voter names, and backs off (50 ms doubling to 500 ms) between failed tries
    /// until `deadline`.
    async fn call_leader<Req, Reply, T>(
        &self,
        path: &str,
        body: &Req,
        timeout: Duration,
        deadline: Duration,
        classify: impl Fn(Reply) -> Answer<T>,
    ) -> Result<T, QuorumError>
    where
        Req: serde::Serialize,
        Reply: for<'de> serde::Deserialize<'de>,
    {
        let started = tokio::time::Instant::now();
        let mut candidates: Vec<String> = self.voters.values().cloned().collect();
        let hint = self.leader_hint.lock().clone();
        let mut next = hint
            .and_then(|h| candidates.iter().position(|c| *c == h))
            .unwrap_or(0);
        let mut backoff = Duration::from_millis(50);
        let mut last_error = String::from("no voter tried");
        while started.elapsed() < deadline {
            let address = candidates[next % candidates.len()].clone();
            let url = format!("http://{address}/{path}");
            // Never wait on one voter past the caller's deadline.
            let remaining = deadline.saturating_sub(started.elapsed());
            match self
                .client
                .post(&url)
                .timeout(timeout.min(remaining).max(Duration::from_millis(100)))
                .json(body)
                .send()
                .await
            {
                Ok(response) => match response.json::<Reply>().await.map(&classify) {
                    Ok(Answer::Done(value)) => {
                        *self.leader_hint.lock() = Some(address);
                        return Ok(value);
                    }
                    Ok(Answer::NotLeader(Some(leader))) if leader != address => {
                        if !candidates.contains(&leader) {
                            candidates.push(leader.clone());
                        }
                        next = candidates
                            .iter()
                            .position(|c| *c == leader)
                            .unwrap_or(next + 1);
                        last_error = format!("{address} is not the leader");
                        continue;
                    }
                    Ok(Answer::NotLeader(_)) => last_error = "no leader elected yet".into(),
                    Ok(Answer::Retry(reason)) => last_error = reason,
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => {
                    last_error = format!("{address}: {e}");
                    // Start the next call at another voter: this one may be gone.
                    let mut hint = self.leader_hint.lock();
                    if hint.as_deref().is_none_or(|h| h == address) {
                        *hint = Some(candidates[(next + 1) % candidates.len()].clone());
                    }
                }
            }
            next += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        Err(QuorumError::Unavailable(deadline, last_error))
    }

    /// Registers broker `id` and keeps its session alive with heartbeats until `shutdown`,
    /// registering again whenever the leader does not know this incarnation. Publishes
    /// whether the broker is currently fenced.
    pub fn run_broker_session(
        &self,
        id: i32,
        host: String,
        port: i32,
        rack: Option<String>,
        timing: LivenessTiming,
        shutdown: CancellationToken,
    ) -> watch::Receiver<bool> {
        self.run_broker_session_as(
            id,
            new_incarnation(),
            host,
            port,
            BTreeMap::new(),
            rack,
            timing,
            shutdown,
        )
    }

    /// [`run_broker_session`](Self::run_broker_session) with a given incarnation (the
    /// caller can then tell its own registration in the metadata from an older one).
    #[allow(clippy::too_many_arguments)]
    pub fn run_broker_session_as(
        &self,
        id: i32,
        incarnation: u64,
        host: String,
        port: i32,
        listeners: BTreeMap<String, ListenerAddress>,
        rack: Option<String>,
        timing: LivenessTiming,
        shutdown: CancellationToken,
    ) -> watch::Receiver<bool> {
        let (fenced_tx, fenced_rx) = watch::channel(true);
        let client = self.clone();
        tokio::spawn(async move {
            let register = Command::RegisterBroker {
                id,
                host,
                port,
                rack,
                incarnation,
                listeners,
            };
            let mut registered = false;
            let mut interval = tokio::time::interval(timing.heartbeat_interval);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = interval.tick() => {}
                }
                if !registered {
                    match client.write(&register, timing.session_timeout).await {
                        Ok(Ok(())) => {
                            info!(broker = id, incarnation, "registered with the controller");
                            registered = true;
                        }
                        Ok(Err(e)) => warn!(broker = id, error = %e, "registration refused"),
                        Err(e) => warn!(broker = id, error = %e, "registration failed"),
                    }
                }
                match client
                    .heartbeat(
                        Heartbeat {
                            broker_id: id,
                            incarnation,
                        },
                        (timing.heartbeat_interval * 2).max(Duration::from_secs(1)),
                    )
                    .await
                {
                    Ok((true, fenced)) => {
                        fenced_tx.send_if_modified(|f| std::mem::replace(f, fenced) != fenced);
                    }
                    Ok((false, _)) => registered = false,
                    Err(e) => debug!(broker = id, error = %e, "heartbeat failed"),
                }
            }
        });
        fenced_rx
    }

    /// Follows the metadata from the voters: long-polls one voter after another and publishes
    /// each newer state, until `shutdown`.
    pub fn follow(&self, shutdown: CancellationToken) -> MetadataWatch {
        let (tx, rx) = watch::channel((0u64, Arc::new(ClusterMetadata::default())));
        let client = self.client.clone();
        let voters: Vec<String> = self.voters.values().cloned().collect();
        tokio::spawn(async move {
            let mut next = 0usize;
            loop {
                let after = tx.borrow().0;
                let address = &voters[next % voters.len()];
                let url = format!(
                    "http://{address}/controller/metadata?after={after}&wait_ms={}",
                    FOLLOW_POLL.as_millis()
                );
                // A voter that stops answering is left after one short poll.
                let request = client
                    .get(&url)
                    .timeout(FOLLOW_POLL + Duration::from_secs(1))
                    .send();
                let reply = tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = request => r,
                };
                match reply {
                    Ok(response) => match response.json::<MetadataReply>().await {
                        Ok(reply) if reply.applied_index > after => {
                            tx.send_replace((reply.applied_index, Arc::new(reply.metadata)));
                        }
                        Ok(_) => {}
                        Err(_) => next += 1,
                    },
                    Err(_) => {
                        next += 1;
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                }
            }
        });
        rx
    }
}

/// How a voter's reply to [`QuorumClient::call_leader`] is taken.
enum Answer<T> {
    Done(T),
    /// Ask this address instead (`None`: no leader known yet).
    NotLeader(Option<String>),
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::policy::ControllerPolicy;

    /// Three voters on loopback, started; the caller stops them.
    async fn three_voters(root: &std::path::Path) -> (BTreeMap<NodeId, String>, Vec<Voter>) {
        let mut listeners = Vec::new();
        let mut voters = BTreeMap::new();
        for id in 1..=3 {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            voters.insert(id, listener.local_addr().expect("addr").to_string());
            listeners.push((id, listener));
        }
        let mut running = Vec::new();
        for (id, listener) in listeners {
            let voter = Voter::start(
                id,
                root.join(format!("c{id}")),
                listener,
                &voters,
                LivenessTiming::default(),
                ControllerPolicy::default(),
                CancellationToken::new(),
            )
            .await
            .expect("voter");
            running.push(voter);
        }
        (voters, running)
    }

    /// Asks until `check` holds of the quorum's state, or panics after `deadline`.
    async fn state_until(
        client: &QuorumClient,
        deadline: Duration,
        check: impl Fn(&QuorumState) -> bool,
    ) -> QuorumState {
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(state) = client.quorum_state(Duration::from_secs(1)).await {
                if check(&state) {
                    return state;
                }
            }
            assert!(started.elapsed() < deadline, "no such quorum state in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_quorum_state_comes_from_the_leader_and_drops_a_stopped_voter() {
        let root = tempfile::tempdir().expect("tempdir");
        let (voters, mut running) = three_voters(root.path()).await;
        let client = QuorumClient::new(voters).expect("client");
        let state = state_until(&client, Duration::from_secs(10), |s| s.following.len() == 3).await;
        assert!(state.leader.leads());
        assert_eq!(state.leader.voters, [1, 2, 3]);
        let leader = state.leader.id;
        let follower = running
            .iter()
            .position(|v| v.raft.metrics().borrow().id != leader)
            .expect("a follower");
        let stopped = running.remove(follower);
        let stopped_id = stopped.raft.metrics().borrow().id;
        stopped.shutdown().await;
        let state = state_until(&client, Duration::from_secs(10), |s| {
            !s.following.contains(&stopped_id)
        })
        .await;
        assert_eq!(state.following.len(), 2);
        for voter in running {
            voter.shutdown().await;
        }
    }
}
