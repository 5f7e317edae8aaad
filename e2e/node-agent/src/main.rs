//! `tokafka-node-agent`: runs the pods of one Kubernetes node as local processes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use node_agent::images::{ImageEntry, ImageMap};
use node_agent::node::NodeInfo;
use node_agent::worker::Runtime;
use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

#[derive(Parser, Debug)]
#[command(about = "A kubelet stand-in that runs a node's pods as local processes (for e2e tests)")]
struct Args {
    /// Kubeconfig of the cluster to join.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, default_value = "tokafka-local-node")]
    node_name: String,
    /// Directory for pod files (logs, ConfigMap volumes, emptyDirs).
    #[arg(long)]
    state_dir: PathBuf,
    /// Image mapping NAME=PATH, repeatable: containers of image NAME run PATH. NAME without a tag matches any tag.
    #[arg(long = "image", value_name = "NAME=PATH")]
    images: Vec<ImageEntry>,
    /// Hosts file whose marked block gets the pods' and services' DNS names; none: no names.
    #[arg(long, default_value = "/etc/hosts")]
    hosts_file: String,
    /// Address the API server is reached at from pods (KUBERNETES_SERVICE_HOST).
    #[arg(long, default_value = "127.0.0.1")]
    apiserver_host: String,
    /// Port of the API server (KUBERNETES_SERVICE_PORT).
    #[arg(long, default_value_t = 6443)]
    apiserver_port: u16,
    /// Run containers without private mount/UTS namespaces (volume mounts are then refused).
    #[arg(long)]
    no_isolation: bool,
    /// Port of the kubelet API (kubectl logs) on 127.0.0.1; served only with --tls-cert and --tls-key.
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// PEM certificate of the kubelet API.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the kubelet API.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Kubelet version reported by the node.
    #[arg(long, default_value = "v1.37.2")]
    kubelet_version: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    for e in &args.images {
        anyhow::ensure!(
            e.program.is_file(),
            "image {} maps to {}, which does not exist: build it first (cargo build) or fix the --image mapping",
            e.image,
            e.program.display()
        );
    }
    if !args.no_isolation {
        check_isolation(&args.state_dir).await?;
    }
    let images = stage_images(&args.images, &args.state_dir.join("images"))?;
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", args.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;

    let pods_dir = args.state_dir.join("pods");
    let volumes_dir = args.state_dir.join("volumes");
    std::fs::create_dir_all(&pods_dir)
        .with_context(|| format!("creating {}", pods_dir.display()))?;
    std::fs::create_dir_all(&volumes_dir)
        .with_context(|| format!("creating {}", volumes_dir.display()))?;

    let mut base_env = vec![
        (
            "PATH".to_string(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        (
            "KUBERNETES_SERVICE_HOST".to_string(),
            args.apiserver_host.clone(),
        ),
        (
            "KUBERNETES_SERVICE_PORT".to_string(),
            args.apiserver_port.to_string(),
        ),
        (
            "KUBERNETES_SERVICE_PORT_HTTPS".to_string(),
            args.apiserver_port.to_string(),
        ),
    ];
    // The e2e scripts mark every process they start, so they can prove none is left behind.
    if let Ok(run) = std::env::var("TOKAFKA_E2E_RUN") {
        base_env.push(("TOKAFKA_E2E_RUN".to_string(), run));
    }
    let rt = Arc::new(Runtime {
        client,
        node_name: args.node_name.clone(),
        host_ip: "127.0.0.1".into(),
        images: ImageMap::new(images),
        pods_dir,
        isolate: !args.no_isolation,
        base_env,
        used_ips: Mutex::new(Default::default()),
        names: Mutex::new(Default::default()),
        names_changed: Default::default(),
        created_paths: Mutex::new(Vec::new()),
    });
    let cfg = node_agent::agent::Config {
        node: NodeInfo {
            name: args.node_name.clone(),
            address: "127.0.0.1".into(),
            kubelet_port: i32::from(args.kubelet_port),
            kubelet_version: args.kubelet_version.clone(),
            cpu: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .to_string(),
            memory: "16Gi".into(),
            max_pods: 110,
        },
        volumes_dir,
        hosts_file: (args.hosts_file != "none").then(|| PathBuf::from(&args.hosts_file)),
    };

    if let (Some(cert), Some(key)) = (args.tls_cert.clone(), args.tls_key.clone()) {
        let (port, pods) = (args.kubelet_port, rt.pods_dir.clone());
        tokio::spawn(async move {
            if let Err(e) = node_agent::kubelet_api::serve(port, &cert, &key, pods).await {
                tracing::error!(error = %e, "kubelet API stopped: kubectl logs will not work");
            }
        });
    }

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("shutting down: stopping pods");
        let _ = shutdown_tx.send(true);
    });
    let result = node_agent::agent::run(rt.clone(), cfg, shutdown_rx).await;
    node_agent::process::remove_created(&rt.created_paths.lock().expect("paths lock"));
    result?;
    info!("node agent stopped");
    Ok(())
}

/// Fails early, and says why, when the kernel refuses the namespaces containers run in.
async fn check_isolation(state_dir: &std::path::Path) -> anyhow::Result<()> {
    let spec = node_agent::podspec::ProcessSpec {
        program: "true".into(),
        args: Vec::new(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        working_dir: None,
        mounts: Vec::new(),
        user: None,
    };
    let log = state_dir.join("isolation-check.log");
    let mut created = Vec::new();
    let status =
        match node_agent::process::spawn(&spec, "isolation-check", &log, true, &mut created) {
            Ok(mut child) => child.wait().await.map(|s| s.success()).unwrap_or(false),
            Err(_) => false,
        };
    anyhow::ensure!(
        status,
        "cannot run containers in private mount and UTS namespaces (needs root or CAP_SYS_ADMIN): \
         run the node agent as root, or pass --no-isolation (then pods cannot mount volumes)"
    );
    Ok(())
}

/// Copies the mapped programs under the state directory, keeping their file names, so that
/// containers running as another user than root can execute them (a build under /root is out
/// of their reach) and a rebuild during a run does not change what pods run.
fn stage_images(entries: &[ImageEntry], dir: &std::path::Path) -> anyhow::Result<Vec<ImageEntry>> {
    use std::os::unix::fs::PermissionsExt;
    let mut staged = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let name = e
            .program
            .file_name()
            .context("image program has no file name")?;
        let slot = dir.join(i.to_string());
        std::fs::create_dir_all(&slot).with_context(|| format!("creating {}", slot.display()))?;
        let dest = slot.join(name);
        std::fs::copy(&e.program, &dest)
            .with_context(|| format!("copying {} to {}", e.program.display(), dest.display()))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
        for d in [dir, slot.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        staged.push(ImageEntry {
            image: e.image.clone(),
            program: dest,
        });
    }
    Ok(staged)
}
