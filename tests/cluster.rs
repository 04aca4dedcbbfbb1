//! The Kubernetes suite, against a real control plane (etcd, kube-apiserver,
//! kube-scheduler, kube-controller-manager built from their Go modules).
//! `cargo run -p vm-tests -- cluster-test` starts it on 127.0.0.1 and runs
//! these `#[ignore]`d tests with KUBECONFIG set; without a cluster they fail
//! loudly, never skip.

use std::time::Duration;

use ferrolvm::k8s::crd::{
    bytes_quantity, crd_yaml, quantity_bytes, LogicalVolume, LogicalVolumeSpec, LogicalVolumeStatus,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;

async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "no KUBECONFIG: run this suite with `cargo run -p vm-tests -- cluster-test`"
    );
    Client::try_default()
        .await
        .expect("a client for the test cluster")
}

/// Applies the committed CRD (server-side apply, as an operator's
/// `kubectl apply --server-side` would) and waits until it is Established.
async fn install_crd(c: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd: CustomResourceDefinition = serde_norway::from_str(include_str!(
        "../deploy/crd/logicalvolumes.ferrolvm.io.yaml"
    ))
    .unwrap();
    assert_eq!(
        include_str!("../deploy/crd/logicalvolumes.ferrolvm.io.yaml"),
        crd_yaml()
    );
    crds.patch(
        "logicalvolumes.ferrolvm.io",
        &PatchParams::apply("ferrolvm-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the API server takes the CRD");
    let established = |c: &CustomResourceDefinition| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|x| x.type_ == "Established" && x.status == "True")
            })
    };
    for _ in 0..100 {
        if established(&crds.get("logicalvolumes.ferrolvm.io").await.unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the LogicalVolume CRD never became Established");
}

fn lv(name: &str, node: &str, bytes: u64) -> LogicalVolume {
    LogicalVolume::new(
        name,
        LogicalVolumeSpec {
            name: format!("pvc-{name}"),
            node_name: node.into(),
            device_class: Some("thick".into()),
            size: bytes_quantity(bytes),
            source: None,
            access_type: None,
        },
    )
}

/// The CRD on a real API server: objects round-trip, each node can list
/// only its own by `spec.nodeName` (a selectable field, so the server
/// filters), status is a subresource the spec writer cannot touch,
/// nodeName cannot change, and the printer columns show what operators read.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn logical_volumes_on_the_real_api_server() {
    let c = client().await;
    install_crd(&c).await;
    let lvs: Api<LogicalVolume> = Api::all(c.clone());
    for (name, node) in [("crd-a", "node1"), ("crd-b", "node2"), ("crd-c", "node1")] {
        lvs.create(&PostParams::default(), &lv(name, node, 1 << 30))
            .await
            .unwrap();
    }
    let mine = lvs
        .list(&ListParams::default().fields("spec.nodeName=node1"))
        .await
        .unwrap();
    let mut names: Vec<_> = mine
        .items
        .iter()
        .map(|l| l.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["crd-a", "crd-c"]);
    let got = lvs.get("crd-a").await.unwrap();
    assert_eq!(got.spec, lv("crd-a", "node1", 1 << 30).spec);
    assert_eq!(quantity_bytes(&got.spec.size), Some(1 << 30));
    assert!(got.status.is_none());

    // Status goes through the subresource; a spec write does not set it.
    let status = LogicalVolumeStatus {
        volume_id: Some("uuid-1".into()),
        code: 0,
        message: None,
        current_size: Some(bytes_quantity(1 << 30)),
    };
    lvs.patch_status(
        "crd-a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .unwrap();
    let mut spec_write = lvs.get("crd-a").await.unwrap();
    spec_write.status = Some(LogicalVolumeStatus {
        volume_id: Some("forged".into()),
        ..Default::default()
    });
    lvs.replace("crd-a", &PostParams::default(), &spec_write)
        .await
        .unwrap();
    assert_eq!(
        lvs.get("crd-a").await.unwrap().status,
        Some(status),
        "a spec write changed the status"
    );

    // nodeName is immutable (the CEL rule in the CRD).
    let moved = lvs
        .patch(
            "crd-a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "nodeName": "node2" } })),
        )
        .await;
    match moved {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("immutable"), "{e:?}");
        }
        other => panic!("nodeName changed: {other:?}"),
    }
    // A malformed object is refused by the server's schema.
    let bad = serde_json::json!({
        "apiVersion": "ferrolvm.io/v1", "kind": "LogicalVolume",
        "metadata": { "name": "crd-bad" },
        "spec": { "name": "pvc-bad", "nodeName": "node1", "accessType": "sideways" }
    });
    let raw: Api<kube::api::DynamicObject> = Api::all_with(
        c.clone(),
        &kube::api::ApiResource::erase::<LogicalVolume>(&()),
    );
    let refused = raw
        .create(
            &PostParams::default(),
            &serde_json::from_value(bad).unwrap(),
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 422),
        "{refused:?}"
    );

    // What an operator sees.
    let kubectl = std::env::var_os("FERROLVM_KUBECTL").expect("FERROLVM_KUBECTL");
    let out = std::process::Command::new(kubectl)
        .args(["get", "flv", "crd-a"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "NODE", "CLASS", "SIZE", "CURRENT", "AGE"]);
    assert!(
        table.contains("node1") && table.contains("1073741824"),
        "{table}"
    );

    for name in ["crd-a", "crd-b", "crd-c"] {
        lvs.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

/// A stand-in for the node plugins (named so: the real ones run in the VM,
/// which this suite does not boot yet): it answers LogicalVolumes of
/// node1 and node2 as ferrolvm's node would — a volume id and the size, or
/// ResourceExhausted for names containing "full" — and grows on request.
async fn stand_in_nodes(c: Client) {
    let lvs: Api<LogicalVolume> = Api::all(c);
    loop {
        for lv in lvs.list(&ListParams::default()).await.unwrap().items {
            let name = lv.metadata.name.clone().unwrap();
            let status = lv.status.clone().unwrap_or_default();
            let new = if lv.spec.name.contains("full") {
                (status.code == 0).then(|| LogicalVolumeStatus {
                    code: 8,
                    message: Some("no room in class thick".into()),
                    ..Default::default()
                })
            } else if status.current_size.as_ref() != Some(&lv.spec.size) {
                Some(LogicalVolumeStatus {
                    volume_id: Some(format!("id-{}", lv.metadata.uid.clone().unwrap())),
                    code: 0,
                    message: None,
                    current_size: Some(lv.spec.size.clone()),
                })
            } else {
                None
            };
            if let Some(s) = new {
                let _ = lvs
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(serde_json::json!({ "status": s })),
                    )
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn annotated_node(c: &Client, name: &str, free: u64, max: u64) {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(c.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name, "annotations": {
            "capacity.ferrolvm.io/thick": free.to_string(),
            "maxvolume.ferrolvm.io/thick": max.to_string(),
            "capacity.ferrolvm.io/00default": free.to_string(),
            "maxvolume.ferrolvm.io/00default": max.to_string(),
        }}
    }))
    .unwrap();
    nodes
        .patch(
            name,
            &PatchParams::apply("ferrolvm-tests").force(),
            &Patch::Apply(&node),
        )
        .await
        .unwrap();
}

/// The Kubernetes-backed Controller service (the CSI calls
/// external-provisioner and external-resizer make) on the real API server:
/// the volume goes where the topology says, a retry finds the same volume,
/// a size that does not match is AlreadyExists, a node's refusal comes back
/// with its code and frees the name for another node, capacity comes from
/// the nodes' annotations with the largest volume as maximum_volume_size,
/// expansion waits for the node, and delete removes the object.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn the_controller_places_volumes_through_logical_volumes() {
    use ferrolvm::csi::controller::ControllerService;
    use ferrolvm::k8s::controller::KubeBackend;
    use ferrolvm_proto::csi::v1::controller_server::Controller;
    use ferrolvm_proto::csi::v1::*;
    use tonic::{Code, Request};
    const GIB: i64 = 1 << 30;
    let c = client().await;
    install_crd(&c).await;
    annotated_node(&c, "node1", 8 << 30, 8 << 30).await;
    annotated_node(&c, "node2", 3 << 30, 2 << 30).await;
    let stand_in = tokio::spawn(stand_in_nodes(c.clone()));
    let mut backend = KubeBackend::new(c.clone());
    backend.wait = Duration::from_secs(20);
    let ctl = ControllerService { backend };
    let cap = VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(
            volume_capability::MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            },
        )),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    };
    let on = |node: &str| TopologyRequirement {
        requisite: vec![],
        preferred: vec![Topology {
            segments: [("topology.ferrolvm.io/node".to_string(), node.to_string())].into(),
        }],
    };
    let create = |name: &str, bytes: i64, node: Option<&str>| CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap.clone()],
        parameters: [("ferrolvm.io/device-class".to_string(), "thick".to_string())].into(),
        accessibility_requirements: node.map(on),
        ..Default::default()
    };
    let lvs: Api<LogicalVolume> = Api::all(c.clone());

    let v = ctl
        .create_volume(Request::new(create("pvc-ctl-1", GIB, Some("node2"))))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert!(v.volume_id.starts_with("id-"), "{v:?}");
    assert_eq!(v.capacity_bytes, GIB);
    assert_eq!(
        v.accessible_topology[0].segments["topology.ferrolvm.io/node"],
        "node2"
    );
    let obj = lvs.get("pvc-ctl-1").await.unwrap();
    assert_eq!(obj.spec.node_name, "node2");
    assert_eq!(obj.spec.device_class.as_deref(), Some("thick"));
    // A retry (the sidecar timed out, or the controller restarted) finds it.
    let again = ctl
        .create_volume(Request::new(create("pvc-ctl-1", GIB, Some("node2"))))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(again.volume_id, v.volume_id);
    let bigger = ctl
        .create_volume(Request::new(create("pvc-ctl-1", 2 * GIB, Some("node2"))))
        .await;
    assert_eq!(bigger.unwrap_err().code(), Code::AlreadyExists);

    // The node refuses: its code comes back, and the name is free again.
    let full = ctl
        .create_volume(Request::new(create("pvc-full-1", GIB, Some("node1"))))
        .await;
    let e = full.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("node1"), "{e:?}");
    assert!(lvs.get_opt("pvc-full-1").await.unwrap().is_none());

    // No topology (Immediate binding): the node with the largest room.
    let anywhere = ctl
        .create_volume(Request::new(create("pvc-ctl-2", GIB, None)))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(
        anywhere.accessible_topology[0].segments["topology.ferrolvm.io/node"],
        "node1"
    );

    // Capacity per topology segment, from the annotations.
    let capacity = |node: &str| GetCapacityRequest {
        volume_capabilities: vec![cap.clone()],
        parameters: [("ferrolvm.io/device-class".to_string(), "thick".to_string())].into(),
        accessible_topology: Some(Topology {
            segments: [("topology.ferrolvm.io/node".to_string(), node.to_string())].into(),
        }),
    };
    let r = ctl
        .get_capacity(Request::new(capacity("node2")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.available_capacity, 3 * GIB);
    assert_eq!(r.maximum_volume_size, Some(2 * GIB));
    let r = ctl
        .get_capacity(Request::new(capacity("node9")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.available_capacity, 0);

    // Expansion waits for the node's currentSize.
    let grown = ctl
        .controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 * GIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 2 * GIB);
    assert!(grown.node_expansion_required);

    let listed = ctl
        .list_volumes(Request::new(ListVolumesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = listed
        .entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    assert!(ids.contains(&v.volume_id) && ids.contains(&anywhere.volume_id));

    for id in [&v.volume_id, &anywhere.volume_id, &v.volume_id] {
        ctl.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        }))
        .await
        .expect("delete, and delete again, succeed");
    }
    assert!(lvs.get_opt("pvc-ctl-1").await.unwrap().is_none());
    assert!(lvs.get_opt("pvc-ctl-2").await.unwrap().is_none());
    stand_in.abort();
}
