//! Orphans, found by each node for its own volumes and reported as
//! Kubernetes Events: an LV ferrolvm made (it carries its CSI name tag)
//! that no LogicalVolume asks for — on the Node, removed (wiped like any
//! deleted volume) only with `--remove-orphans`; and a LogicalVolume whose
//! LV is gone (lvm2 removed it behind ferrolvm's back) — on the object.
//!
//! Neither can be a volume in passing: a LogicalVolume exists before its LV
//! is made and goes only after the LV is removed (the finalizer), and the
//! comparison is by CSI name, which the object carries from the start.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use super::crd::LogicalVolume;
use crate::node::NodeEngine;

/// A volume on disk: its CSI name and volume id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OnDisk {
    pub name: String,
    pub id: String,
}

/// What a check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Orphans {
    /// On disk, asked for by no LogicalVolume.
    pub volumes: Vec<OnDisk>,
    /// LogicalVolume names whose made volume is not on disk.
    pub objects: Vec<String>,
}

/// The pure comparison of this node's objects with its volumes on disk.
pub fn find(objects: &[LogicalVolume], on_disk: &[OnDisk]) -> Orphans {
    let asked: BTreeSet<&str> = objects.iter().map(|o| o.spec.name.as_str()).collect();
    let ids: BTreeSet<&str> = on_disk.iter().map(|v| v.id.as_str()).collect();
    Orphans {
        volumes: on_disk
            .iter()
            .filter(|v| !asked.contains(v.name.as_str()))
            .cloned()
            .collect(),
        objects: objects
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .filter(|o| {
                o.status
                    .as_ref()
                    .and_then(|s| s.volume_id.as_deref())
                    .is_some_and(|id| !ids.contains(id))
            })
            .map(|o| o.name_any())
            .collect(),
    }
}

fn on_disk(engine: &NodeEngine) -> Result<Vec<OnDisk>, crate::node::VolumeError> {
    let mut all: Vec<OnDisk> = engine
        .list()?
        .into_iter()
        .map(|v| OnDisk {
            name: v.name,
            id: v.id,
        })
        .collect();
    all.extend(engine.snapshots()?.into_iter().map(|s| OnDisk {
        name: s.name,
        id: s.id,
    }));
    Ok(all)
}

/// Checks every `every` until the process stops; reports each orphan once
/// per process (and again after it was gone), removes orphaned volumes
/// when `remove`.
pub async fn watch(
    client: Client,
    engine: Arc<NodeEngine>,
    node: String,
    every: Duration,
    remove: bool,
    counters: crate::metrics::node::NodeCounters,
) {
    let lvs: Api<LogicalVolume> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "ferrolvm-node".into(),
            instance: Some(node.clone()),
        },
    );
    let mut reported: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::time::sleep(every).await;
        let objects = match lvs
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(%e, "orphan check: listing LogicalVolumes failed");
                continue;
            }
        };
        let e = engine.clone();
        let disk = match tokio::task::spawn_blocking(move || on_disk(&e)).await {
            Ok(Ok(d)) => d,
            Ok(Err(err)) => {
                tracing::warn!(%err, "orphan check: reading the volumes failed");
                continue;
            }
            Err(_) => continue,
        };
        let found = find(&objects, &disk);
        counters.orphans_found(found.volumes.len(), found.objects.len());
        let mut now = BTreeSet::new();
        let node_ref = match nodes.get_opt(&node).await {
            Ok(Some(n)) => Some(n.object_ref(&())),
            _ => None,
        };
        for v in &found.volumes {
            let key = format!("volume/{}", v.id);
            now.insert(key.clone());
            if remove {
                let (e, id) = (engine.clone(), v.id.clone());
                let removed = tokio::task::spawn_blocking(move || e.delete(&id)).await;
                tracing::warn!(name = %v.name, id = %v.id, ?removed, "removed an orphaned volume");
                if let Some(r) = &node_ref {
                    publish(
                        &recorder,
                        r,
                        "OrphanRemoved",
                        format!(
                        "volume {} (id {}) had no LogicalVolume and was removed (--remove-orphans)",
                        v.name, v.id
                    ),
                    )
                    .await;
                }
                continue;
            }
            if reported.contains(&key) {
                continue;
            }
            tracing::warn!(name = %v.name, id = %v.id, "orphaned volume: no LogicalVolume asks for it");
            if let Some(r) = &node_ref {
                publish(&recorder, r, "OrphanedVolume", format!(
                    "volume {} (id {}) on this node has no LogicalVolume; it is kept (start the node with --remove-orphans to remove such volumes)",
                    v.name, v.id
                ))
                .await;
            }
        }
        for name in &found.objects {
            let key = format!("object/{name}");
            now.insert(key.clone());
            if reported.contains(&key) {
                continue;
            }
            tracing::warn!(lv = %name, "LogicalVolume whose volume is gone");
            if let Some(o) = objects.iter().find(|o| &o.name_any() == name) {
                publish(
                    &recorder,
                    &o.object_ref(&()),
                    "VolumeMissing",
                    format!("the volume of LogicalVolume {name} is not on node {node} (removed outside ferrolvm?)"),
                )
                .await;
            }
        }
        reported = now;
    }
}

async fn publish(recorder: &Recorder, on: &ObjectReference, reason: &str, note: String) {
    let ev = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "OrphanCheck".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, on).await {
        tracing::warn!(%e, reason, "publishing an Event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::crd::{bytes_quantity, LogicalVolumeSpec, LogicalVolumeStatus};

    fn object(name: &str, id: Option<&str>) -> LogicalVolume {
        let mut o = LogicalVolume::new(
            name,
            LogicalVolumeSpec {
                name: name.into(),
                node_name: "node1".into(),
                device_class: None,
                size: bytes_quantity(1),
                source: None,
                access_type: None,
            },
        );
        o.status = id.map(|id| LogicalVolumeStatus {
            volume_id: Some(id.into()),
            ..Default::default()
        });
        o
    }

    fn disk(name: &str, id: &str) -> OnDisk {
        OnDisk {
            name: name.into(),
            id: id.into(),
        }
    }

    #[test]
    fn orphans_both_ways_and_nothing_in_passing() {
        let objects = [
            object("pvc-a", Some("ida")),
            object("pvc-gone", Some("idg")),
            object("pvc-new", None),
        ];
        let on_disk = [
            disk("pvc-a", "ida"),
            disk("pvc-lost", "idl"),
            disk("pvc-new", "idn"),
        ];
        let found = find(&objects, &on_disk);
        assert_eq!(found.volumes, [disk("pvc-lost", "idl")]);
        assert_eq!(found.objects, ["pvc-gone"]);
        let mut deleting = object("pvc-gone", Some("idg"));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(find(&[deleting], &[]).objects.is_empty(), "being removed");
    }
}
