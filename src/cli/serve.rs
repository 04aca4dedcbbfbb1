//! The servers. `ferrolvm node` wires the node engine, the change watcher
//! and the CSI services onto one Unix socket and, unless standalone, the
//! reconciler of this node's LogicalVolumes and the capacity it publishes;
//! `ferrolvm controller` serves CSI Identity and Controller over
//! LogicalVolume objects; `ferrolvm lvmd` serves TopoLVM's lvmd protocol
//! over the node engine. All shut down gracefully on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrolvm_proto::csi::v1::controller_server::ControllerServer;
use ferrolvm_proto::csi::v1::identity_server::IdentityServer;
use ferrolvm_proto::csi::v1::node_server::NodeServer;
use ferrolvm_proto::pluginregistration::registration_server::RegistrationServer;

use super::args::{ControllerArgs, LvmdArgs, NodeArgs, RegisterPluginArgs, SchedulerArgs};
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
/// host included), and ticks `changed` for the capacity publisher.
fn watch_capacity(
    host: Host,
    engine: Arc<NodeEngine>,
    changed: tokio::sync::watch::Sender<u64>,
) -> watch::Watcher {
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
            changed.send_modify(|n| *n += 1);
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

/// A flag that turns true on SIGTERM (or ^C).
fn stop_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down after in-flight calls");
        let _ = tx.send(true);
    });
    rx
}

/// Resolves once `stop` turned true.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves `router` on `path` until `stop`, then lets in-flight calls
/// finish for at most `grace`: kubelet kills a pod that overstays its grace
/// period anyway, and a hung call must not keep the process from
/// restarting.
async fn serve_until_stopped(
    path: &std::path::Path,
    socket_group: Option<u32>,
    router: crate::csi::Router,
    grace: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let serve = crate::csi::serve_unix(path, socket_group, router, stopped(stop.clone()));
    tokio::pin!(serve);
    let served = tokio::select! {
        r = &mut serve => r,
        _ = async {
            stopped(stop).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "in-flight calls outlasted the grace period; exiting");
            Ok(())
        }
    };
    served.map_err(|e| LvmError::Refused(format!("serving {}: {e}", path.display())))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new()
        .map_err(|e| LvmError::Refused(format!("starting the runtime: {e}")))
}

/// A client from KUBECONFIG, or the pod's service account in a cluster.
async fn kube_client() -> Result<kube::Client> {
    kube::Client::try_default().await.map_err(|e| {
        LvmError::Refused(format!(
            "no Kubernetes client (KUBECONFIG or in-cluster): {e}"
        ))
    })
}

/// A node engine at work: its change watcher and its wiper run while this
/// is held.
struct Started {
    engine: Arc<NodeEngine>,
    /// Ticks on every change of a watched VG.
    changes: tokio::sync::watch::Receiver<u64>,
    _watcher: watch::Watcher,
    _wiper: std::thread::JoinHandle<()>,
}

/// The node engine of `ferrolvm node` and `ferrolvm lvmd`: device-mapper
/// checked, the device classes loaded, a crash's leftovers recovered, the
/// change watcher and the wiper started.
fn start_engine(
    mut host: Host,
    config: &std::path::Path,
    publish_roots: Vec<PathBuf>,
) -> Result<Started> {
    host.lock_wait = Some(NODE_LOCK_WAIT);
    // A node without device-mapper could commit metadata it cannot activate.
    crate::lvm::activate::Dm::open()
        .map_err(|e| LvmError::Refused(format!("ferrolvm needs device-mapper: {e}")))?;
    let cfg = NodeConfig::load(config).map_err(|e| usage(e.to_string()))?;
    let engine = Arc::new(NodeEngine::new(host.clone(), cfg).with_publish_roots(publish_roots));
    // A crash may have left a pool with queued messages or an origin suspended.
    match engine.recover() {
        Ok(resumed) if !resumed.is_empty() => {
            tracing::warn!(?resumed, "resumed thin volumes a crash left suspended")
        }
        Ok(_) => {}
        Err(e) => tracing::error!(%e, "thin pool recovery failed; thin classes may not work"),
    }
    let (changed, changes) = tokio::sync::watch::channel(0u64);
    let _watcher = watch_capacity(host, engine.clone(), changed);
    // Deleted thick volumes are wiped in the background; a pass at start
    // finishes what a crash interrupted.
    let _wiper = engine.run_wiper(WIPE_EVERY);
    Ok(Started {
        engine,
        changes,
        _watcher,
        _wiper,
    })
}

