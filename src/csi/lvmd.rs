//! TopoLVM's lvmd protocol (`proto/lvmd/lvmd.proto`, v0.41.0) served over
//! this node's engine: `ferrolvm lvmd` answers the calls TopoLVM's `lvmd`
//! answers, with no `lvm` process behind them. The peer benchmark drives
//! both with one client; a TopoLVM node could use it in lvmd's place.
//!
//! Volumes are addressed by name, as lvmd does; the name is the CSI name
//! of the node engine (the LV is named after it when LVM allows). What
//! ferrolvm does not do is refused, not faked: `tags` and
//! `lvcreate_option_class` on CreateLV (ferrolvm runs no lvcreate) are
//! InvalidArgument.

use std::pin::Pin;
use std::sync::Arc;

use ferrolvm_proto::lvmd::lv_service_server::LvService;
use ferrolvm_proto::lvmd::vg_service_server::VgService;
use ferrolvm_proto::lvmd::*;
use futures::Stream;
use tonic::{Request, Response, Status};

use super::backend::BackendError;
use crate::node::config::ClassType;
use crate::node::mounts::{self, DeviceState};
use crate::node::{NodeEngine, Source, Volume, VolumeError};

/// Both lvmd services on one engine. `changes` ticks whenever a watched VG
/// changed (this service's own commits and lvm2's on the host alike);
/// `Watch` sends the capacities again on every tick.
pub struct Lvmd {
    pub engine: Arc<NodeEngine>,
    pub changes: tokio::sync::watch::Receiver<u64>,
}

fn status(e: VolumeError) -> Status {
    // lvmd answers NotFound for a device class it does not know.
    if let VolumeError::UnknownClass(c) = &e {
        return Status::not_found(format!("device class not found: {c:?}"));
    }
    BackendError::from(e).into()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(status)
}

/// lvmd's empty string is the default device class.
fn class(name: &str) -> Option<String> {
    (!name.is_empty()).then(|| name.to_string())
}

fn size(bytes: i64) -> Result<u64, Status> {
    u64::try_from(bytes).ok().filter(|b| *b > 0).ok_or_else(|| {
        Status::invalid_argument(format!("size_bytes must be positive, not {bytes}"))
    })
}

fn name(name: &str) -> Result<String, Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument("name missing"));
    }
    Ok(name.to_string())
}

/// lvm2's ten `lv_attr` characters for what ferrolvm knows of a volume:
/// type, permissions, allocation, state, open, target type and health.
/// The zero bit (`z` on thin LVs of a zeroing pool) is left `-`.
pub fn lv_attr(thin: bool, state: DeviceState) -> String {
    let (st, open, health) = match state {
        DeviceState::Missing => ('-', '-', '-'),
        DeviceState::Suspended => ('s', '-', '-'),
        // lvm2: `F` for a failed thin device, `X` (unknown) for the rest.
        DeviceState::Failed => ('a', '-', if thin { 'F' } else { 'X' }),
        DeviceState::Live { open } => ('a', if open { 'o' } else { '-' }, '-'),
    };
    let (kind, target) = if thin { ('V', 't') } else { ('-', '-') };
    format!("{kind}wi-{st}{open}{target}-{health}-")
}

fn logical_volume(engine: &NodeEngine, v: &Volume) -> LogicalVolume {
    let thin = engine
        .config
        .class(Some(&v.class))
        .is_some_and(|c| c.class_type == ClassType::Thin);
    let d = mounts::device(v);
    LogicalVolume {
        name: v.name.clone(),
        dev_major: d.major,
        dev_minor: d.minor,
        tags: vec![],
        size_bytes: v.bytes as i64,
        path: d.path.display().to_string(),
        attr: lv_attr(thin, d.state),
    }
}

fn missing(name: &str) -> VolumeError {
    VolumeError::NotFound(format!("logical volume {name:?}"))
}

