//! Helpers shared by the benchmarks.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Loop(pub PathBuf);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

pub fn make_loop(dir: &std::path::Path, name: &str, mib: u64) -> Loop {
    let f = dir.join(name);
    std::fs::File::create(&f)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&f)
        .output()
        .expect("losetup");
    assert!(out.status.success(), "losetup failed (needs root)");
    Loop(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
}

pub fn run(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd.output().expect("spawn");
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

/// Median and p99 in milliseconds.
pub fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (
        ms(v[v.len() / 2]),
        ms(v[((v.len() as f64 * 0.99).ceil() as usize).min(v.len()) - 1]),
    )
}

pub fn lvm() -> Command {
    let mut c = Command::new("lvm");
    c.env("LVM_SUPPRESS_FD_WARNINGS", "1");
    c
}

pub fn row(what: &str, ours: Vec<Duration>, theirs: Vec<Duration>) {
    let (fm, fp) = stats(ours);
    let (lm, lp) = stats(theirs);
    println!(
        "| {what} | {fm:.2} ms | {fp:.2} ms | {lm:.2} ms | {lp:.2} ms | {:.1}x |",
        lm / fm
    );
}

/// A VM benchmark's N (its first numeric argument, else 100); refuses to
/// run where there is no device-mapper, naming the command that boots it.
pub fn vm_bench_count(command: &str) -> usize {
    assert!(
        std::fs::read_to_string("/proc/misc")
            .unwrap_or_default()
            .contains("device-mapper"),
        "run inside the VM: cargo run -p vm-tests -- {command}"
    );
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100)
}

/// The statically linked build of ferrolvm for the static-binary lever:
/// `FERROLVM_STATIC_BIN`, else the VM image's `/usr/local/bin/ferrolvm-static`,
/// else `scripts/build-static.sh`'s output in this workspace, if any.
pub fn static_binary() -> Option<String> {
    let candidates = [
        std::env::var("FERROLVM_STATIC_BIN").ok(),
        Some("/usr/local/bin/ferrolvm-static".into()),
        Some(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/x86_64-unknown-linux-musl/release/ferrolvm"
            )
            .into(),
        ),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| std::path::Path::new(p).is_file())
}

/// The header of a levers table: each row is one lever alone, the same
/// operation with it and without it, interleaved in one run.
pub fn lever_header(n: usize) {
    println!("| lever alone ({n} each, with and without interleaved) | with median | with p99 | without median | without p99 | without/with (median) |");
    println!("|---|---|---|---|---|---|");
}
