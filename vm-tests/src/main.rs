//! `cargo run -p vm-tests -- COMMAND`: boots a Debian kernel in QEMU under
//! TCG with an initramfs holding ferrolvm, lvm2, dmsetup, thin tools and
//! filesystem tools, and runs something inside it.
//!
//! - `test`: the device-mapper test suite (`tests/dm.rs`, its `#[ignore]`d
//!   tests), streamed, ending with `N passed, N failed`.
//! - `run-script FILE`: FILE run by `/bin/sh` as root in the same kind of VM.
//! - `demo`: a walk through the main job, step by step.
//! - `bench [N]`: `benches/vm_activate.rs` in the VM (ferrolvm vs lvm2).
//! - `bench-csi [N]`: `benches/vm_csi.rs` (the CSI path, beside lvm2).
//! - `bench-peer [N] [CLAIMS]`: the race against TopoLVM v0.41.0 (built by
//!   `vm-tests/peer/build.sh`): `benches/vm_peer.rs`, its `lvmd` against
//!   `ferrolvm lvmd` over lvmd's protocol, then `benches/vm_cluster.rs` with
//!   its controller and nodes beside ferrolvm's on the cluster; the RATIO
//!   lines of both at the end.
//! - `bench-lvmd [N]`: the node-level half of `bench-peer` alone.
//! - `csi-sanity`: the CSI sanity suite against `ferrolvm node --standalone`.
//! - `cluster-test`: the Kubernetes suite (`tests/cluster.rs`) against a real
//!   control plane on 127.0.0.1 (see `cluster.rs`).
//! - `cluster-script FILE`: FILE run by bash while that cluster is up.
//! - `cluster-demo`: the talk's demo (capacity-aware scheduling) on it.
//! - `cluster-bench [N] [DRIVER...]`: N claims with pods at once on it
//!   (`benches/vm_cluster.rs`), for `ferrolvm` (the default) and/or `topolvm`.

mod agent;
mod cluster;
mod cpio;
mod image;
mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

const DEMO: &str = include_str!("demo.sh");
const SANITY: &str = include_str!("sanity.sh");

/// The csi-sanity release the suite runs.
const CSI_SANITY_VERSION: &str = "v5.6.0";

/// csi-sanity, built with `go install` into the cache once (or taken from
/// FERROLVM_CSI_SANITY).
fn csi_sanity() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FERROLVM_CSI_SANITY")
        .map(PathBuf::from)
        .filter(|p| p.exists())
    {
        return Ok(p);
    }
    let bin = cache_dir().join("bin").join(CSI_SANITY_VERSION);
    let exe = bin.join("csi-sanity");
    if !exe.exists() {
        eprintln!("vm-tests: go install csi-sanity@{CSI_SANITY_VERSION}");
        image::run(
            Command::new("go")
                .arg("install")
                .arg(format!(
                    "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@{CSI_SANITY_VERSION}"
                ))
                .env("GOBIN", &bin),
        )?;
    }
    Ok(exe)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("vm-tests lives in the workspace")
        .to_path_buf()
}

fn cache_dir() -> PathBuf {
    std::env::var_os("FERROLVM_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/vm"))
}