#[tonic::async_trait]
impl LvService for Lvmd {
    async fn create_lv(
        &self,
        req: Request<CreateLvRequest>,
    ) -> Result<Response<CreateLvResponse>, Status> {
        let r = req.into_inner();
        let name = name(&r.name)?;
        let bytes = size(r.size_bytes)?;
        if !r.tags.is_empty() {
            return Err(Status::invalid_argument("tags are not supported"));
        }
        if !r.lvcreate_option_class.is_empty() {
            return Err(Status::invalid_argument(
                "lvcreate-option-classes are not supported: ferrolvm runs no lvcreate",
            ));
        }
        let e = self.engine.clone();
        let v = blocking(move || {
            let v = e.create(&name, class(&r.device_class).as_deref(), bytes, 0)?;
            Ok(logical_volume(&e, &v))
        })
        .await?;
        Ok(Response::new(CreateLvResponse { volume: Some(v) }))
    }

    async fn remove_lv(&self, req: Request<RemoveLvRequest>) -> Result<Response<Empty>, Status> {
        let r = req.into_inner();
        let name = name(&r.name)?;
        let e = self.engine.clone();
        blocking(move || {
            let class = class(&r.device_class);
            if let Some(v) = e.find_named(class.as_deref(), &name)? {
                return e.delete(&v.id).map(drop);
            }
            // A snapshot is an LV of the class too.
            let s = e.snapshots()?.into_iter().find(|s| s.name == name);
            let s = s.ok_or_else(|| missing(&name))?;
            e.delete_snapshot(&s.id).map(drop)
        })
        .await?;
        Ok(Response::new(Empty {}))
    }

    async fn resize_lv(
        &self,
        req: Request<ResizeLvRequest>,
    ) -> Result<Response<ResizeLvResponse>, Status> {
        let r = req.into_inner();
        let name = name(&r.name)?;
        let bytes = size(r.size_bytes)?;
        let e = self.engine.clone();
        let now = blocking(move || {
            let v = e
                .find_named(class(&r.device_class).as_deref(), &name)?
                .ok_or_else(|| missing(&name))?;
            e.expand(&v.id, bytes, 0)
        })
        .await?;
        Ok(Response::new(ResizeLvResponse {
            size_bytes: now as i64,
        }))
    }

    async fn create_lv_snapshot(
        &self,
        req: Request<CreateLvSnapshotRequest>,
    ) -> Result<Response<CreateLvSnapshotResponse>, Status> {
        let r = req.into_inner();
        let name = name(&r.name)?;
        let source = self::name(&r.source_volume)
            .map_err(|_| Status::invalid_argument("source_volume missing"))?;
        if !r.tags.is_empty() {
            return Err(Status::invalid_argument("tags are not supported"));
        }
        let writable = match r.access_type.as_str() {
            "rw" => true,
            "ro" => false,
            other => {
                return Err(Status::invalid_argument(format!(
                    "access_type must be \"rw\" or \"ro\", not {other:?}"
                )))
            }
        };
        let e = self.engine.clone();
        let lv = blocking(move || {
            let class = class(&r.device_class);
            let origin = e.find_named(class.as_deref(), &source)?;
            if !writable {
                // A read-only snapshot: ferrolvm's CSI snapshot of the origin.
                let origin = origin.ok_or_else(|| missing(&source))?;
                let s = e.create_snapshot(&name, &origin.id)?;
                // Never activated: no device, as lvm2 shows an inactive thin LV.
                return Ok(LogicalVolume {
                    name: s.name,
                    size_bytes: s.bytes as i64,
                    attr: lv_attr(true, DeviceState::Missing),
                    ..Default::default()
                });
            }
            // A writable one is a new volume holding the source's content
            // (a volume, or a snapshot made before).
            let from = match origin {
                Some(v) => Source::Volume(v.id),
                None => {
                    let s = e.snapshots()?.into_iter().find(|s| s.name == source);
                    Source::Snapshot(s.ok_or_else(|| missing(&source))?.id)
                }
            };
            let bytes = u64::try_from(r.size_bytes).unwrap_or(0);
            let v = e.create_from(&name, class.as_deref(), bytes, 0, &from)?;
            Ok(logical_volume(&e, &v))
        })
        .await?;
        Ok(Response::new(CreateLvSnapshotResponse {
            snapshot: Some(lv),
        }))
    }
}

