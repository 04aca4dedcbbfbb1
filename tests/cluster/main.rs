//! The Kubernetes suite, against a real cluster: etcd, kube-apiserver,
//! kube-scheduler, kube-controller-manager, csi-provisioner and csi-resizer
//! built from their Go modules, `ferrolvm controller` on the host, and two
//! ferrolvm nodes (node1 on vg1, node2 on vg2) in the QEMU VM on real
//! device-mapper. `cargo run -p vm-tests -- cluster-test` brings it up and
//! runs these `#[ignore]`d tests with KUBECONFIG and vmsh; without a
//! cluster they fail loudly, never skip.

mod chart;
mod controller;
mod crd;
mod events;
mod faults;
mod node_deletion;
mod orphans;
mod pods;
mod provisioning;
mod scheduling;
mod snapshots;
mod telemetry;

use std::future::Future;
use std::time::{Duration, Instant};

use ferrolvm::k8s::crd::{crd_yaml, LogicalVolume};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;

pub async fn client() -> Client {
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
pub async fn install_crd(c: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let committed = include_str!("../../deploy/helm/ferrolvm/crds/logicalvolumes.ferrolvm.io.yaml");
    let crd: CustomResourceDefinition = serde_norway::from_str(committed).unwrap();
    assert_eq!(committed, crd_yaml());
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
    eventually("the LogicalVolume CRD is Established", 10, || async {
        established(&crds.get("logicalvolumes.ferrolvm.io").await.unwrap()).then_some(())
    })
    .await;
}

/// Polls `check` every 200 ms until it gives Some, for at most `secs`;
/// then fails naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_or(what, secs, check, String::new).await
}

/// [`eventually`], whose failure also says what `seen` describes (the last
/// state observed).
pub async fn eventually_or<T, F, Fut>(
    what: &str,
    secs: u64,
    mut check: F,
    seen: impl Fn() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s; {}",
            seen()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the tool the harness names in `env` with `args`; its stdout, or a
/// failure naming its stderr.
pub fn harness_tool(env: &str, args: &[&str]) -> String {
    let exe = std::env::var_os(env).unwrap_or_else(|| panic!("{env}: run under vm-tests"));
    let out = std::process::Command::new(exe).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{env} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs CMD as root in the VM; its stdout, or a failure with its stderr.
pub fn vmsh(cmd: &str) -> String {
    harness_tool("FERROLVM_VMSH", &[cmd])
}

/// Waits until nothing holds LV `vg/lv` open as lvm2 sees it (kubelet
/// unpublished it: a pod deleted at once still has its teardown to do).
pub async fn unmounted(vg: &str, lv: &str, secs: u64) {
    eventually(&format!("{vg}/{lv} closed in the VM"), secs, || async {
        let open = vmsh(&format!("lvm lvs --noheadings -o lv_device_open {vg}/{lv}"));
        (open.trim() != "open").then_some(())
    })
    .await
}

/// Waits until pod `name`'s containers all run (kubelet published its
/// volumes and started it).
pub async fn running(c: &Client, name: &str, secs: u64) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    eventually(&format!("pod {name} Running"), secs, || async {
        let p = pods.get(name).await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await
}

/// The LV names lvm2 reports in `vg`, in the VM.
pub fn lvm_lvs(vg: &str) -> Vec<String> {
    vmsh(&format!("lvm lvs --noheadings -o lv_name {vg}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// An LV's size in bytes as lvm2 reports it, in the VM.
pub fn lvm_lv_bytes(vg: &str, lv: &str) -> u64 {
    vmsh(&format!(
        "lvm lvs --noheadings --units b --nosuffix -o lv_size {vg}/{lv}"
    ))
    .trim()
    .parse()
    .unwrap()
}

/// A VG's free bytes as lvm2 reports them, in the VM.
pub fn lvm_vg_free(vg: &str) -> u64 {
    vmsh(&format!(
        "lvm vgs --noheadings --units b --nosuffix -o vg_free {vg}"
    ))
    .trim()
    .parse()
    .unwrap()
}

/// Waits until `vg` holds no LV being wiped (a deleted thick volume's
/// extents count as used until its wipe is done).
pub async fn wipes_done(vg: &str) {
    eventually(&format!("wipes in {vg} done"), 120, || async {
        (!lvm_lvs(vg).iter().any(|l| l.starts_with("ferrolvm_wipe_"))).then_some(())
    })
    .await
}

pub const NS: &str = "default";
/// The chart's release namespace: the Lease, the CSIStorageCapacity objects.
pub const SYSTEM_NS: &str = "ferrolvm-system";

pub fn pvc(name: &str, class: &str, size: &str) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": name },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "resources": { "requests": { "storage": size } }
        }
    }))
    .unwrap()
}

/// A pod using claim `claim` at /data: busybox sleeping, run by the node's
/// kubelet.
pub fn pod(name: &str, claim: &str) -> Pod {
    pod_on(name, claim, None)
}

/// Like [`pod`], held to `node` when given.
pub fn pod_on(name: &str, claim: &str, node: Option<&str>) -> Pod {
    let selector = node.map(|n| serde_json::json!({ "kubernetes.io/hostname": n }));
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "nodeSelector": selector,
            "containers": [{ "name": "c", "image": "busybox:latest",
                "imagePullPolicy": "Never", "command": ["sleep", "3600"],
                "volumeMounts": [{ "name": "v", "mountPath": "/data" }] }],
            "volumes": [{ "name": "v", "persistentVolumeClaim": { "claimName": claim } }]
        }
    }))
    .unwrap()
}

