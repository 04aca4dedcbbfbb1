//! Each node publishes its room per device class on its Node object, in
//! TopoLVM's pattern: `capacity.ferrolvm.io/<class>` = free bytes (what new
//! volumes can get in all) and `maxvolume.ferrolvm.io/<class>` = the
//! largest single volume that can be made now (striping, spare and thin
//! overprovisioning included); the default class also under `00default`.
//! The controller answers GetCapacity from them, and the extender scores
//! by them.
//!
//! Published when the change watcher sees a VG move (anyone's change, lvm2
//! on the host included: within its poll interval), and every `resync`
//! besides, so that a failed patch or a Node re-created by kubelet is
//! mended. Only changes are written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use tokio::sync::watch;

use super::{CAPACITY_ANNOTATION, DEFAULT_CLASS_KEY, MAX_VOLUME_ANNOTATION};
use crate::node::NodeEngine;

/// Room in one class, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub class: String,
    pub default: bool,
    pub available: u64,
    pub maximum_volume: u64,
}

/// The annotations for `rooms` (pure, so that what is published is tested).
pub fn annotations(rooms: &[Room]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in rooms {
        let mut keys = vec![r.class.as_str()];
        if r.default {
            keys.push(DEFAULT_CLASS_KEY);
        }
        for k in keys {
            out.insert(format!("{CAPACITY_ANNOTATION}{k}"), r.available.to_string());
            out.insert(
                format!("{MAX_VOLUME_ANNOTATION}{k}"),
                r.maximum_volume.to_string(),
            );
        }
    }
    out
}

/// The room in every class of this node, read from disk. A class whose VG
/// cannot be read publishes 0: nothing should be scheduled onto it.
pub fn rooms(engine: &NodeEngine) -> Vec<Room> {
    let classes = &engine.config.device_classes;
    let only_one = classes.len() == 1;
    classes
        .iter()
        .map(|c| {
            let (available, maximum_volume) = match engine.room(Some(&c.name)) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(class = %c.name, %e, "capacity unknown; publishing 0");
                    (0, 0)
                }
            };
            Room {
                class: c.name.clone(),
                default: c.default || only_one,
                available,
                maximum_volume,
            }
        })
        .collect()
}

/// Publishes on every tick of `changed` and every `resync`, until the
/// sender is dropped.
pub async fn publish(
    client: Client,
    node: String,
    engine: Arc<NodeEngine>,
    mut changed: watch::Receiver<u64>,
    resync: Duration,
) {
    let nodes: Api<Node> = Api::all(client);
    let mut published: Option<BTreeMap<String, String>> = None;
    loop {
        let e = engine.clone();
        let now = match tokio::task::spawn_blocking(move || annotations(&rooms(&e))).await {
            Ok(a) => a,
            Err(err) => {
                tracing::error!(%err, "reading capacity failed");
                BTreeMap::new()
            }
        };
        if published.as_ref() != Some(&now) && !now.is_empty() {
            let patch = serde_json::json!({ "metadata": { "annotations": now } });
            match nodes
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::debug!(?now, "capacity published");
                    published = Some(now);
                }
                Err(err) => {
                    tracing::warn!(%err, node, "publishing capacity failed; retrying");
                    published = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(resync) => published = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_class_is_published_twice() {
        let a = annotations(&[
            Room {
                class: "thick".into(),
                default: true,
                available: 10,
                maximum_volume: 8,
            },
            Room {
                class: "thin".into(),
                default: false,
                available: 100,
                maximum_volume: 100,
            },
        ]);
        assert_eq!(a["capacity.ferrolvm.io/thick"], "10");
        assert_eq!(a["capacity.ferrolvm.io/00default"], "10");
        assert_eq!(a["maxvolume.ferrolvm.io/00default"], "8");
        assert_eq!(a["capacity.ferrolvm.io/thin"], "100");
        assert_eq!(a.len(), 6);
    }
}
