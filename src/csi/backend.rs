//! The seam between the CSI services and whatever does the work. The
//! Controller service places volumes through a [`VolumeBackend`] (this
//! node's engine in standalone mode; LogicalVolume resources on the API
//! server in the Kubernetes-backed controller), and the Node service makes
//! them usable through a [`NodeBackend`] (this node's engine in both modes).
//! Both are async, and both fail with a [`BackendError`] that says what kind
//! of failure it is without naming any one backend's error type.

use std::future::Future;
use std::path::PathBuf;

use crate::node::mounts::{Publish, Stats};
use crate::node::{Snapshot, Source, Volume};

/// What kind of failure a backend had; [`super::status`] turns it into a
/// gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    ResourceExhausted,
    FailedPrecondition,
    OutOfRange,
    Aborted,
    Unavailable,
    Internal,
}

/// A backend's failure: its kind and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: ErrorKind,
    pub message: String,
}

impl BackendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
        }
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// A CreateVolume, after validation: between `required` and `limit` bytes
/// (`limit` 0: none), in `class` (None: the default class), from `source`,
/// on one of `nodes` (CSI's accessibility requirements, preferred first;
/// empty: wherever the backend finds room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub name: String,
    pub class: Option<String>,
    pub required: u64,
    pub limit: u64,
    pub source: Option<Source>,
    pub nodes: Vec<String>,
}

/// A volume and the node it lives on (its CSI topology).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub node: String,
    pub volume: Volume,
}

/// Room in one class on one node: what a new volume can get in all, and
/// the largest single volume that can really be made (CSI's
/// `maximum_volume_size`: striping and spare included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    pub available: u64,
    pub maximum_volume: u64,
}

/// What the Controller service needs from whatever places volumes.
pub trait VolumeBackend: Send + Sync + 'static {
    /// Creates volume `req.name`, or finds it when it exists and fits.
    fn create(&self, req: CreateRequest) -> impl Future<Output = BackendResult<Placed>> + Send;
    /// Removes a volume; `Ok(false)` when there was none.
    fn delete(&self, id: String) -> impl Future<Output = BackendResult<bool>> + Send;
    fn find(&self, id: String) -> impl Future<Output = BackendResult<Option<Placed>>> + Send;
    fn list(&self) -> impl Future<Output = BackendResult<Vec<Placed>>> + Send;
    /// Room for new volumes of `class` on `node` (None: the topology was not
    /// given, so the whole of what this backend serves).
    fn capacity(
        &self,
        class: Option<String>,
        node: Option<String>,
    ) -> impl Future<Output = BackendResult<Capacity>> + Send;
    /// Grows a volume to at least `bytes`, at most `limit` (0: none);
    /// returns its new size.
    fn expand(
        &self,
        id: String,
        bytes: u64,
        limit: u64,
    ) -> impl Future<Output = BackendResult<u64>> + Send;
    fn snapshots(&self) -> impl Future<Output = BackendResult<Vec<Snapshot>>> + Send;
    fn create_snapshot(
        &self,
        name: String,
        source: String,
    ) -> impl Future<Output = BackendResult<Snapshot>> + Send;
    fn delete_snapshot(&self, id: String) -> impl Future<Output = BackendResult<bool>> + Send;
}

/// What the Node service needs from this node.
pub trait NodeBackend: Send + Sync + 'static {
    /// Makes volume `id` usable at `target`; again is a no-op.
    fn publish(
        &self,
        id: String,
        target: PathBuf,
        how: Publish,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    fn unpublish(
        &self,
        id: String,
        target: PathBuf,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// Grows the filesystem at `path` to its volume; returns the volume's size.
    fn grow(&self, id: String, path: PathBuf) -> impl Future<Output = BackendResult<u64>> + Send;
    fn stats(&self, id: String, path: PathBuf)
        -> impl Future<Output = BackendResult<Stats>> + Send;
    /// Why volume `id` is unusable on this node, None when it is healthy.
    fn health(&self, id: String) -> impl Future<Output = BackendResult<Option<String>>> + Send;
}
