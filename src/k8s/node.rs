//! The node side: a kube-rs controller of this node's LogicalVolumes
//! (listed by the server through the selectable `spec.nodeName`, so a node
//! never sees another's). Each object is reconciled into an LV by the node
//! engine and its status written back; deletion goes through a finalizer,
//! so the LV is removed before the object is let go.
//!
//! Many objects are reconciled at once (TopoLVM's node takes one at a
//! time): concurrent creates meet in the engine's group commit and share
//! its metadata writes. Restart safety comes from the engine: a create is
//! idempotent by CSI name, so a crash between making the LV and writing
//! the status is healed by the next reconcile finding the LV it made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::crd::{bytes_quantity, quantity_bytes, AccessType, LogicalVolume, LogicalVolumeStatus};
use super::LV_FINALIZER;
use crate::csi::backend::{BackendError, ErrorKind};
use crate::csi::status::grpc_code;
use crate::node::{NodeEngine, Source, VolumeError};

/// What a LogicalVolume asks of this node now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No volume yet: make it.
    Make,
    /// Made, but smaller than asked: grow it to `to` bytes.
    Grow { to: u64 },
    /// Made and as large as asked.
    Done,
    /// Refused (a code and no volume): the controller deletes the object
    /// and may try another node; making it now would leak an LV.
    Refused,
    /// The spec cannot be read (a size that is no byte count, a source
    /// without an access type): refused with InvalidArgument.
    Invalid(String),
}

/// The pure decision of a reconcile, from the object alone.
pub fn step(lv: &LogicalVolume) -> Step {
    let Some(want) = quantity_bytes(&lv.spec.size) else {
        return Step::Invalid(format!("size {:?} is not a byte count", lv.spec.size.0));
    };
    if lv.spec.source.is_some() != lv.spec.access_type.is_some() {
        return Step::Invalid("source and accessType go together".into());
    }
    let status = lv.status.clone().unwrap_or_default();
    match status.volume_id {
        None if status.code != 0 => Step::Refused,
        None => Step::Make,
        Some(_) => {
            let have = status
                .current_size
                .as_ref()
                .and_then(quantity_bytes)
                .unwrap_or(0);
            // A snapshot never grows with its spec: it is its moment.
            if want > have && lv.spec.access_type != Some(AccessType::ReadOnly) {
                Step::Grow { to: want }
            } else {
                Step::Done
            }
        }
    }
}

/// Why a reconcile failed; `kind` names it for the failure counts.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Volume(#[from] BackendError),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl ReconcileError {
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::Kube(_) => "api",
            ReconcileError::Volume(e) if e.kind == ErrorKind::Aborted => "busy",
            ReconcileError::Volume(e) if e.kind == ErrorKind::FailedPrecondition => "in_use",
            ReconcileError::Volume(_) => "volume",
            ReconcileError::Finalizer(_) => "finalizer",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub engine: Arc<NodeEngine>,
    pub node: String,
    pub lvs: Api<LogicalVolume>,
    /// Consecutive failures per object, for the back-off.
    failures: Mutex<HashMap<String, u32>>,
    /// Failures by kind, for /metrics.
    pub counters: crate::metrics::node::NodeCounters,
    recorder: Recorder,
}

impl Context {
    pub fn new(
        client: Client,
        engine: Arc<NodeEngine>,
        node: String,
        counters: crate::metrics::node::NodeCounters,
    ) -> Arc<Context> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "ferrolvm-node".into(),
                instance: Some(node.clone()),
            },
        );
        Arc::new(Context {
            engine,
            node,
            lvs: Api::all(client),
            failures: Mutex::default(),
            counters,
            recorder,
        })
    }

    /// A Warning Event on the object: what an operator must see on
    /// `kubectl describe logicalvolume` without reading node logs.
    async fn warn(&self, lv: &LogicalVolume, reason: &str, note: String) {
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &lv.object_ref(&())).await {
            tracing::warn!(%e, reason, "publishing an Event failed");
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::new(ErrorKind::Internal, format!("worker failed: {e}")))?
        .map_err(BackendError::from)
}

/// Writes the whole status (a merge patch, with nulls clearing what the
/// node no longer says).
async fn write_status(
    ctx: &Context,
    name: &str,
    s: &LogicalVolumeStatus,
) -> Result<(), kube::Error> {
    let body = serde_json::json!({ "status": {
        "volumeID": s.volume_id,
        "code": s.code,
        "message": s.message,
        "currentSize": s.current_size,
    }});
    ctx.lvs
        .patch_status(name, &PatchParams::default(), &Patch::Merge(body))
        .await
        .map(|_| ())
}

