//! What pods see, with the VM's real kubelets making every node-side CSI
//! call: data that outlives a pod on ext4, xfs, btrfs and a raw block
//! volume; zeros for the next tenant of freed extents; a volume grown under
//! its running pod; kubelet's volume metrics against `df`; a suspended
//! device reported abnormal; a snapshot restored into a new pod; the node
//! plugin restarted under running pods. The tests look inside the pods
//! with `kubectl exec`, through the API server and the egress proxy.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::Client;

use crate::{
    bound, client, eventually, eventually_or, lvm_lvs, remove_all, running, unmounted, vmsh,
    wipes_done, NS,
};

/// `kubectl ARGS`; its stdout, or a failure naming its stderr.
fn kubectl(args: &[&str]) -> String {
    crate::harness_tool("FERROLVM_KUBECTL", args)
}

/// `script` run by sh in pod `pod`'s container; its stdout.
fn exec(pod: &str, script: &str) -> String {
    kubectl(&["exec", "-n", NS, pod, "--", "sh", "-c", script])
}

/// A claim of `size` in `class`, a raw block device when `block`.
fn claim(name: &str, class: &str, size: &str, block: bool) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": name },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "volumeMode": if block { "Block" } else { "Filesystem" },
            "resources": { "requests": { "storage": size } }
        }
    }))
    .unwrap()
}

/// The raw block volume's path in a pod.
const DEVICE: &str = "/dev/xvda";

/// A busybox pod on `node` with claim `claim` at /data (or at DEVICE when
/// `block`), sleeping: the tests act through `exec`.
fn pod(name: &str, claim: &str, node: &str, block: bool) -> Pod {
    let mut container = serde_json::json!({
        "name": "c", "image": "busybox:latest", "imagePullPolicy": "Never",
        "command": ["sleep", "3600"],
    });
    if block {
        container["volumeDevices"] = serde_json::json!([{ "name": "v", "devicePath": DEVICE }]);
    } else {
        container["volumeMounts"] = serde_json::json!([{ "name": "v", "mountPath": "/data" }]);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "nodeSelector": { "kubernetes.io/hostname": node },
            "terminationGracePeriodSeconds": 0,
            "containers": [container],
            "volumes": [{ "name": "v", "persistentVolumeClaim": { "claimName": claim } }]
        }
    }))
    .unwrap()
}

async fn create_claim(c: &Client, pvc: &PersistentVolumeClaim) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), NS);
    pvcs.create(&PostParams::default(), pvc).await.unwrap();
}

async fn create_pod(c: &Client, p: &Pod) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    pods.create(&PostParams::default(), p).await.unwrap();
}

