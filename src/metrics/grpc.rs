//! CSI calls as the sidecars and kubelet make them: a tower layer on the
//! gRPC server counts each call by method and code and times it. Unary
//! calls only (CSI has no streams), so the code is the `grpc-status` of a
//! trailers-only error response, and OK when there is none.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// 1 ms to about 33 s (a create waits on the node's commit and activation).
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

#[derive(Clone)]
pub struct CsiMetrics {
    calls: Family<CallLabels, Counter>,
    seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
}

impl Default for CsiMetrics {
    fn default() -> Self {
        CsiMetrics {
            calls: Family::default(),
            seconds: Family::new_with_constructor(call_buckets as fn() -> Histogram),
        }
    }
}

impl CsiMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "csi_calls",
            "CSI calls served, by method and gRPC code",
            self.calls.clone(),
        );
        r.register(
            "csi_call_duration_seconds",
            "Time to answer a CSI call, by method",
            self.seconds.clone(),
        );
    }

    fn record(&self, method: &str, code: tonic::Code, took: f64) {
        self.calls
            .get_or_create(&CallLabels {
                method: method.to_string(),
                code: format!("{code:?}"),
            })
            .inc();
        self.seconds
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(took);
    }

    /// The layer for `tonic::transport::Server::builder().layer(..)`.
    pub fn layer(&self) -> CountLayer {
        CountLayer(self.clone())
    }
}

#[derive(Clone)]
pub struct CountLayer(CsiMetrics);

impl<S> tower::Layer<S> for CountLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: CsiMetrics,
}

/// `/csi.v1.Controller/CreateVolume` → `CreateVolume`.
fn method_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl<S, B, R> tower::Service<hyper::Request<B>> for Counted<S>
where
    S: tower::Service<hyper::Request<B>, Response = hyper::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: hyper::Request<B>) -> Self::Future {
        let method = method_of(req.uri().path()).to_string();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let answered = call.await;
            let code = match &answered {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<i32>().ok())
                    .map(tonic::Code::from_i32)
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Unknown,
            };
            metrics.record(&method, code, started.elapsed().as_secs_f64());
            answered
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_is_the_last_path_segment() {
        assert_eq!(method_of("/csi.v1.Controller/CreateVolume"), "CreateVolume");
        assert_eq!(method_of("odd"), "odd");
    }

    #[test]
    fn calls_are_counted_by_method_and_code() {
        let m = CsiMetrics::default();
        m.record("CreateVolume", tonic::Code::Ok, 0.01);
        m.record("CreateVolume", tonic::Code::ResourceExhausted, 0.02);
        m.record("CreateVolume", tonic::Code::Ok, 0.03);
        let mut r = crate::metrics::registry(vec![]);
        m.register(&mut r);
        let text = crate::metrics::encode(&r);
        assert!(
            text.contains(r#"ferrolvm_csi_calls_total{method="CreateVolume",code="Ok"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ferrolvm_csi_calls_total{method="CreateVolume",code="ResourceExhausted"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"ferrolvm_csi_call_duration_seconds_count{method="CreateVolume"} 3"#),
            "{text}"
        );
    }
}