/// Creates claim and pod `name`.
pub async fn claim_and_pod(c: &Client, name: &str, class: &str, size: &str) {
    claim_and_pod_by(c, name, class, size, None).await
}

/// Creates claim and pod `name`, the pod scheduled by `scheduler` (None:
/// the default scheduler).
pub async fn claim_and_pod_by(
    c: &Client,
    name: &str,
    class: &str,
    size: &str,
    scheduler: Option<&str>,
) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    pvcs.create(&PostParams::default(), &pvc(name, class, size))
        .await
        .unwrap();
    let mut p = pod(name, name);
    if let (Some(s), Some(spec)) = (scheduler, p.spec.as_mut()) {
        spec.scheduler_name = Some(s.to_string());
    }
    pods.create(&PostParams::default(), &p).await.unwrap();
}

/// The claim's bound PV name once it is Bound.
pub async fn bound(c: &Client, name: &str, secs: u64) -> String {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), NS);
    eventually(&format!("PVC {name} Bound"), secs, || async {
        let p = pvcs.get(name).await.ok()?;
        let phase = p.status.as_ref()?.phase.as_deref()?;
        (phase == "Bound").then(|| p.spec?.volume_name).flatten()
    })
    .await
}

/// The node the scheduler put pod `name` on.
pub async fn scheduled_on(c: &Client, name: &str, secs: u64) -> String {
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    eventually(&format!("pod {name} scheduled"), secs, || async {
        pods.get(name).await.ok()?.spec?.node_name
    })
    .await
}

/// Deletes pods and claims `names` and waits until their LogicalVolumes
/// are gone (the nodes removed the LVs).
pub async fn remove_all(c: &Client, names: &[&str]) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let lvs: Api<LogicalVolume> = Api::all(c.clone());
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let mut volumes = Vec::new();
    for n in names {
        if let Ok(p) = pvcs.get(n).await {
            volumes.extend(p.spec.and_then(|s| s.volume_name));
        }
        let _ = pods.delete(n, &now).await;
        let _ = pvcs.delete(n, &now).await;
    }
    // 180 s: a pod's kubelet must unmount the volume first (under TCG,
    // with the node's back-off on the busy LV), then the node wipes it.
    for v in volumes {
        eventually(&format!("LogicalVolume {v} removed"), 180, || async {
            lvs.get_opt(&v).await.unwrap().is_none().then_some(())
        })
        .await;
    }
    // With grace period 0 the API object is gone at once; kubelet tears the
    // pod down after.
    for n in names {
        eventually(&format!("pod {n} gone"), 30, || async {
            pods.get_opt(n).await.unwrap().is_none().then_some(())
        })
        .await;
    }
}
