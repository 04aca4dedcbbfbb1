//! Runs QEMU under TCG (software emulation; KVM is never used), streams the
//! guest console, and returns the payload's exit code.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Outcome {
    /// Exit code the payload reported, or None if the guest never said.
    pub code: Option<i32>,
    pub lines: Vec<String>,
}

/// The QEMU command for a guest of `memory_mib` booting `kernel` and
/// `initrd`, its serial console on stdout, no network unless `extra` adds one.
fn command(kernel: &Path, initrd: &Path, memory_mib: u32, extra: &[String]) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        &memory_mib.to_string(),
    ])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args([
        "-append",
        "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init",
    ])
    .args([
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
    ])
    .args(extra)
    .stdin(Stdio::null());
    c
}

fn not_installed(e: std::io::Error) -> String {
    format!("starting qemu-system-x86_64: {e} (apt-get install qemu-system-x86)")
}

/// Starts a guest that runs until killed, its console into `console`.
pub fn spawn(
    kernel: &Path,
    initrd: &Path,
    memory_mib: u32,
    extra: &[String],
    console: &Path,
) -> Result<std::process::Child, String> {
    let log = std::fs::File::create(console).map_err(|e| e.to_string())?;
    command(kernel, initrd, memory_mib, extra)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(not_installed)
}

pub fn boot(
    kernel: &Path,
    initrd: &Path,
    memory_mib: u32,
    timeout: Duration,
    echo: bool,
) -> Result<Outcome, String> {
    let mut child = command(kernel, initrd, memory_mib, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(not_installed)?;
    let stdout = child.stdout.take().ok_or("no qemu stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut out = Outcome {
        code: None,
        lines: Vec::new(),
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the VM did not finish within {timeout:?}"));
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                if let Some(code) = line.strip_prefix("FERROLVM-VM-EXIT ") {
                    out.code = code.trim().parse().ok();
                } else if echo {
                    println!("{line}");
                }
                out.lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.wait();
    Ok(out)
}