/// Deletes pod `name` at once and waits until it is gone and kubelet has
/// let go of its volume `vg/lv`.
async fn delete_pod(c: &Client, name: &str, vg: &str, lv: &str) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete(name, &now).await.unwrap();
    eventually(&format!("pod {name} gone"), 60, || async {
        pods.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
    unmounted(vg, lv, 90).await;
}

/// The physical extents LV `vg/lv` occupies, as (device, extent) pairs.
fn extents(vg: &str, lv: &str) -> BTreeSet<(String, u64)> {
    let ranges = vmsh(&format!("lvm lvs --noheadings -o seg_pe_ranges {vg}/{lv}"));
    let mut all = BTreeSet::new();
    for range in ranges.split_whitespace() {
        let (dev, span) = range.rsplit_once(':').expect("DEV:FIRST-LAST");
        let (first, last) = span.split_once('-').expect("FIRST-LAST");
        let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
        all.extend((first..=last).map(|e| (dev.to_string(), e)));
    }
    all
}

/// The filesystem type mounted at /data in pod `pod`.
fn fstype(pod: &str) -> String {
    let line = exec(pod, "grep ' /data ' /proc/mounts");
    line.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

/// A pod writes to its ext4, xfs and btrfs volume and to a raw block
/// volume; a new pod on the same claim finds it all. The freed extents of
/// the block volume, taken by the next block-mode tenant, read as zeros.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn data_outlives_the_pod_and_freed_extents_read_zeros() {
    let c = client().await;
    // (claim, class, filesystem, node); node2 runs the other kubelet.
    let filesystems = [
        ("data-ext4", "ferrolvm-thick", "ext4", "node1"),
        ("data-xfs", "ferrolvm-xfs", "xfs", "node2"),
        ("data-btrfs", "ferrolvm-btrfs", "btrfs", "node2"),
    ];
    for (name, class, _, node) in filesystems {
        create_claim(&c, &claim(name, class, "512Mi", false)).await;
        create_pod(&c, &pod(&format!("{name}-w"), name, node, false)).await;
    }
    create_claim(&c, &claim("data-block", "ferrolvm-thick", "64Mi", true)).await;
    create_pod(&c, &pod("data-block-w", "data-block", "node1", true)).await;

    let mut pvs = Vec::new();
    for (name, _, fs, node) in filesystems {
        running(&c, &format!("{name}-w"), 180).await;
        let writer = format!("{name}-w");
        assert_eq!(fstype(&writer), fs, "{name}'s filesystem");
        exec(
            &writer,
            &format!("echo 'written by {writer}' > /data/proof && sync"),
        );
        pvs.push((name, node, bound(&c, name, 10).await));
    }
    running(&c, "data-block-w", 180).await;
    // Every byte of the device, not only its start.
    exec(
        "data-block-w",
        &format!("tr '\\000' x </dev/zero | dd of={DEVICE} bs=1M count=64 iflag=fullblock conv=fsync 2>/dev/null"),
    );
    let block_pv = bound(&c, "data-block", 10).await;

    for (name, node, pv) in &pvs {
        let vg = if *node == "node1" { "vg1" } else { "vg2" };
        delete_pod(&c, &format!("{name}-w"), vg, pv).await;
        create_pod(&c, &pod(&format!("{name}-r"), name, node, false)).await;
    }
    delete_pod(&c, "data-block-w", "vg1", &block_pv).await;
    create_pod(&c, &pod("data-block-r", "data-block", "node1", true)).await;
    for (name, _, _) in &pvs {
        let reader = format!("{name}-r");
        running(&c, &reader, 180).await;
        assert_eq!(
            exec(&reader, "cat /data/proof"),
            format!("written by {name}-w\n"),
            "{name}: the new pod reads what the old one wrote"
        );
    }
    running(&c, "data-block-r", 180).await;
    let size: u64 = exec("data-block-r", &format!("blockdev --getsize64 {DEVICE}"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(size, 64 << 20, "the block volume's size in the pod");
    assert_eq!(
        exec("data-block-r", &format!("tr -d x <{DEVICE} | wc -c")).trim(),
        "0",
        "the new pod reads the whole device as the old one wrote it"
    );

    // The block claim goes first, while the filesystems still hold their
    // extents: its extents are the only hole, where the next tenant lands.
    let freed = extents("vg1", &block_pv);
    remove_all(&c, &["data-block-r", "data-block"]).await;
    assert!(!lvm_lvs("vg1").contains(&block_pv), "the LV is gone");
    wipes_done("vg1").await;
    create_claim(&c, &claim("data-next", "ferrolvm-thick", "64Mi", true)).await;
    create_pod(&c, &pod("data-next", "data-next", "node1", true)).await;
    running(&c, "data-next", 180).await;
    let next_pv = bound(&c, "data-next", 10).await;
    let taken = extents("vg1", &next_pv);
    assert!(
        !taken.is_disjoint(&freed),
        "the next tenant is on the freed extents (freed {freed:?}, taken {taken:?})"
    );
    assert_eq!(
        exec("data-next", &format!("tr -d '\\000' <{DEVICE} | wc -c")).trim(),
        "0",
        "the next tenant reads zeros, not the last one's data"
    );

    let mut names = vec!["data-next"];
    for (name, _, _) in &pvs {
        names.push(name);
    }
    let readers: Vec<String> = pvs.iter().map(|(n, _, _)| format!("{n}-r")).collect();
    names.extend(readers.iter().map(String::as_str));
    remove_all(&c, &names).await;
    for (name, node, pv) in &pvs {
        let vg = if *node == "node1" { "vg1" } else { "vg2" };
        assert!(!lvm_lvs(vg).contains(pv), "{name}'s LV is gone");
    }
}

/// Bytes of the filesystem at /data in `pod`: (total, used, available), as
/// statfs(2) in the pod reports them (what `df` prints).
fn df(pod: &str) -> (u64, u64, u64) {
    let out = exec(pod, "stat -f -c '%b %f %a %S' /data");
    let v: Vec<u64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
    let [blocks, free, avail, size] = v[..] else {
        panic!("stat -f: {out:?}")
    };
    (blocks * size, (blocks - free) * size, avail * size)
}

/// kubelet's metric `name` for claim `claim`, from node `node`'s /metrics
/// (through the API server's node proxy).
fn kubelet_metric(node: &str, name: &str, claim: &str) -> Option<f64> {
    let metrics = kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/metrics"),
    ]);
    let want = format!("persistentvolumeclaim=\"{claim}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&want))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The adverse conditions kubelet reports for pod `pod`'s volume `v`
/// (status.volumeHealth, CSIVolumeHealth), as "STATUS REASON".
fn volume_health(pod: &str) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_str(&kubectl(&["get", "pod", "-n", NS, pod, "-o", "json"])).unwrap();
    let mut all = Vec::new();
    for v in json["status"]["volumeHealth"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["name"] != "v" {
            continue;
        }
        for c in v["healthConditions"].as_array().into_iter().flatten() {
            all.push(format!(
                "{} {}",
                c["status"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default()
            ));
        }
    }
    all
}

/// A claim grown from 1 GiB to 2 GiB while its pod runs: the pod's `df`
/// shows the bigger filesystem (kubelet's NodeExpandVolume, online).
/// kubelet's volume metrics for it are what `df` says in the pod, and a
/// suspended device makes kubelet report the volume Inaccessible.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn a_running_pod_sees_its_volume_grow_and_kubelet_reports_it() {
    let c = client().await;
    create_claim(&c, &claim("grow", "ferrolvm-thick", "1Gi", false)).await;
    create_pod(&c, &pod("grow", "grow", "node2", false)).await;
    running(&c, "grow", 180).await;
    let pv = bound(&c, "grow", 10).await;
    let (before, _, _) = df("grow");
    assert!(
        before > 900 << 20 && before <= 1 << 30,
        "a 1 GiB filesystem: {before}"
    );
    exec(
        "grow",
        "dd if=/dev/zero of=/data/fill bs=1M count=100 2>/dev/null && sync",
    );

    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), NS);
    pvcs.patch(
        "grow",
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({ "spec": { "resources": { "requests": { "storage": "2Gi" } } } }),
        ),
    )
    .await
    .unwrap();
    let last = std::cell::Cell::new(before);
    eventually_or(
        "the pod's df shows the filesystem grown to 2 GiB",
        180,
        || {
            last.set(df("grow").0);
            std::future::ready((last.get() > (1 << 30) + (900 << 20)).then_some(()))
        },
        || format!("df says {} bytes", last.get()),
    )
    .await;
    eventually("the claim's status says 2Gi", 60, || async {
        let p = pvcs.get("grow").await.ok()?;
        let cap = p.status?.capacity?.get("storage")?.0.clone();
        (cap == "2Gi").then_some(())
    })
    .await;
    assert_eq!(
        exec("grow", "wc -c </data/fill").trim(),
        (100u64 << 20).to_string(),
        "the data survives the growth"
    );

    // kubelet's metrics (refreshed every 5 s here) against statfs in the pod.
    let seen = std::cell::RefCell::new(String::new());
    eventually_or(
        "kubelet_volume_stats_* equal df in the pod",
        90,
        || {
            let (total, used, avail) = df("grow");
            let metric = |m: &str| kubelet_metric("node2", m, "grow").map(|v| v as u64);
            let got = (
                metric("kubelet_volume_stats_capacity_bytes"),
                metric("kubelet_volume_stats_used_bytes"),
                metric("kubelet_volume_stats_available_bytes"),
            );
            *seen.borrow_mut() = format!("df ({total}, {used}, {avail}), kubelet {got:?}");
            std::future::ready((got == (Some(total), Some(used), Some(avail))).then_some(()))
        },
        || seen.borrow().clone(),
    )
    .await;
    assert_eq!(volume_health("grow"), Vec::<String>::new(), "healthy");

    // The LV's device suspended: ferrolvm's NodeGetVolumeHealth says it is
    // unusable, and kubelet puts that in the pod's status. The device is
    // resumed before anything is asserted: a suspended device left behind
    // would hang every later unmount.
    let dm = format!("vg2-{}", pv.replace('-', "--"));
    vmsh(&format!("dmsetup suspend {dm}"));
    let start = std::time::Instant::now();
    let mut reported = Vec::new();
    while start.elapsed() < std::time::Duration::from_secs(60) {
        reported = volume_health("grow");
        if !reported.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    vmsh(&format!("dmsetup resume {dm}"));
    assert_eq!(
        reported,
        vec!["Inaccessible DeviceUnusable".to_string()],
        "kubelet reports the suspended device in the pod's volumeHealth"
    );
    eventually("the resumed volume is healthy again", 60, || async {
        volume_health("grow").is_empty().then_some(())
    })
    .await;
    remove_all(&c, &["grow"]).await;
}

