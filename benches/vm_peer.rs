//! Benchmark inside the VM (not a test): TopoLVM's own `lvmd` (v0.41.0)
//! against `ferrolvm lvmd`, both driven by one client over lvmd's gRPC
//! protocol on Unix sockets, on two identical VGs made by lvm2 (each with a
//! thick class and a thin class on a pool), interleaved in one run:
//! CreateLV thick and thin, ResizeLV, RemoveLV and GetFreeBytes, one caller
//! and 32 concurrent callers; each daemon's memory idle and at its peak;
//! the processes each spawns per operation, from the kernel's process
//! accounting (one record per exited process; threads make none, and kernel
//! threads, parent kthreadd, are listed apart and not counted).
//! Run with `cargo run -p vm-tests -- bench-peer [N]`.

mod common;
#[path = "vm_peer/profile.rs"]
mod profile;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use ferrolvm_proto::lvmd::lv_service_client::LvServiceClient;
use ferrolvm_proto::lvmd::vg_service_client::VgServiceClient;
use ferrolvm_proto::lvmd::*;
use tonic::transport::Channel;

/// 100 thick LVs grown to twice this fit the 8 GiB VG beside the pool.
const LV_BYTES: i64 = 16 << 20;
const CALLERS: usize = 32;

/// One daemon under test: its process and its channel.
struct Peer {
    name: &'static str,
    child: Child,
    ch: Channel,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A VG of one loop device with a thin pool, made by lvm2 the same way for
/// both peers.
fn make_vg(dir: &Path, vg: &str) -> Loop {
    let l = make_loop(dir, vg, 8192);
    let dev = l.0.display().to_string();
    run(lvm().args(["vgcreate", vg, &dev]));
    run(lvm().args(["lvcreate", "-T", "-L", "1g", &format!("{vg}/pool")]));
    l
}

/// The same two classes for both; `thick_extra` adds keys to the thick one.
fn config(vg: &str, thick_extra: &str) -> String {
    format!(
        "device-classes:\n  - {{name: thick, volume-group: {vg}, default: true, spare-gb: 0{thick_extra}}}\n  - {{name: thin, volume-group: {vg}, type: thin, thin-pool: {{name: pool, overprovision-ratio: 10}}}}\n"
    )
}

async fn connect(sock: &Path, child: &mut Child) -> Channel {
    for _ in 0..600 {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("{} exited before serving: {st}", sock.display());
        }
        if sock.exists() {
            if let Ok(ch) = ferrolvm::csi::unix_channel(sock.to_path_buf()).await {
                return ch;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", sock.display());
}

fn lv(ch: &Channel) -> LvServiceClient<Channel> {
    LvServiceClient::new(ch.clone())
}

async fn create(ch: Channel, name: String, class: &'static str) -> Duration {
    let t = Instant::now();
    lv(&ch)
        .create_lv(CreateLvRequest {
            name: name.clone(),
            device_class: class.into(),
            size_bytes: LV_BYTES,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("CreateLV {name}: {e}"));
    t.elapsed()
}

async fn resize(ch: Channel, name: String, class: &'static str) -> Duration {
    let t = Instant::now();
    let r = lv(&ch)
        .resize_lv(ResizeLvRequest {
            name: name.clone(),
            device_class: class.into(),
            size_bytes: 2 * LV_BYTES,
        })
        .await
        .unwrap_or_else(|e| panic!("ResizeLV {name}: {e}"))
        .into_inner();
    assert!(r.size_bytes >= 2 * LV_BYTES, "ResizeLV {name}: {r:?}");
    t.elapsed()
}

async fn remove(ch: Channel, name: String, class: &'static str) -> Duration {
    let t = Instant::now();
    lv(&ch)
        .remove_lv(RemoveLvRequest {
            name: name.clone(),
            device_class: class.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveLV {name}: {e}"));
    t.elapsed()
}

async fn free(ch: Channel, _: String, class: &'static str) -> Duration {
    let t = Instant::now();
    VgServiceClient::new(ch)
        .get_free_bytes(GetFreeBytesRequest {
            device_class: class.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("GetFreeBytes: {e}"));
    t.elapsed()
}

/// BSD process accounting (acct(2), v3 records of 64 bytes): every process
/// that exits while it is on is one record, whatever spawned it; threads
/// are not processes and make none. A record is written as the process
/// exits, before its parent can reap it, so a call that waited for its
/// command has its record on file when it returns.
struct Accounting {
    path: PathBuf,
    read: usize,
}

impl Accounting {
    fn start(path: PathBuf) -> Accounting {
        std::fs::write(&path, b"").unwrap();
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        let rc = unsafe { libc::acct(c.as_ptr()) };
        assert_eq!(rc, 0, "acct: {}", std::io::Error::last_os_error());
        Accounting { path, read: 0 }
    }

    /// The command names (`ac_comm`, the last 16 bytes of a record) of
    /// the processes that exited since the last call. Kernel threads
    /// (parent `kthreadd`, pid 2) are bracketed and lose their instance
    /// suffix: removing a dm device ends its `kdmflush/MAJ:MIN` worker,
    /// which no daemon spawned.
    fn take(&mut self) -> Vec<String> {
        let bytes = std::fs::read(&self.path).unwrap();
        let new = &bytes[self.read..];
        assert_eq!(new.len() % 64, 0, "acct records are 64 bytes (v3)");
        let names = new
            .chunks(64)
            .map(|r| {
                assert_eq!(r[1], 3, "acct record version");
                let ppid = u32::from_ne_bytes(r[20..24].try_into().unwrap());
                let comm = &r[48..64];
                let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
                let name = String::from_utf8_lossy(&comm[..end]).into_owned();
                if ppid == KTHREADD {
                    format!("[{}]", name.split('/').next().unwrap_or_default())
                } else {
                    name
                }
            })
            .collect();
        self.read = bytes.len();
        names
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        // SAFETY: a null path turns accounting off.
        unsafe { libc::acct(std::ptr::null()) };
    }
}

#[derive(Default)]
struct Timings {
    times: Vec<Duration>,
    wall: Duration,
    spawned: std::collections::BTreeMap<String, usize>,
    ops: usize,
}

/// The parent of every kernel thread.
const KTHREADD: u32 = 2;

impl Timings {
    /// Processes, not kernel threads.
    fn processes(&self) -> usize {
        self.spawned
            .iter()
            .filter(|(k, _)| !k.starts_with('['))
            .map(|(_, n)| n)
            .sum()
    }

    /// "lvm×90, [kdmflush]×30": which processes and kernel threads
    /// ended, so that a record the daemon did not cause is seen as such.
    fn names(&self) -> String {
        let v: Vec<String> = self
            .spawned
            .iter()
            .map(|(k, n)| format!("{k}×{n}"))
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    Resize,
    Remove,
    Free,
}

async fn call(op: Op, ch: Channel, name: String, class: &'static str) -> Duration {
    match op {
        Op::Create => create(ch, name, class).await,
        Op::Resize => resize(ch, name, class).await,
        Op::Remove => remove(ch, name, class).await,
        Op::Free => free(ch, name, class).await,
    }
}

/// `op` on every one of `names` at once, counting the processes that
/// exited meanwhile (only one peer works at a time, and nothing else runs
/// in the VM).
async fn phase(
    peer: &Peer,
    op: Op,
    names: &[String],
    class: &'static str,
    acct: &mut Accounting,
) -> Timings {
    acct.take();
    let wall = Instant::now();
    let tasks: Vec<_> = names
        .iter()
        .map(|n| tokio::spawn(call(op, peer.ch.clone(), n.clone(), class)))
        .collect();
    let mut times = Vec::new();
    for t in tasks {
        times.push(t.await.unwrap());
    }
    Timings {
        ops: times.len(),
        times,
        wall: wall.elapsed(),
        spawned: acct
            .take()
            .into_iter()
            .fold(Default::default(), |mut m, n| {
                *m.entry(n).or_default() += 1;
                m
            }),
    }
}

fn row(what: &str, topolvm: &Timings, ferro: &Timings) -> f64 {
    let (tm, tp) = stats(topolvm.times.clone());
    let (fm, fp) = stats(ferro.times.clone());
    println!(
        "| {what} | {tm:.2} ms | {tp:.2} ms | {:.2} s | {fm:.2} ms | {fp:.2} ms | {:.2} s | {:.1}x | {:.2} | {:.2} |",
        topolvm.wall.as_secs_f64(),
        ferro.wall.as_secs_f64(),
        tm / fm,
        topolvm.processes() as f64 / topolvm.ops as f64,
        ferro.processes() as f64 / ferro.ops as f64,
    );
    tm / fm
}

/// `ferrolvm lvmd` on `config` and `socket`, its log (warnings, and the
/// group commits' timings) to `log`, `env` added.
fn ferrolvm_lvmd(
    bin: &str,
    config: &Path,
    socket: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> Child {
    Command::new(bin)
        .args(["lvmd", "--config", config.to_str().unwrap()])
        .args(["--socket", socket.to_str().unwrap()])
        .env("FERROLVM_LOG", "warn,ferrolvm::node::engine::create=debug")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("ferrolvm lvmd")
}

fn log_len(log: &Path) -> usize {
    std::fs::read(log).map(|b| b.len()).unwrap_or(0)
}

fn log_since(log: &Path, from: usize) -> String {
    let b = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(b.get(from..).unwrap_or_default()).into_owned()
}

/// Where the concurrent thick creates' time went: each group commit's
/// phases as ferrolvm timed them, against the row's wall time.
fn batch_profile(label: &str, wall: Duration, threads: u64, log: &str) {
    let batches = profile::batches(log);
    println!();
    println!("| ferrolvm's group commits during \"{label}\" | jobs | session: lock, scan, parse | model | commit (write, flush) | activations (dm, zero the first 4 KiB) | total |");
    println!("|---|---|---|---|---|---|---|");
    let mut sum = 0.0;
    for (i, b) in batches.iter().enumerate() {
        sum += b.activated;
        println!(
            "| batch {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms ({:.1} per volume) | {:.1} ms |",
            i + 1,
            b.jobs,
            b.opened,
            b.planned - b.opened,
            b.committed - b.planned,
            b.activated - b.committed,
            (b.activated - b.committed) / b.jobs.max(1) as f64,
            b.activated
        );
    }
    println!(
        "\nThe row's wall time {:.1} ms, its group commits {:.1} ms of it; {threads} threads in ferrolvm's lvmd after the row.",
        wall.as_secs_f64() * 1e3,
        sum
    );
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    for w in warnings.iter().take(5) {
        println!("ferrolvm logged: {w}");
    }
}

/// A lever's label, the binary (None: not in the VM) and its environment.
type Variant<'a> = (
    &'static str,
    Option<&'a str>,
    &'static [(&'static str, &'static str)],
);

/// The memory levers, each alone on a fresh `ferrolvm lvmd` (the race's
/// daemons are gone): the 30-caller rows of every kind, then idle, peak
/// and the resident memory by kind, for the glibc build as raced (one
/// malloc arena, `src/main.rs`), with glibc's default arena count, and
/// for the static musl build the image ships.
fn memory_levers(rt: &tokio::runtime::Runtime, dir: &Path, ferro: &str, config: &Path, n: usize) {
    let stat = static_binary();
    let variants: [Variant; 3] = [
        (
            "glibc build, one malloc arena (as raced above)",
            Some(ferro),
            &[],
        ),
        (
            "glibc build, glibc's default arenas (MALLOC_ARENA_MAX=16: 8 per core)",
            Some(ferro),
            &[("MALLOC_ARENA_MAX", "16")],
        ),
        ("static musl build (the image's)", stat.as_deref(), &[]),
    ];
    let callers = n.min(CALLERS);
    println!("| memory lever alone: {callers} concurrent callers of each kind | idle VmRSS | peak VmHWM | CreateLV thick, {callers} at once: wall | threads after | {} |", profile::KINDS.join(" | "));
    println!(
        "|---|---|---|---|---|{}",
        "---|".repeat(profile::KINDS.len())
    );
    let mut acct = Accounting::start(dir.join("acct-levers"));
    for (v, (label, bin, env)) in variants.into_iter().enumerate() {
        let Some(bin) = bin else {
            println!("| {label} | not measured: no static build in the VM |");
            continue;
        };
        let sock = dir.join(format!("lever-{v}.sock"));
        let mut child = ferrolvm_lvmd(bin, config, &sock, &dir.join(format!("lever-{v}.log")), env);
        let ch = rt.block_on(connect(&sock, &mut child));
        let peer = Peer {
            name: label,
            child,
            ch,
        };
        std::thread::sleep(Duration::from_secs(1));
        let idle = status_kib(peer.child.id(), "VmRSS:");
        let mut create_wall = Duration::ZERO;
        for (op, class, tag) in [
            (Op::Create, "thick", "k"),
            (Op::Resize, "thick", "k"),
            (Op::Remove, "thick", "k"),
            (Op::Create, "thin", "t"),
            (Op::Resize, "thin", "t"),
            (Op::Remove, "thin", "t"),
        ] {
            let names: Vec<String> = (0..callers).map(|i| format!("m{v}{tag}-{i}")).collect();
            let t = rt.block_on(phase(&peer, op, &names, class, &mut acct));
            if matches!(op, Op::Create) && class == "thick" {
                create_wall = t.wall;
            }
        }
        let (kinds, threads) = profile::memory_by_kind(peer.child.id());
        let by_kind: Vec<String> = kinds
            .iter()
            .map(|k| format!("{:.1} MiB", *k as f64 / 1024.0))
            .collect();
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.0} ms | {threads} | {} |",
            peer.name,
            idle as f64 / 1024.0,
            status_kib(peer.child.id(), "VmHWM:") as f64 / 1024.0,
            create_wall.as_secs_f64() * 1e3,
            by_kind.join(" | ")
        );
    }
    println!();
}

fn main() {
    let n = vm_bench_count("bench-peer");
    let ferro = env!("CARGO_BIN_EXE_ferrolvm");
    let lvmd = std::env::var("TOPOLVM_LVMD").unwrap_or_else(|_| "/usr/local/bin/lvmd".into());
    let dir = tempfile::tempdir().unwrap();
    let _a = make_vg(dir.path(), "peer-topolvm");
    let _b = make_vg(dir.path(), "peer-ferrolvm");
    // lvmd runs lvm directly: in a pod it enters the host's namespaces with
    // nsenter first, one process more per command, which is not counted here.
    let lvm_path = sh("command -v lvm");
    let tconf = dir.path().join("lvmd.yaml");
    let tsock = dir.path().join("topolvm.sock");
    std::fs::write(
        &tconf,
        format!(
            "socket-name: {}\nlvm-command-prefix: [\"{lvm_path}\"]\n{}",
            tsock.display(),
            config("peer-topolvm", "")
        ),
    )
    .unwrap();
    let fconf = dir.path().join("ferrolvm.yaml");
    let fsock = dir.path().join("ferrolvm.sock");
    // ferrolvm makes a deleted volume's extents unreadable before reuse;
    // lvmd does not. Discard (hole punching on these tmpfs-backed loop
    // devices) keeps that work, off the answer's path, from filling the
    // VM's memory the way zeroing 3 GiB would.
    std::fs::write(&fconf, config("peer-ferrolvm", ", wipe: discard")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut tchild = Command::new(&lvmd)
        .args(["--config", tconf.to_str().unwrap()])
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("lvmd.log")).unwrap())
        .spawn()
        .expect("TopoLVM lvmd");
    let flog = dir.path().join("ferrolvm.log");
    let mut fchild = ferrolvm_lvmd(ferro, &fconf, &fsock, &flog, &[]);
    let tch = rt.block_on(connect(&tsock, &mut tchild));
    let fch = rt.block_on(connect(&fsock, &mut fchild));
    let peers = [
        Peer {
            name: "TopoLVM lvmd",
            child: tchild,
            ch: tch,
        },
        Peer {
            name: "ferrolvm lvmd",
            child: fchild,
            ch: fch,
        },
    ];
    std::thread::sleep(Duration::from_secs(1));
    let idle: Vec<u64> = peers
        .iter()
        .map(|p| status_kib(p.child.id(), "VmRSS:"))
        .collect();
    let mut acct = Accounting::start(dir.path().join("acct"));
    let ops = [
        ("CreateLV thick", Op::Create, "thick", "k"),
        ("ResizeLV thick", Op::Resize, "thick", "k"),
        ("RemoveLV thick", Op::Remove, "thick", "k"),
        ("CreateLV thin", Op::Create, "thin", "t"),
        ("ResizeLV thin", Op::Resize, "thin", "t"),
        ("RemoveLV thin", Op::Remove, "thin", "t"),
        ("GetFreeBytes thick", Op::Free, "thick", "k"),
    ];
    println!("| lvmd protocol, {n} calls per row, in the VM under TCG | TopoLVM median | TopoLVM p99 | TopoLVM total | ferrolvm median | ferrolvm p99 | ferrolvm total | TopoLVM/ferrolvm (median) | TopoLVM processes per call | ferrolvm processes per call |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    let mut seen = Vec::new();
    let mut profiled = None;
    for callers in [1, CALLERS] {
        for (what, op, class, tag) in ops {
            // Interleaved: every chunk of `callers` calls goes to one peer,
            // then the same to the other, so drift in the VM hits both.
            let names: Vec<String> = (0..n).map(|i| format!("{tag}{callers}-{i}")).collect();
            let mut t = [Timings::default(), Timings::default()];
            let logged = log_len(&flog);
            for chunk in names.chunks(callers) {
                for (i, p) in peers.iter().enumerate() {
                    let r = rt.block_on(phase(p, op, chunk, class, &mut acct));
                    t[i].times.extend(r.times);
                    t[i].wall += r.wall;
                    for (k, v) in r.spawned {
                        *t[i].spawned.entry(k).or_default() += v;
                    }
                    t[i].ops += r.ops;
                }
            }
            let label = if callers == 1 {
                what.to_string()
            } else {
                format!("{what}, {callers} concurrent callers")
            };
            if callers == CALLERS && what == "CreateLV thick" {
                let threads = profile::memory_by_kind(peers[1].child.id()).1;
                profiled = Some((label.clone(), t[1].wall, threads, log_since(&flog, logged)));
            }
            let ratio = row(&label, &t[0], &t[1]);
            ratios.push((what, callers, ratio));
            seen.push((label, t[0].names(), t[1].names()));
        }
    }
    drop(acct);
    println!();
    println!("| processes and [kernel threads] that exited during the row (acct(2) `ac_comm`) | TopoLVM | ferrolvm |");
    println!("|---|---|---|");
    for (label, t, f) in &seen {
        println!("| {label} | {t} | {f} |");
    }
    if let Some((label, wall, threads, log)) = profiled {
        batch_profile(&label, wall, threads, &log);
    }
    let peak: Vec<u64> = peers
        .iter()
        .map(|p| status_kib(p.child.id(), "VmHWM:"))
        .collect();
    let kinds: Vec<([u64; 6], u64)> = peers
        .iter()
        .map(|p| profile::memory_by_kind(p.child.id()))
        .collect();
    println!();
    println!("| resident memory (VmRSS idle; VmHWM, the peak, after the load) | idle | peak |");
    println!("|---|---|---|");
    for (i, p) in peers.iter().enumerate() {
        println!(
            "| {} | {:.1} MiB | {:.1} MiB |",
            p.name,
            idle[i] as f64 / 1024.0,
            peak[i] as f64 / 1024.0
        );
    }
    println!();
    println!("| resident memory after the load by kind (`/proc/PID/smaps`) | TopoLVM lvmd | ferrolvm lvmd |");
    println!("|---|---|---|");
    for (k, kind) in profile::KINDS.iter().enumerate() {
        println!(
            "| {kind} | {:.1} MiB | {:.1} MiB |",
            kinds[0].0[k] as f64 / 1024.0,
            kinds[1].0[k] as f64 / 1024.0
        );
    }
    println!("| threads | {} | {} |", kinds[0].1, kinds[1].1);
    println!();
    drop(peers);
    memory_levers(&rt, dir.path(), ferro, &fconf, n);
    let pick = |what: &str, callers: usize| {
        ratios
            .iter()
            .find(|r| r.0 == what && r.1 == callers)
            .map(|r| r.2)
            .unwrap()
    };
    println!("RATIO lvmd-create-thick {:.1}", pick("CreateLV thick", 1));
    println!(
        "RATIO lvmd-create-thick-32 {:.1}",
        pick("CreateLV thick", CALLERS)
    );
    println!(
        "RATIO lvmd-memory {:.1}",
        peak[0] as f64 / peak[1].max(1) as f64
    );
}
