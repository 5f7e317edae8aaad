//! Thin client of the brokers' HTTP admin API (paths and answers from
//! [`tokafka_contract::admin`]): the cluster's own view of itself, and the commands that
//! drain, forget and balance brokers.
//!
//! Any broker answers for the whole cluster, so every call asks the brokers in turn
//! ([`BrokerAdmin::ask_each`]) until one answers; each broker gets [`ADMIN_TIMEOUT`].

use std::future::Future;
use std::time::Duration;

use reqwest::Method;
use tokafka_contract::admin::{paths, ClusterSummary};

use crate::names::ClusterNames;

/// How long one broker gets to answer.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A command to the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Drain broker `id`: its replicas move to the brokers that stay.
    Drain(i32),
    /// Cancel the drain of broker `id` (moves still in flight are undone).
    CancelDrain(i32),
    /// Forget broker `id`, stopped and holding no replica.
    Forget(i32),
    /// Spread replicas so every live broker holds about as many.
    SpreadReplicas,
    /// Move leadership to preferred replicas wherever they are in sync.
    ElectPreferredLeaders,
}

impl Command {
    pub fn method(self) -> Method {
        match self {
            Command::Drain(_) | Command::SpreadReplicas | Command::ElectPreferredLeaders => {
                Method::POST
            }
            Command::CancelDrain(_) | Command::Forget(_) => Method::DELETE,
        }
    }

    pub fn path(self) -> String {
        match self {
            Command::Drain(id) | Command::CancelDrain(id) => paths::decommission(id),
            Command::Forget(id) => paths::broker(id),
            Command::SpreadReplicas => paths::SPREAD_REPLICAS.to_string(),
            Command::ElectPreferredLeaders => paths::PREFERRED_LEADER_ELECTION.to_string(),
        }
    }
}

/// Why a command did not go through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminError {
    /// A broker refused it (a 4xx answer, with its `{"error": ...}` body): the cluster's
    /// answer, so no other broker is asked.
    Refused {
        request: String,
        status: String,
        body: String,
    },
    /// No broker accepted it; `last` is the last failure (or that there was none to ask).
    Unanswered { last: String },
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Refused {
                request,
                status,
                body,
            } => write!(f, "{request}: {status} {body}"),
            AdminError::Unanswered { last } => f.write_str(last),
        }
    }
}

/// How a broker's refusal (a 4xx answer) is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnRefusal {
    /// The cluster's answer: stop asking.
    Final,
    /// One broker's view (it may be starting or stopping): ask the next.
    AskNext,
}

/// The admin API of the brokers `0..replicas` of one cluster.
#[derive(Clone, Debug)]
pub struct BrokerAdmin {
    pub http: reqwest::Client,
    pub names: ClusterNames,
    /// The pods asked, in turn: `0..replicas`.
    pub replicas: i32,
    /// The brokers' HTTP side port.
    pub port: i32,
}

impl BrokerAdmin {
    /// The same cluster, asking pods `0..replicas`.
    pub fn asking(&self, replicas: i32) -> Self {
        Self {
            replicas,
            ..self.clone()
        }
    }

    /// `GET /v1/cluster`: the first readable answer. `None` when no broker answered (the
    /// cluster is starting, or unreachable from the operator).
    pub async fn cluster_summary(&self) -> Option<ClusterSummary> {
        let read = |response: reqwest::Response| async move {
            response
                .json::<ClusterSummary>()
                .await
                .map_err(|e| format!("unreadable cluster summary: {e}"))
        };
        self.ask_each(Method::GET, paths::CLUSTER, OnRefusal::AskNext, read)
            .await
            .ok()
    }

    /// Sends `command` until a broker accepts or refuses it.
    ///
    /// # Errors
    /// [`AdminError`]: the refusal, or that no broker answered.
    pub async fn send(&self, command: Command) -> Result<(), AdminError> {
        let path = command.path();
        self.ask_each(command.method(), &path, OnRefusal::Final, |_| async {
            Ok(())
        })
        .await
    }

