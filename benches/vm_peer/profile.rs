//! Why the node-level aims missed, measured: where a daemon's resident
//! memory sits (from `/proc/PID/smaps`), and where ferrolvm's concurrent
//! thick creates spend their time (its group commits' own timings, from
//! its debug log).

/// One mapping of `/proc/PID/smaps`.
struct Vma {
    start: u64,
    end: u64,
    perms: String,
    path: String,
    rss_kib: u64,
}

impl Vma {
    fn size(&self) -> u64 {
        self.end - self.start
    }

    fn anonymous(&self) -> bool {
        self.path.is_empty()
    }
}

fn vmas(pid: u32) -> Vec<Vma> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                let perms = f.next().unwrap_or_default().to_string();
                let path = f.nth(3).unwrap_or_default().to_string();
                out.push(Vma {
                    start,
                    end,
                    perms,
                    path,
                    rss_kib: 0,
                });
                continue;
            }
        }
        if first == "Rss:" {
            if let (Some(v), Some(last)) = (f.next(), out.last_mut()) {
                last.rss_kib = v.parse().unwrap_or(0);
            }
        }
    }
    out
}

/// glibc reserves each per-thread malloc arena as one aligned 64 MiB
/// mapping and opens it read-write as it grows: a read-write part
/// followed by its inaccessible rest.
const ARENA: u64 = 64 << 20;

/// The kinds of resident memory, in the order printed.
pub const KINDS: [&str; 6] = [
    "binary and libraries (file-backed)",
    "main heap (brk)",
    "thread stacks (anonymous, below a guard page)",
    "glibc per-thread malloc arenas (64 MiB reservations)",
    "other anonymous (mmap'd allocations, Go's heap)",
    "main thread's stack",
];

/// Resident KiB of `pid` by [`KINDS`], and its thread count.
pub fn memory_by_kind(pid: u32) -> ([u64; 6], u64) {
    let v = vmas(pid);
    let mut kib = [0u64; 6];
    for (i, m) in v.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &v[p]);
        let next = v.get(i + 1);
        let kind = if m.path == "[heap]" {
            1
        } else if m.path == "[stack]" {
            5
        } else if !m.anonymous() {
            0
        } else if next.is_some_and(|n| {
            n.start == m.end && n.perms == "---p" && n.anonymous() && m.size() + n.size() == ARENA
        }) {
            3
        } else if prev.is_some_and(|p| {
            p.end == m.start && p.perms == "---p" && p.anonymous() && p.size() == 4096
        }) {
            2
        } else {
            4
        };
        kib[kind] += m.rss_kib;
    }
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    (kib, threads)
}

/// One thick group commit as ferrolvm logged it: jobs, and milliseconds
/// from its start to the end of each phase.
#[derive(Debug, Default)]
pub struct Batch {
    pub jobs: u64,
    pub opened: f64,
    pub planned: f64,
    pub committed: f64,
    pub activated: f64,
}

fn field(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let v: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    v.parse().ok()
}

/// The group commits in `log` (ferrolvm's stderr with
/// `ferrolvm::node::engine::create=debug`, no colours).
pub fn batches(log: &str) -> Vec<Batch> {
    log.lines()
        .filter(|l| l.contains("group commit"))
        .filter_map(|l| {
            Some(Batch {
                jobs: field(l, "jobs")? as u64,
                opened: field(l, "opened_ms")?,
                planned: field(l, "planned_ms")?,
                committed: field(l, "committed_ms")?,
                activated: field(l, "activated_ms")?,
            })
        })
        .collect()
}