/// Builds the project's release binaries and returns the executables of
/// `--test` targets named in `tests`. `features` go to both builds (the
/// device-mapper suite needs `failpoints`; the demo and benchmarks run the
/// binary operators get).
fn build(tests: &[&str], features: &[&str]) -> Result<(PathBuf, Vec<(String, PathBuf)>), String> {
    let ws = workspace();
    let features = features.join(",");
    image::run(
        Command::new("cargo")
            .args(["build", "--release", "-p", "ferrolvm", "--bin", "ferrolvm"])
            .args(["--features", &features])
            .current_dir(&ws),
    )?;
    let mut found = Vec::new();
    if !tests.is_empty() {
        // Benchmarks build with `cargo bench`, which implies --release.
        let bench = tests.iter().any(|t| t.starts_with("vm_"));
        let mut cmd = Command::new("cargo");
        cmd.arg(if bench { "bench" } else { "test" });
        if !bench {
            cmd.arg("--release");
        }
        cmd.args(["-p", "ferrolvm", "--no-run", "--message-format=json"])
            .args(["--features", &features])
            .current_dir(&ws);
        for t in tests {
            cmd.args([if bench { "--bench" } else { "--test" }, t]);
        }
        let out = image::run(&mut cmd)?;
        for line in out.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let (Some(name), Some(exe)) =
                (v["target"]["name"].as_str(), v["executable"].as_str())
            {
                if tests.contains(&name) {
                    found.push((name.to_string(), PathBuf::from(exe)));
                }
            }
        }
        if found.len() != tests.len() {
            return Err(format!("cargo built {found:?}, expected {tests:?}"));
        }
    }
    Ok((ws.join("target/release/ferrolvm"), found))
}

fn boot(payload: &str, tests: &[&str], echo: bool) -> Result<qemu::Outcome, String> {
    boot_with(payload, tests, &[], echo, 2048)
}

/// The kernel and an initramfs running `payload`, with the project's
/// binaries, the `tests` binaries (built with `features`) and `data` files.
fn guest_image(
    payload: &str,
    tests: &[&str],
    features: &[&str],
    extra: Vec<(String, PathBuf)>,
    data: &[(String, Vec<u8>, u32)],
) -> Result<(PathBuf, PathBuf), String> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    let (ferrolvm, test_bins) = build(tests, features)?;
    let (kernel, moddir) = image::kernel(&cache)?;
    // Also at its host path: test binaries find it through CARGO_BIN_EXE_ferrolvm.
    let mut all = vec![
        ("/usr/local/bin/ferrolvm".to_string(), ferrolvm.clone()),
        (ferrolvm.display().to_string(), ferrolvm),
    ];
    all.extend(extra);
    for (name, exe) in test_bins {
        all.push((format!("/usr/local/bin/{name}-tests"), exe));
    }
    // csi-sanity is on PATH whenever it was built, for run-script too.
    if let Some(sanity) = SANITY_BIN.get().cloned().or_else(|| csi_sanity().ok()) {
        all.push(("/usr/local/bin/csi-sanity".into(), sanity));
    }
    let initrd = cache.join("initramfs.cpio");
    image::initramfs(&cache, &moddir, &all, data, payload, &initrd)?;
    Ok((kernel, initrd))
}

/// `memory_mib` also bounds the guest's RAM-backed root, where loop files live.
fn boot_with(
    payload: &str,
    tests: &[&str],
    features: &[&str],
    echo: bool,
    memory_mib: u32,
) -> Result<qemu::Outcome, String> {
    boot_extra(payload, tests, features, Vec::new(), echo, memory_mib)
}

/// [`boot_with`], with `extra` (guest path, host path) binaries.
fn boot_extra(
    payload: &str,
    tests: &[&str],
    features: &[&str],
    extra: Vec<(String, PathBuf)>,
    echo: bool,
    memory_mib: u32,
) -> Result<qemu::Outcome, String> {
    let (kernel, initrd) = guest_image(payload, tests, features, extra, &[])?;
    eprintln!("vm-tests: booting {} under TCG", kernel.display());
    qemu::boot(
        &kernel,
        &initrd,
        memory_mib,
        Duration::from_secs(45 * 60),
        echo,
    )
}

/// The whole cluster: the control plane on the host, the VM with its two
/// nodes, `ferrolvm controller` and the sidecars; and the `tests` built.
fn with_cluster(tests: &[&str]) -> Result<(cluster::Cluster, Vec<(String, PathBuf)>), String> {
    with_cluster_and(tests, None)
}

