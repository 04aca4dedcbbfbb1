//! Notices changes to VGs made by anyone, lvm2 on the host included, by
//! polling the metadata-area headers of the VG's PVs: one sector per area
//! per tick, and a full read only when a header moved.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::lvm::disk::{BlockDisk, Disk};
use crate::lvm::host::Host;
use crate::lvm::scan::scan_paths;

/// Where a VG's metadata lives, and what its headers said last time.
#[derive(Default, Clone, PartialEq, Eq)]
struct Seen {
    seqno: u32,
    /// (device, mda start) of every area of the VG's PVs.
    areas: Vec<(PathBuf, u64)>,
    /// Raw header sectors, in `areas` order.
    headers: Vec<Vec<u8>>,
}

fn headers(areas: &[(PathBuf, u64)]) -> Vec<Vec<u8>> {
    areas
        .iter()
        .map(|(p, at)| {
            BlockDisk::open(p, false)
                .and_then(|d| d.read_at(*at, 512))
                .unwrap_or_default()
        })
        .collect()
}

fn look(host: &Host, vg: &str) -> Seen {
    let scan = scan_paths(&host.candidate_devices());
    let Some(found) = scan.vg(vg) else {
        return Seen::default();
    };
    let mut areas = Vec::new();
    for &dev in found.pv_devs.values() {
        if let Some(r) = scan.reads.iter().find(|r| r.dev == dev) {
            areas.extend(
                r.mdas
                    .iter()
                    .map(|m| (scan.devices[dev].path.clone(), m.start)),
            );
        }
    }
    let headers = headers(&areas);
    Seen {
        seqno: found.vg.seqno,
        areas,
        headers,
    }
}

/// A running watcher; stops when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Calls `on_change(vg, seqno)` whenever a watched VG's committed metadata
/// changes (seqno 0: the VG disappeared), checking every `every`.
pub fn watch(
    host: Host,
    vgs: Vec<String>,
    every: Duration,
    on_change: impl Fn(&str, u32) + Send + 'static,
) -> Watcher {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut seen: HashMap<String, Seen> =
            vgs.iter().map(|v| (v.clone(), look(&host, v))).collect();
        while !flag.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            for vg in &vgs {
                let last = seen.get(vg).cloned().unwrap_or_default();
                if !last.areas.is_empty() && headers(&last.areas) == last.headers {
                    continue;
                }
                let now = look(&host, vg);
                if now.seqno != last.seqno {
                    on_change(vg, now.seqno);
                }
                seen.insert(vg.clone(), now);
            }
        }
    });
    Watcher {
        stop,
        thread: Some(thread),
    }
}
