//! Generated gRPC bindings of the protocols ferrolvm speaks, from the
//! vendored `.proto` files beside this crate: message types, server traits
//! and clients. Nothing else lives here, so no other crate needs a build
//! script.

/// The Container Storage Interface v1.12.0 (`csi.proto`): the Identity,
/// Controller, Node and GroupController services.
pub mod csi {
    #[allow(clippy::all, missing_docs, unreachable_pub)]
    pub mod v1 {
        tonic::include_proto!("csi.v1");
    }
}