/// [`with_cluster`], and with `peer`, TopoLVM's controller and nodes beside
/// ferrolvm's (the race of issue 12).
fn with_cluster_and(
    tests: &[&str],
    peer: Option<&cluster::Peer>,
) -> Result<(cluster::Cluster, Vec<(String, PathBuf)>), String> {
    let (ferrolvm, built) = build(tests, &[])?;
    let mut c = cluster::Cluster::start(&cache_dir())?;
    c.install()?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut bins = cluster::guest_binaries(&c, &me)?;
    let mut data = cluster::guest_data(&c)?;
    if let Some(p) = peer {
        c.install_peer(p)?;
        bins.extend(p.guest_binaries());
        data.extend(c.peer_guest_data()?);
    }
    let (kernel, initrd) = guest_image(cluster::GUEST_SCRIPT, &[], &[], bins, &data)?;
    c.boot_nodes(&kernel, &initrd)?;
    c.start_controller(&ferrolvm)?;
    if let Some(p) = peer {
        c.start_peer(p)?;
    }
    Ok((c, built))
}

/// Issue 12's race against TopoLVM v0.41.0: the node level
/// (`benches/vm_peer.rs`, `ops` calls of each kind, in its own VM), then the
/// cluster level (`benches/vm_cluster.rs`, `claims` claims with pods, both
/// drivers on one cluster); ends with every `RATIO` line of both.
/// `benches/vm_activate.rs` in the VM, with the static build beside the
/// glibc one: the static-binary lever races the two.
fn bench(n: &str) -> Result<(), String> {
    let payload = format!("/usr/local/bin/vm_activate-tests {n}\n");
    let fixed = image::run(
        Command::new("bash")
            .arg("scripts/build-static.sh")
            .current_dir(workspace()),
    )?;
    let extra = vec![(
        "/usr/local/bin/ferrolvm-static".to_string(),
        workspace().join(fixed.trim()),
    )];
    let o = boot_extra(&payload, &["vm_activate"], &[], extra, true, 2048)?;
    if o.code == Some(0) {
        Ok(())
    } else {
        Err("the benchmark failed".into())
    }
}

/// The node-level race alone (`bench-lvmd`): TopoLVM's lvmd against
/// `ferrolvm lvmd` in one VM; returns its output and the peer's build.
fn bench_lvmd(ops: &str) -> Result<(qemu::Outcome, cluster::Peer), String> {
    let peer = cluster::Peer::build(&cache_dir())?;
    let payload = format!("/usr/local/bin/vm_peer-tests {ops}\n");
    // The static build too, for the memory levers.
    let fixed = image::run(
        Command::new("bash")
            .arg("scripts/build-static.sh")
            .current_dir(workspace()),
    )?;
    let extra = vec![
        ("/usr/local/bin/lvmd".to_string(), peer.bin("lvmd")),
        (
            "/usr/local/bin/ferrolvm-static".to_string(),
            workspace().join(fixed.trim()),
        ),
    ];
    let node = boot_extra(&payload, &["vm_peer"], &[], extra, true, 6144)?;
    if node.code != Some(0) {
        return Err("the node-level race failed".into());
    }
    Ok((node, peer))
}

fn bench_peer(ops: &str, claims: &str) -> Result<(), String> {
    let (node, peer) = bench_lvmd(ops)?;
    let (mut c, bins) = with_cluster_and(&["vm_cluster"], Some(&peer))?;
    let mut cmd = Command::new(&bins[0].1);
    cmd.args([claims, "ferrolvm", "topolvm"]);
    let (ok, lines) = cluster::run_streaming(&mut c, &mut cmd)?;
    drop(c);
    if !ok {
        return Err("the cluster-level race failed".into());
    }
    println!("\n## Aims, TopoLVM's figure / ferrolvm's");
    let ratios: Vec<&String> = node
        .lines
        .iter()
        .chain(&lines)
        .filter(|l| l.starts_with("RATIO "))
        .collect();
    for l in &ratios {
        println!("{l}");
    }
    if ratios.len() < 4 {
        return Err(format!("expected 4 RATIO lines, got {}", ratios.len()));
    }
    Ok(())
}

