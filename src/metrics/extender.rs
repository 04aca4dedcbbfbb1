//! The scheduler extender's `/metrics`: its answers to kube-scheduler by
//! verb and outcome, and how long each took. Ready once its caches of
//! claims, StorageClasses and Nodes have listed (before that it would
//! refuse pods for want of the Nodes' capacity).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::http::Endpoints;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    pub verb: String,
    /// `ok`, `refused` (some node filtered out) or `bad_request`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: String,
}

/// 0.1 ms to about 0.4 s: answers come from memory.
fn answer_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 12))
}

#[derive(Clone)]
pub struct ExtenderEndpoints {
    answers: Family<AnswerLabels, Counter>,
    seconds: Family<VerbLabels, Histogram, fn() -> Histogram>,
    pub synced: Arc<AtomicBool>,
}

impl Default for ExtenderEndpoints {
    fn default() -> Self {
        ExtenderEndpoints {
            answers: Family::default(),
            seconds: Family::new_with_constructor(answer_buckets as fn() -> Histogram),
            synced: Arc::default(),
        }
    }
}

impl ExtenderEndpoints {
    pub fn answered(&self, verb: &str, result: &str, took: f64) {
        self.answers
            .get_or_create(&AnswerLabels {
                verb: verb.into(),
                result: result.into(),
            })
            .inc();
        self.seconds
            .get_or_create(&VerbLabels { verb: verb.into() })
            .observe(took);
    }
}

impl Endpoints for ExtenderEndpoints {
    fn metrics(&self) -> String {
        let mut r = super::registry(vec![]);
        r.register(
            "extender_answers",
            "Answers to kube-scheduler, by verb (predicate, prioritize) and result",
            self.answers.clone(),
        );
        r.register(
            "extender_answer_duration_seconds",
            "Time to answer kube-scheduler, by verb",
            self.seconds.clone(),
        );
        super::encode(&r)
    }

    fn ready(&self) -> Result<(), String> {
        if self.synced.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("the caches of claims, StorageClasses and Nodes have not listed yet".into())
        }
    }
}
