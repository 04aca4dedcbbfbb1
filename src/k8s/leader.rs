//! Leader election on a `coordination.k8s.io` Lease, with kube's own
//! primitives: the lease is taken or renewed by a replace carrying the
//! resourceVersion that was read, so the API server's optimistic
//! concurrency decides between two candidates; nothing else locks. The
//! same protocol as client-go's leaderelection: a holder renews every
//! `retry`; a lease not renewed for `duration` may be taken by anyone.
//!
//! Only the controller's cluster-wide loops (the Node finalizer) need a
//! leader; its CSI service is served by every replica, since the sidecars
//! elect their own leader.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;

/// Whether `me` may hold the lease `spec` at `now`: it is mine, free, or
/// its holder stopped renewing it more than its duration ago.
pub fn may_hold(spec: &LeaseSpec, me: &str, now: Timestamp) -> bool {
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == me => true,
        Some(_) => {
            let duration = spec.lease_duration_seconds.unwrap_or(15).max(1) as i64;
            match &spec.renew_time {
                None => true,
                Some(MicroTime(t)) => now.as_second() - t.as_second() > duration,
            }
        }
    }
}

/// The lease as `me` holding it from `now`.
fn held(old: Option<&LeaseSpec>, me: &str, now: Timestamp, duration: Duration) -> LeaseSpec {
    let mine = old.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(duration.as_secs() as i32),
        acquire_time: if mine {
            old.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if mine { transitions } else { transitions + 1 }),
        ..Default::default()
    }
}

/// One round: take or renew the lease; whether `me` holds it now.
async fn round(
    leases: &Api<Lease>,
    name: &str,
    me: &str,
    duration: Duration,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    match leases.get_opt(name).await? {
        None => {
            let mut lease = Lease::default();
            lease.metadata.name = Some(name.to_string());
            lease.spec = Some(held(None, me, now, duration));
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            if !may_hold(&spec, me, now) {
                return Ok(false);
            }
            lease.spec = Some(held(Some(&spec), me, now, duration));
            // The resourceVersion read above makes this a compare-and-swap.
            match leases.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Campaigns for lease `namespace/name` as `me` for ever, telling `leading`
/// whenever that changes. A holder that cannot renew within `duration`
/// steps down before anyone else may take over.
pub async fn campaign(
    client: Client,
    namespace: String,
    name: String,
    me: String,
    duration: Duration,
    retry: Duration,
    leading: watch::Sender<bool>,
) {
    let leases: Api<Lease> = Api::namespaced(client, &namespace);
    let name = name.as_str();
    let mut last_renewed: Option<std::time::Instant> = None;
    loop {
        let now_leading = match round(&leases, name, &me, duration).await {
            Ok(true) => {
                last_renewed = Some(std::time::Instant::now());
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(%e, lease = name, "leader election round failed");
                // Keep leading only while the lease cannot have expired.
                last_renewed.is_some_and(|t| t.elapsed() < duration - retry)
            }
        };
        if *leading.borrow() != now_leading {
            tracing::info!(lease = name, identity = %me, leading = now_leading, "leadership changed");
            let _ = leading.send(now_leading);
        }
        tokio::time::sleep(retry).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn a_lease_is_taken_only_when_free_mine_or_expired() {
        let free = LeaseSpec::default();
        assert!(may_hold(&free, "a", at(100)));
        let theirs = held(None, "b", at(100), Duration::from_secs(15));
        assert!(may_hold(&theirs, "b", at(101)), "the holder renews");
        assert!(!may_hold(&theirs, "a", at(110)), "still fresh");
        assert!(may_hold(&theirs, "a", at(116)), "expired");
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let first = held(None, "a", at(100), Duration::from_secs(15));
        assert_eq!(first.lease_transitions, Some(1));
        let renewed = held(Some(&first), "a", at(105), Duration::from_secs(15));
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, first.acquire_time);
        let taken = held(Some(&renewed), "b", at(130), Duration::from_secs(15));
        assert_eq!(taken.lease_transitions, Some(2));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
    }
}
