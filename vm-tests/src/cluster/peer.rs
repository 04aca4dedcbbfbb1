//! The peer of the cluster-level race (issue 12): TopoLVM v0.41.0's own
//! controller and nodes, built from its Go module (`peer/build.sh`), on the
//! same harness beside ferrolvm's — the same API server, kube-scheduler and
//! kubelets, csi-provisioner and csi-resizer with the same flags
//! (`nodes::provisioner_args`, `nodes::resizer_args`) — on fresh VGs made
//! like ferrolvm's (`topolvm-start.sh`). Scheduling is by storage capacity
//! for both (CSIStorageCapacity from GetCapacity; no extender, no webhook).
//!
//! Stand-ins, named: TopoLVM's node registers with kubelet through
//! `ferrolvm register-plugin` (node-driver-registrar cannot be built here);
//! TopoLVM's processes run with a cluster-admin account (its chart's RBAC is
//! not rendered here — RBAC costs one authorizer lookup per request either
//! way, the same for both drivers).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Cluster, API_PORT, NAMESPACE};

pub const PEER_DRIVER: &str = "topolvm.io";
/// The peer's class: thick, ext4, like `ferrolvm-thick`.
pub const PEER_CLASS: &str = "topolvm-thick";
const PEER_ACCOUNT: &str = "topolvm";
const PEER_TOPOLOGY_KEY: &str = "topology.topolvm.io/node";
/// topolvm-controller's metrics and health ports on the host's loopback.
const PEER_METRICS_PORT: u16 = 18091;
const PEER_HEALTH_PORT: u16 = 18092;
const PEER_START: &str = include_str!("topolvm-start.sh");

/// TopoLVM's binaries and its LogicalVolume CRD, as `peer/build.sh` leaves them.
pub struct Peer {
    pub dir: PathBuf,
}

impl Peer {
    /// Builds (once per version) into `cache/peer`.
    pub fn build(cache: &Path) -> Result<Peer, String> {
        let dir = cache.join("peer");
        crate::image::run(
            Command::new("bash")
                .arg(crate::workspace().join("vm-tests/peer/build.sh"))
                .arg(&dir),
        )?;
        Ok(Peer { dir })
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.dir.join("bin").join(name)
    }

    /// What the guest gets beyond the cluster's own: hypertopolvm.
    pub fn guest_binaries(&self) -> Vec<(String, PathBuf)> {
        vec![(
            "/usr/local/bin/hypertopolvm".to_string(),
            self.bin("hypertopolvm"),
        )]
    }
}

impl Cluster {
    /// TopoLVM's CRD, CSIDriver (as its chart makes it: no attach, pod
    /// info, storage capacity), the class, and its account; before the VM
    /// boots, which gets the account's token.
    pub fn install_peer(&mut self, peer: &Peer) -> Result<(), String> {
        let crd = peer.dir.join("crd/topolvm.io_logicalvolumes.yaml");
        let crd = std::fs::read_to_string(&crd).map_err(|e| format!("{}: {e}", crd.display()))?;
        self.kubectl_apply(&crd)?;
        self.kubectl_apply(&format!(
            "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata:\n  name: {PEER_DRIVER}\nspec:\n  attachRequired: false\n  podInfoOnMount: true\n  storageCapacity: true\n  fsGroupPolicy: File\n  volumeLifecycleModes: [Persistent]\n---\napiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: {PEER_CLASS}\nprovisioner: {PEER_DRIVER}\nparameters:\n  csi.storage.k8s.io/fstype: ext4\n  topolvm.io/device-class: thick\nvolumeBindingMode: WaitForFirstConsumer\nallowVolumeExpansion: true\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {PEER_ACCOUNT}\n  namespace: {NAMESPACE}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: ferrolvm-test:{PEER_ACCOUNT}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: {PEER_ACCOUNT}\n  namespace: {NAMESPACE}\n"
        ))?;
        crate::image::run(self.kubectl().args([
            "wait",
            "--for=condition=Established",
            "crd/logicalvolumes.topolvm.io",
            "--timeout=60s",
        ]))?;
        self.mint_token(PEER_ACCOUNT)
    }

