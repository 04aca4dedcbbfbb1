//! The one place where errors become gRPC codes: the node engine's errors
//! are classified into backend-neutral kinds, and each kind has its code.

use tonic::{Code, Status};

use super::backend::{BackendError, ErrorKind};
use crate::node::VolumeError;

impl From<VolumeError> for BackendError {
    fn from(e: VolumeError) -> Self {
        let kind = match &e {
            VolumeError::UnknownClass(_) | VolumeError::NotThin(_) => ErrorKind::InvalidArgument,
            VolumeError::Conflict { .. } => ErrorKind::AlreadyExists,
            VolumeError::NoSpace { .. } => ErrorKind::ResourceExhausted,
            VolumeError::NotFound(_) | VolumeError::PathMissing(_) => ErrorKind::NotFound,
            VolumeError::InUse(_) | VolumeError::TargetOccupied(_) => ErrorKind::FailedPrecondition,
            VolumeError::Exhausted(_) => ErrorKind::ResourceExhausted,
            VolumeError::Busy(_) => ErrorKind::Aborted,
            VolumeError::Invalid(_) => ErrorKind::InvalidArgument,
            VolumeError::OutOfRange(_) => ErrorKind::OutOfRange,
            VolumeError::Filesystem(_) | VolumeError::Engine(_) => ErrorKind::Internal,
        };
        let message = match &e {
            VolumeError::UnknownClass(c) => format!("unknown device class {c:?}"),
            _ => e.to_string(),
        };
        BackendError::new(kind, message)
    }
}

fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The numeric gRPC code of a kind, as a LogicalVolume's `status.code`
/// carries it from the node to the controller.
pub fn grpc_code(kind: ErrorKind) -> i32 {
    code(kind) as i32
}

/// The kind a numeric gRPC code stands for; None for OK (0). Codes no
/// backend sends are Internal.
pub fn kind_of_grpc_code(c: i32) -> Option<ErrorKind> {
    Some(match Code::from_i32(c) {
        Code::Ok => return None,
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::OutOfRange => ErrorKind::OutOfRange,
        Code::Aborted => ErrorKind::Aborted,
        Code::Unavailable => ErrorKind::Unavailable,
        _ => ErrorKind::Internal,
    })
}

impl From<BackendError> for Status {
    fn from(e: BackendError) -> Self {
        Status::new(code(e.kind), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_survive_the_trip_through_a_status_field() {
        use ErrorKind::*;
        for k in [
            InvalidArgument,
            NotFound,
            AlreadyExists,
            ResourceExhausted,
            FailedPrecondition,
            OutOfRange,
            Aborted,
            Unavailable,
            Internal,
        ] {
            assert_eq!(kind_of_grpc_code(grpc_code(k)), Some(k));
        }
        assert_eq!(kind_of_grpc_code(0), None);
        assert_eq!(kind_of_grpc_code(999), Some(Internal));
    }

    #[test]
    fn engine_errors_keep_their_codes() {
        let status = |e: VolumeError| Status::from(BackendError::from(e)).code();
        assert_eq!(
            status(VolumeError::UnknownClass("x".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            status(VolumeError::Conflict {
                name: "v".into(),
                existing: 1
            }),
            Code::AlreadyExists
        );
        assert_eq!(
            status(VolumeError::NoSpace {
                class: "c".into(),
                needed: 2,
                available: 1
            }),
            Code::ResourceExhausted
        );
        assert_eq!(status(VolumeError::NotFound("v".into())), Code::NotFound);
        assert_eq!(
            status(VolumeError::PathMissing("/p".into())),
            Code::NotFound
        );
        assert_eq!(
            status(VolumeError::NotThin("t".into())),
            Code::InvalidArgument
        );
        assert_eq!(
            status(VolumeError::Filesystem("mkfs".into())),
            Code::Internal
        );
        assert_eq!(
            status(VolumeError::InUse("open".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            status(VolumeError::Exhausted("full".into())),
            Code::ResourceExhausted
        );
        assert_eq!(status(VolumeError::Busy("lock".into())), Code::Aborted);
        assert_eq!(
            status(VolumeError::Invalid("size".into())),
            Code::InvalidArgument
        );
    }
}
