//! `ferrolvm node`: wires the node engine, the change watcher and the CSI
//! services onto one Unix socket, on a tokio runtime, with graceful
//! shutdown on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrolvm_proto::csi::v1::controller_server::ControllerServer;
use ferrolvm_proto::csi::v1::identity_server::IdentityServer;
use ferrolvm_proto::csi::v1::node_server::NodeServer;

use super::args::NodeArgs;
use super::usage;
use crate::csi::controller::ControllerService;
use crate::csi::identity::IdentityService;
use crate::csi::node::NodeService;
use crate::lvm::host::Host;
use crate::lvm::{LvmError, Result};
use crate::node::config::NodeConfig;
use crate::node::{watch, NodeEngine};

/// The socket path of a `unix://` CSI endpoint.
fn socket_path(endpoint: &str) -> Result<PathBuf> {
    endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .map(PathBuf::from)
        .ok_or_else(|| {
            usage(format!(
                "--csi-endpoint must be unix:///path, not {endpoint:?}"
            ))
        })
}

/// Logs each class's capacity whenever a watched VG changes (lvm2 on the
/// host included).
fn watch_capacity(host: Host, engine: Arc<NodeEngine>) -> watch::Watcher {
    let watched: Vec<String> = engine
        .config
        .device_classes
        .iter()
        .map(|d| d.volume_group.clone())
        .collect();
    watch::watch(
        host,
        watched,
        Duration::from_millis(500),
        move |vg, seqno| {
            for c in engine
                .config
                .device_classes
                .iter()
                .filter(|c| c.volume_group == vg)
            {
                match engine.capacity(Some(&c.name)) {
                    Ok(bytes) => {
                        tracing::info!(vg, seqno, class = %c.name, capacity = bytes, "volume group changed")
                    }
                    Err(err) => {
                        tracing::warn!(vg, seqno, class = %c.name, %err, "volume group changed; capacity unknown")
                    }
                }
            }
        },
    )
}

/// How long the node waits for an lvm2 lock held by another process (lvm2
/// on the host) before answering Aborted, so the sidecar retries.
const NODE_LOCK_WAIT: Duration = Duration::from_secs(30);

/// How often the wiper looks for work besides being woken by deletes.
const WIPE_EVERY: Duration = Duration::from_secs(30);

/// The gid of a group named on the command line.
fn group_id(name: &str) -> Result<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(usage(format!("--socket-group: no group {name:?}"))),
        Err(e) => Err(usage(format!("--socket-group {name:?}: {e}"))),
    }
}

pub fn node(mut host: Host, args: NodeArgs) -> Result<()> {
    let NodeArgs {
        config,
        node_name: node,
        csi_endpoint,
        standalone,
        socket_group,
        kubelet_dir,
        shutdown_grace,
    } = args;
    let grace = Duration::from_secs(shutdown_grace);
    host.lock_wait = Some(NODE_LOCK_WAIT);
    // A node without device-mapper could commit metadata it cannot activate.
    crate::lvm::activate::Dm::open()
        .map_err(|e| LvmError::Refused(format!("ferrolvm node needs device-mapper: {e}")))?;
    let cfg = NodeConfig::load(&config).map_err(|e| usage(e.to_string()))?;
    let path = socket_path(&csi_endpoint)?;
    let socket_group = socket_group.as_deref().map(group_id).transpose()?;
    let engine = Arc::new(NodeEngine::new(host.clone(), cfg).with_publish_roots(vec![kubelet_dir]));
    let e = engine.clone();
    let probe = Arc::new(move || e.probe());
    // A crash may have left a pool with queued messages or an origin suspended.
    match engine.recover() {
        Ok(resumed) if !resumed.is_empty() => {
            tracing::warn!(?resumed, "resumed thin volumes a crash left suspended")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(%e, "thin pool recovery failed; thin classes may not work"),
    }
    let _watcher = watch_capacity(host, engine.clone());
    // Deleted thick volumes are wiped in the background; a pass at start
    // finishes what a crash interrupted.
    let _wiper = engine.run_wiper(WIPE_EVERY);
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| LvmError::Refused(format!("starting the runtime: {e}")))?;
    let served = rt.block_on(async move {
        let mut router = tonic::transport::Server::builder()
            .add_service(IdentityServer::new(IdentityService::new(probe, standalone)))
            .add_service(NodeServer::new(NodeService {
                backend: engine.clone(),
                node: node.clone(),
            }));
        if standalone {
            router = router.add_service(ControllerServer::new(ControllerService {
                backend: crate::csi::standalone::Standalone {
                    engine,
                    node: node.clone(),
                },
            }));
        }
        tracing::info!(endpoint = %path.display(), node = %node, standalone, "serving CSI");
        // SIGTERM (or ^C) stops accepting calls and lets in-flight ones
        // finish, for at most `grace`: kubelet kills a pod that
        // overstays its grace period anyway, and a hung call must not keep
        // the node from restarting.
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down after in-flight calls");
            let _ = stopping.send(());
        };
        let serve = crate::csi::serve_unix(&path, socket_group, router, shutdown);
        tokio::pin!(serve);
        let served = tokio::select! {
            r = &mut serve => r,
            _ = async {
                if stopped.await.is_err() {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(?grace, "in-flight calls outlasted the grace period; exiting");
                Ok(())
            }
        };
        served.map_err(|e| LvmError::Refused(format!("serving {}: {e}", path.display())))
    });
    // Dropping a runtime waits for its blocking calls, which could be an lvm2
    // lock wait or a hung device: past the grace period, leave them. Exiting
    // mid-call is a crash, and every change is ordered to survive one.
    rt.shutdown_timeout(Duration::ZERO);
    served
}