static SANITY_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// One csi-sanity run as `sanity.sh` reports it.
#[derive(Debug, Default, Clone, PartialEq)]
struct SanityRun {
    config: String,
    passed: u64,
    failed: u64,
    exit: Option<i32>,
}

/// The runs in `sanity.sh`'s output: a `==== csi-sanity: CONFIG` header,
/// csi-sanity's `N Passed | N Failed` summary, `==== csi-sanity exit status: N`.
fn sanity_runs(lines: &[String]) -> Vec<SanityRun> {
    let mut runs: Vec<SanityRun> = Vec::new();
    for l in lines {
        if let Some(config) = l.strip_prefix("==== csi-sanity: ") {
            runs.push(SanityRun {
                config: config.trim().to_string(),
                ..Default::default()
            });
        } else if let Some(code) = l.strip_prefix("==== csi-sanity exit status: ") {
            if let Some(r) = runs.last_mut() {
                r.exit = code.trim().parse().ok();
            }
        } else if let Some(rest) = l
            .split("SUCCESS! -- ")
            .nth(1)
            .or_else(|| l.split("FAIL! -- ").nth(1))
        {
            let num = |word: &str| {
                rest.split('|')
                    .find_map(|p| {
                        p.trim()
                            .strip_suffix(word)
                            .and_then(|n| n.trim().parse::<u64>().ok())
                    })
                    .unwrap_or(0)
            };
            if let Some(r) = runs.last_mut() {
                r.passed += num("Passed");
                r.failed += num("Failed");
            }
        }
    }
    runs
}

/// Specs each configuration must pass (csi-sanity v5.6.0; the README lists
/// what is skipped and why). Fewer means specs were skipped or lost.
const SANITY_EXPECTED: &[(&str, u64)] = &[
    ("thick class, mount access", 45),
    ("thin class, mount access (xfs)", 67),
    ("thick class, block access", 45),
];
/// `sanity.sh` runs every configuration this many times in a row.
const SANITY_ROUNDS: usize = 3;

/// Checks every run: each configuration ran `SANITY_ROUNDS` times, exited 0,
/// failed nothing and passed exactly its expected number of specs.
fn check_sanity(runs: &[SanityRun]) -> Result<(u64, u64), String> {
    let mut problems = Vec::new();
    for (config, expected) in SANITY_EXPECTED {
        let mine: Vec<&SanityRun> = runs.iter().filter(|r| r.config == *config).collect();
        if mine.len() != SANITY_ROUNDS {
            problems.push(format!(
                "{config}: {} runs, expected {SANITY_ROUNDS}",
                mine.len()
            ));
        }
        for r in mine {
            if r.exit != Some(0) || r.failed > 0 || r.passed != *expected {
                problems.push(format!(
                    "{config}: passed {} (expected {expected}), failed {}, exit {:?}",
                    r.passed, r.failed, r.exit
                ));
            }
        }
    }
    let passed = runs.iter().map(|r| r.passed).sum();
    let failed = runs.iter().map(|r| r.failed).sum::<u64>() + problems.len() as u64;
    if problems.is_empty() {
        Ok((passed, failed))
    } else {
        Err(problems.join("; "))
    }
}