/// Makes the volume an object asks for: a new one, a snapshot of its
/// source (`ro`), or a clone or restore of it (`rw`).
async fn make(ctx: &Context, lv: &LogicalVolume) -> Result<(String, u64), BackendError> {
    let e = ctx.engine.clone();
    let spec = lv.spec.clone();
    let bytes = quantity_bytes(&spec.size).unwrap_or(0);
    blocking(move || {
        let class = spec.device_class.as_deref().filter(|c| !c.is_empty());
        match (&spec.source, spec.access_type) {
            (Some(src), Some(AccessType::ReadOnly)) => {
                let s = e.create_snapshot(&spec.name, src)?;
                Ok((s.id, s.bytes))
            }
            (Some(src), _) => {
                let is_snapshot = e.snapshots()?.iter().any(|s| &s.id == src);
                let source = if is_snapshot {
                    Source::Snapshot(src.clone())
                } else {
                    Source::Volume(src.clone())
                };
                let v = e.create_from(&spec.name, class, bytes, 0, &source)?;
                Ok((v.id, v.bytes))
            }
            (None, _) => {
                let v = e.create(&spec.name, class, bytes, 0)?;
                Ok((v.id, v.bytes))
            }
        }
    })
    .await
}

/// Refusals the node reports in the status (the controller then answers
/// the sidecar with the code); anything else is retried here.
fn reported(e: &BackendError) -> bool {
    !matches!(e.kind, ErrorKind::Aborted | ErrorKind::Unavailable)
}

