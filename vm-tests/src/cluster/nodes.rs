//! The cluster's storage half: the VM with two ferrolvm nodes (node1 on
//! vg1, node2 on vg2) on real device-mapper, the Node and CSINode objects
//! that kubelet would register for them (a stand-in until kubelet runs in
//! the VM, issue 11), the chart (`chart.rs`) and the VolumeSnapshotClass,
//! and on the host `ferrolvm controller` with csi-provisioner, csi-resizer,
//! csi-snapshotter (all with the chart's controller account), the
//! snapshot-controller, and the extender (with the chart's account).
//!
//! The VM's only ways out are QEMU user-network forwards: the guest dials
//! 10.0.2.100:16443, which QEMU hands to a `busybox nc` on the host that
//! connects to the API server on 127.0.0.1; the host reaches the guest's
//! agent (vmsh) on 127.0.0.1:AGENT_PORT. `restrict=on` drops all else.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Cluster, API_PORT};

/// The host's end of the guest agent (vmsh).
pub const AGENT_PORT: u16 = 17000;
const GUEST_AGENT_PORT: u16 = 7000;
/// The CSI driver's name (ferrolvm's PLUGIN_NAME).
pub const DRIVER: &str = "ferrolvm.io";
const TOPOLOGY_KEY: &str = "topology.ferrolvm.io/node";
/// (node, VG) pairs in the VM.
pub const NODES: [(&str, &str); 2] = [("node1", "vg1"), ("node2", "vg2")];
/// `ferrolvm scheduler` (the extender) and the kube-scheduler that uses it.
pub const EXTENDER_PORT: u16 = 19251;
pub const EXTENDER_SCHEDULER_PORT: u16 = 20261;
/// `ferrolvm controller`'s /metrics; the nodes' are 127.0.0.1:808N in the VM.
pub const CONTROLLER_METRICS_PORT: u16 = 18081;
/// How often csi-provisioner refreshes CSIStorageCapacity (production: 1m).
const CAPACITY_POLL: &str = "2s";

pub const GUEST_SCRIPT: &str = include_str!("guest.sh");
/// The talk's demo, run on the host by `cluster-demo`.
pub const DEMO: &str = include_str!("demo.sh");
const NODE_START: &str = include_str!("node-start.sh");

/// Node N's device classes: `thick` (default, nothing kept spare) and
/// `thin` (the VG's 1 GiB pool, overprovisioned 10 times).
fn node_config(vg: &str) -> String {
    format!(
        "device-classes:\n  - name: thick\n    volume-group: {vg}\n    default: true\n    spare-gb: 0\n  - name: thin\n    volume-group: {vg}\n    type: thin\n    thin-pool:\n      name: pool\n      overprovision-ratio: 10\n"
    )
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Files the guest gets: the nodes' kubeconfig (the API server at the
/// guestfwd address), its certificates, the node configs and the start script.
pub fn guest_data(c: &Cluster) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    // The nodes authenticate as the chart's ferrolvm-node ServiceAccount.
    let kubeconfig = c.token_kubeconfig(
        &format!("https://10.0.2.100:{API_PORT}"),
        "/etc/ferrolvm/ca.crt",
        &c.account_token("ferrolvm-node")?,
    );
    let mut files = vec![
        (
            "/etc/ferrolvm/kubeconfig".to_string(),
            kubeconfig.into_bytes(),
            0o600,
        ),
        (
            "/etc/ferrolvm/ca.crt".to_string(),
            read(&c.dir.join("ca.crt"))?,
            0o644,
        ),
        (
            "/usr/local/bin/ferrolvm-node-start".to_string(),
            NODE_START.as_bytes().to_vec(),
            0o755,
        ),
    ];
    for (i, (_, vg)) in NODES.iter().enumerate() {
        files.push((
            format!("/etc/ferrolvm/node{}.yaml", i + 1),
            node_config(vg).into_bytes(),
            0o644,
        ));
    }
    Ok(files)
}

fn which(name: &str) -> Result<PathBuf, String> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or_else(|| format!("{name} is not installed on the host"))
}

/// The objects kubelet would make: a Node and a CSINode per node (kubelet's
/// part, stood in for until issue 11). The CSIDriver and StorageClasses
/// come from the chart.
fn objects() -> String {
    let mut y = String::new();
    for (node, _) in NODES {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels:\n    kubernetes.io/hostname: {node}\n    {TOPOLOGY_KEY}: {node}\n---\napiVersion: storage.k8s.io/v1\nkind: CSINode\nmetadata:\n  name: {node}\nspec:\n  drivers:\n  - name: {DRIVER}\n    nodeID: {node}\n    topologyKeys: [\"{TOPOLOGY_KEY}\"]\n"
        ));
    }
    y
}

