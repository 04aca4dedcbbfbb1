//! Kubernetes: the LogicalVolume resource, the controller's CSI backend
//! over it, the node's reconciler of its own LogicalVolumes, and the
//! capacity each node publishes. Kubernetes is how ferrolvm spans machines;
//! nothing here keeps cluster state of its own.

pub mod capacity;
pub mod controller;
pub mod crd;
pub mod extender;
pub mod leader;
pub mod node;
pub mod nodes;
pub mod orphans;

/// Finalizer the node puts on a LogicalVolume before it makes the LV, so
/// that deleting the object removes the LV first.
pub const LV_FINALIZER: &str = "ferrolvm.io/logicalvolume";
/// Node annotation prefix: `capacity.ferrolvm.io/<class>` = free bytes.
pub const CAPACITY_ANNOTATION: &str = "capacity.ferrolvm.io/";
/// Node annotation prefix: `maxvolume.ferrolvm.io/<class>` = the largest
/// volume that can be made in the class now.
pub const MAX_VOLUME_ANNOTATION: &str = "maxvolume.ferrolvm.io/";
/// The annotation suffix for a node's default class (TopoLVM's `00default`).
pub const DEFAULT_CLASS_KEY: &str = "00default";