async fn apply(lv: Arc<LogicalVolume>, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = lv.name_any();
    let status = lv.status.clone().unwrap_or_default();
    match step(&lv) {
        Step::Done | Step::Refused => Ok(Action::await_change()),
        Step::Invalid(why) => {
            let refused = LogicalVolumeStatus {
                code: grpc_code(ErrorKind::InvalidArgument),
                message: Some(why),
                ..Default::default()
            };
            write_status(ctx, &name, &refused).await?;
            Ok(Action::await_change())
        }
        Step::Make => match make(ctx, &lv).await {
            Ok((id, bytes)) => {
                tracing::info!(lv = %name, id, bytes, "made");
                let made = LogicalVolumeStatus {
                    volume_id: Some(id),
                    code: 0,
                    message: None,
                    current_size: Some(bytes_quantity(bytes)),
                };
                write_status(ctx, &name, &made).await?;
                Ok(Action::await_change())
            }
            Err(e) if reported(&e) => {
                tracing::warn!(lv = %name, %e, "refused");
                ctx.warn(&lv, "CreateRefused", e.message.clone()).await;
                let refused = LogicalVolumeStatus {
                    code: grpc_code(e.kind),
                    message: Some(e.message),
                    ..Default::default()
                };
                write_status(ctx, &name, &refused).await?;
                Ok(Action::await_change())
            }
            Err(e) => Err(e.into()),
        },
        Step::Grow { to } => {
            let id = status.volume_id.clone().unwrap_or_default();
            let e = ctx.engine.clone();
            match blocking(move || e.expand(&id, to, 0)).await {
                Ok(bytes) => {
                    tracing::info!(lv = %name, bytes, "grown");
                    let grown = LogicalVolumeStatus {
                        code: 0,
                        message: None,
                        current_size: Some(bytes_quantity(bytes)),
                        ..status
                    };
                    write_status(ctx, &name, &grown).await?;
                    Ok(Action::await_change())
                }
                Err(e) if reported(&e) => {
                    ctx.warn(&lv, "ExpandFailed", e.message.clone()).await;
                    let failed = LogicalVolumeStatus {
                        code: grpc_code(e.kind),
                        message: Some(e.message),
                        ..status
                    };
                    write_status(ctx, &name, &failed).await?;
                    // Room may come later (another volume deleted): try again.
                    Ok(Action::requeue(Duration::from_secs(30)))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Removes the object's volume. Without a volume id the node may still
/// have made it (a crash before the status was written): it is looked up
/// by its CSI name, which only this object holds.
async fn cleanup(lv: Arc<LogicalVolume>, ctx: &Context) -> Result<Action, ReconcileError> {
    let name = lv.name_any();
    let id = lv.status.as_ref().and_then(|s| s.volume_id.clone());
    let csi_name = lv.spec.name.clone();
    let snapshot = lv.spec.access_type == Some(AccessType::ReadOnly);
    let e = ctx.engine.clone();
    let removed = blocking(move || {
        let id = match id {
            Some(id) => Some(id),
            None if snapshot => e
                .snapshots()?
                .into_iter()
                .find(|s| s.name == csi_name)
                .map(|s| s.id),
            None => e
                .list()?
                .into_iter()
                .find(|v| v.name == csi_name)
                .map(|v| v.id),
        };
        match id {
            None => Ok(false),
            Some(id) if snapshot => e.delete_snapshot(&id),
            Some(id) => e.delete(&id),
        }
    })
    .await?;
    tracing::info!(lv = %name, removed, "cleaned up");
    Ok(Action::await_change())
}

async fn reconcile(lv: Arc<LogicalVolume>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if lv.spec.node_name != ctx.node {
        // The server filters by node; this is the belt to those braces.
        return Ok(Action::await_change());
    }
    let name = lv.name_any();
    let done = finalizer(&ctx.lvs, LV_FINALIZER, lv, |event| async {
        match event {
            Event::Apply(lv) => apply(lv, &ctx).await,
            Event::Cleanup(lv) => cleanup(lv, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => ReconcileError::Finalizer(other.to_string()),
    });
    if done.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
    }
    done
}

/// Back-off doubling from 1 s to 60 s per object, so that one volume's
/// trouble neither spins nor holds up the others.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

/// The longest pause between tries of a volume still open: a deleted pod's
/// mount goes away on its own, soon, and each try already watched the
/// device for 5 s (`Dm::wait_closed`), so a pause of a minute would only
/// add up to a minute to the deletion (the 100-claim race measured it).
const IN_USE_MAX: Duration = Duration::from_secs(8);

/// The pause after `failures` failures of this kind.
fn backoff_for(kind: &str, failures: u32) -> Duration {
    match kind {
        "in_use" => backoff(failures).min(IN_USE_MAX),
        _ => backoff(failures),
    }
}

fn error_policy(lv: Arc<LogicalVolume>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    let name = lv.name_any();
    ctx.counters.reconcile_failed(err.kind());
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let n = failures.entry(name.clone()).or_default();
    let wait = backoff_for(err.kind(), *n);
    *n = n.saturating_add(1);
    tracing::warn!(lv = %name, kind = err.kind(), %err, ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Runs the controller until `shutdown` resolves; `concurrency` bounds the
/// reconciles in flight.
pub async fn run(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let mine = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node));
    Controller::new(ctx.lvs.clone(), mine)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::crd::LogicalVolumeSpec;

    fn lv(size: &str, status: Option<LogicalVolumeStatus>) -> LogicalVolume {
        let mut lv = LogicalVolume::new(
            "pvc-1",
            LogicalVolumeSpec {
                name: "pvc-1".into(),
                node_name: "node1".into(),
                device_class: None,
                size: k8s_openapi::apimachinery::pkg::api::resource::Quantity(size.into()),
                source: None,
                access_type: None,
            },
        );
        lv.status = status;
        lv
    }

    fn made(bytes: u64) -> Option<LogicalVolumeStatus> {
        Some(LogicalVolumeStatus {
            volume_id: Some("u".into()),
            code: 0,
            message: None,
            current_size: Some(bytes_quantity(bytes)),
        })
    }

    #[test]
    fn each_state_has_its_step() {
        assert_eq!(step(&lv("1Gi", None)), Step::Make);
        assert_eq!(step(&lv("1Gi", made(1 << 30))), Step::Done);
        assert_eq!(step(&lv("2Gi", made(1 << 30))), Step::Grow { to: 2 << 30 });
        assert_eq!(step(&lv("1Gi", made(2 << 30))), Step::Done, "never shrinks");
        let refused = Some(LogicalVolumeStatus {
            code: 8,
            ..Default::default()
        });
        assert_eq!(step(&lv("1Gi", refused)), Step::Refused);
        assert!(matches!(step(&lv("1.5Gi", None)), Step::Invalid(_)));
        let mut lone_source = lv("1Gi", None);
        lone_source.spec.source = Some("u".into());
        assert!(matches!(step(&lone_source), Step::Invalid(_)));
    }

    #[test]
    fn a_snapshot_does_not_grow_with_its_spec() {
        let mut snap = lv("2Gi", made(1 << 30));
        snap.spec.source = Some("origin".into());
        snap.spec.access_type = Some(AccessType::ReadOnly);
        assert_eq!(step(&snap), Step::Done);
        snap.spec.access_type = Some(AccessType::ReadWrite);
        assert_eq!(step(&snap), Step::Grow { to: 2 << 30 }, "a clone does");
    }

    #[test]
    fn back_off_doubles_and_is_bounded() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), Duration::from_secs(60));
        assert_eq!(backoff_for("volume", 40), backoff(40));
        assert_eq!(backoff_for("in_use", 1), backoff(1));
        assert_eq!(backoff_for("in_use", 40), IN_USE_MAX);
    }

    #[test]
    fn an_open_device_is_its_own_kind() {
        let open = ReconcileError::Volume(BackendError::from(VolumeError::InUse(
            "logical volume vg/lv is in use (open 1 times)".into(),
        )));
        assert_eq!(open.kind(), "in_use");
        let busy = ReconcileError::Volume(BackendError::from(VolumeError::Busy("lock".into())));
        assert_eq!(busy.kind(), "busy");
    }
}
