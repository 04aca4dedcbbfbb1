//! The controller's [`VolumeBackend`] over LogicalVolume objects, in
//! TopoLVM's protocol: CreateVolume writes a LogicalVolume for the chosen
//! node and waits until that node's ferrolvm has written `status.volumeID`
//! (made) or a non-zero `status.code` (refused); delete removes the object
//! and waits until the node's finalizer has removed the LV; expand raises
//! `spec.size` and waits for `status.currentSize`. Every call is idempotent:
//! the object's name follows from the CSI name, so a retry, or a restarted
//! controller, finds the object the first try made.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use super::crd::{bytes_quantity, quantity_bytes, AccessType, LogicalVolume, LogicalVolumeSpec};
use super::{CAPACITY_ANNOTATION, DEFAULT_CLASS_KEY, MAX_VOLUME_ANNOTATION};
use crate::csi::backend::{
    BackendError, BackendResult, Capacity, CreateRequest, ErrorKind, Placed, VolumeBackend,
};
use crate::csi::status::kind_of_grpc_code;
use crate::node::{Snapshot, Source, Volume};

/// LogicalVolumes on the API server, for the CSI Controller service.
#[derive(Clone)]
pub struct KubeBackend {
    lvs: Api<LogicalVolume>,
    nodes: Api<Node>,
    /// How long a call waits for the node before answering Aborted
    /// ("operation pending"), so that the sidecar retries.
    pub wait: Duration,
}

fn api_error(what: &str) -> impl FnOnce(kube::Error) -> BackendError + '_ {
    move |e| {
        let kind = match &e {
            kube::Error::Api(s) if s.code == 409 => ErrorKind::Aborted,
            kube::Error::Api(s) if s.code == 422 || s.code == 400 => ErrorKind::InvalidArgument,
            _ => ErrorKind::Unavailable,
        };
        BackendError::new(kind, format!("{what}: {e}"))
    }
}

/// The object name for a CSI name: the name itself when it is a valid,
/// lowercase DNS subdomain (external-provisioner's `pvc-<uid>` is), else a
/// stable hash. Never lowercased: two CSI names differing in case must not
/// share an object. `spec.name` keeps the CSI name, and is checked.
pub fn object_name(csi_name: &str) -> String {
    let ok = !csi_name.is_empty()
        && csi_name.len() <= 253
        && csi_name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && csi_name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && csi_name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        return csi_name.to_string();
    }
    format!("csi-{:016x}", crate::node::volume::stable_hash(csi_name))
}

/// The annotation key of `class` (None: the node's default class).
fn class_key(prefix: &str, class: Option<&str>) -> String {
    format!("{prefix}{}", class.unwrap_or(DEFAULT_CLASS_KEY))
}

fn placed(lv: &LogicalVolume) -> Option<Placed> {
    let status = lv.status.as_ref()?;
    let id = status.volume_id.clone()?;
    let bytes = status
        .current_size
        .as_ref()
        .and_then(quantity_bytes)
        .unwrap_or(0);
    Some(Placed {
        node: lv.spec.node_name.clone(),
        volume: Volume {
            id,
            name: lv.spec.name.clone(),
            class: lv.spec.device_class.clone().unwrap_or_default(),
            vg: String::new(),
            lv: String::new(),
            bytes,
        },
    })
}

fn is_snapshot(lv: &LogicalVolume) -> bool {
    lv.spec.access_type == Some(AccessType::ReadOnly)
}

impl KubeBackend {
    pub fn new(client: Client) -> Self {
        KubeBackend {
            lvs: Api::all(client.clone()),
            nodes: Api::all(client),
            wait: Duration::from_secs(60),
        }
    }

    async fn all(&self) -> BackendResult<Vec<LogicalVolume>> {
        Ok(self
            .lvs
            .list(&ListParams::default())
            .await
            .map_err(api_error("listing LogicalVolumes"))?
            .items)
    }

