//! Crash points for tests: when `FERROLVM_FAILPOINT` names a point, the
//! process aborts there, as if killed. Tests use this to prove that every
//! step of a multi-step change (thin create, snapshot, removal) leaves a
//! state the next run of ferrolvm or lvm2 completes.
//!
//! Compiled in only with the `failpoints` cargo feature, which the VM test
//! suite turns on; the binaries operators run contain none.

/// Aborts the process when `FERROLVM_FAILPOINT` is `point`; panics the
/// calling thread when it is `point:panic` (a bug, not a kill: the process
/// goes on and must not be wedged by what the panic left behind).
#[cfg(feature = "failpoints")]
pub fn hit(point: &str) {
    let Some(set) = std::env::var_os("FERROLVM_FAILPOINT") else {
        return;
    };
    if set == point {
        eprintln!("ferrolvm: failpoint {point} reached, aborting");
        std::process::abort();
    }
    if set.to_str().and_then(|s| s.strip_suffix(":panic")) == Some(point) {
        panic!("ferrolvm: failpoint {point} reached, panicking");
    }
}

/// Without the `failpoints` feature, a failpoint is nothing at all.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_point: &str) {}
