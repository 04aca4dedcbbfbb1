//! The controller's `/metrics`: CSI calls as csi-provisioner, -resizer and
//! -snapshotter make them, and whether this replica leads. Ready when the
//! API server answers (the same check as CSI Probe).

use prometheus_client::metrics::gauge::Gauge;

use super::grpc::CsiMetrics;
use super::http::Endpoints;

pub struct ControllerEndpoints {
    pub csi: CsiMetrics,
    pub leading: tokio::sync::watch::Receiver<bool>,
    pub api_up: Box<dyn Fn() -> Result<(), String> + Send + Sync>,
}

impl Endpoints for ControllerEndpoints {
    fn metrics(&self) -> String {
        let mut r = super::registry(vec![]);
        let leader = Gauge::<i64>::default();
        leader.set(i64::from(*self.leading.borrow()));
        r.register(
            "controller_leader",
            "1 on the replica that holds the Lease (runs the Node finalizer)",
            leader,
        );
        self.csi.register(&mut r);
        super::encode(&r)
    }

    fn ready(&self) -> Result<(), String> {
        (self.api_up)()
    }
}
