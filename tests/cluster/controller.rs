//! The Kubernetes-backed Controller service, called in-process as the
//! sidecars would call it, against the real nodes in the VM.

use std::time::Duration;

use ferrolvm::csi::controller::ControllerService;
use ferrolvm::k8s::controller::KubeBackend;
use ferrolvm::k8s::crd::LogicalVolume;
use ferrolvm_proto::csi::v1::controller_server::Controller;
use ferrolvm_proto::csi::v1::*;
use kube::api::Api;
use tonic::{Code, Request};

use crate::{client, install_crd, lvm_lv_bytes, lvm_lvs, lvm_vg_free};

const GIB: i64 = 1 << 30;
const NODE_KEY: &str = "topology.ferrolvm.io/node";

fn mount_capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(volume_capability::AccessType::Mount(
            volume_capability::MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            },
        )),
        access_mode: Some(volume_capability::AccessMode {
            mode: volume_capability::access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

fn segment(node: &str) -> Topology {
    Topology {
        segments: [(NODE_KEY.to_string(), node.to_string())].into(),
    }
}

fn thick() -> std::collections::HashMap<String, String> {
    [("ferrolvm.io/device-class".to_string(), "thick".to_string())].into()
}

fn create(name: &str, bytes: i64, node: Option<&str>) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_capability()],
        parameters: thick(),
        accessibility_requirements: node.map(|n| TopologyRequirement {
            requisite: vec![],
            preferred: vec![segment(n)],
        }),
        ..Default::default()
    }
}

/// The volume goes where the topology says and lvm2 on that node sees it;
/// a retry finds the same volume; a size that does not match is
/// AlreadyExists; the node's refusal (no room) comes back as
/// ResourceExhausted naming the node and frees the name; GetCapacity per
/// segment is what lvm2 says is free; expansion grows the LV; delete
/// removes it, and again is fine.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn the_controller_places_volumes_on_the_real_nodes() {
    let c = client().await;
    install_crd(&c).await;
    let mut backend = KubeBackend::new(c.clone());
    backend.wait = Duration::from_secs(60);
    let ctl = ControllerService { backend };
    let lvs: Api<LogicalVolume> = Api::all(c.clone());

    let v = ctl
        .create_volume(Request::new(create("pvc-ctl-1", GIB, Some("node2"))))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v.capacity_bytes, GIB);
    assert_eq!(v.accessible_topology[0].segments[NODE_KEY], "node2");
    assert_eq!(lvs.get("pvc-ctl-1").await.unwrap().spec.node_name, "node2");
    assert!(lvm_lvs("vg2").contains(&"pvc-ctl-1".to_string()));
    assert!(!lvm_lvs("vg1").contains(&"pvc-ctl-1".to_string()));
    assert_eq!(lvm_lv_bytes("vg2", "pvc-ctl-1"), GIB as u64);
    let uuid = crate::vmsh("lvm lvs --noheadings -o lv_uuid vg2/pvc-ctl-1");
    assert_eq!(v.volume_id, uuid.trim(), "the volume id is lvm2's LV uuid");

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

    let huge = ctl
        .create_volume(Request::new(create(
            "pvc-ctl-huge",
            100 * GIB,
            Some("node1"),
        )))
        .await;
    let e = huge.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("node1"), "{e:?}");
    assert!(lvs.get_opt("pvc-ctl-huge").await.unwrap().is_none());
    assert!(!lvm_lvs("vg1").contains(&"pvc-ctl-huge".to_string()));

    // Capacity per segment: the thick class keeps nothing spare, so it is
    // the VG's free space (the node publishes it within its poll).
    let free = lvm_vg_free("vg2");
    let capacity = |node: &'static str| {
        let ctl = &ctl;
        async move {
            ctl.get_capacity(Request::new(GetCapacityRequest {
                volume_capabilities: vec![mount_capability()],
                parameters: thick(),
                accessible_topology: Some(segment(node)),
            }))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let r = crate::eventually("node2's capacity matches lvm2", 10, || async {
        let r = capacity("node2").await;
        (r.available_capacity as u64 == free).then_some(r)
    })
    .await;
    assert_eq!(r.maximum_volume_size, Some(free as i64));
    let none = capacity("node9").await;
    assert_eq!(none.available_capacity, 0);

    let grown = ctl
        .controller_expand_volume(Request::new(ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 2 * GIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(mount_capability()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 2 * GIB);
    assert!(grown.node_expansion_required);
    assert_eq!(lvm_lv_bytes("vg2", "pvc-ctl-1"), 2 * GIB as u64);

    for _ in 0..2 {
        ctl.delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: v.volume_id.clone(),
            ..Default::default()
        }))
        .await
        .expect("delete, and delete again, succeed");
    }
    assert!(lvs.get_opt("pvc-ctl-1").await.unwrap().is_none());
    assert!(!lvm_lvs("vg2").contains(&"pvc-ctl-1".to_string()));
}