/// `ferrolvm lvmd`: TopoLVM's lvmd protocol on `args.socket`, until SIGTERM.
pub fn lvmd(host: Host, args: LvmdArgs) -> Result<()> {
    use ferrolvm_proto::lvmd::lv_service_server::LvServiceServer;
    use ferrolvm_proto::lvmd::vg_service_server::VgServiceServer;
    let socket_group = args.socket_group.as_deref().map(group_id).transpose()?;
    let grace = Duration::from_secs(args.shutdown_grace);
    // No publish roots: lvmd's protocol mounts nothing.
    let started = start_engine(host, &args.config, vec![])?;
    let service = Arc::new(crate::csi::lvmd::Lvmd {
        engine: started.engine.clone(),
        changes: started.changes.clone(),
    });
    let rt = runtime()?;
    let served = rt.block_on(async move {
        let stop = stop_signal();
        let counters = crate::metrics::node::NodeCounters::default();
        let router = tonic::transport::Server::builder()
            .layer(counters.csi.layer())
            .add_service(LvServiceServer::from_arc(service.clone()))
            .add_service(VgServiceServer::from_arc(service));
        tracing::info!(socket = %args.socket.display(), "serving the lvmd protocol");
        serve_until_stopped(&args.socket, socket_group, router, grace, stop).await
    });
    rt.shutdown_timeout(Duration::ZERO);
    drop(started);
    served
}

/// Serves kubelet's plugin registration for `driver_name` at `csi_path`
/// until SIGTERM; the socket goes with it, and kubelet deregisters.
pub fn register_plugin(args: RegisterPluginArgs) -> Result<()> {
    let RegisterPluginArgs {
        driver_name,
        csi_path,
        kubelet_dir,
    } = args;
    if !crate::csi::registration::is_driver_name(&driver_name) {
        return Err(LvmError::Refused(format!(
            "--driver-name {driver_name:?} is not a CSI driver name"
        )));
    }
    let endpoint = match csi_path.to_str() {
        Some(p) if csi_path.is_absolute() => p.to_string(),
        _ => {
            return Err(LvmError::Refused(format!(
                "--csi-path {} must be an absolute UTF-8 path",
                csi_path.display()
            )))
        }
    };
    let socket = crate::csi::registration::socket_path(&kubelet_dir, &driver_name);
    let rt = runtime()?;
    let served = rt.block_on(async move {
        let stop = stop_signal();
        // Counted like every served call, though nothing scrapes them here.
        let router = tonic::transport::Server::builder()
            .layer(crate::metrics::grpc::CsiMetrics::default().layer())
            .add_service(RegistrationServer::new(
                crate::csi::registration::RegistrationService {
                    driver: driver_name,
                    endpoint,
                    status: Default::default(),
                },
            ));
        tracing::info!(socket = %socket.display(), "serving kubelet plugin registration");
        let served = serve_until_stopped(&socket, None, router, Duration::ZERO, stop).await;
        let _ = std::fs::remove_file(&socket);
        served
    });
    rt.shutdown_timeout(Duration::ZERO);
    served
}

