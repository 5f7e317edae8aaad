//! The controller quorum with real openraft nodes talking HTTP on loopback: leader election,
//! replication of metadata commands to every voter, failover when the leader stops, catch-up
//! of a restarted voter from its disk, snapshots, and no progress without a majority.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokafka_broker::controller::metadata::{Command, CommandError};
use tokafka_broker::controller::policy::ControllerPolicy;
use tokafka_broker::controller::quorum::{LivenessTiming, QuorumClient, QuorumError, Voter};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn timing() -> LivenessTiming {
    LivenessTiming {
        session_timeout: Duration::from_millis(1500),
        heartbeat_interval: Duration::from_millis(200),
    }
}

struct Node {
    id: u64,
    dir: PathBuf,
    address: String,
    voter: Option<Voter>,
}

struct Quorum {
    _root: tempfile::TempDir,
    nodes: Vec<Node>,
    voters: BTreeMap<u64, String>,
    shutdown: CancellationToken,
}

async fn quorum(size: u64) -> Quorum {
    let root = tempfile::tempdir().expect("tempdir");
    let mut listeners = Vec::new();
    let mut voters = BTreeMap::new();
    for id in 1..=size {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        voters.insert(id, listener.local_addr().expect("addr").to_string());
        listeners.push((id, listener));
    }
    let shutdown = CancellationToken::new();
    let mut nodes = Vec::new();
    for (id, listener) in listeners {
        let dir = root.path().join(format!("c{id}"));
        let voter = Voter::start(
            id,
            dir.clone(),
            listener,
            &voters,
            timing(),
            ControllerPolicy::default(),
            shutdown.child_token(),
        )
        .await
        .expect("voter");
        nodes.push(Node {
            id,
            dir,
            address: voters[&id].clone(),
            voter: Some(voter),
        });
    }
    Quorum {
        _root: root,
        nodes,
        voters,
        shutdown,
    }
}

impl Quorum {
    fn client(&self) -> QuorumClient {
        QuorumClient::new(self.voters.clone()).expect("client")
    }

