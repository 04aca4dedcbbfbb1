//! The cluster's storage half: the VM with two ferrolvm nodes (node1 on
//! vg1, node2 on vg2) on real device-mapper, each with its own kubelet and
//! containerd (`kubelet-start.sh`), which register the Node and, through
//! ferrolvm's plugin registration, its CSINode; the chart (`chart.rs`) and
//! the VolumeSnapshotClass; and on the host `ferrolvm controller` with
//! csi-provisioner, csi-resizer, csi-snapshotter (all with the chart's
//! controller account), the snapshot-controller, and the extender (with the
//! chart's account).
//!
//! One VM with two kubelets rather than two VMs: under TCG on a 2-core host
//! a second guest would double the emulated CPU and memory for nothing the
//! tests look at; the kubelets share nothing but the kernel (own runtime,
//! root dir, cgroup root, CNI network, ports).
//!
//! The VM's only ways out are QEMU user-network forwards: the guest dials
//! 10.0.2.100:16443, which QEMU hands to a `busybox nc` on the host that
//! connects to the API server on 127.0.0.1; the host reaches the guest's
//! agent (vmsh) on 127.0.0.1:AGENT_PORT and the kubelets on
//! 127.0.0.1:KUBELET_PORTS (the API server through the egress proxy).
//! `restrict=on` drops all else.

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
/// The kubelets' ports, node1's then node2's (`kubelet-start.sh` agrees),
/// on 10.0.2.15 in the guest and 127.0.0.1 on the host.
pub const KUBELET_PORTS: [u16; 2] = [21250, 21251];
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
const KUBELET_START: &str = include_str!("kubelet-start.sh");

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

/// A kubelet's kubeconfig: its client certificate, the API server at the
/// guestfwd address.
fn kubelet_kubeconfig(node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ferrolvm-test\n  cluster:\n    server: https://10.0.2.100:{API_PORT}\n    certificate-authority: /etc/ferrolvm/ca.crt\nusers:\n- name: {node}\n  user:\n    client-certificate: /etc/kubelet/{node}-client.crt\n    client-key: /etc/kubelet/{node}-client.key\ncontexts:\n- name: {node}\n  context:\n    cluster: ferrolvm-test\n    user: {node}\ncurrent-context: {node}\n"
    )
}

/// The programs the guest gets beyond the storage VM's: the vm-agent
/// (`me`), kubelet and containerd (built by `build.sh`), runc and the CNI
/// plugins (Debian's).
pub fn guest_binaries(c: &Cluster, me: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut bins = vec![("/usr/local/bin/vm-agent".to_string(), me.to_path_buf())];
    for b in ["kubelet", "containerd", "containerd-shim-runc-v2", "ctr"] {
        bins.push((format!("/usr/local/bin/{b}"), c.bin.join(b)));
    }
    bins.push(("/usr/sbin/runc".into(), which("runc")?));
    for plugin in ["bridge", "host-local", "loopback"] {
        let p = Path::new("/usr/lib/cni").join(plugin);
        if !p.exists() {
            return Err(format!(
                "{} is missing (apt-get install containernetworking-plugins)",
                p.display()
            ));
        }
        bins.push((p.display().to_string(), p));
    }
    Ok(bins)
}

/// The images the kubelets run (busybox and pause), built once by
/// `images.sh` into the cluster tools' directory.
fn images(c: &Cluster) -> Result<PathBuf, String> {
    let out = c.bin.with_file_name("images");
    if !out.join("busybox.tar").exists() || !out.join("pause.tar").exists() {
        let script = crate::workspace().join("vm-tests/cluster/images.sh");
        crate::image::run(Command::new("bash").arg(script).arg(&out))?;
    }
    Ok(out)
}

