//! Standalone mode: both backends are this node's engine, called on
//! tokio's blocking threads (the engine does direct I/O, takes file locks
//! and waits on device-mapper).

use std::path::PathBuf;
use std::sync::Arc;

use super::backend::{
    BackendError, BackendResult, Capacity, CreateRequest, ErrorKind, NodeBackend, Placed,
    VolumeBackend,
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

/// The Controller's backend in standalone mode: this node's engine, for
/// volumes on this one node.
pub struct Standalone {
    pub engine: Arc<NodeEngine>,
    pub node: String,
}

impl Standalone {
    fn placed(&self, volume: Volume) -> Placed {
        Placed {
            node: self.node.clone(),
            volume,
        }
    }
}

impl VolumeBackend for Standalone {
    async fn create(&self, req: CreateRequest) -> BackendResult<Placed> {
        if !req.nodes.is_empty() && !req.nodes.contains(&self.node) {
            return Err(BackendError::new(
                ErrorKind::ResourceExhausted,
                format!("this driver serves node {} only", self.node),
            ));
        }
        let e = self.engine.clone();
        let v = blocking(move || {
            let class = req.class.as_deref();
            match &req.source {
                None => NodeEngine::create(&e, &req.name, class, req.required, req.limit),
                Some(src) => {
                    NodeEngine::create_from(&e, &req.name, class, req.required, req.limit, src)
                }
            }
        })
        .await?;
        Ok(self.placed(v))
    }
    async fn delete(&self, id: String) -> BackendResult<bool> {
        let e = self.engine.clone();
        blocking(move || NodeEngine::delete(&e, &id)).await
    }
    async fn find(&self, id: String) -> BackendResult<Option<Placed>> {
        let e = self.engine.clone();
        let v = blocking(move || NodeEngine::find(&e, &id)).await?;
        Ok(v.map(|v| self.placed(v)))
    }
    async fn list(&self) -> BackendResult<Vec<Placed>> {
        let e = self.engine.clone();
        let all = blocking(move || NodeEngine::list(&e)).await?;
        Ok(all.into_iter().map(|v| self.placed(v)).collect())
    }
    async fn capacity(
        &self,
        class: Option<String>,
        node: Option<String>,
    ) -> BackendResult<Capacity> {
        if node.is_some_and(|n| n != self.node) {
            return Ok(Capacity::default());
        }
        let e = self.engine.clone();
        blocking(move || {
            let (available, maximum_volume) = NodeEngine::room(&e, class.as_deref())?;
            Ok(Capacity {
                available,
                maximum_volume,
            })
        })
        .await
    }
    async fn expand(&self, id: String, bytes: u64, limit: u64) -> BackendResult<u64> {
        let e = self.engine.clone();
        blocking(move || NodeEngine::expand(&e, &id, bytes, limit)).await
    }
    async fn snapshots(&self) -> BackendResult<Vec<Snapshot>> {
        let e = self.engine.clone();
        blocking(move || NodeEngine::snapshots(&e)).await
    }
    async fn create_snapshot(&self, name: String, source: String) -> BackendResult<Snapshot> {
        let e = self.engine.clone();
        blocking(move || NodeEngine::create_snapshot(&e, &name, &source)).await
    }
    async fn delete_snapshot(&self, id: String) -> BackendResult<bool> {
        let e = self.engine.clone();
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
    async fn health(&self, id: String) -> BackendResult<Option<String>> {
        let e = self.clone();
        blocking(move || mounts::health(&e, &id)).await
    }
}