pub fn node(host: Host, args: NodeArgs) -> Result<()> {
    let NodeArgs {
        config,
        node_name: node,
        csi_endpoint,
        standalone,
        socket_group,
        kubelet_dir,
        shutdown_grace,
        reconcile_concurrency,
        capacity_resync,
        orphan_check,
        remove_orphans,
        metrics_listen,
        kubelet_registration_path,
    } = args;
    let grace = Duration::from_secs(shutdown_grace);
    let registration_socket =
        crate::csi::registration::socket_path(&kubelet_dir, crate::csi::PLUGIN_NAME);
    let path = socket_path(&csi_endpoint)?;
    let socket_group = socket_group.as_deref().map(group_id).transpose()?;
    let Started {
        engine,
        changes,
        _watcher,
        _wiper,
    } = start_engine(host, &config, vec![kubelet_dir])?;
    let e = engine.clone();
    let probe = Arc::new(move || e.probe());
    let rt = runtime()?;
    let served = rt.block_on(async move {
        let stop = stop_signal();
        let counters = crate::metrics::node::NodeCounters::default();
        let registered = Arc::new(std::sync::Mutex::new(
            crate::csi::registration::Registered::NotYet,
        ));
        let endpoints = Arc::new(crate::metrics::node::NodeEndpoints {
            node: node.clone(),
            engine: engine.clone(),
            counters: counters.clone(),
            registration: kubelet_registration_path.as_ref().map(|_| {
                let r = registered.clone();
                Box::new(move || r.lock().unwrap_or_else(|p| p.into_inner()).ready())
                    as Box<dyn Fn() -> std::result::Result<(), String> + Send + Sync>
            }),
            scraping: std::sync::Mutex::new(()),
        });
        let registration = kubelet_registration_path.map(|endpoint| {
            let router = tonic::transport::Server::builder()
                .layer(counters.csi.layer())
                .add_service(RegistrationServer::new(
                    crate::csi::registration::RegistrationService {
                        driver: crate::csi::PLUGIN_NAME.into(),
                        endpoint,
                        status: registered,
                    },
                ));
            let (sock, stop) = (registration_socket.clone(), stop.clone());
            tracing::info!(socket = %sock.display(), "serving kubelet plugin registration");
            tokio::spawn(async move {
                if let Err(e) = crate::csi::serve_unix(&sock, None, router, stopped(stop)).await {
                    tracing::error!(%e, socket = %sock.display(), "plugin registration failed");
                }
                // Gone from kubelet's directory: kubelet deregisters the plugin.
                let _ = std::fs::remove_file(&sock);
            })
        });
        let metrics = crate::metrics::http::spawn(metrics_listen, endpoints);
        let mut router = tonic::transport::Server::builder()
            .layer(counters.csi.layer())
            .add_service(IdentityServer::new(IdentityService::new(probe, standalone)))
            .add_service(NodeServer::new(NodeService {
                backend: engine.clone(),
                node: node.clone(),
            }));
        let mut kube_tasks = Vec::new();
        if standalone {
            router = router.add_service(ControllerServer::new(ControllerService {
                backend: crate::csi::standalone::Standalone {
                    engine,
                    node: node.clone(),
                },
            }));
        } else {
            let client = kube_client().await?;
            let ctx = crate::k8s::node::Context::new(
                client.clone(),
                engine.clone(),
                node.clone(),
                counters.clone(),
            );
            kube_tasks.push(tokio::spawn(crate::k8s::node::run(
                ctx,
                reconcile_concurrency,
                stopped(stop.clone()),
            )));
            kube_tasks.push(tokio::spawn(crate::k8s::orphans::watch(
                client.clone(),
                engine.clone(),
                node.clone(),
                Duration::from_secs(orphan_check.max(1)),
                remove_orphans,
                counters.clone(),
            )));
            kube_tasks.push(tokio::spawn(crate::k8s::capacity::publish(
                client,
                node.clone(),
                engine,
                changes,
                Duration::from_secs(capacity_resync),
            )));
        }
        tracing::info!(endpoint = %path.display(), node = %node, standalone, "serving CSI");
        let served = serve_until_stopped(&path, socket_group, router, grace, stop).await;
        metrics.abort();
        if let Some(r) = registration {
            let _ = tokio::time::timeout(Duration::from_secs(1), r).await;
        }
        for t in kube_tasks {
            t.abort();
        }
        served
    });
    // Dropping a runtime waits for its blocking calls, which could be an lvm2
    // lock wait or a hung device: past the grace period, leave them. Exiting
    // mid-call is a crash, and every change is ordered to survive one.
    rt.shutdown_timeout(Duration::ZERO);
    served
}

/// client-go's defaults: a lease not renewed for 15 s may be taken; the
/// holder renews (and candidates retry) every 2 s.
const LEASE_DURATION: Duration = Duration::from_secs(15);
const LEASE_RETRY: Duration = Duration::from_secs(2);

/// How often the controller checks that the API server answers, for Probe.
const API_CHECK_EVERY: Duration = Duration::from_secs(5);

