//! The API server's way to the kubelets (exec, logs, port-forward): an HTTP
//! CONNECT proxy on a Unix socket, named in the API server's egress
//! selector for the `cluster` network, as konnectivity would be.
//!
//! Both kubelets report the VM's address, 10.0.2.15 (kubelet refuses a
//! loopback node IP), which the host cannot route to; QEMU forwards each
//! kubelet port from the host's 127.0.0.1. The proxy maps
//! `CONNECT 10.0.2.15:P` to 127.0.0.1:P for exactly those ports and
//! refuses everything else with 403: it opens no other way out.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// The address the guest's kubelets report.
pub const NODE_IP: &str = "10.0.2.15";

/// The egress selector configuration naming the proxy at `socket`.
pub fn config(socket: &Path) -> String {
    format!(
        "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\negressSelections:\n- name: cluster\n  connection:\n    proxyProtocol: HTTPConnect\n    transport:\n      uds:\n        udsName: {}\n",
        socket.display()
    )
}

/// Serves the proxy on `socket` from a background thread, for `ports`.
pub fn serve(socket: &Path, ports: &'static [u16]) -> Result<(), String> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                if let Err(e) = tunnel(conn, ports) {
                    eprintln!("vm-tests: egress proxy: {e}");
                }
            });
        }
    });
    Ok(())
}

/// The target port of `CONNECT NODE_IP:P HTTP/1.1` when P is one of `ports`.
fn target(request_line: &str, ports: &[u16]) -> Result<u16, String> {
    let mut words = request_line.split_whitespace();
    let (Some("CONNECT"), Some(authority)) = (words.next(), words.next()) else {
        return Err(format!("not a CONNECT: {request_line:?}"));
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("no port in {authority:?}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("bad port in {authority:?}"))?;
    if host != NODE_IP || !ports.contains(&port) {
        return Err(format!("{authority} is not a kubelet"));
    }
    Ok(port)
}

fn tunnel(conn: UnixStream, ports: &[u16]) -> Result<(), String> {
    let mut reader = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
    let mut request_line = String::new();
    reader
        .read_line(&mut request_line)
        .map_err(|e| e.to_string())?;
    // The headers end at an empty line; none of them matters here.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).map_err(|e| e.to_string())? == 0 || h.trim().is_empty() {
            break;
        }
    }
    let mut client = conn;
    let port = match target(&request_line, ports) {
        Ok(p) => p,
        Err(e) => {
            let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n");
            return Err(e);
        }
    };
    let upstream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
            return Err(format!("127.0.0.1:{port}: {e}"));
        }
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .map_err(|e| e.to_string())?;
    // Bytes the reader already buffered past the headers belong upstream.
    let early = reader.buffer().to_vec();
    let mut up_w = upstream.try_clone().map_err(|e| e.to_string())?;
    up_w.write_all(&early).map_err(|e| e.to_string())?;
    let mut up_r = upstream;
    let mut client_w = client.try_clone().map_err(|e| e.to_string())?;
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_r, &mut client_w);
        let _ = client_w.shutdown(Shutdown::Write);
    });
    let mut client_r = reader.into_inner();
    let _ = std::io::copy(&mut client_r, &mut up_w);
    let _ = up_w.shutdown(Shutdown::Write);
    let _ = back.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_kubelets_are_reachable() {
        let ports = [21250, 21251];
        assert_eq!(
            target("CONNECT 10.0.2.15:21251 HTTP/1.1\r\n", &ports),
            Ok(21251)
        );
        for bad in [
            "CONNECT 10.0.2.15:22 HTTP/1.1",
            "CONNECT 127.0.0.1:21250 HTTP/1.1",
            "GET http://10.0.2.15:21250/ HTTP/1.1",
            "CONNECT 10.0.2.15 HTTP/1.1",
            "CONNECT 10.0.2.15:99999 HTTP/1.1",
            "",
        ] {
            assert!(target(bad, &ports).is_err(), "{bad:?} let through");
        }
    }
}
