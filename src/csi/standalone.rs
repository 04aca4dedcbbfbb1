//! Standalone mode: both backends are this node's engine, called on
//! tokio's blocking threads (the engine does direct I/O, takes file locks
//! and waits on device-mapper).

use std::path::PathBuf;
use std::sync::Arc;

use super::backend::{
    BackendError, BackendResult, CreateRequest, ErrorKind, NodeBackend, VolumeBackend,
};
use crate::node::mounts::{self, Publish, Stats};
use crate::node::target;
use crate::node::{NodeEngine, Snapshot, Volume, VolumeError};

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> BackendResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::new(ErrorKind::Internal, format!("worker failed: {e}")))?
        .map_err(BackendError::from)
}

impl VolumeBackend for Arc<NodeEngine> {
    async fn create(&self, req: CreateRequest) -> BackendResult<Volume> {
        let e = self.clone();
        blocking(move || {
            let class = req.class.as_deref();
            match &req.source {
                None => NodeEngine::create(&e, &req.name, class, req.required, req.limit),
                Some(src) => {
                    NodeEngine::create_from(&e, &req.name, class, req.required, req.limit, src)
                }
            }
        })
        .await
    }
    async fn delete(&self, id: String) -> BackendResult<bool> {
        let e = self.clone();
        blocking(move || NodeEngine::delete(&e, &id)).await
    }
    async fn find(&self, id: String) -> BackendResult<Option<Volume>> {
        let e = self.clone();
        blocking(move || NodeEngine::find(&e, &id)).await
    }
    async fn list(&self) -> BackendResult<Vec<Volume>> {
        let e = self.clone();
        blocking(move || NodeEngine::list(&e)).await
    }
    async fn capacity(&self, class: Option<String>) -> BackendResult<u64> {
        let e = self.clone();
        blocking(move || NodeEngine::capacity(&e, class.as_deref())).await
    }
    async fn expand(&self, id: String, bytes: u64, limit: u64) -> BackendResult<u64> {
        let e = self.clone();
        blocking(move || NodeEngine::expand(&e, &id, bytes, limit)).await
    }
    async fn snapshots(&self) -> BackendResult<Vec<Snapshot>> {
        let e = self.clone();
        blocking(move || NodeEngine::snapshots(&e)).await
    }
    async fn create_snapshot(&self, name: String, source: String) -> BackendResult<Snapshot> {
        let e = self.clone();
        blocking(move || NodeEngine::create_snapshot(&e, &name, &source)).await
    }
    async fn delete_snapshot(&self, id: String) -> BackendResult<bool> {
        let e = self.clone();
        blocking(move || NodeEngine::delete_snapshot(&e, &id)).await
    }
}

impl NodeBackend for Arc<NodeEngine> {
    async fn publish(&self, id: String, target: PathBuf, how: Publish) -> BackendResult<()> {
        let e = self.clone();
        blocking(move || {
            let t = target::check(&target.to_string_lossy(), &e.publish_roots)?;
            mounts::publish(&e, &id, &t, &how)
        })
        .await
    }
    async fn unpublish(&self, id: String, target: PathBuf) -> BackendResult<()> {
        let e = self.clone();
        blocking(move || {
            let t = target::check(&target.to_string_lossy(), &e.publish_roots)?;
            mounts::unpublish(&e, &id, &t)
        })
        .await
    }
    async fn grow(&self, id: String, path: PathBuf) -> BackendResult<u64> {
        let e = self.clone();
        blocking(move || mounts::grow(&e, &id, &path)).await
    }
    async fn stats(&self, id: String, path: PathBuf) -> BackendResult<Stats> {
        let e = self.clone();
        blocking(move || mounts::stats(&e, &id, &path)).await
    }
}
