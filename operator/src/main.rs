//! `tokafka-operator`: runs the BrokerCluster controller, with Lease leader election so that
//! several replicas are safe (only the Lease holder reconciles).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube::Client;
use tokafka_operator::metrics::{self, Metrics};
use tokafka_operator::reconcile;

#[derive(Parser, Debug)]
#[command(
    name = "tokafka-operator",
    version,
    about = "Kubernetes operator for tokafka BrokerClusters"
)]
struct Cli {
    /// Address of the HTTP side port: /metrics, /healthz, /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "HOST:PORT")]
    metrics_listen: SocketAddr,
    /// Watch BrokerClusters in this namespace only (default: all namespaces).
    #[arg(long, value_name = "NAMESPACE")]
    watch_namespace: Option<String>,
    /// Reconcile only while holding the Lease (safe with several replicas).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "tokafka-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the client's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a Lease holder keeps leadership without renewing it.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Debug)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: &LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind(cli.metrics_listen)
        .await
        .with_context(|| format!("binding {}", cli.metrics_listen))?;
    tokio::spawn(metrics::serve(listener, metrics.clone()));
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or kubeconfig)")?;
    client
        .apiserver_version()
        .await
        .context("the API server does not answer")?;
    metrics.set_api_reachable();
    tracing::info!(listen = %cli.metrics_listen, namespace = ?cli.watch_namespace, "operator starting");

    if !cli.leader_election {
        metrics.set_leader(true);
        reconcile::run(client, cli.watch_namespace, metrics, terminated()).await;
        return Ok(());
    }

    let identity = cli
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("tokafka-operator-{}", std::process::id()));
    let lease_namespace = cli
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &cli.lease_name)
        .with_namespace(&lease_namespace)
        .with_identity(&identity)
        .with_duration(cli.lease_duration_seconds)
        .with_grace(cli.lease_duration_seconds / 3)
        .build()
        .await
        .context("setting up the leader-election Lease")?;
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(lease = %cli.lease_name, %lease_namespace, %identity, "waiting for the leader Lease");
    tokio::select! {
        () = terminated() => return Ok(()),
        changed = leading.wait_for(|held| *held) => {
            changed.context("the Lease manager stopped")?;
        }
    }
    tracing::info!(%identity, "leading: reconciling BrokerClusters");
    metrics.set_leader(true);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(reconcile::run(
        client,
        cli.watch_namespace,
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let lost = tokio::select! {
        () = terminated() => false,
        _ = leading.wait_for(|held| !*held) => true,
    };
    let _ = stop.send(());
    // Stop reconciling before anyone else may start: wait for the controller to finish its
    // in-flight reconciliations, but no longer than the Lease's grace.
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    metrics.set_leader(false);
    drop(leading);
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    if lost {
        anyhow::bail!("lost the leader Lease; exiting so a fresh start competes for it again");
    }
    Ok(())
}