    /// Sends `command` until a broker accepts it, any failure asking the next; the outcome
    /// is only logged. For commands the brokers would get to on their own, later.
    pub async fn send_best_effort(&self, command: Command) {
        let path = command.path();
        if let Err(error) = self
            .ask_each(command.method(), &path, OnRefusal::AskNext, |_| async {
                Ok(())
            })
            .await
        {
            tracing::debug!(cluster = %self.names.cluster, %error, "best-effort admin command not taken");
        }
    }

    /// Asks the brokers `0..replicas` in turn: the first success whose body `read` accepts
    /// wins; a refusal ends the round when `on_refusal` says so; anything else asks the next.
    async fn ask_each<T, F, Fut>(
        &self,
        method: Method,
        path: &str,
        on_refusal: OnRefusal,
        read: F,
    ) -> Result<T, AdminError>
    where
        F: Fn(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let mut last = "no broker's admin API answered".to_string();
        for ordinal in 0..self.replicas {
            let url = format!(
                "http://{}:{}{path}",
                self.names.pod_host(ordinal),
                self.port
            );
            let answer = self
                .http
                .request(method.clone(), &url)
                .timeout(ADMIN_TIMEOUT)
                .send()
                .await;
            match answer {
                Ok(response) if response.status().is_success() => match read(response).await {
                    Ok(value) => return Ok(value),
                    Err(error) => {
                        tracing::debug!(%url, %error, "admin API answer not taken");
                        last = format!("{method} {path}: {error}");
                    }
                },
                Ok(response)
                    if response.status().is_client_error() && on_refusal == OnRefusal::Final =>
                {
                    let status = response.status().to_string();
                    let body = response.text().await.unwrap_or_default();
                    return Err(AdminError::Refused {
                        request: format!("{method} {path}"),
                        status,
                        body,
                    });
                }
                Ok(response) => {
                    tracing::debug!(%url, status = %response.status(), "admin API refused");
                    last = format!("{method} {path}: {}", response.status());
                }
                Err(error) => {
                    tracing::debug!(%url, %error, "admin API unreachable");
                    last = format!("{method} {path}: {error}");
                }
            }
        }
        Err(AdminError::Unanswered { last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_go_to_the_contracts_paths() {
        let sent = |c: Command| (c.method(), c.path());
        assert_eq!(
            sent(Command::Drain(4)),
            (Method::POST, "/v1/brokers/4/decommission".to_string())
        );
        assert_eq!(
            sent(Command::CancelDrain(4)),
            (Method::DELETE, "/v1/brokers/4/decommission".to_string())
        );
        assert_eq!(
            sent(Command::Forget(3)),
            (Method::DELETE, "/v1/brokers/3".to_string())
        );
        assert_eq!(
            sent(Command::SpreadReplicas),
            (Method::POST, "/v1/cluster/spread-replicas".to_string())
        );
        assert_eq!(
            sent(Command::ElectPreferredLeaders),
            (
                Method::POST,
                "/v1/cluster/preferred-leader-election".to_string()
            )
        );
    }

    #[tokio::test]
    async fn no_broker_to_ask_is_no_answer() {
        let admin = BrokerAdmin {
            http: reqwest::Client::new(),
            names: ClusterNames::new("demo", "kafka"),
            replicas: 0,
            port: 9644,
        };
        assert_eq!(admin.cluster_summary().await, None);
        assert_eq!(
            admin.send(Command::Drain(1)).await,
            Err(AdminError::Unanswered {
                last: "no broker's admin API answered".into()
            })
        );
    }

    #[test]
    fn a_refusal_reads_as_the_request_the_status_and_the_body() {
        let refused = AdminError::Refused {
            request: "POST /v1/brokers/4/decommission".into(),
            status: "400 Bad Request".into(),
            body: r#"{"error":"nowhere to go"}"#.into(),
        };
        assert_eq!(
            refused.to_string(),
            r#"POST /v1/brokers/4/decommission: 400 Bad Request {"error":"nowhere to go"}"#
        );
    }
}
