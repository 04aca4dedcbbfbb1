//! Observability: each server's `/metrics` (OpenMetrics text, through the
//! `prometheus-client` crate, which Prometheus scrapes as it is), `/healthz`
//! and `/readyz`.
//!
//! Names follow TopoLVM's where TopoLVM has the figure
//! (`ferrolvm_volumegroup_available_bytes`, `ferrolvm_thinpool_*`), so its
//! dashboards and alerts carry over. Gauges are read at scrape time from
//! the disks and the kernel (`node::engine::report`), never cached: a
//! scrape shows what `vgs` would show now. Counters and histograms live
//! where the event happens (`lvm::stats`, the engine's group commit, the
//! reconcilers) and are only registered here.

pub mod controller;
pub mod extender;
pub mod grpc;
pub mod http;
pub mod node;

use prometheus_client::registry::Registry;

/// Every metric name starts so.
pub const PREFIX: &str = "ferrolvm";

/// A registry whose every series carries `component` (and, on a node,
/// `node`): one Prometheus job may scrape them all.
pub fn registry(labels: Vec<(&str, String)>) -> Registry {
    Registry::with_prefix_and_labels(
        PREFIX,
        labels.into_iter().map(|(k, v)| {
            (
                std::borrow::Cow::Owned(k.to_string()),
                std::borrow::Cow::Owned(v),
            )
        }),
    )
}

/// The registry in OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
