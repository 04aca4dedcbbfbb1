//! The Node finalizer, TopoLVM's behaviour: every Node that runs ferrolvm
//! (it publishes capacity) gets the finalizer `ferrolvm.io/node`; when such
//! a Node is deleted, the claims bound to its volumes are deleted (so that
//! a StatefulSet re-creates them elsewhere) and its LogicalVolumes are let
//! go — their node is gone and cannot remove the finalizer itself — before
//! the Node is. With `--skip-node-finalize` the finalizer is only released.
//! Runs on the leader only.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::crd::LogicalVolume;
use super::{CAPACITY_ANNOTATION, LV_FINALIZER};

/// The finalizer on Nodes that run ferrolvm.
pub const NODE_FINALIZER: &str = "ferrolvm.io/node";

pub struct Context {
    pub client: Client,
    pub driver: String,
    pub skip_finalize: bool,
    pub leading: watch::Receiver<bool>,
}

fn runs_ferrolvm(node: &Node) -> bool {
    node.annotations()
        .keys()
        .any(|k| k.starts_with(CAPACITY_ANNOTATION))
}

/// Removes node `node`'s volumes from the cluster's books.
async fn release(node: &str, ctx: &Context) -> Result<(), kube::Error> {
    let lvs: Api<LogicalVolume> = Api::all(ctx.client.clone());
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mine: Vec<LogicalVolume> = lvs
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?
        .items;
    let ids: Vec<String> = mine
        .iter()
        .filter_map(|l| l.status.as_ref()?.volume_id.clone())
        .collect();
    for pv in pvs.list(&ListParams::default()).await?.items {
        let Some(spec) = pv.spec.as_ref() else {
            continue;
        };
        let ours = spec
            .csi
            .as_ref()
            .is_some_and(|c| c.driver == ctx.driver && ids.contains(&c.volume_handle));
        let Some(claim) = spec.claim_ref.as_ref().filter(|_| ours) else {
            continue;
        };
        if let (Some(ns), Some(name)) = (&claim.namespace, &claim.name) {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            match pvcs.delete(name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(node, claim = %format!("{ns}/{name}"), "deleted the claim of a deleted node")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    for lv in mine {
        let name = lv.name_any();
        // A node plugin still alive (a Node object deleted by mistake)
        // removes its LV itself when asked; only a silent one is let go.
        match lvs.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e),
        }
        let mut gone = false;
        for _ in 0..NODE_GRACE_SECS {
            if lvs.get_opt(&name).await?.is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if gone {
            continue;
        }
        let rest: Vec<String> = lv
            .finalizers()
            .iter()
            .filter(|f| f.as_str() != LV_FINALIZER)
            .cloned()
            .collect();
        let patch = serde_json::json!({ "metadata": { "finalizers": rest } });
        match lvs
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => tracing::info!(node, lv = %name, "released a deleted node's LogicalVolume"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Seconds a deleted Node's plugin gets to remove a LogicalVolume's LV
/// itself before the controller lets the object go.
const NODE_GRACE_SECS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("API server: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, NodeError> {
    if !*ctx.leading.borrow() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let has_finalizer = node.finalizers().iter().any(|f| f == NODE_FINALIZER);
    if !has_finalizer && !runs_ferrolvm(&node) {
        return Ok(Action::await_change());
    }
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    finalizer(&nodes, NODE_FINALIZER, node, |event| async {
        match event {
            Event::Apply(_) => Ok(Action::await_change()),
            Event::Cleanup(n) if ctx.skip_finalize => {
                tracing::info!(node = %n.name_any(), "node deleted; its volumes are left (--skip-node-finalize)");
                Ok(Action::await_change())
            }
            Event::Cleanup(n) => release(&n.name_any(), &ctx)
                .await
                .map(|_| Action::await_change()),
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => NodeError::Kube(e),
        other => NodeError::Finalizer(other.to_string()),
    })
}

fn error_policy(node: Arc<Node>, err: &NodeError, _: Arc<Context>) -> Action {
    tracing::warn!(node = %node.name_any(), %err, "node finalizer failed");
    Action::requeue(Duration::from_secs(5))
}

/// Runs until the stream ends (the process stops).
pub async fn run(ctx: Arc<Context>) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    Controller::new(nodes, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
