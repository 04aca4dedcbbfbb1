//! Orphans, found by the nodes and reported as Events: an LV whose
//! LogicalVolume was lost (kept, since `--remove-orphans` is off), and a
//! LogicalVolume whose LV lvm2 removed behind ferrolvm's back.

use ferrolvm::k8s::crd::{bytes_quantity, LogicalVolume, LogicalVolumeSpec};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;

use crate::{client, eventually, lvm_lvs, vmsh};

async fn made(c: &Client, name: &str) {
    let lvs: Api<LogicalVolume> = Api::all(c.clone());
    let spec = LogicalVolumeSpec {
        name: name.into(),
        node_name: "node1".into(),
        device_class: Some("thick".into()),
        size: bytes_quantity(64 << 20),
        source: None,
        access_type: None,
    };
    lvs.create(&PostParams::default(), &LogicalVolume::new(name, spec))
        .await
        .unwrap();
    eventually(&format!("{name} made"), 60, || async {
        lvs.get(name).await.ok()?.status?.volume_id.map(|_| ())
    })
    .await;
}

/// The Events with `reason` so far (cluster-scoped objects' Events are
/// in `default`).
async fn events_for(c: &Client, reason: &str) -> Option<Vec<Event>> {
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let all = events.list(&ListParams::default()).await.ok()?.items;
    Some(
        all.into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .collect(),
    )
}

/// The note of a Warning Event with `reason` that mentions `what`.
async fn event(c: &Client, reason: &str, what: &str) -> String {
    eventually(&format!("a {reason} Event for {what}"), 30, || async {
        events_for(c, reason)
            .await?
            .into_iter()
            .filter_map(|e| e.note)
            .find(|n| n.contains(what))
    })
    .await
}

#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn orphans_both_ways_are_reported_as_events() {
    let c = client().await;
    let lvs: Api<LogicalVolume> = Api::all(c.clone());

    // The object lost (its finalizer stripped, as a careless operator might).
    made(&c, "orphan-a").await;
    lvs.patch(
        "orphan-a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "metadata": { "finalizers": null } })),
    )
    .await
    .unwrap();
    lvs.delete("orphan-a", &DeleteParams::default())
        .await
        .unwrap();
    let note = event(&c, "OrphanedVolume", "orphan-a").await;
    assert!(note.contains("kept"), "{note}");
    assert!(
        lvm_lvs("vg1").contains(&"orphan-a".to_string()),
        "reported, not removed"
    );

    // The LV removed by lvm2 behind ferrolvm's back.
    made(&c, "orphan-b").await;
    vmsh("lvm lvremove -q -f vg1/orphan-b");
    event(&c, "VolumeMissing", "orphan-b").await;

    lvs.delete("orphan-b", &DeleteParams::default())
        .await
        .unwrap();
    eventually("orphan-b let go by its node", 30, || async {
        lvs.get_opt("orphan-b")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    vmsh("lvm lvremove -q -f vg1/orphan-a");
}

/// A create the node refuses is a Warning Event on the LogicalVolume, so
/// `kubectl describe` shows why without the node's log.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn a_refused_create_is_a_warning_event_on_its_object() {
    let c = client().await;
    let lvs: Api<LogicalVolume> = Api::all(c.clone());
    let spec = LogicalVolumeSpec {
        name: "refused-a".into(),
        node_name: "node1".into(),
        device_class: Some("thick".into()),
        size: bytes_quantity(100 << 30),
        source: None,
        access_type: None,
    };
    lvs.create(
        &PostParams::default(),
        &LogicalVolume::new("refused-a", spec),
    )
    .await
    .unwrap();
    let code = eventually("refused-a refused", 60, || async {
        Some(lvs.get("refused-a").await.ok()?.status?.code).filter(|c| *c != 0)
    })
    .await;
    assert_eq!(code, 8, "ResourceExhausted");
    let note = eventually("a CreateRefused Event on refused-a", 30, || async {
        events_for(&c, "CreateRefused")
            .await?
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| {
                let r = e.regarding.as_ref();
                r.and_then(|r| r.name.as_deref()) == Some("refused-a")
                    && r.and_then(|r| r.kind.as_deref()) == Some("LogicalVolume")
            })
            .find_map(|e| e.note)
    })
    .await;
    assert!(note.contains("thick"), "the note names the class: {note}");
    lvs.delete("refused-a", &DeleteParams::default())
        .await
        .unwrap();
    eventually("refused-a gone", 60, || async {
        lvs.get_opt("refused-a").await.ok()?.is_none().then_some(())
    })
    .await;
}
