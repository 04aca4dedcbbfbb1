//! `vmsh`: runs a shell command as root inside the cluster VM and returns
//! its output and exit code. The guest half (`vm-tests agent PORT`) listens
//! on the guest's port, reached from the host only through QEMU's hostfwd on
//! 127.0.0.1; the host half (`vm-tests vmsh CMD`) connects to it.
//!
//! Wire format, one command per connection: the host sends the command's
//! bytes and closes its write side; the guest answers with frames of
//! `kind: u8, len: u32 (big-endian), bytes`, kind 1 stdout, 2 stderr, and a
//! last frame of kind 3 whose 4 bytes are the exit code (i32).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const EXIT: u8 = 3;

fn frame(out: &Mutex<TcpStream>, kind: u8, bytes: &[u8]) -> std::io::Result<()> {
    let mut s = out.lock().unwrap_or_else(|p| p.into_inner());
    let mut buf = Vec::with_capacity(5 + bytes.len());
    buf.push(kind);
    buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buf.extend_from_slice(bytes);
    s.write_all(&buf)
}

fn pump(mut from: impl Read, out: Arc<Mutex<TcpStream>>, kind: u8) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || frame(&out, kind, &buf[..n]).is_err() {
            break;
        }
    }
}

fn serve_one(mut conn: TcpStream) -> std::io::Result<()> {
    let mut cmd = Vec::new();
    conn.read_to_end(&mut cmd)?;
    let cmd = String::from_utf8_lossy(&cmd).to_string();
    let out = Arc::new(Mutex::new(conn));
    let mut child = match Command::new("/usr/bin/sh")
        .args(["-c", &cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            frame(&out, STDERR, format!("vm agent: {e}\n").as_bytes())?;
            return frame(&out, EXIT, &127i32.to_be_bytes());
        }
    };
    let (o, e) = (child.stdout.take(), child.stderr.take());
    let (o2, e2) = (out.clone(), out.clone());
    let t1 = std::thread::spawn(move || o.map(|o| pump(o, o2, STDOUT)));
    let t2 = std::thread::spawn(move || e.map(|e| pump(e, e2, STDERR)));
    let status = child.wait()?;
    let _ = (t1.join(), t2.join());
    let code = status.code().unwrap_or(128 + 9);
    frame(&out, EXIT, &code.to_be_bytes())
}

/// Where QEMU's user network delivers the host's forwarded connections
/// from: the only peer the agent answers (the cluster VM's pods can reach
/// the guest's address too, and must not get a root shell).
const HOST_SIDE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 2, 2);

/// The guest half: serves commands forever, each on its own thread.
pub fn serve(port: u16) -> Result<(), String> {
    let l = TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("agent: {e}"))?;
    println!("vm-tests: agent listening on {port}");
    for conn in l.incoming().flatten() {
        match conn.peer_addr() {
            Ok(std::net::SocketAddr::V4(a)) if *a.ip() == HOST_SIDE => {
                std::thread::spawn(move || serve_one(conn));
            }
            other => eprintln!("vm-tests: agent: refused a connection from {other:?}"),
        }
    }
    Ok(())
}

/// The host half: runs `cmd` in the guest, copying its output to ours;
/// returns its exit code.
pub fn run(port: u16, cmd: &str) -> Result<i32, String> {
    run_with(port, cmd, |kind, bytes| {
        let _ = match kind {
            STDOUT => std::io::stdout().write_all(bytes),
            _ => std::io::stderr().write_all(bytes),
        };
    })
}

/// Like [`run`], returning stdout and stderr (interleaved) instead.
pub fn output(port: u16, cmd: &str) -> Result<String, String> {
    let mut all = Vec::new();
    run_with(port, cmd, |_, bytes| all.extend_from_slice(bytes))?;
    Ok(String::from_utf8_lossy(&all).into_owned())
}

/// Like [`run`], discarding the output.
pub fn run_quiet(port: u16, cmd: &str) -> Result<i32, String> {
    run_with(port, cmd, |_, _| {})
}

fn run_with(port: u16, cmd: &str, mut sink: impl FnMut(u8, &[u8])) -> Result<i32, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("vmsh: the VM's agent on 127.0.0.1:{port}: {e}"))?;
    s.write_all(cmd.as_bytes()).map_err(|e| e.to_string())?;
    s.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head)
            .map_err(|e| format!("vmsh: the agent hung up before the exit code: {e}"))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).map_err(|e| e.to_string())?;
        match head[0] {
            STDOUT | STDERR => sink(head[0], &body),
            EXIT if len == 4 => {
                let _ = std::io::stdout().flush();
                return Ok(i32::from_be_bytes([body[0], body[1], body[2], body[3]]));
            }
            k => return Err(format!("vmsh: a frame of unknown kind {k}")),
        }
    }
}
