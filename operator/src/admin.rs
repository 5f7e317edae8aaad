//! Thin client of the brokers' HTTP admin API: the cluster's own view of itself.

use std::time::Duration;

use tokafka_contract::admin::ClusterSummary;

use crate::names::ClusterNames;

/// How long one broker gets to answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the brokers `0..replicas` in turn for `GET /v1/cluster`; the first answer wins.
/// `None` when none answers (the cluster is starting, or unreachable from the operator).
pub async fn cluster_summary(
    http: &reqwest::Client,
    names: &ClusterNames,
    replicas: i32,
    http_port: i32,
) -> Option<ClusterSummary> {
    for ordinal in 0..replicas {
        let url = format!("http://{}:{http_port}/v1/cluster", names.pod_host(ordinal));
        let answer = http.get(&url).timeout(ADMIN_TIMEOUT).send().await;
        match answer {
            Ok(response) if response.status().is_success() => {
                match response.json::<ClusterSummary>().await {
                    Ok(summary) => return Some(summary),
                    Err(error) => tracing::debug!(%url, %error, "unreadable cluster summary"),
                }
            }
            Ok(response) => tracing::debug!(%url, status = %response.status(), "admin API refused"),
            Err(error) => tracing::debug!(%url, %error, "admin API unreachable"),
        }
    }
    None
}

/// Asks the cluster to move leadership back to preferred replicas (best effort: the brokers'
/// own automatic rebalance would get there too, later).
pub async fn preferred_leader_election(
    http: &reqwest::Client,
    names: &ClusterNames,
    replicas: i32,
    http_port: i32,
) {
    for ordinal in 0..replicas {
        let url = format!(
            "http://{}:{http_port}/v1/cluster/preferred-leader-election",
            names.pod_host(ordinal)
        );
        match http.post(&url).timeout(ADMIN_TIMEOUT).send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => tracing::debug!(%url, status = %response.status(), "election refused"),
            Err(error) => tracing::debug!(%url, %error, "admin API unreachable"),
        }
    }
}

/// Sends `method path` to the brokers in turn until one answers; `Err` carries the refusal
/// (`{"error": ...}` body) or says none answered.
pub async fn call(
    http: &reqwest::Client,
    names: &ClusterNames,
    replicas: i32,
    http_port: i32,
    method: reqwest::Method,
    path: &str,
) -> Result<(), String> {
    let mut last = "no broker's admin API answered".to_string();
    for ordinal in 0..replicas {
        let url = format!("http://{}:{http_port}{path}", names.pod_host(ordinal));
        match http
            .request(method.clone(), &url)
            .timeout(ADMIN_TIMEOUT)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                return Err(format!("{method} {path}: {status} {body}"));
            }
            Ok(response) => last = format!("{method} {path}: {}", response.status()),
            Err(error) => last = format!("{method} {path}: {error}"),
        }
    }
    Err(last)
}