pub fn controller(args: ControllerArgs) -> Result<()> {
    let ControllerArgs {
        csi_endpoint,
        socket_group,
        node_wait,
        shutdown_grace,
        leader_election_namespace,
        leader_election_id,
        skip_node_finalize,
        metrics_listen,
    } = args;
    let identity = format!(
        "{}-{}",
        std::env::var("POD_NAME").unwrap_or_else(|_| std::fs::read_to_string(
            "/proc/sys/kernel/hostname"
        )
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "ferrolvm".into())),
        std::process::id()
    );
    let path = socket_path(&csi_endpoint)?;
    let socket_group = socket_group.as_deref().map(group_id).transpose()?;
    let rt = runtime()?;
    let served = rt.block_on(async move {
        let stop = stop_signal();
        let client = kube_client().await?;
        // Probe answers from the last check of the API server: the sidecars
        // probe often, and a probe must not wait on the network.
        let reachable = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, c) = (reachable.clone(), client.clone());
        tokio::spawn(async move {
            loop {
                let ok = c.apiserver_version().await.is_ok();
                r.store(ok, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(API_CHECK_EVERY).await;
            }
        });
        let api_up = move || {
            if reachable.load(std::sync::atomic::Ordering::Relaxed) {
                Ok(())
            } else {
                Err("the API server does not answer".to_string())
            }
        };
        // The cluster-wide loops run on the leader; the CSI service on all.
        let (leading_tx, leading) = tokio::sync::watch::channel(false);
        let csi = crate::metrics::grpc::CsiMetrics::default();
        let endpoints = Arc::new(crate::metrics::controller::ControllerEndpoints {
            csi: csi.clone(),
            leading: leading.clone(),
            api_up: Box::new(api_up.clone()),
        });
        crate::metrics::http::spawn(metrics_listen, endpoints);
        let probe = Arc::new(api_up);
        tokio::spawn(crate::k8s::leader::campaign(
            client.clone(),
            leader_election_namespace,
            leader_election_id,
            identity,
            LEASE_DURATION,
            LEASE_RETRY,
            leading_tx,
        ));
        tokio::spawn(crate::k8s::nodes::run(Arc::new(
            crate::k8s::nodes::Context {
                client: client.clone(),
                driver: crate::csi::PLUGIN_NAME.to_string(),
                skip_finalize: skip_node_finalize,
                leading,
            },
        )));
        let mut backend = crate::k8s::controller::KubeBackend::new(client);
        backend.wait = Duration::from_secs(node_wait);
        let router = tonic::transport::Server::builder()
            .layer(csi.layer())
            .add_service(IdentityServer::new(IdentityService::new(probe, true)))
            .add_service(ControllerServer::new(ControllerService { backend }));
        tracing::info!(endpoint = %path.display(), "serving the CSI controller");
        serve_until_stopped(
            &path,
            socket_group,
            router,
            Duration::from_secs(shutdown_grace),
            stop,
        )
        .await
    });
    rt.shutdown_timeout(Duration::ZERO);
    served
}

pub fn scheduler(args: SchedulerArgs) -> Result<()> {
    if !(args.default_divisor > 0.0 && args.default_divisor.is_finite()) {
        return Err(usage("--default-divisor must be positive"));
    }
    let divisors = crate::k8s::extender::Divisors {
        default: args.default_divisor,
        per_class: args.divisors.into_iter().collect(),
    };
    let rt = runtime()?;
    let served = rt.block_on(async move {
        let client = kube_client().await?;
        let caches = crate::k8s::extender::caches(&client, crate::csi::PLUGIN_NAME);
        let metrics = crate::metrics::extender::ExtenderEndpoints::default();
        let (synced, c) = (metrics.synced.clone(), caches.clone());
        tokio::spawn(async move {
            c.synced().await;
            synced.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let stop = stop_signal();
        tokio::select! {
            r = crate::k8s::extender::serve(args.listen, caches, divisors, metrics) => {
                r.map_err(|e| LvmError::Refused(format!("serving on {}: {e}", args.listen)))
            }
            _ = stopped(stop) => Ok(()),
        }
    });
    rt.shutdown_timeout(Duration::ZERO);
    served
}
