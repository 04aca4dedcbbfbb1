//! The node's `/metrics`: every series carries `node`. Gauges come from one
//! `NodeEngine::report` per scrape; the counters and histograms are the
//! process's own (commits, group commit batches, CSI calls, reconcile
//! failures, orphans found by the last check).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::grpc::CsiMetrics;
use super::http::Endpoints;
use crate::node::engine::report::NodeReport;
use crate::node::NodeEngine;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub device_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VgLabels {
    pub volume_group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

type Bytes = Family<ClassLabels, Gauge>;
type Percent = Family<ClassLabels, Gauge<f64, AtomicU64>>;

/// What the node process records as it runs.
#[derive(Clone)]
pub struct NodeCounters {
    pub csi: CsiMetrics,
    /// Reconcile failures of LogicalVolumes, by kind (`api`, `busy`,
    /// `volume`, `finalizer`).
    pub reconcile_errors: Family<KindLabels, Counter>,
    /// What the last orphan check found: `volume` (an LV no object asks
    /// for) and `object` (an object whose LV is gone).
    pub orphans: Family<KindLabels, Gauge>,
}

/// The kinds of `ReconcileError::kind`, counted from 0 so that a rate is
/// 0 (not absent) until the first failure.
const RECONCILE_KINDS: [&str; 5] = ["api", "busy", "in_use", "volume", "finalizer"];

impl Default for NodeCounters {
    fn default() -> Self {
        let c = NodeCounters {
            csi: CsiMetrics::default(),
            reconcile_errors: Family::default(),
            orphans: Family::default(),
        };
        for kind in RECONCILE_KINDS {
            c.reconcile_errors
                .get_or_create(&KindLabels { kind: kind.into() })
                .inc_by(0);
        }
        c.orphans_found(0, 0);
        c
    }
}

impl NodeCounters {
    pub fn reconcile_failed(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn orphans_found(&self, volumes: usize, objects: usize) {
        for (kind, n) in [("volume", volumes), ("object", objects)] {
            self.orphans
                .get_or_create(&KindLabels { kind: kind.into() })
                .set(n as i64);
        }
    }
}

/// Registers the gauges of one report (pure: unit-tested without disks).
pub fn register_report(r: &mut Registry, report: &NodeReport) {
    let label = |c: &str| ClassLabels {
        device_class: c.to_string(),
    };
    let (available, size, capacity, volumes) = (
        Bytes::default(),
        Bytes::default(),
        Bytes::default(),
        Bytes::default(),
    );
    let (pool_size, pool_room) = (Bytes::default(), Bytes::default());
    let (data, meta) = (Percent::default(), Percent::default());
    let to_i64 = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
    for c in &report.classes {
        let l = label(&c.class);
        available.get_or_create(&l).set(to_i64(c.vg_free));
        size.get_or_create(&l).set(to_i64(c.vg_size));
        capacity.get_or_create(&l).set(to_i64(c.capacity));
        volumes.get_or_create(&l).set(to_i64(c.volumes));
        if let Some(p) = &c.thin_pool {
            pool_size.get_or_create(&l).set(to_i64(p.size));
            pool_room.get_or_create(&l).set(to_i64(c.capacity));
            if let Some(d) = p.data_percent {
                data.get_or_create(&l).set(d);
            }
            if let Some(m) = p.metadata_percent {
                meta.get_or_create(&l).set(m);
            }
        }
    }
    let (mda_free, backlog) = (
        Family::<VgLabels, Gauge>::default(),
        Family::<VgLabels, Gauge>::default(),
    );
    for v in &report.vgs {
        let l = VgLabels {
            volume_group: v.name.clone(),
        };
        mda_free.get_or_create(&l).set(to_i64(v.mda_free));
        backlog.get_or_create(&l).set(to_i64(v.wipe_backlog));
    }
    r.register(
        "volumegroup_available_bytes",
        "Free bytes of the device class's volume group (vgs vg_free)",
        available,
    );
    r.register(
        "volumegroup_size_bytes",
        "Size of the device class's volume group (vgs vg_size)",
        size,
    );
    r.register(
        "device_class_capacity_bytes",
        "Bytes a new volume of the class can get: the capacity kube-scheduler sees",
        capacity,
    );
    r.register(
        "volumes",
        "Volumes ferrolvm made in the device class",
        volumes,
    );
    r.register(
        "thinpool_size_bytes",
        "Data size of the class's thin pool",
        pool_size,
    );
    r.register(
        "thinpool_overprovisioned_available",
        "Bytes thin volumes of the class can still get under the overprovision ratio",
        pool_room,
    );
    r.register(
        "thinpool_data_percent",
        "Data space used in the thin pool (lvs data_percent)",
        data,
    );
    r.register(
        "thinpool_metadata_percent",
        "Metadata space used in the thin pool (lvs metadata_percent)",
        meta,
    );
    r.register(
        "volumegroup_metadata_free_bytes",
        "Room left for the VG's metadata text (vgs vg_mda_free); at 0 every change fails",
        mda_free,
    );
    r.register(
        "wipe_backlog_bytes",
        "Bytes of deleted volumes not yet wiped, so not yet free",
        backlog,
    );
}

/// The node's HTTP endpoints.
pub struct NodeEndpoints {
    pub node: String,
    pub engine: Arc<NodeEngine>,
    pub counters: NodeCounters,
    /// Beside the engine's probe: whether kubelet accepted the plugin
    /// registration, when ferrolvm registers itself.
    pub registration: Option<Box<dyn Fn() -> Result<(), String> + Send + Sync>>,
    /// One scan at a time: anyone who reaches the port may scrape, and
    /// concurrent scrapes must not multiply the disk reads.
    pub scraping: std::sync::Mutex<()>,
}

impl Endpoints for NodeEndpoints {
    fn metrics(&self) -> String {
        let _one = self.scraping.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = super::registry(vec![("node", self.node.clone())]);
        let read = Gauge::<i64>::default();
        match self.engine.report() {
            Ok(report) => {
                read.set(1);
                register_report(&mut r, &report);
            }
            Err(e) => tracing::warn!(%e, "metrics: reading the volume groups failed"),
        }
        r.register(
            "volumegroups_readable",
            "1 when the last scrape read every configured volume group",
            read,
        );
        r.register(
            "commit_duration_seconds",
            "Time to commit one metadata change (write every copy, read it back)",
            crate::lvm::stats::COMMIT_SECONDS.clone(),
        );
        r.register(
            "commit_batch_size",
            "Creates committed together by one group commit",
            crate::node::engine::BATCH_SIZES.clone(),
        );
        r.register(
            "reconcile_errors",
            "Failed reconciles of this node's LogicalVolumes, by kind",
            self.counters.reconcile_errors.clone(),
        );
        r.register(
            "orphaned_volumes",
            "Found by the last orphan check: LVs no LogicalVolume asks for (volume), LogicalVolumes whose LV is gone (object)",
            self.counters.orphans.clone(),
        );
        self.counters.csi.register(&mut r);
        super::encode(&r)
    }

    fn ready(&self) -> Result<(), String> {
        if let Some(registration) = &self.registration {
            registration()?;
        }
        self.engine.probe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::engine::report::{ClassReport, PoolReport, VgReport};

    #[test]
    fn failures_count_from_zero_by_kind() {
        let c = NodeCounters::default();
        c.reconcile_failed("busy");
        c.reconcile_failed("busy");
        let mut r = crate::metrics::registry(vec![]);
        r.register("reconcile_errors", "", c.reconcile_errors.clone());
        let text = crate::metrics::encode(&r);
        assert!(
            text.contains(r#"ferrolvm_reconcile_errors_total{kind="busy"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferrolvm_reconcile_errors_total{kind="api"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn a_report_becomes_topolvm_named_series() {
        let report = NodeReport {
            classes: vec![
                ClassReport {
                    class: "thick".into(),
                    volume_group: "vg1".into(),
                    vg_size: 8 << 30,
                    vg_free: 5 << 30,
                    capacity: 5 << 30,
                    volumes: 3,
                    thin_pool: None,
                },
                ClassReport {
                    class: "thin".into(),
                    volume_group: "vg1".into(),
                    vg_size: 8 << 30,
                    vg_free: 5 << 30,
                    capacity: 7 << 30,
                    volumes: 1,
                    thin_pool: Some(PoolReport {
                        size: 1 << 30,
                        data_percent: Some(12.5),
                        metadata_percent: None,
                    }),
                },
            ],
            vgs: vec![VgReport {
                name: "vg1".into(),
                mda_free: 520_192,
                wipe_backlog: 0,
            }],
        };
        let mut r = crate::metrics::registry(vec![("node", "n1".into())]);
        register_report(&mut r, &report);
        let text = crate::metrics::encode(&r);
        for line in [
            r#"ferrolvm_volumegroup_available_bytes{node="n1",device_class="thick"} 5368709120"#,
            r#"ferrolvm_volumegroup_size_bytes{node="n1",device_class="thin"} 8589934592"#,
            r#"ferrolvm_volumes{node="n1",device_class="thick"} 3"#,
            r#"ferrolvm_thinpool_size_bytes{node="n1",device_class="thin"} 1073741824"#,
            r#"ferrolvm_thinpool_overprovisioned_available{node="n1",device_class="thin"} 7516192768"#,
            r#"ferrolvm_thinpool_data_percent{node="n1",device_class="thin"} 12.5"#,
            r#"ferrolvm_volumegroup_metadata_free_bytes{node="n1",volume_group="vg1"} 520192"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        // No kernel figure, no series: a 0 would read as an empty pool.
        assert!(!text.contains("thinpool_metadata_percent{"), "{text}");
        // An empty family is not declared at all (prometheus-client).
        assert!(
            !text.contains("ferrolvm_thinpool_metadata_percent"),
            "{text}"
        );
        assert!(!text.contains(r#"thinpool_size_bytes{node="n1",device_class="thick"}"#));
    }
}