fn summarize(lines: &[String]) -> (u64, u64) {
    let (mut passed, mut failed) = (0, 0);
    for l in lines {
        if let Some(rest) = l.strip_prefix("test result: ") {
            let num = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|p| {
                        p.trim()
                            .strip_suffix(word)
                            .and_then(|n| n.trim().rsplit(' ').next().and_then(|n| n.parse().ok()))
                    })
                    .unwrap_or(0)
            };
            passed += num("passed");
            failed += num("failed");
        }
    }
    (passed, failed)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => {
            let filter = args.get(1).cloned().unwrap_or_default();
            let payload = format!("/usr/local/bin/dm-tests --ignored --test-threads=1 {filter}\n");
            boot_with(&payload, &["dm"], &["failpoints"], true, 2048).and_then(|o| {
                let (passed, failed) = summarize(&o.lines);
                println!("{passed} passed, {failed} failed");
                match o.code {
                    Some(0) if failed == 0 && passed > 0 => Ok(()),
                    Some(0) => Err("the VM ran no test".into()),
                    Some(c) => Err(format!("tests failed in the VM (exit {c})")),
                    None => Err("the VM stopped without reporting an exit code".into()),
                }
            })
        }
        Some("cluster-test") => with_cluster(&["cluster"]).and_then(|(mut c, tests)| {
            let (ok, lines) = cluster::run_suite(&mut c, &tests[0].1)?;
            let (passed, failed) = summarize(&lines);
            println!("{passed} passed, {failed} failed");
            match (ok, failed, passed) {
                (true, 0, p) if p > 0 => Ok(()),
                (true, 0, _) => Err("the cluster suite ran no test".into()),
                _ => Err("the cluster suite failed".into()),
            }
        }),
        Some("cluster-script") => match args.get(1) {
            Some(file) => with_cluster(&[]).and_then(|(mut c, _)| {
                match cluster::run_script(&mut c, Path::new(file))? {
                    true => Ok(()),
                    false => Err(format!("{file} failed")),
                }
            }),
            None => Err("usage: vm-tests cluster-script FILE".into()),
        },
        Some("cluster-bench") => {
            let n = args.get(1).map_or("100", String::as_str);
            let drivers: Vec<&str> = match args.get(2..) {
                Some(d) if !d.is_empty() => d.iter().map(String::as_str).collect(),
                _ => vec!["ferrolvm"],
            };
            let peer = match drivers.contains(&"topolvm") {
                true => cluster::Peer::build(&cache_dir()).map(Some),
                false => Ok(None),
            };
            peer.and_then(|peer| with_cluster_and(&["vm_cluster"], peer.as_ref()))
                .and_then(|(mut c, bins)| {
                    let mut cmd = Command::new(&bins[0].1);
                    cmd.arg(n).args(&drivers);
                    match cluster::run_command(&mut c, &mut cmd)? {
                        true => Ok(()),
                        false => Err("the cluster benchmark failed".into()),
                    }
                })
        }
        Some("cluster-demo") => with_cluster(&[]).and_then(|(mut c, _)| {
            let script = cache_dir().join("cluster-demo.sh");
            std::fs::write(&script, cluster::DEMO).map_err(|e| e.to_string())?;
            match cluster::run_script(&mut c, &script)? {
                true => Ok(()),
                false => Err("the cluster demo failed".into()),
            }
        }),
        // Inside the cluster VM: the guest half of vmsh.
        Some("agent") => match args.get(1).and_then(|p| p.parse().ok()) {
            Some(port) => agent::serve(port),
            None => Err("usage: vm-tests agent PORT".into()),
        },
        Some("vmsh") => {
            let cmd = args[1..].join(" ");
            return match agent::run(cluster::AGENT_PORT, &cmd) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(255)
                }
            };
        }
        Some("run-script") => match args.get(1) {
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| format!("{file}: {e}"))
                .and_then(|script| {
                    boot(&script, &[], true).and_then(|o| match o.code {
                        Some(0) => Ok(()),
                        Some(c) => Err(format!("the script exited with {c}")),
                        None => Err("the VM stopped without reporting an exit code".into()),
                    })
                }),
            None => Err("usage: vm-tests run-script FILE".into()),
        },
        Some("bench") => bench(&args.get(1).cloned().unwrap_or_else(|| "100".into())),
        Some("bench-csi") => {
            let n = args.get(1).cloned().unwrap_or_else(|| "100".into());
            let payload = format!("/usr/local/bin/vm_csi-tests {n}\n");
            // 200 ext4 volumes with their journals need room on the guest's RAM-backed root.
            boot_with(&payload, &["vm_csi"], &[], true, 6144).and_then(|o| if o.code == Some(0) { Ok(()) } else { Err("the CSI benchmark failed".into()) })
        }
        Some("bench-lvmd") => {
            bench_lvmd(args.get(1).map_or("100", String::as_str)).map(|_| ())
        }
        Some("bench-peer") => bench_peer(
            args.get(1).map_or("100", String::as_str),
            args.get(2).map_or("100", String::as_str),
        ),
        Some("csi-sanity") => csi_sanity().and_then(|exe| {
            let _ = SANITY_BIN.set(exe);
            boot(SANITY, &[], true).and_then(|o| {
                let runs = sanity_runs(&o.lines);
                for r in &runs {
                    println!("csi-sanity {}: {} passed, {} failed, exit {:?}", r.config, r.passed, r.failed, r.exit);
                }
                let checked = check_sanity(&runs);
                let (passed, failed) = checked.clone().unwrap_or_else(|_| {
                    let p = runs.iter().map(|r| r.passed).sum();
                    (p, runs.iter().map(|r| r.failed).sum::<u64>().max(1))
                });
                println!("{passed} passed, {failed} failed");
                match (o.code, checked) {
                    (Some(0), Ok(_)) => Ok(()),
                    (_, Err(why)) => Err(format!("csi-sanity: {why}")),
                    (code, Ok(_)) => Err(format!("csi-sanity failed in the VM (exit {code:?})")),
                }
            })
        }),
        Some("demo") => boot(DEMO, &[], true).and_then(|o| {
            if o.code == Some(0) {
                Ok(())
            } else {
                Err("the demo failed".into())
            }
        }),
        _ => Err(
            "usage: cargo run -p vm-tests -- test [FILTER] | run-script FILE | demo | bench [N] | bench-csi [N] | bench-peer [N] [CLAIMS] | bench-lvmd [N] | csi-sanity | cluster-test | cluster-script FILE | cluster-demo | cluster-bench [N] [DRIVER...]"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vm-tests: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn sanity_runs_are_read_per_configuration() {
        let runs = sanity_runs(&lines(
            "==== csi-sanity: a\nRan 5 of 9 Specs\nSUCCESS! -- 5 Passed | 0 Failed | 0 Pending | 4 Skipped\n==== csi-sanity exit status: 0\n\
             ==== csi-sanity: b\nFAIL! -- 3 Passed | 2 Failed | 0 Pending | 4 Skipped\n==== csi-sanity exit status: 1",
        ));
        assert_eq!(runs.len(), 2);
        assert_eq!(
            (runs[0].passed, runs[0].failed, runs[0].exit),
            (5, 0, Some(0))
        );
        assert_eq!(
            (runs[1].passed, runs[1].failed, runs[1].exit),
            (3, 2, Some(1))
        );
    }

    #[test]
    fn a_missing_round_or_a_short_count_fails_the_check() {
        let good = |config: &str, passed: u64| SanityRun {
            config: config.into(),
            passed,
            failed: 0,
            exit: Some(0),
        };
        let mut all: Vec<SanityRun> = Vec::new();
        for _ in 0..SANITY_ROUNDS {
            for (c, n) in SANITY_EXPECTED {
                all.push(good(c, *n));
            }
        }
        assert!(check_sanity(&all).is_ok());
        assert!(check_sanity(&all[1..]).is_err(), "a run missing");
        let mut short = all.clone();
        short[0].passed -= 1;
        assert!(check_sanity(&short).is_err(), "a spec lost");
        let mut exited = all.clone();
        exited[0].exit = Some(2);
        assert!(check_sanity(&exited).is_err(), "a non-zero exit");
        let mut silent = all;
        silent[0].exit = None;
        assert!(check_sanity(&silent).is_err(), "no exit status reported");
    }
}
