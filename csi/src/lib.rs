//! Generated bindings of the Container Storage Interface v1.12.0
//! (`proto/csi.proto`): message types, server traits and clients for the
//! Identity, Controller, Node and GroupController services.

#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod v1 {
    tonic::include_proto!("csi.v1");
}
