//! Crash points for tests: when `FERROLVM_FAILPOINT` names a point, the
//! process aborts there, as if killed. Tests use this to prove that every
//! step of a multi-step change (thin create, snapshot, removal) leaves a
//! state the next run of ferrolvm or lvm2 completes. Unset, it costs one
//! environment lookup per point.

pub fn hit(point: &str) {
    if std::env::var_os("FERROLVM_FAILPOINT").is_some_and(|p| p == point) {
        eprintln!("ferrolvm: failpoint {point} reached, aborting");
        std::process::abort();
    }
}