    async fn leader(&self, deadline: Duration) -> u64 {
        let start = tokio::time::Instant::now();
        loop {
            let leaders: Vec<u64> = self
                .nodes
                .iter()
                .filter_map(|n| n.voter.as_ref())
                .filter_map(Voter::leader)
                .collect();
            if let Some(&leader) = leaders.first() {
                if leaders.iter().all(|l| *l == leader)
                    && self
                        .nodes
                        .iter()
                        .any(|n| n.id == leader && n.voter.is_some())
                {
                    return leader;
                }
            }
            assert!(start.elapsed() < deadline, "no leader within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running voter has applied a state where `check` holds.
    async fn converge(
        &self,
        deadline: Duration,
        check: impl Fn(&tokafka_broker::controller::metadata::ClusterMetadata) -> bool,
    ) {
        for node in self.nodes.iter().filter(|n| n.voter.is_some()) {
            let mut rx = node
                .voter
                .as_ref()
                .map(|v| v.state_machine.subscribe())
                .expect("running");
            let waited = tokio::time::timeout(deadline, rx.wait_for(|(_, m)| check(m))).await;
            if waited.is_err() {
                for n in self.nodes.iter().filter_map(|n| n.voter.as_ref()) {
                    eprintln!("metrics: {:?}", n.raft.metrics().borrow());
                }
            }
            assert!(
                waited.is_ok(),
                "voter {} did not converge within {deadline:?}",
                node.id
            );
        }
    }

    async fn stop(&mut self, id: u64) {
        let node = self.nodes.iter_mut().find(|n| n.id == id).expect("node");
        if let Some(voter) = node.voter.take() {
            voter.shutdown().await;
        }
    }

    async fn restart(&mut self, id: u64) {
        let voters = self.voters.clone();
        let token = self.shutdown.child_token();
        let node = self.nodes.iter_mut().find(|n| n.id == id).expect("node");
        let listener = TcpListener::bind(&node.address).await.expect("rebind");
        node.voter = Some(
            Voter::start(
                id,
                node.dir.clone(),
                listener,
                &voters,
                timing(),
                ControllerPolicy::default(),
                token,
            )
            .await
            .expect("restart"),
        );
    }
}

fn register(id: i32) -> Command {
    Command::RegisterBroker {
        id,
        host: "127.0.0.1".into(),
        port: 9000 + id,
        rack: None,
        incarnation: 1,
        listeners: Default::default(),
    }
}

const DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_replicate_to_every_voter() {
    let q = quorum(3).await;
    q.leader(DEADLINE).await;
    let client = q.client();
    for id in 1..=3 {
        assert_eq!(
            client.write(&register(id), DEADLINE).await.expect("write"),
            Ok(())
        );
    }
    let refused = client
        .write(&Command::FenceBroker { id: 42 }, DEADLINE)
        .await
        .expect("write");
    assert_eq!(
        refused,
        Err(CommandError::UnknownBroker(42)),
        "a command's own error comes back"
    );
    q.converge(DEADLINE, |m| m.brokers.len() == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_a_restarted_voter_catches_up() {
    let mut q = quorum(3).await;
    let first = q.leader(DEADLINE).await;
    let client = q.client();
    client
        .write(&register(1), DEADLINE)
        .await
        .expect("write")
        .expect("applied");
    q.stop(first).await;
    let second = q.leader(DEADLINE).await;
    assert_ne!(first, second);
    client
        .write(&register(2), DEADLINE)
        .await
        .expect("write after failover")
        .expect("applied");
    q.restart(first).await;
    q.converge(DEADLINE, |m| m.brokers.len() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_nothing_commits() {
    let mut q = quorum(3).await;
    let leader = q.leader(DEADLINE).await;
    let others: Vec<u64> = q
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != leader)
        .collect();
    for id in others {
        q.stop(id).await;
    }
    let result = q.client().write(&register(1), Duration::from_secs(3)).await;
    assert!(
        matches!(result, Err(QuorumError::Unavailable(..))),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_restore_state() {
    let mut q = quorum(3).await;
    q.leader(DEADLINE).await;
    let client = q.client();
    client
        .write(&register(1), DEADLINE)
        .await
        .expect("write")
        .expect("applied");
    for _ in 0..600 {
        client
            .write(&Command::FenceBroker { id: 1 }, DEADLINE)
            .await
            .expect("write")
            .expect("applied");
    }
    q.converge(DEADLINE, |m| m.brokers.contains_key(&1)).await;
    // Every voter compacted its log into a snapshot.
    for node in &q.nodes {
        let snapshot = node.dir.join("snapshot");
        let log_len = std::fs::metadata(node.dir.join("log"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(snapshot.exists(), "voter {} has no snapshot", node.id);
        assert!(
            log_len < 200_000,
            "voter {} log is {log_len} bytes",
            node.id
        );
    }
    let id = q.nodes[0].id;
    q.stop(id).await;
    q.restart(id).await;
    q.converge(DEADLINE, |m| m.brokers.get(&1).is_some_and(|b| b.fenced))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_brokers_are_fenced_and_unfenced_when_they_return() {
    let q = quorum(3).await;
    q.leader(DEADLINE).await;
    let client = q.client();
    let sessions: Vec<(i32, CancellationToken)> =
        (1..=3).map(|id| (id, CancellationToken::new())).collect();
    let mut fenced = Vec::new();
    for (id, token) in &sessions {
        fenced.push(client.run_broker_session(
            *id,
            "127.0.0.1".into(),
            9000 + id,
            None,
            timing(),
            token.clone(),
        ));
    }
    q.converge(DEADLINE, |m| {
        m.brokers.len() == 3 && m.brokers.values().all(|b| !b.fenced)
    })
    .await;
    for rx in &mut fenced {
        tokio::time::timeout(DEADLINE, rx.wait_for(|f| !*f))
            .await
            .expect("unfenced")
            .expect("session");
    }
    // Broker 2 goes silent: it is fenced after the session timeout, the others are not.
    sessions[1].1.cancel();
    q.converge(DEADLINE, |m| {
        m.brokers[&2].fenced && !m.brokers[&1].fenced && !m.brokers[&3].fenced
    })
    .await;
    // It comes back as a new incarnation and is unfenced again.
    let back = CancellationToken::new();
    let mut rx =
        client.run_broker_session(2, "127.0.0.1".into(), 9002, None, timing(), back.clone());
    tokio::time::timeout(DEADLINE, rx.wait_for(|f| !*f))
        .await
        .expect("unfenced again")
        .expect("session");
    q.converge(DEADLINE, |m| !m.brokers[&2].fenced).await;
    for (_, token) in &sessions {
        token.cancel();
    }
    back.cancel();
}