    /// The guest's files for the peer: its kubeconfig (the account's token,
    /// the API server at the guestfwd address) and `topolvm-start`.
    pub fn peer_guest_data(&self) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
        let kubeconfig = self.token_kubeconfig(
            &format!("https://10.0.2.100:{API_PORT}"),
            "/etc/ferrolvm/ca.crt",
            &self.account_token(PEER_ACCOUNT)?,
        );
        Ok(vec![
            (
                "/etc/topolvm/kubeconfig".to_string(),
                kubeconfig.into_bytes(),
                0o600,
            ),
            (
                "/usr/local/bin/topolvm-start".to_string(),
                PEER_START.as_bytes().to_vec(),
                0o755,
            ),
        ])
    }

    /// TopoLVM's nodes in the VM, its controller and sidecars on the host;
    /// returns once kubelet has registered it on both nodes and
    /// csi-provisioner has published its capacity for both.
    pub fn start_peer(&mut self, peer: &Peer) -> Result<(), String> {
        for n in 1..=super::nodes::NODES.len() {
            let out = crate::agent::output(super::AGENT_PORT, &format!("topolvm-start {n}"))?;
            if !out.trim().is_empty() {
                eprintln!("vm-tests: topolvm-start {n}: {}", out.trim());
            }
        }
        let sock = self.dir.join("topolvm-controller.sock");
        let kc = self.account_kubeconfig(PEER_ACCOUNT);
        let metrics = format!("127.0.0.1:{PEER_METRICS_PORT}");
        let health = format!("127.0.0.1:{PEER_HEALTH_PORT}");
        let sock_arg = sock.display().to_string();
        self.spawn_supervised(
            "topolvm-controller",
            &peer.bin("hypertopolvm"),
            &[
                "topolvm-controller",
                "--csi-socket",
                &sock_arg,
                "--enable-webhooks=false",
                "--metrics-bind-address",
                &metrics,
                "--health-probe-bind-address",
                &health,
                "--leader-election-namespace",
                NAMESPACE,
            ],
            &[("KUBECONFIG", &kc)],
        )?;
        let start = Instant::now();
        while !sock.exists() {
            self.check_alive()?;
            if start.elapsed() > Duration::from_secs(60) {
                return Err("topolvm-controller did not create its socket".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = super::nodes::provisioner_args(&sock_arg, &kc);
        self.spawn_supervised(
            "csi-provisioner-topolvm",
            &self.bin.join("csi-provisioner"),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[("NAMESPACE", NAMESPACE), ("POD_NAMESPACE", NAMESPACE)],
        )?;
        let args = super::nodes::resizer_args(&sock_arg, &kc);
        self.spawn_supervised(
            "csi-resizer-topolvm",
            &self.bin.join("csi-resizer"),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
        )?;
        self.wait_peer(start)
    }

    fn wait_peer(&mut self, start: Instant) -> Result<(), String> {
        let label = format!(
            "{{.metadata.labels.{}}}",
            PEER_TOPOLOGY_KEY.replace('.', "\\.")
        );
        let capacities = format!(
            "{{range .items[?(@.storageClassName==\"{PEER_CLASS}\")]}}{{.capacity}} {{end}}"
        );
        loop {
            self.check_alive()?;
            let get = |args: &[&str]| -> String {
                self.kubectl()
                    .args(args)
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                    .unwrap_or_default()
            };
            let registered = super::nodes::NODES.iter().all(|(node, _)| {
                get(&["get", "node", node, "-o", &format!("jsonpath={label}")]) == *node
                    && get(&[
                        "get",
                        "csinode",
                        node,
                        "-o",
                        "jsonpath={.spec.drivers[*].name}",
                    ])
                    .split_whitespace()
                    .any(|d| d == PEER_DRIVER)
            });
            let published = get(&[
                "get",
                "csistoragecapacities",
                "-A",
                "-o",
                &format!("jsonpath={capacities}"),
            ]);
            let published = published.split_whitespace().filter(|c| *c != "0").count();
            if registered && published == super::nodes::NODES.len() {
                eprintln!(
                    "vm-tests: TopoLVM registered on both nodes, its capacity published, after {:.0} s",
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(240) {
                let log = crate::agent::output(
                    super::AGENT_PORT,
                    "tail -n 30 /run/topolvm/node1.log /run/topolvm/register-node1.log",
                )
                .unwrap_or_else(|e| e);
                return Err(format!(
                    "TopoLVM was not registered with capacity within 240 s (registered: {registered}, capacities: {published}):\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
