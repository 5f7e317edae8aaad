//! The `tokafka-broker` binary: with no arguments, a single-node broker with embedded
//! defaults (Kafka protocol on :9092, data in ./data).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokafka_broker::config::{keys_help, BrokerConfig, Settings};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Parser, Debug)]
#[command(name = "tokafka-broker", version, about = "A Kafka-protocol-compatible event broker", after_help = keys_help())]
struct Cli {
    /// Directory for partition logs and broker metadata (log.dirs).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address the Kafka protocol listener binds (listeners).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address given to clients in metadata (advertised.listeners).
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Id of this broker (node.id).
    #[arg(long, value_name = "N")]
    node_id: Option<i32>,
    /// Address of the HTTP side port for /metrics, /healthz, /readyz (http.listeners).
    #[arg(long, value_name = "HOST:PORT")]
    http_listen: Option<String>,
    /// Controller voters of the cluster, ID@HOST:PORT,... (controller.quorum.voters); without
    /// it this node alone is a one-voter quorum.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    controller_voters: Option<String>,
    /// Address this node's controller listener binds when it is a voter
    /// (controller.listeners).
    #[arg(long, value_name = "HOST:PORT")]
    controller_listen: Option<String>,
    /// Kafka-style properties file (KEY=VALUE lines).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Any configuration key, repeatable: --set num.partitions=6
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Subcommand>,
}

#[derive(clap::Subcommand, Debug)]
enum Subcommand {
    /// Start a local cluster of brokers on 127.0.0.1 (Kafka ports 19092, 19093, ...), print
    /// the bootstrap address, and stop them all on SIGTERM or Ctrl-C. Each broker's pid is in
    /// DIR/<node id>/pid and its log in DIR/<node id>/broker.log. --set values apply to all.
    DevCluster {
        /// Number of brokers (the first three are controller voters).
        #[arg(long, default_value_t = 3)]
        brokers: u16,
        /// Directory for the brokers' data, logs and pid files.
        #[arg(long, value_name = "DIR", default_value = "./dev-cluster")]
        dir: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Debug)]
enum LogFormat {
    Text,
    Json,
}

fn settings_from(cli: &Cli) -> anyhow::Result<Settings> {
    let mut settings = Settings::defaults();
    if let Some(path) = &cli.config {
        settings.apply_file(path)?;
    }
    settings.apply_env(std::env::vars());
    for item in &cli.set {
        let (key, value) = item
            .split_once('=')
            .with_context(|| format!("--set {item}: expected KEY=VALUE"))?;
        settings.set(key.trim(), value, "--set")?;
    }
    let flags = [
        (
            "log.dirs",
            cli.data_dir.as_ref().map(|p| p.display().to_string()),
        ),
        ("listeners", cli.listen.clone()),
        ("advertised.listeners", cli.advertised_listener.clone()),
        ("node.id", cli.node_id.map(|n| n.to_string())),
        ("http.listeners", cli.http_listen.clone()),
        ("controller.quorum.voters", cli.controller_voters.clone()),
        ("controller.listeners", cli.controller_listen.clone()),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            settings.set(key, &value, "flag")?;
        }
    }
    Ok(settings)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn".into());
    // Colours only for a person at a terminal: a log file or pipe gets plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(Subcommand::DevCluster { brokers, dir }) = &cli.command {
        runtime.block_on(tokafka_broker::dev_cluster::run(
            *brokers,
            dir,
            &cli.set,
            wait_for_signal(),
        ))?;
        return Ok(());
    }
    let config = BrokerConfig::from_settings(&settings_from(&cli)?)?;
    runtime.block_on(async move {
        let token = CancellationToken::new();
        let stop = token.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("signal received");
            stop.cancel();
        });
        let running = tokafka_broker::run::start_until(config, token).await?;
        println!(
            "tokafka broker listening on {} (HTTP {})",
            running.kafka_address, running.http_address
        );
        running.wait().await?;
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
