//! `ferrolvm scheduler`: a kube-scheduler extender (the design's
//! "extender form"), for clusters that schedule by the nodes' capacity
//! annotations rather than by CSIStorageCapacity. HTTP `/predicate`,
//! `/prioritize` and `/status` in kube-scheduler's wire format: the
//! upstream Go structs have no json tags, so fields are Go's names
//! (`Pod`, `Nodes`, `NodeNames`, `FailedNodes`, `Host`, `Score`), with
//! lowercase aliases accepted as Go's decoder accepts them.
//!
//! Unlike TopoLVM's extender it needs no pod-mutating webhook: what a pod
//! asks of each device class is read from its unbound claims and their
//! StorageClasses, through watch caches (kube reflectors) of both.
//! Scoring is TopoLVM's: `min(10, max(0, log2((free >> 30) / divisor)))`,
//! the lowest over the classes the pod asks of.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::crd::quantity_bytes;
use super::{CAPACITY_ANNOTATION, DEFAULT_CLASS_KEY, MAX_VOLUME_ANNOTATION};

/// The StorageClass parameter naming the device class (as in `csi/`).
const CLASS_PARAM: &str = "ferrolvm.io/device-class";

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
pub struct NodeList {
    #[serde(default)]
    pub items: Vec<Node>,
}

/// kube-scheduler's `ExtenderArgs`.
#[derive(Debug, Deserialize)]
pub struct ExtenderArgs {
    #[serde(rename = "Pod", alias = "pod")]
    pub pod: Pod,
    #[serde(rename = "Nodes", alias = "nodes", default)]
    pub nodes: Option<NodeList>,
    #[serde(rename = "NodeNames", alias = "nodenames", default)]
    pub node_names: Option<Vec<String>>,
}

/// kube-scheduler's `ExtenderFilterResult`.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FilterResult {
    #[serde(rename = "Nodes", skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeListOut>,
    #[serde(rename = "NodeNames", skip_serializing_if = "Option::is_none")]
    pub node_names: Option<Vec<String>>,
    #[serde(rename = "FailedNodes")]
    pub failed_nodes: BTreeMap<String, String>,
    #[serde(rename = "FailedAndUnresolvableNodes")]
    pub failed_and_unresolvable: BTreeMap<String, String>,
    #[serde(rename = "Error")]
    pub error: String,
}

/// The Nodes that passed, as the NodeList kube-scheduler decodes.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeListOut {
    pub items: Vec<serde_json::Value>,
}

/// kube-scheduler's `HostPriority`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostPriority {
    #[serde(rename = "Host")]
    pub host: String,
    #[serde(rename = "Score")]
    pub score: i64,
}

/// What a pod asks: bytes per device class (`None`: the default class),
/// and the largest single claim per class.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Asks(pub BTreeMap<Option<String>, (u64, u64)>);

impl Asks {
    fn add(&mut self, class: Option<String>, bytes: u64) {
        let e = self.0.entry(class).or_default();
        e.0 = e.0.saturating_add(bytes);
        e.1 = e.1.max(bytes);
    }
}

/// The annotation key of a class on a Node.
fn key(prefix: &str, class: &Option<String>) -> String {
    format!("{prefix}{}", class.as_deref().unwrap_or(DEFAULT_CLASS_KEY))
}

fn annotation(node: &Node, key: &str) -> Option<u64> {
    node.annotations().get(key)?.parse().ok()
}

/// Why `node` cannot take `asks`, if it cannot: a class it does not
/// publish, less free than the sum asked, or a single claim larger than
/// the largest volume it can make.
pub fn refusal(node: &Node, asks: &Asks) -> Option<String> {
    for (class, (total, largest)) in &asks.0 {
        let name = class.as_deref().unwrap_or("the default class");
        let Some(free) = annotation(node, &key(CAPACITY_ANNOTATION, class)) else {
            return Some(format!("ferrolvm: no capacity published for {name}"));
        };
        if free < *total {
            return Some(format!(
                "ferrolvm: {total} bytes asked of {name}, {free} free"
            ));
        }
        if let Some(max) = annotation(node, &key(MAX_VOLUME_ANNOTATION, class)) {
            if max < *largest {
                return Some(format!(
                    "ferrolvm: a {largest}-byte volume asked of {name}, {max} bytes is the largest possible"
                ));
            }
        }
    }
    None
}

/// TopoLVM's score of `free` bytes: log2 of the free GiB over the divisor,
/// clamped to 0..=10.
pub fn score(free: u64, divisor: f64) -> i64 {
    let gib = (free >> 30) as f64 / divisor.max(f64::MIN_POSITIVE);
    if gib < 1.0 {
        return 0;
    }
    (gib.log2().floor() as i64).clamp(0, 10)
}

/// A node's score for `asks`: the lowest over the classes asked of.
pub fn node_score(node: &Node, asks: &Asks, divisors: &Divisors) -> i64 {
    asks.0
        .keys()
        .map(|class| {
            let free = annotation(node, &key(CAPACITY_ANNOTATION, class)).unwrap_or(0);
            score(free, divisors.of(class))
        })
        .min()
        .unwrap_or(0)
}

