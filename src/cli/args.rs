//! The command line's shape: lvm2's command names, flags and meanings for
//! what ferrolvm implements, and the servers' commands (`node`,
//! `controller`, `csi`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "ferrolvm",
    version,
    about = "LVM2-compatible volume management without the lvm tools"
)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args, Debug, Clone, Default)]
pub struct Common {
    /// Only use these devices (comma-separated or repeated), like lvm's --devices.
    #[arg(long, value_delimiter = ',', global = true)]
    pub devices: Vec<PathBuf>,
    /// n: make metadata changes without device-mapper (lvm2's flag); without
    /// it, a missing or failing device-mapper is an error.
    #[arg(long, global = true)]
    pub driverloaded: Option<String>,
    /// Answer yes to prompts (ferrolvm never prompts).
    #[arg(short = 'y', long = "yes", global = true)]
    pub yes: bool,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ReportArgs {
    /// `json` or `basic`.
    #[arg(long)]
    pub reportformat: Option<String>,
    /// Fields, comma-separated; a leading `+` adds to the defaults.
    #[arg(short = 'o', long = "options")]
    pub options: Option<String>,
    /// h, b, s, k, m, g, t, p, e.
    #[arg(long)]
    pub units: Option<char>,
    #[arg(long)]
    pub nosuffix: bool,
    #[arg(long)]
    pub noheadings: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PvLayoutArgs {
    /// Size of each metadata area (lvm size syntax, default unit MiB).
    #[arg(long)]
    pub metadatasize: Option<String>,
    /// Metadata areas per PV: 0, 1 or 2.
    #[arg(long, default_value_t = 1)]
    pub pvmetadatacopies: u32,
    /// Alignment of the data area start (lvm size syntax, default unit KiB; default 1 MiB).
    #[arg(long)]
    pub dataalignment: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Initialise devices as physical volumes.
    Pvcreate {
        #[command(flatten)]
        layout: PvLayoutArgs,
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        #[arg(required = true)]
        pvs: Vec<PathBuf>,
    },
    /// Create a volume group.
    Vgcreate {
        /// Extent size (default 4 MiB).
        #[arg(short = 's', long = "physicalextentsize")]
        extent_size: Option<String>,
        #[arg(long = "addtag")]
        tags: Vec<String>,
        #[command(flatten)]
        layout: PvLayoutArgs,
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        vg: String,
        #[arg(required = true)]
        pvs: Vec<PathBuf>,
    },
    /// Add physical volumes to a volume group.
    Vgextend {
        #[command(flatten)]
        layout: PvLayoutArgs,
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        vg: String,
        #[arg(required = true)]
        pvs: Vec<PathBuf>,
    },
    /// Remove a volume group (with -f, also its inactive LVs).
    Vgremove {
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        #[arg(required = true)]
        vgs: Vec<String>,
    },
    Pvs {
        #[command(flatten)]
        report: ReportArgs,
        names: Vec<String>,
    },
    Vgs {
        #[command(flatten)]
        report: ReportArgs,
        names: Vec<String>,
    },
    Lvs {
        #[command(flatten)]
        report: ReportArgs,
        /// Include hidden LVs.
        #[arg(short = 'a', long = "all")]
        all: bool,
        names: Vec<String>,
    },
    /// Create a linear or striped logical volume.
    Lvcreate(LvcreateArgs),
    /// Remove logical volumes.
    Lvremove {
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        /// Discard the freed extents (BLKDISCARD) after removal.
        #[arg(long)]
        discard: bool,
        #[arg(required = true)]
        lvs: Vec<String>,
    },
    /// Grow a logical volume.
    Lvextend {
        #[arg(short = 'L', long = "size")]
        size: Option<String>,
        #[arg(short = 'l', long = "extents")]
        extents: Option<String>,
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Grow or shrink a logical volume.
    Lvresize {
        #[arg(short = 'L', long = "size", allow_hyphen_values = true)]
        size: Option<String>,
        #[arg(short = 'l', long = "extents", allow_hyphen_values = true)]
        extents: Option<String>,
        #[arg(short = 'f', long = "force", action = clap::ArgAction::Count)]
        force: u8,
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Rename a logical volume: `VG OLD NEW`, `VG/OLD NEW` or `VG/OLD VG/NEW`.
    Lvrename {
        #[arg(required = true, num_args = 2..=3)]
        args: Vec<String>,
    },
    /// Activate or deactivate logical volumes.
    Lvchange {
        /// y or n.
        #[arg(short = 'a', long = "activate")]
        activate: String,
        /// Activate even if the LV is marked to be skipped (thin snapshots are).
        #[arg(short = 'K', long = "ignoreactivationskip")]
        ignore_skip: bool,
        #[arg(required = true)]
        lvs: Vec<String>,
    },
    /// Activate or deactivate every linear and striped LV of volume groups.
    Vgchange {
        /// y or n.
        #[arg(short = 'a', long = "activate")]
        activate: String,
        /// Also activate LVs marked to be skipped.
        #[arg(short = 'K', long = "ignoreactivationskip")]
        ignore_skip: bool,
        #[arg(required = true)]
        vgs: Vec<String>,
    },
    /// Serve TopoLVM's lvmd protocol (LVService, VGService) on a Unix socket,
    /// over the node engine: lvmd's calls, no lvm processes.
    Lvmd(LvmdArgs),
    /// Serve CSI Identity and Node (and, with --standalone, Controller) on a Unix socket.
    Node(NodeArgs),
    /// Register another CSI driver's node socket with kubelet
    /// (pluginregistration/v1), as node-driver-registrar would; `ferrolvm
    /// node` registers itself with --kubelet-registration-path.
    RegisterPlugin(RegisterPluginArgs),
    /// The Kubernetes-backed CSI controller: Identity and Controller on a Unix
    /// socket, placing volumes through LogicalVolume objects.
    Controller(ControllerArgs),
    /// The kube-scheduler extender: /predicate, /prioritize and /status over HTTP,
    /// by the capacity the nodes publish.
    Scheduler(SchedulerArgs),
    /// Print the LogicalVolume CustomResourceDefinition (YAML), as the chart's crds/ holds it.
    Crd,
    /// Talk to a running `ferrolvm node` as a CSI client would.
    Csi {
        /// unix:///path/to/csi.sock
        #[arg(long = "csi-endpoint")]
        csi_endpoint: String,
        #[command(subcommand)]
        call: crate::cli::csi_client::CsiCmd,
    },
    /// Check VG metadata consistency; --updatemetadata rewrites every copy.
    Vgck {
        #[arg(long)]
        updatemetadata: bool,
        vgs: Vec<String>,
    },
}

/// `lvcreate`'s flags: linear, striped, thin pools, thin LVs, snapshots.
#[derive(Args, Debug)]
pub struct LvcreateArgs {
    #[arg(short = 'n', long = "name")]
    pub name: Option<String>,
    #[arg(short = 'L', long = "size")]
    pub size: Option<String>,
    #[arg(short = 'l', long = "extents")]
    pub extents: Option<String>,
    #[arg(short = 'i', long = "stripes")]
    pub stripes: Option<u32>,
    #[arg(short = 'I', long = "stripesize")]
    pub stripe_size: Option<String>,
    #[arg(long = "addtag")]
    pub tags: Vec<String>,
    /// y or n.
    #[arg(short = 'a', long = "activate", default_value = "y")]
    pub activate: String,
    /// Thin: with -V, a thin LV in the pool named by VG/POOL; with -L, a new pool.
    #[arg(short = 'T', long = "thin")]
    pub thin: bool,
    #[arg(long = "thinpool")]
    pub thinpool: Option<String>,
    /// Virtual size of a thin LV.
    #[arg(short = 'V', long = "virtualsize")]
    pub virtualsize: Option<String>,
    /// Thin pool chunk size (default 64 KiB).
    #[arg(short = 'c', long = "chunksize")]
    pub chunksize: Option<String>,
    /// Activate even if the LV is marked to be skipped (thin snapshots are).
    #[arg(short = 'K', long = "ignoreactivationskip")]
    pub ignore_skip: bool,
    /// Zero the first 4 KiB (y|n); only meaningful with activation.
    #[arg(short = 'Z', long = "zero")]
    pub zero: Option<String>,
    #[arg(long = "type")]
    pub segtype: Option<String>,
    #[arg(short = 's', long = "snapshot")]
    pub snapshot: bool,
    /// VG, then optionally the PVs to allocate from.
    #[arg(required = true)]
    pub args: Vec<String>,
}

/// `ferrolvm node`'s flags.
/// `ferrolvm lvmd`: where TopoLVM's lvmd would run.
#[derive(Args, Debug)]
pub struct LvmdArgs {
    /// Device classes, in TopoLVM's lvmd.yaml shape.
    #[arg(long)]
    pub config: PathBuf,
    /// The socket (lvmd's default path; lvmd.yaml's socket-name is not read).
    #[arg(long, default_value = "/run/topolvm/lvmd.sock")]
    pub socket: PathBuf,
    /// The group that may use the socket too (mode 0660); without it the
    /// socket is root's alone (0600).
    #[arg(long = "socket-group")]
    pub socket_group: Option<String>,
    /// Seconds that in-flight calls may run after SIGTERM.
    #[arg(long = "shutdown-grace", default_value_t = 20)]
    pub shutdown_grace: u64,
}

#[derive(Args, Debug)]
pub struct RegisterPluginArgs {
    /// The driver's CSI name, as its GetPluginInfo answers.
    #[arg(long = "driver-name")]
    pub driver_name: String,
    /// The driver's CSI socket as kubelet sees it (an absolute path).
    #[arg(long = "csi-path")]
    pub csi_path: PathBuf,
    /// kubelet's root directory (its `plugins_registry/` is watched).
    #[arg(long = "kubelet-dir", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Device classes, in TopoLVM's lvmd.yaml shape.
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long = "node-name")]
    pub node_name: String,
    /// unix:///path/to/csi.sock
    #[arg(long = "csi-endpoint")]
    pub csi_endpoint: String,
    /// Also serve the Controller service for this one node, without Kubernetes.
    #[arg(long)]
    pub standalone: bool,
    /// The group that may use the CSI socket too (mode 0660); without it the
    /// socket is root's alone (0600).
    #[arg(long = "socket-group")]
    pub socket_group: Option<String>,
    /// Where kubelet keeps pods: publish targets must lie under it.
    #[arg(long = "kubelet-dir", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,
    /// Seconds that in-flight calls may run after SIGTERM before the node
    /// exits anyway; keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long = "shutdown-grace", default_value_t = 20)]
    pub shutdown_grace: u64,
    /// Without --standalone: LogicalVolumes reconciled at once (creates made
    /// together share the group commit's metadata writes).
    #[arg(long = "reconcile-concurrency", default_value_t = 32)]
    pub reconcile_concurrency: u16,
    /// Without --standalone: seconds between capacity publications when
    /// nothing changed (changes are published as the watcher sees them).
    #[arg(long = "capacity-resync", default_value_t = 30)]
    pub capacity_resync: u64,
    /// Without --standalone: seconds between checks for orphans (an LV
    /// ferrolvm made that no LogicalVolume asks for, a LogicalVolume whose
    /// LV is gone), each reported as a Kubernetes Event.
    #[arg(long = "orphan-check", default_value_t = 300)]
    pub orphan_check: u64,
    /// Remove (wipe) orphaned LVs instead of only reporting them.
    #[arg(long = "remove-orphans")]
    pub remove_orphans: bool,
    /// Where /metrics, /healthz and /readyz are served (the chart passes
    /// the pod's IP).
    #[arg(long = "metrics-listen", default_value = "127.0.0.1:8080")]
    pub metrics_listen: std::net::SocketAddr,
    /// Register with kubelet (pluginregistration/v1 on a socket in
    /// `<kubelet-dir>/plugins_registry/`), advertising the CSI socket at
    /// this path as kubelet sees it on the host; replaces node-driver-registrar.
    #[arg(long = "kubelet-registration-path")]
    pub kubelet_registration_path: Option<String>,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// unix:///path/to/csi.sock, where the CSI sidecars connect.
    #[arg(long = "csi-endpoint")]
    pub csi_endpoint: String,
    /// The group that may use the CSI socket too (mode 0660).
    #[arg(long = "socket-group")]
    pub socket_group: Option<String>,
    /// Seconds a CSI call waits for the node to act on its LogicalVolume
    /// before answering Aborted, so that the sidecar retries.
    #[arg(long = "node-wait", default_value_t = 60)]
    pub node_wait: u64,
    /// Seconds that in-flight calls may run after SIGTERM.
    #[arg(long = "shutdown-grace", default_value_t = 20)]
    pub shutdown_grace: u64,
    /// The namespace of the Lease the replicas elect their leader on.
    #[arg(long = "leader-election-namespace", default_value = "kube-system")]
    pub leader_election_namespace: String,
    /// The Lease's name.
    #[arg(long = "leader-election-id", default_value = "ferrolvm-controller")]
    pub leader_election_id: String,
    /// When a Node is deleted, only release its finalizer: leave its claims
    /// and LogicalVolumes (TopoLVM's --skip-node-finalize).
    #[arg(long = "skip-node-finalize")]
    pub skip_node_finalize: bool,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long = "metrics-listen", default_value = "127.0.0.1:8081")]
    pub metrics_listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on (kube-scheduler's extender `urlPrefix`).
    #[arg(long, default_value = "127.0.0.1:9251")]
    pub listen: std::net::SocketAddr,
    /// TopoLVM's default-divisor: free GiB are divided by it before log2.
    #[arg(long = "default-divisor", default_value_t = 1.0)]
    pub default_divisor: f64,
    /// A per-class divisor, CLASS=N (repeatable).
    #[arg(long = "divisor", value_parser = parse_divisor)]
    pub divisors: Vec<(String, f64)>,
}

fn parse_divisor(s: &str) -> Result<(String, f64), String> {
    let (class, n) = s
        .split_once('=')
        .ok_or_else(|| format!("--divisor takes CLASS=N, not {s:?}"))?;
    let n: f64 = n.parse().map_err(|e| format!("--divisor {s:?}: {e}"))?;
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("--divisor {s:?}: the divisor must be positive"));
    }
    Ok((class.to_string(), n))
}
