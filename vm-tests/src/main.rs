//! `cargo run -p vm-tests -- COMMAND`: boots a Debian kernel in QEMU under
//! TCG with an initramfs holding ferrolvm, lvm2, dmsetup, thin tools and
//! filesystem tools, and runs something inside it.
//!
//! - `test`: the device-mapper test suite (`tests/dm.rs`, its `#[ignore]`d
//!   tests), streamed, ending with `N passed, N failed`.
//! - `run-script FILE`: FILE run by `/bin/sh` as root in the same kind of VM.
//! - `demo`: a walk through the main job, step by step.
//! - `bench [N]`: `benches/vm_activate.rs` in the VM (ferrolvm vs lvm2).
//! - `csi-sanity`: the CSI sanity suite against `ferrolvm node --standalone`.

mod cpio;
mod image;
mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

const DEMO: &str = include_str!("demo.sh");
const SANITY: &str = include_str!("sanity.sh");

/// csi-sanity, built with `go install` into the cache once (or taken from
/// FERROLVM_CSI_SANITY).
fn csi_sanity() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FERROLVM_CSI_SANITY")
        .map(PathBuf::from)
        .filter(|p| p.exists())
    {
        return Ok(p);
    }
    let bin = cache_dir().join("bin");
    let exe = bin.join("csi-sanity");
    if !exe.exists() {
        eprintln!("vm-tests: go install csi-sanity@v5.4.0");
        image::run(
            Command::new("go")
                .args([
                    "install",
                    "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@v5.4.0",
                ])
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

/// `memory_mib` also bounds the guest's RAM-backed root, where loop files live.
fn boot_with(
    payload: &str,
    tests: &[&str],
    features: &[&str],
    echo: bool,
    memory_mib: u32,
) -> Result<qemu::Outcome, String> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| e.to_string())?;
    let (ferrolvm, test_bins) = build(tests, features)?;
    let (kernel, moddir) = image::kernel(&cache)?;
    // Also at its host path: test binaries find it through CARGO_BIN_EXE_ferrolvm.
    let mut extra = vec![
        ("/usr/local/bin/ferrolvm".to_string(), ferrolvm.clone()),
        (ferrolvm.display().to_string(), ferrolvm),
    ];
    for (name, exe) in test_bins {
        extra.push((format!("/usr/local/bin/{name}-tests"), exe));
    }
    // csi-sanity is on PATH whenever it was built, for run-script too.
    if let Some(sanity) = SANITY_BIN.get().cloned().or_else(|| csi_sanity().ok()) {
        extra.push(("/usr/local/bin/csi-sanity".into(), sanity));
    }
    let initrd = cache.join("initramfs.cpio");
    image::initramfs(&cache, &moddir, &extra, payload, &initrd)?;
    eprintln!("vm-tests: booting {} under TCG", kernel.display());
    qemu::boot(
        &kernel,
        &initrd,
        memory_mib,
        Duration::from_secs(45 * 60),
        echo,
    )
}

static SANITY_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Sums csi-sanity's `N Passed | N Failed` lines.
fn summarize_sanity(lines: &[String]) -> (u64, u64) {
    let (mut passed, mut failed) = (0, 0);
    for l in lines {
        if let Some(rest) = l
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
            passed += num("Passed");
            failed += num("Failed");
        }
    }
    (passed, failed)
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
        Some("bench") => {
            let n = args.get(1).cloned().unwrap_or_else(|| "100".into());
            let payload = format!("/usr/local/bin/vm_activate-tests {n}\n");
            boot(&payload, &["vm_activate"], true).and_then(|o| {
                if o.code == Some(0) {
                    Ok(())
                } else {
                    Err("the benchmark failed".into())
                }
            })
        }
        Some("bench-csi") => {
            let n = args.get(1).cloned().unwrap_or_else(|| "100".into());
            let payload = format!("/usr/local/bin/vm_csi-tests {n}\n");
            // 200 ext4 volumes with their journals need room on the guest's RAM-backed root.
            boot_with(&payload, &["vm_csi"], &[], true, 6144).and_then(|o| if o.code == Some(0) { Ok(()) } else { Err("the CSI benchmark failed".into()) })
        }
        Some("csi-sanity") => csi_sanity().and_then(|exe| {
            let _ = SANITY_BIN.set(exe);
            boot(SANITY, &[], true).and_then(|o| {
                let (passed, failed) = summarize_sanity(&o.lines);
                println!("{passed} passed, {failed} failed");
                match o.code {
                    Some(0) if failed == 0 && passed > 0 => Ok(()),
                    Some(0) => Err("csi-sanity ran no test".into()),
                    _ => Err("csi-sanity failed in the VM".into()),
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
            "usage: cargo run -p vm-tests -- test [FILTER] | run-script FILE | demo | bench [N] | bench-csi [N] | csi-sanity"
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