/// TopoLVM's `default-divisor` and per-class `divisors`.
#[derive(Debug, Clone)]
pub struct Divisors {
    pub default: f64,
    pub per_class: BTreeMap<String, f64>,
}

impl Divisors {
    fn of(&self, class: &Option<String>) -> f64 {
        class
            .as_ref()
            .and_then(|c| self.per_class.get(c))
            .copied()
            .unwrap_or(self.default)
    }
}

/// The watch caches the extender reads.
#[derive(Clone)]
pub struct Caches {
    pub claims: Store<PersistentVolumeClaim>,
    pub classes: Store<StorageClass>,
    pub nodes: Store<Node>,
    pub driver: String,
}

/// Starts the reflectors; they run for as long as the process.
pub fn caches(client: &Client, driver: &str) -> Caches {
    fn cache<K>(api: Api<K>) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        use futures::StreamExt;
        let (reader, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .for_each(|_| futures::future::ready(()));
        tokio::spawn(stream);
        reader
    }
    Caches {
        claims: cache(Api::all(client.clone())),
        classes: cache(Api::all(client.clone())),
        nodes: cache(Api::all(client.clone())),
        driver: driver.to_string(),
    }
}

impl Caches {
    /// Resolves once every cache has listed.
    pub async fn synced(&self) {
        let _ = self.claims.wait_until_ready().await;
        let _ = self.classes.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }
}

impl Caches {
    /// What `pod` asks of ferrolvm: its claims not yet bound whose
    /// StorageClass is this driver's.
    pub fn asks(&self, pod: &Pod) -> Asks {
        let mut asks = Asks::default();
        let ns = pod.namespace().unwrap_or_else(|| "default".into());
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        for v in volumes.into_iter().flatten() {
            let Some(src) = &v.persistent_volume_claim else {
                continue;
            };
            let Some(claim) = self
                .claims
                .get(&ObjectRef::new(&src.claim_name).within(&ns))
            else {
                continue;
            };
            let Some(spec) = &claim.spec else { continue };
            if spec.volume_name.as_deref().is_some_and(|n| !n.is_empty()) {
                continue; // bound: its node is decided
            }
            let Some(sc) = spec
                .storage_class_name
                .as_ref()
                .and_then(|n| self.classes.get(&ObjectRef::new(n)))
            else {
                continue;
            };
            if sc.provisioner != self.driver {
                continue;
            }
            let class = sc
                .parameters
                .as_ref()
                .and_then(|p| p.get(CLASS_PARAM))
                .cloned();
            let bytes = spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(quantity_bytes)
                .unwrap_or(0);
            asks.add(class, bytes);
        }
        asks
    }

    /// The Nodes named by `args`, from its NodeList or from the cache.
    fn nodes_of(&self, args: &ExtenderArgs) -> Vec<Node> {
        match (&args.nodes, &args.node_names) {
            (Some(list), _) => list.items.clone(),
            (None, Some(names)) => names
                .iter()
                .filter_map(|n| self.nodes.get(&ObjectRef::new(n)).map(|n| (*n).clone()))
                .collect(),
            (None, None) => Vec::new(),
        }
    }

    pub fn predicate(&self, args: &ExtenderArgs) -> FilterResult {
        let asks = self.asks(&args.pod);
        let mut out = FilterResult::default();
        let mut passed = Vec::new();
        for node in self.nodes_of(args) {
            match refusal(&node, &asks) {
                Some(why) => {
                    out.failed_nodes.insert(node.name_any(), why);
                }
                None => passed.push(node),
            }
        }
        if args.nodes.is_some() {
            out.nodes = Some(NodeListOut {
                items: passed
                    .iter()
                    .filter_map(|n| serde_json::to_value(n).ok())
                    .collect(),
            });
        } else {
            out.node_names = Some(passed.iter().map(|n| n.name_any()).collect());
        }
        out
    }

    pub fn prioritize(&self, args: &ExtenderArgs, divisors: &Divisors) -> Vec<HostPriority> {
        let asks = self.asks(&args.pod);
        self.nodes_of(args)
            .iter()
            .map(|n| HostPriority {
                host: n.name_any(),
                score: node_score(n, &asks, divisors),
            })
            .collect()
    }
}

