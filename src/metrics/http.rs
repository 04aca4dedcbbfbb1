//! The HTTP side of observability: `GET /metrics`, `/healthz` (the process
//! serves: kubelet restarts it otherwise) and `/readyz` (it can do its job
//! now: a node whose VG vanished is live but not ready). Both callbacks may
//! block (a node reads its disks), so they run on the blocking pool.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};

/// What a server shows over HTTP.
pub trait Endpoints: Send + Sync + 'static {
    /// The metrics, encoded.
    fn metrics(&self) -> String;
    /// `Ok` when ready, or why not.
    fn ready(&self) -> Result<(), String>;
}

/// The content type of OpenMetrics text, which Prometheus asks for first.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The answer to one request, or `None` for a path this module does not
/// serve (the extender serves its own paths beside these).
pub async fn answer(
    endpoints: &Arc<dyn Endpoints>,
    method: &Method,
    path: &str,
) -> Option<Response<Full<Bytes>>> {
    let reply = |code: StatusCode, kind: &str, body: String| {
        Response::builder()
            .status(code)
            .header("content-type", kind)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if method != Method::GET {
        return None;
    }
    let e = endpoints.clone();
    Some(match path {
        "/metrics" => match tokio::task::spawn_blocking(move || e.metrics()).await {
            Ok(text) => reply(StatusCode::OK, OPENMETRICS, text),
            Err(err) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("collecting metrics failed: {err}\n"),
            ),
        },
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match tokio::task::spawn_blocking(move || e.ready()).await {
            Ok(Ok(())) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            Ok(Err(why)) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
            Err(err) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("readiness check failed: {err}\n"),
            ),
        },
        _ => return None,
    })
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the task is
/// dropped; anything else is 404.
pub async fn serve(addr: SocketAddr, endpoints: Arc<dyn Endpoints>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    loop {
        let (stream, _) = listener.accept().await?;
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let endpoints = endpoints.clone();
                async move {
                    let found = answer(&endpoints, req.method(), req.uri().path()).await;
                    Ok::<_, std::convert::Infallible>(found.unwrap_or_else(|| {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from_static(b"not found\n")))
                            .expect("a valid response")
                    }))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%e, "metrics connection ended");
            }
        });
    }
}

/// [`serve`] in the background; a failure (the port taken) is logged, and
/// the server it belongs to keeps serving CSI without its metrics.
pub fn spawn(addr: SocketAddr, endpoints: Arc<dyn Endpoints>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = serve(addr, endpoints).await {
            tracing::error!(%addr, %e, "serving /metrics, /healthz and /readyz failed");
        }
    })
}