/// Files the guest gets: the nodes' kubeconfig (the API server at the
/// guestfwd address), its certificates, the node configs and the start
/// scripts; the kubelets' kubeconfigs and certificates; the images.
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
    for (i, (node, vg)) in NODES.iter().enumerate() {
        files.push((
            format!("/etc/ferrolvm/node{}.yaml", i + 1),
            node_config(vg).into_bytes(),
            0o644,
        ));
        files.push((
            format!("/etc/kubelet/{node}.kubeconfig"),
            kubelet_kubeconfig(node).into_bytes(),
            0o600,
        ));
        for kind in ["client", "serving"] {
            let host = format!("kubelet-{node}-{kind}");
            files.push((
                format!("/etc/kubelet/{node}-{kind}.crt"),
                read(&c.dir.join(format!("{host}.crt")))?,
                0o644,
            ));
            files.push((
                format!("/etc/kubelet/{node}-{kind}.key"),
                read(&c.dir.join(format!("{host}.key")))?,
                0o600,
            ));
        }
    }
    files.push((
        "/usr/local/bin/kubelet-start".to_string(),
        KUBELET_START.as_bytes().to_vec(),
        0o755,
    ));
    let images = images(c)?;
    for image in ["busybox", "pause"] {
        files.push((
            format!("/etc/ferrolvm/images/{image}.tar"),
            read(&images.join(format!("{image}.tar")))?,
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
    /// VolumeSnapshot CRDs, and the kubelet client's binding.
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
        // The API server's kubelet client may use the kubelets' API (exec,
        // logs, stats), nothing else.
        self.kubectl_apply(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: ferrolvm-test:apiserver-kubelet-client\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: system:kubelet-api-admin\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: kube-apiserver-kubelet-client\n",
        )?;
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
        let kubelets: String = KUBELET_PORTS
            .iter()
            .map(|p| format!(",hostfwd=tcp:127.0.0.1:{p}-10.0.2.15:{p}"))
            .collect();
        let netdev = format!(
            "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{AGENT_PORT}-10.0.2.15:{GUEST_AGENT_PORT}{kubelets},guestfwd=tcp:10.0.2.100:{API_PORT}-cmd:{} nc 127.0.0.1 {API_PORT}",
            nc.display()
        );
        let extra: Vec<String> = ["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let console = self.dir.join("vm-console.log");
        let child = crate::qemu::spawn(kernel, initrd, 6144, &extra, &console)?;
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
                return self.wait_kubelets(start);
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

    /// Waits until each kubelet has registered its Node, reports it Ready,
    /// and has registered ferrolvm (the CSINode names the driver, the Node
    /// carries the topology label from NodeGetInfo).
    fn wait_kubelets(&mut self, start: Instant) -> Result<(), String> {
        let jsonpath = format!(
            "{{.metadata.labels.{}}} {{.status.conditions[?(@.type==\"Ready\")].status}}",
            TOPOLOGY_KEY.replace('.', "\\.")
        );
        for (node, _) in NODES {
            loop {
                self.check_alive()?;
                let out = self
                    .kubectl()
                    .args(["get", "node", node, "-o", &format!("jsonpath={jsonpath}")])
                    .output()
                    .map_err(|e| e.to_string())?;
                let node_ok = String::from_utf8_lossy(&out.stdout).trim() == format!("{node} True");
                let out = self
                    .kubectl()
                    .args([
                        "get",
                        "csinode",
                        node,
                        "-o",
                        "jsonpath={.spec.drivers[*].name}",
                    ])
                    .output()
                    .map_err(|e| e.to_string())?;
                let csinode_ok = String::from_utf8_lossy(&out.stdout).trim() == DRIVER;
                if node_ok && csinode_ok {
                    break;
                }
                if start.elapsed() > Duration::from_secs(300) {
                    let log = crate::agent::output(
                        AGENT_PORT,
                        &format!("tail -n 40 /run/ferrolvm/kubelet-{node}.log /run/ferrolvm/containerd-{node}.log"),
                    )
                    .unwrap_or_else(|e| e);
                    return Err(format!(
                        "kubelet {node} did not register a Ready Node with ferrolvm within 300 s:\n{log}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        eprintln!(
            "vm-tests: both kubelets Ready with ferrolvm registered after {:.0} s",
            start.elapsed().as_secs_f64()
        );
        Ok(())
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
        let args = provisioner_args(&addr, &kc);
        self.spawn_supervised(
            "csi-provisioner",
            &self.bin.join("csi-provisioner"),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
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
        let args = resizer_args(&addr, &kc);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for sidecar in ["csi-snapshotter", "csi-resizer"] {
            self.spawn_supervised(sidecar, &self.bin.join(sidecar), &args, &[])?;
        }
        Ok(())
    }
}

/// csi-provisioner's flags against the controller socket `addr`, with the
/// kubeconfig `kc`: ferrolvm's and the race's peer get the same ones.
pub(super) fn provisioner_args(addr: &str, kc: &str) -> Vec<String> {
    [
        "--csi-address",
        addr,
        "--kubeconfig",
        kc,
        "--leader-election=false",
        "--strict-topology",
        "--enable-capacity",
        &format!("--capacity-poll-interval={CAPACITY_POLL}"),
        "--capacity-ownerref-level=-1",
        "--extra-create-metadata",
        "--timeout=30s",
        "--v=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// csi-resizer's (and csi-snapshotter's) flags, likewise.
pub(super) fn resizer_args(addr: &str, kc: &str) -> Vec<String> {
    [
        "--csi-address",
        addr,
        "--kubeconfig",
        kc,
        "--leader-election=false",
        "--timeout=30s",
        "--v=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn image_run(cmd: &mut Command) -> Result<(), String> {
    crate::image::run(cmd).map(|_| ())
}