/// Serves the extender on `addr` until the process stops.
pub async fn serve(
    addr: std::net::SocketAddr,
    caches: Caches,
    divisors: Divisors,
    metrics: crate::metrics::extender::ExtenderEndpoints,
) -> std::io::Result<()> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper::{Method, Request, Response, StatusCode};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving the scheduler extender, /metrics, /healthz and /readyz");
    let endpoints: Arc<dyn crate::metrics::http::Endpoints> = Arc::new(metrics.clone());
    let state = Arc::new((caches, divisors, metrics, endpoints));
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move {
                    let (caches, divisors, metrics, endpoints) = &*state;
                    let path = req.uri().path().to_string();
                    let method = req.method().clone();
                    if let Some(r) = crate::metrics::http::answer(endpoints, &method, &path).await {
                        return Ok::<_, std::convert::Infallible>(r);
                    }
                    let started = std::time::Instant::now();
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let reply = |code: StatusCode, body: String| {
                        Response::builder()
                            .status(code)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .expect("a valid response")
                    };
                    let args = || -> Result<ExtenderArgs, String> {
                        let bytes = body.as_ref().map_err(|e| e.to_string())?;
                        serde_json::from_slice(bytes).map_err(|e| format!("bad ExtenderArgs: {e}"))
                    };
                    let resp = match (method, path.as_str()) {
                        (Method::GET, "/status") => {
                            reply(StatusCode::OK, "{\"status\":\"ok\"}".into())
                        }
                        (Method::POST, "/predicate") => match args() {
                            Ok(a) => {
                                let answer = caches.predicate(&a);
                                let result = if answer.failed_nodes.is_empty() {
                                    "ok"
                                } else {
                                    "refused"
                                };
                                metrics.answered(
                                    "predicate",
                                    result,
                                    started.elapsed().as_secs_f64(),
                                );
                                reply(
                                    StatusCode::OK,
                                    serde_json::to_string(&answer).unwrap_or_default(),
                                )
                            }
                            Err(e) => {
                                metrics.answered("predicate", "bad_request", 0.0);
                                reply(
                                    StatusCode::BAD_REQUEST,
                                    serde_json::to_string(&FilterResult {
                                        error: e,
                                        ..Default::default()
                                    })
                                    .unwrap_or_default(),
                                )
                            }
                        },
                        (Method::POST, "/prioritize") => match args() {
                            Ok(a) => {
                                let answer =
                                    serde_json::to_string(&caches.prioritize(&a, divisors))
                                        .unwrap_or_default();
                                metrics.answered(
                                    "prioritize",
                                    "ok",
                                    started.elapsed().as_secs_f64(),
                                );
                                reply(StatusCode::OK, answer)
                            }
                            Err(e) => {
                                metrics.answered("prioritize", "bad_request", 0.0);
                                reply(
                                    StatusCode::BAD_REQUEST,
                                    serde_json::json!({ "error": e }).to_string(),
                                )
                            }
                        },
                        _ => reply(StatusCode::NOT_FOUND, "{\"error\":\"not found\"}".into()),
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%e, "extender connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(free: u64, max: u64) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "n", "annotations": {
                "capacity.ferrolvm.io/thick": free.to_string(),
                "maxvolume.ferrolvm.io/thick": max.to_string(),
            }}
        }))
        .unwrap()
    }

    fn asks(items: &[u64]) -> Asks {
        let mut a = Asks::default();
        for b in items {
            a.add(Some("thick".into()), *b);
        }
        a
    }

    #[test]
    fn a_node_is_refused_for_the_sum_and_for_the_largest_claim() {
        const G: u64 = 1 << 30;
        assert_eq!(refusal(&node(8 * G, 8 * G), &asks(&[2 * G, 3 * G])), None);
        assert!(refusal(&node(4 * G, 4 * G), &asks(&[2 * G, 3 * G])).is_some());
        let split = refusal(&node(8 * G, 2 * G), &asks(&[3 * G])).unwrap();
        assert!(split.contains("largest possible"), "{split}");
        let mut other = Asks::default();
        other.add(Some("thin".into()), 1);
        assert!(refusal(&node(8 * G, 8 * G), &other)
            .unwrap()
            .contains("no capacity"));
        assert_eq!(refusal(&node(0, 0), &Asks::default()), None, "asks nothing");
    }

    #[test]
    fn scores_follow_topolvms_formula() {
        const G: u64 = 1 << 30;
        assert_eq!(score(0, 1.0), 0);
        assert_eq!(score(G, 1.0), 0);
        assert_eq!(score(2 * G, 1.0), 1);
        assert_eq!(score(7 * G, 1.0), 2);
        assert_eq!(score(1024 * G, 1.0), 10);
        assert_eq!(score(4096 * G, 1.0), 10, "saturates");
        assert_eq!(score(16 * G, 4.0), 2);
    }

    #[test]
    fn the_wire_uses_go_field_names() {
        let args: ExtenderArgs = serde_json::from_value(serde_json::json!({
            "Pod": { "metadata": { "name": "p" } },
            "Nodes": { "items": [ { "metadata": { "name": "n1" } } ] },
            "NodeNames": null
        }))
        .unwrap();
        assert_eq!(args.pod.name_any(), "p");
        assert_eq!(args.nodes.unwrap().items.len(), 1);
        let lower: ExtenderArgs = serde_json::from_value(serde_json::json!({
            "pod": { "metadata": { "name": "p" } }, "nodenames": ["n1"]
        }))
        .unwrap();
        assert_eq!(lower.node_names.unwrap(), ["n1"]);
        let out = serde_json::to_value(FilterResult::default()).unwrap();
        assert!(out.get("FailedNodes").is_some() && out.get("Error").is_some());
        let p = serde_json::to_value(HostPriority {
            host: "n1".into(),
            score: 3,
        })
        .unwrap();
        assert_eq!(p, serde_json::json!({ "Host": "n1", "Score": 3 }));
    }
}
