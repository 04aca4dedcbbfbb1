//! `ferrolvm node`: wires the node engine, the change watcher and the CSI
//! services onto one Unix socket, on a tokio runtime, with graceful
//! shutdown on SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferrolvm_proto::csi::v1::controller_server::ControllerServer;
use ferrolvm_proto::csi::v1::identity_server::IdentityServer;
use ferrolvm_proto::csi::v1::node_server::NodeServer;

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

pub fn node(
    host: Host,
    config: &Path,
    node: String,
    endpoint: &str,
    standalone: bool,
) -> Result<()> {
    let cfg = NodeConfig::load(config).map_err(|e| usage(e.to_string()))?;
    let path = socket_path(endpoint)?;
    let engine = Arc::new(NodeEngine::new(host.clone(), cfg));
    let e = engine.clone();
    let probe = Arc::new(move || e.probe());
    let _watcher = watch_capacity(host, engine.clone());
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| LvmError::Refused(format!("starting the runtime: {e}")))?;
    rt.block_on(async move {
        let mut router = tonic::transport::Server::builder()
            .add_service(IdentityServer::new(IdentityService::new(probe, standalone)))
            .add_service(NodeServer::new(NodeService {
                backend: engine.clone(),
                node: node.clone(),
            }));
        if standalone {
            router = router.add_service(ControllerServer::new(ControllerService {
                backend: engine,
                node: node.clone(),
            }));
        }
        tracing::info!(endpoint = %path.display(), node = %node, standalone, "serving CSI");
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down after in-flight calls");
        };
        crate::csi::serve_unix(&path, router, shutdown)
            .await
            .map_err(|e| LvmError::Refused(format!("serving {}: {e}", path.display())))
    })
}