/// A thin volume's snapshot, restored into a new claim and mounted by a new
/// pod, holds what the volume held when the snapshot was taken, not what
/// was written after.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn a_restored_snapshot_holds_the_data_of_its_moment() {
    let c = client().await;
    create_claim(&c, &claim("moment-src", "ferrolvm-thin", "1Gi", false)).await;
    create_pod(&c, &pod("moment-src", "moment-src", "node1", false)).await;
    running(&c, "moment-src", 180).await;
    exec("moment-src", "echo before > /data/moment && sync");

    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    let snaps: Api<DynamicObject> =
        Api::namespaced_with(c.clone(), NS, &ApiResource::from_gvk(&gvk));
    let snap: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": { "name": "moment" },
        "spec": { "volumeSnapshotClassName": "ferrolvm",
                  "source": { "persistentVolumeClaimName": "moment-src" } }
    }))
    .unwrap();
    snaps.create(&PostParams::default(), &snap).await.unwrap();
    eventually("the snapshot is ready", 120, || async {
        let s = snaps.get("moment").await.ok()?;
        (s.data["status"]["readyToUse"] == true).then_some(())
    })
    .await;
    exec("moment-src", "echo after > /data/moment && sync");

    let restored: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": "moment-restored" },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "ferrolvm-thin",
            "resources": { "requests": { "storage": "1Gi" } },
            "dataSource": { "apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "moment" }
        }
    }))
    .unwrap();
    create_claim(&c, &restored).await;
    create_pod(
        &c,
        &pod("moment-restored", "moment-restored", "node1", false),
    )
    .await;
    running(&c, "moment-restored", 180).await;
    assert_eq!(exec("moment-restored", "cat /data/moment"), "before\n");
    assert_eq!(exec("moment-src", "cat /data/moment"), "after\n");

    remove_all(&c, &["moment-restored"]).await;
    snaps
        .delete("moment", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the snapshot is gone", 60, || async {
        snaps
            .get_opt("moment")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    remove_all(&c, &["moment-src"]).await;
}

