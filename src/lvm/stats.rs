//! What the lvm layer measures of itself, for the node's `/metrics`: the
//! time of each metadata commit (write every copy, read it back), by VG.
//! Process-wide, because every commit goes through `Session::commit`.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VgLabels {
    pub volume_group: String,
}

pub type Histograms = Family<VgLabels, Histogram, fn() -> Histogram>;

/// 1 ms to about 16 s: a commit is a few synchronous writes on a fast
/// disk, and seconds when the disk or a lock holder stalls.
fn commit_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Seconds per committed metadata change, by VG.
pub static COMMIT_SECONDS: LazyLock<Histograms> =
    LazyLock::new(|| Family::new_with_constructor(commit_buckets as fn() -> Histogram));

pub fn commit_took(vg: &str, took: Duration) {
    COMMIT_SECONDS
        .get_or_create(&VgLabels {
            volume_group: vg.to_string(),
        })
        .observe(took.as_secs_f64());
}
