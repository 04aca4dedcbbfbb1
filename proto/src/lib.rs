//! Generated gRPC bindings of the protocols ferrolvm speaks, from the
//! vendored `.proto` files beside this crate: message types, server traits
//! and clients. Nothing else lives here, so no other crate needs a build
//! script.

/// The Container Storage Interface v1.13.0 (`csi.proto`): the Identity,
/// Controller, Node and GroupController services.
pub mod csi {
    #[allow(clippy::all, missing_docs, unreachable_pub)]
    pub mod v1 {
        tonic::include_proto!("csi.v1");
    }
}

/// kubelet's plugin registration API (`k8s.io/kubelet/pkg/apis/pluginregistration/v1`,
/// proto package `pluginregistration`): a plugin serves `Registration` on a
/// socket in kubelet's `plugins_registry` directory.
pub mod pluginregistration {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    tonic::include_proto!("pluginregistration");
}

/// TopoLVM's lvmd protocol (v0.41.0, proto package `proto`): `LVService`
/// and `VGService` on a Unix socket, which `ferrolvm lvmd` serves and the
/// peer benchmark drives against TopoLVM's own `lvmd`.
pub mod lvmd {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    tonic::include_proto!("proto");
}