/// node1's plugin killed and started again under running pods: their
/// mounts keep working (the kernel holds them, not the plugin), and a new
/// claim still mounts into a new pod.
#[tokio::test]
#[ignore = "needs the cluster: runs under `cargo run -p vm-tests -- cluster-test`"]
async fn pods_keep_working_across_a_node_plugin_restart() {
    let c = client().await;
    create_claim(&c, &claim("restart-old", "ferrolvm-thick", "256Mi", false)).await;
    create_pod(&c, &pod("restart-old", "restart-old", "node1", false)).await;
    running(&c, "restart-old", 180).await;
    exec("restart-old", "echo one > /data/f && sync");

    vmsh("kill -9 $(cat /run/ferrolvm/node1.pid) && sleep 0.3 && ferrolvm-node-start 1");
    exec("restart-old", "echo two >> /data/f && sync");
    assert_eq!(exec("restart-old", "cat /data/f"), "one\ntwo\n");

    create_claim(&c, &claim("restart-new", "ferrolvm-thick", "256Mi", false)).await;
    create_pod(&c, &pod("restart-new", "restart-new", "node1", false)).await;
    running(&c, "restart-new", 180).await;
    exec("restart-new", "echo fresh > /data/f && sync");
    assert_eq!(exec("restart-new", "cat /data/f"), "fresh\n");
    assert_eq!(exec("restart-old", "cat /data/f"), "one\ntwo\n");
    remove_all(&c, &["restart-old", "restart-new"]).await;
}