/// What `Watch` sends, as lvmd fills it: per class the VG's size and its
/// free bytes (a thick class's less its spare: its capacity), a thin
/// class's pool with its overprovisioned room; `free_bytes` is the default
/// class's capacity.
fn watch_response(engine: &NodeEngine) -> Result<WatchResponse, VolumeError> {
    let report = engine.report()?;
    let mut res = WatchResponse::default();
    for (c, r) in engine.config.device_classes.iter().zip(&report.classes) {
        if c.default {
            res.free_bytes = r.capacity;
        }
        let thin_pool = r.thin_pool.as_ref().map(|p| ThinPoolItem {
            data_percent: p.data_percent.unwrap_or(0.0),
            metadata_percent: p.metadata_percent.unwrap_or(0.0),
            overprovision_bytes: r.capacity,
            size_bytes: p.size,
        });
        res.items.push(WatchItem {
            free_bytes: if thin_pool.is_some() {
                r.vg_free
            } else {
                r.capacity
            },
            device_class: c.name.clone(),
            size_bytes: r.vg_size,
            thin_pool,
        });
    }
    Ok(res)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl VgService for Lvmd {
    async fn get_lv_list(
        &self,
        req: Request<GetLvListRequest>,
    ) -> Result<Response<GetLvListResponse>, Status> {
        let class = class(&req.into_inner().device_class);
        let e = self.engine.clone();
        let volumes = blocking(move || {
            let name = e
                .config
                .class(class.as_deref())
                .ok_or_else(|| VolumeError::UnknownClass(class.clone().unwrap_or_default()))?
                .name
                .clone();
            Ok(e.list()?
                .iter()
                .filter(|v| v.class == name)
                .map(|v| logical_volume(&e, v))
                .collect())
        })
        .await?;
        Ok(Response::new(GetLvListResponse { volumes }))
    }

    async fn get_free_bytes(
        &self,
        req: Request<GetFreeBytesRequest>,
    ) -> Result<Response<GetFreeBytesResponse>, Status> {
        let class = class(&req.into_inner().device_class);
        let e = self.engine.clone();
        let free_bytes = blocking(move || e.capacity(class.as_deref())).await?;
        Ok(Response::new(GetFreeBytesResponse { free_bytes }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<Empty>) -> Result<Response<WatchStream>, Status> {
        let engine = self.engine.clone();
        let mut changes = self.changes.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                changes.mark_unchanged();
                let e = engine.clone();
                let sent = blocking(move || watch_response(&e)).await;
                let failed = sent.is_err();
                if tx.send(sent).await.is_err() || failed {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream) as WatchStream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn attributes_read_as_lvm2_writes_them() {
        let live = DeviceState::Live { open: false };
        assert_eq!(lv_attr(false, live), "-wi-a-----");
        assert_eq!(lv_attr(true, live), "Vwi-a-t---");
        assert_eq!(
            lv_attr(false, DeviceState::Live { open: true }),
            "-wi-ao----"
        );
        assert_eq!(lv_attr(false, DeviceState::Missing), "-wi-------");
        assert_eq!(lv_attr(true, DeviceState::Suspended), "Vwi-s-t---");
        assert_eq!(lv_attr(true, DeviceState::Failed), "Vwi-a-t-F-");
        assert_eq!(lv_attr(false, DeviceState::Failed), "-wi-a---X-");
    }

    #[test]
    fn sizes_and_names_are_checked() {
        assert!(size(0).is_err());
        assert!(size(-1).is_err());
        assert_eq!(size(4096).unwrap(), 4096);
        assert_eq!(name("").unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(class(""), None);
        assert_eq!(class("ssd").as_deref(), Some("ssd"));
    }

    #[test]
    fn an_unknown_class_is_not_found_as_lvmd_says() {
        let s = status(VolumeError::UnknownClass("hdd".into()));
        assert_eq!(s.code(), Code::NotFound);
        let s = status(VolumeError::NoSpace {
            class: "ssd".into(),
            needed: 2,
            available: 1,
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
    }
}