/// A Node's status as a kubelet would report it: Ready, with room for pods.
const NODE_STATUS: &str = r#"{"status":{"capacity":{"cpu":"8","memory":"16Gi","pods":"250"},"allocatable":{"cpu":"8","memory":"16Gi","pods":"250"},"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"stand-in for kubelet (vm-tests)","lastHeartbeatTime":null,"lastTransitionTime":null}]}}"#;

impl Cluster {
    pub fn kubectl_apply(&self, yaml: &str) -> Result<(), String> {
        let mut child = self
            .kubectl()
            .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(yaml.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "kubectl apply: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The chart (ferrolvm's CRD, driver, classes, accounts and RBAC), the
    /// VolumeSnapshot CRDs, and the nodes' objects.
    pub fn install(&mut self) -> Result<(), String> {
        self.install_chart()?;
        // The VolumeSnapshot CRDs, as the snapshotter's client module ships them.
        let snapshot_crds = self.bin.with_file_name("crd");
        let mut names = Vec::new();
        for e in std::fs::read_dir(&snapshot_crds)
            .map_err(|e| format!("{}: {e}", snapshot_crds.display()))?
            .flatten()
        {
            let yaml = std::fs::read_to_string(e.path()).map_err(|e| e.to_string())?;
            self.kubectl_apply(&yaml)?;
            names.push(e.path());
        }
        if names.len() < 3 {
            return Err(format!(
                "expected the 3 VolumeSnapshot CRDs in {}",
                snapshot_crds.display()
            ));
        }
        self.kubectl_apply(&objects())?;
        for (node, _) in NODES {
            image_run(self.kubectl().args([
                "patch",
                "node",
                node,
                "--subresource=status",
                "--type=merge",
                "-p",
                NODE_STATUS,
            ]))?;
            // The API server taints a new Node not-ready; the node lifecycle
            // controller lifts it when kubelet reports Ready. Neither runs here.
            image_run(self.kubectl().args([
                "taint",
                "node",
                node,
                "node.kubernetes.io/not-ready:NoSchedule-",
            ]))?;
        }
        image_run(self.kubectl().args([
            "wait",
            "--for=condition=Established",
            "crd/logicalvolumes.ferrolvm.io",
            "crd/volumesnapshotclasses.snapshot.storage.k8s.io",
            "crd/volumesnapshots.snapshot.storage.k8s.io",
            "crd/volumesnapshotcontents.snapshot.storage.k8s.io",
            "--timeout=60s",
        ]))?;
        self.kubectl_apply(&format!(
            "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\nmetadata:\n  name: ferrolvm\ndriver: {DRIVER}\ndeletionPolicy: Delete\n"
        ))
    }

    /// Boots the VM and waits until both nodes serve CSI.
    pub fn boot_nodes(&mut self, kernel: &Path, initrd: &Path) -> Result<(), String> {
        let nc = which("busybox")?;
        let netdev = format!(
            "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{AGENT_PORT}-10.0.2.15:{GUEST_AGENT_PORT},guestfwd=tcp:10.0.2.100:{API_PORT}-cmd:{} nc 127.0.0.1 {API_PORT}",
            nc.display()
        );
        let extra: Vec<String> = ["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let console = self.dir.join("vm-console.log");
        let child = crate::qemu::spawn(kernel, initrd, 4096, &extra, &console)?;
        self.children.push(("qemu".into(), child));
        let vmsh = self.dir.join("bin/vmsh");
        std::fs::create_dir_all(self.dir.join("bin")).map_err(|e| e.to_string())?;
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        std::fs::write(
            &vmsh,
            format!(
                "#!/bin/sh\n# vmsh 'CMD': CMD as root in the cluster VM; its output, its exit code.\nexec {} vmsh \"$*\"\n",
                me.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&vmsh, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let ready = "test -S /run/ferrolvm/node1.sock && test -S /run/ferrolvm/node2.sock";
        loop {
            self.check_alive()?;
            if crate::agent::run_quiet(AGENT_PORT, ready).is_ok_and(|c| c == 0) {
                eprintln!(
                    "vm-tests: the VM's nodes serve CSI after {:.0} s",
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(240) {
                let console = std::fs::read_to_string(&console).unwrap_or_default();
                return Err(format!(
                    "the VM's nodes did not come up within 240 s; console:\n{console}"
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `ferrolvm controller` and the sidecars that drive it, on the host.
    pub fn start_controller(&mut self, ferrolvm: &Path) -> Result<(), String> {
        let sock = self.dir.join("controller.sock");
        let endpoint = format!("unix://{}", sock.display());
        // The admin's, for the cluster's own parts (snapshot-controller,
        // the second kube-scheduler); the chart's account for the rest.
        let admin = self.kubeconfig.display().to_string();
        let kc = self.account_kubeconfig("ferrolvm-controller");
        let metrics = format!("127.0.0.1:{CONTROLLER_METRICS_PORT}");
        // Restarted when it dies, as its Deployment would restart it: the
        // fault tests kill it (its pid is in ferrolvm-controller.pid).
        self.spawn_supervised(
            "ferrolvm-controller",
            ferrolvm,
            &[
                "controller",
                "--csi-endpoint",
                &endpoint,
                "--leader-election-namespace",
                super::NAMESPACE,
                "--metrics-listen",
                &metrics,
            ],
            &[("KUBECONFIG", &kc), ("FERROLVM_LOG", "info")],
        )?;
        let ferrolvm = ferrolvm.display().to_string();
        let start = Instant::now();
        while !sock.exists() {
            self.check_alive()?;
            if start.elapsed() > Duration::from_secs(30) {
                return Err("ferrolvm controller did not create its socket".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let addr = sock.display().to_string();
        let poll = format!("--capacity-poll-interval={CAPACITY_POLL}");
        self.spawn_supervised(
            "csi-provisioner",
            &self.bin.join("csi-provisioner"),
            &[
                "--csi-address",
                &addr,
                "--kubeconfig",
                &kc,
                "--leader-election=false",
                "--strict-topology",
                "--enable-capacity",
                &poll,
                "--capacity-ownerref-level=-1",
                "--extra-create-metadata",
                "--timeout=30s",
                "--v=3",
            ],
            &[
                ("NAMESPACE", super::NAMESPACE),
                ("POD_NAMESPACE", super::NAMESPACE),
            ],
        )?;
        self.spawn_exe(
            "snapshot-controller",
            &self.bin.join("snapshot-controller"),
            &["--kubeconfig", &admin, "--leader-election=false", "--v=3"],
            &[],
        )?;
        // The extender, and a second kube-scheduler (profile
        // `ferrolvm-extender`) that asks it: pods choose it by schedulerName.
        let listen = format!("127.0.0.1:{EXTENDER_PORT}");
        let scheduler_kc = self.account_kubeconfig("ferrolvm-scheduler");
        self.spawn_exe(
            "ferrolvm-scheduler",
            &PathBuf::from(&ferrolvm),
            &["scheduler", "--listen", &listen],
            &[("KUBECONFIG", &scheduler_kc), ("FERROLVM_LOG", "info")],
        )?;
        let config = self.dir.join("extender-scheduler.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nleaderElection:\n  leaderElect: false\nclientConnection:\n  kubeconfig: {admin}\nprofiles:\n- schedulerName: ferrolvm-extender\nextenders:\n- urlPrefix: http://{listen}\n  filterVerb: predicate\n  prioritizeVerb: prioritize\n  weight: 1\n  nodeCacheCapable: false\n  enableHTTPS: false\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let config = config.display().to_string();
        let serving = super::serving_flags(&admin, EXTENDER_SCHEDULER_PORT);
        let mut args = vec!["--config", config.as_str()];
        args.extend(serving.iter().map(String::as_str));
        self.spawn_exe(
            "kube-scheduler-extender",
            &self.bin.join("kube-scheduler"),
            &args,
            &[],
        )?;
        // The snapshotter and the resizer take the same flags.
        for sidecar in ["csi-snapshotter", "csi-resizer"] {
            self.spawn_supervised(
                sidecar,
                &self.bin.join(sidecar),
                &[
                    "--csi-address",
                    &addr,
                    "--kubeconfig",
                    &kc,
                    "--leader-election=false",
                    "--timeout=30s",
                    "--v=3",
                ],
                &[],
            )?;
        }
        Ok(())
    }
}

fn image_run(cmd: &mut Command) -> Result<(), String> {
    crate::image::run(cmd).map(|_| ())
}
