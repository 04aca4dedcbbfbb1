//! Failures an operator must see, as Warning Events where `kubectl
//! describe` shows them: an expansion the node cannot make is on the claim
//! (csi-resizer posts ferrolvm's message) and on its LogicalVolume (the
//! node posts it).

use k8s_openapi::api::core::v1::{Event as CoreEvent, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::{bound, claim_and_pod, client, eventually, remove_all, NS};

#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn a_failed_expansion_is_a_warning_on_the_claim_and_its_logicalvolume() {
    let c = client().await;
    claim_and_pod(&c, "evt-1", "ferrolvm-thick", "1Gi").await;
    let pv = bound(&c, "evt-1", 120).await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), NS);
    pvcs.patch(
        "evt-1",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "spec": { "resources": { "requests": { "storage": "100Gi" } } }
        })),
    )
    .await
    .unwrap();
    let on_claim: Api<CoreEvent> = Api::namespaced(c.clone(), NS);
    let said = eventually(
        "a Warning on the claim with ferrolvm's reason",
        90,
        || async {
            on_claim
                .list(&ListParams::default().fields("involvedObject.name=evt-1"))
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .filter_map(|e| e.message)
                .find(|m| m.contains("not enough space in device class thick"))
        },
    )
    .await;
    assert!(said.contains("available"), "{said}");
    let on_lv: Api<Event> = Api::namespaced(c.clone(), "default");
    eventually("an ExpandFailed Event on the LogicalVolume", 60, || async {
        on_lv
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("ExpandFailed"))
            .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pv.as_str()))
            .map(|_| ())
    })
    .await;
    remove_all(&c, &["evt-1"]).await;
}