    async fn by_volume_id(&self, id: &str) -> BackendResult<Option<LogicalVolume>> {
        Ok(self
            .all()
            .await?
            .into_iter()
            .find(|l| l.status.as_ref().and_then(|s| s.volume_id.as_deref()) == Some(id)))
    }

    /// One node's room for `class`, from the annotations its ferrolvm keeps.
    fn room_on(node: &Node, class: Option<&str>) -> Capacity {
        let get = |prefix: &str| {
            node.annotations()
                .get(&class_key(prefix, class))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Capacity {
            available: get(CAPACITY_ANNOTATION),
            maximum_volume: get(MAX_VOLUME_ANNOTATION),
        }
    }

    /// Without a topology choice (Immediate binding), the node whose largest
    /// possible volume is largest, if it fits `bytes`.
    async fn roomiest_node(&self, class: Option<&str>, bytes: u64) -> BackendResult<String> {
        let nodes = self
            .nodes
            .list(&ListParams::default())
            .await
            .map_err(api_error("listing Nodes"))?;
        nodes
            .items
            .iter()
            .map(|n| (Self::room_on(n, class).maximum_volume, n.name_any()))
            .filter(|(max, _)| *max >= bytes)
            .max()
            .map(|(_, n)| n)
            .ok_or_else(|| {
                BackendError::new(
                    ErrorKind::ResourceExhausted,
                    format!("no node has room for {bytes} bytes"),
                )
            })
    }

    /// Waits until `name` is made (volume id set) or refused (code set); a
    /// refused object is deleted, so that a retry may choose another node.
    async fn wait_made(&self, name: &str) -> BackendResult<LogicalVolume> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let lv = self
                .lvs
                .get_opt(name)
                .await
                .map_err(api_error("reading a LogicalVolume"))?
                .ok_or_else(|| {
                    BackendError::new(
                        ErrorKind::Aborted,
                        format!("LogicalVolume {name} vanished while being made"),
                    )
                })?;
            if let Some(s) = &lv.status {
                if let Some(kind) = kind_of_grpc_code(s.code) {
                    let message = s.message.clone().unwrap_or_default();
                    // Gone before the answer, so that the sidecar's retry
                    // makes a new object (perhaps for another node).
                    self.delete_and_wait(name).await?;
                    return Err(BackendError::new(
                        kind,
                        format!("node {}: {message}", lv.spec.node_name),
                    ));
                }
                if s.volume_id.is_some() {
                    return Ok(lv);
                }
            }
            if start.elapsed() > self.wait {
                return Err(BackendError::new(
                    ErrorKind::Aborted,
                    format!(
                        "LogicalVolume {name} is still being made by node {}",
                        lv.spec.node_name
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Deletes `name` and waits until the node's finalizer let it go.
    async fn delete_and_wait(&self, name: &str) -> BackendResult<()> {
        match self.lvs.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(api_error("deleting a LogicalVolume")(e)),
        }
        let start = Instant::now();
        let mut pause = Duration::from_millis(50);
        while self
            .lvs
            .get_opt(name)
            .await
            .map_err(api_error("reading a LogicalVolume"))?
            .is_some()
        {
            if start.elapsed() > self.wait {
                return Err(BackendError::new(
                    ErrorKind::Aborted,
                    format!("LogicalVolume {name} is still being removed by its node"),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        Ok(())
    }

    /// Creates (or finds, when a retry meets it) the object for `spec`.
    async fn create_object(&self, spec: LogicalVolumeSpec) -> BackendResult<LogicalVolume> {
        let name = object_name(&spec.name);
        let existing = self
            .lvs
            .get_opt(&name)
            .await
            .map_err(api_error("reading a LogicalVolume"))?;
        let existing = match existing {
            // Being deleted (refused, or its claim deleted): let it go first.
            Some(lv) if lv.metadata.deletion_timestamp.is_some() => {
                self.delete_and_wait(&name).await?;
                None
            }
            other => other,
        };
        let lv = match existing {
            Some(lv) => lv,
            None => match self
                .lvs
                .create(
                    &PostParams::default(),
                    &LogicalVolume::new(&name, spec.clone()),
                )
                .await
            {
                Ok(lv) => lv,
                // A concurrent retry made it first: take theirs.
                Err(kube::Error::Api(e)) if e.code == 409 => self
                    .lvs
                    .get(&name)
                    .await
                    .map_err(api_error("reading a LogicalVolume"))?,
                Err(e) => return Err(api_error("creating a LogicalVolume")(e)),
            },
        };
        if lv.spec.name != spec.name || lv.spec.source != spec.source {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                format!(
                    "LogicalVolume {name} holds {:?} from {:?}, not {:?} from {:?}",
                    lv.spec.name, lv.spec.source, spec.name, spec.source
                ),
            ));
        }
        Ok(lv)
    }
}

impl VolumeBackend for KubeBackend {
    async fn create(&self, req: CreateRequest) -> BackendResult<Placed> {
        let name = object_name(&req.name);
        let (source, node) = match &req.source {
            None => (None, None),
            Some(Source::Snapshot(id) | Source::Volume(id)) => {
                let src = self.by_volume_id(id).await?.ok_or_else(|| {
                    BackendError::new(ErrorKind::NotFound, format!("source {id} not found"))
                })?;
                (Some(id.clone()), Some(src.spec.node_name))
            }
        };
        // A source pins the node (thin snapshots live in its pool).
        let node = match (node, req.nodes.first()) {
            (Some(n), _) if req.nodes.is_empty() || req.nodes.contains(&n) => n,
            (Some(n), _) => {
                return Err(BackendError::new(
                    ErrorKind::ResourceExhausted,
                    format!("the source is on node {n}, which the topology does not allow"),
                ))
            }
            (None, Some(n)) => n.clone(),
            (None, None) => match self.lvs.get_opt(&name).await {
                Ok(Some(lv)) => lv.spec.node_name,
                _ => {
                    self.roomiest_node(req.class.as_deref(), req.required)
                        .await?
                }
            },
        };
        let lv = self
            .create_object(LogicalVolumeSpec {
                name: req.name.clone(),
                node_name: node,
                device_class: req.class.clone(),
                size: bytes_quantity(req.required),
                access_type: source.as_ref().map(|_| AccessType::ReadWrite),
                source,
            })
            .await?;
        let asked = quantity_bytes(&lv.spec.size).unwrap_or(0);
        if asked < req.required || (req.limit > 0 && asked > req.limit) {
            return Err(BackendError::new(
                ErrorKind::AlreadyExists,
                format!("volume {} exists with {asked} bytes", req.name),
            ));
        }
        let made = self.wait_made(&name).await?;
        placed(&made).ok_or_else(|| BackendError::new(ErrorKind::Internal, "made without an id"))
    }

    async fn delete(&self, id: String) -> BackendResult<bool> {
        match self.by_volume_id(&id).await? {
            None => Ok(false),
            Some(lv) => {
                self.delete_and_wait(&lv.name_any()).await?;
                Ok(true)
            }
        }
    }

    async fn find(&self, id: String) -> BackendResult<Option<Placed>> {
        Ok(self.by_volume_id(&id).await?.as_ref().and_then(placed))
    }

    async fn list(&self) -> BackendResult<Vec<Placed>> {
        Ok(self
            .all()
            .await?
            .iter()
            .filter(|l| !is_snapshot(l))
            .filter_map(placed)
            .collect())
    }

    async fn capacity(
        &self,
        class: Option<String>,
        node: Option<String>,
    ) -> BackendResult<Capacity> {
        match node {
            Some(n) => match self
                .nodes
                .get_opt(&n)
                .await
                .map_err(api_error("reading a Node"))?
            {
                Some(node) => Ok(Self::room_on(&node, class.as_deref())),
                None => Ok(Capacity::default()),
            },
            None => {
                let nodes = self
                    .nodes
                    .list(&ListParams::default())
                    .await
                    .map_err(api_error("listing Nodes"))?;
                Ok(nodes
                    .items
                    .iter()
                    .map(|n| Self::room_on(n, class.as_deref()))
                    .max_by_key(|c| c.maximum_volume)
                    .unwrap_or_default())
            }
        }
    }

    async fn expand(&self, id: String, bytes: u64, limit: u64) -> BackendResult<u64> {
        let lv = self.by_volume_id(&id).await?.ok_or_else(|| {
            BackendError::new(ErrorKind::NotFound, format!("volume {id} not found"))
        })?;
        let name = lv.name_any();
        let current = placed(&lv).map(|p| p.volume.bytes).unwrap_or(0);
        if current >= bytes {
            return Ok(current);
        }
        if quantity_bytes(&lv.spec.size).unwrap_or(0) < bytes {
            self.lvs
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "spec": { "size": bytes_quantity(bytes) } })),
                )
                .await
                .map_err(api_error("growing a LogicalVolume"))?;
        }
        let start = Instant::now();
        loop {
            let lv = self
                .lvs
                .get(&name)
                .await
                .map_err(api_error("reading a LogicalVolume"))?;
            let status = lv.status.clone().unwrap_or_default();
            let now = status
                .current_size
                .as_ref()
                .and_then(quantity_bytes)
                .unwrap_or(0);
            if now >= bytes {
                if limit > 0 && now > limit {
                    return Err(BackendError::new(
                        ErrorKind::OutOfRange,
                        format!("grown to {now} bytes, over the limit of {limit}"),
                    ));
                }
                return Ok(now);
            }
            if let Some(kind) = kind_of_grpc_code(status.code) {
                return Err(BackendError::new(kind, status.message.unwrap_or_default()));
            }
            if start.elapsed() > self.wait {
                return Err(BackendError::new(
                    ErrorKind::Aborted,
                    format!("LogicalVolume {name} is still growing"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn snapshots(&self) -> BackendResult<Vec<Snapshot>> {
        Ok(self
            .all()
            .await?
            .iter()
            .filter(|l| is_snapshot(l))
            .filter_map(|l| {
                let p = placed(l)?;
                Some(Snapshot {
                    id: p.volume.id,
                    name: l.spec.name.clone(),
                    source: l.spec.source.clone().unwrap_or_default(),
                    bytes: p.volume.bytes,
                    created: l
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second().max(0) as u64)
                        .unwrap_or(0),
                })
            })
            .collect())
    }

    async fn create_snapshot(&self, name: String, source: String) -> BackendResult<Snapshot> {
        let src = self.by_volume_id(&source).await?.ok_or_else(|| {
            BackendError::new(ErrorKind::NotFound, format!("volume {source} not found"))
        })?;
        let lv = self
            .create_object(LogicalVolumeSpec {
                name: name.clone(),
                node_name: src.spec.node_name.clone(),
                device_class: src.spec.device_class.clone(),
                size: src.spec.size.clone(),
                source: Some(source.clone()),
                access_type: Some(AccessType::ReadOnly),
            })
            .await?;
        let made = self.wait_made(&lv.name_any()).await?;
        let p = placed(&made)
            .ok_or_else(|| BackendError::new(ErrorKind::Internal, "made without an id"))?;
        Ok(Snapshot {
            id: p.volume.id,
            name,
            source,
            bytes: p.volume.bytes,
            created: made
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second().max(0) as u64)
                .unwrap_or(0),
        })
    }

    async fn delete_snapshot(&self, id: String) -> BackendResult<bool> {
        self.delete(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_never_fold_case() {
        assert_eq!(object_name("pvc-0a1b2c"), "pvc-0a1b2c");
        assert_ne!(object_name("Foo"), object_name("foo"));
        assert!(object_name("Foo").starts_with("csi-"));
        assert!(object_name("-x").starts_with("csi-"));
        assert!(object_name(&"a".repeat(300)).starts_with("csi-"));
        assert_eq!(object_name("Foo"), object_name("Foo"), "stable");
    }
}
