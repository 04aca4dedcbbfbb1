//! The cluster harness: the real Kubernetes control plane — etcd,
//! kube-apiserver, kube-scheduler, kube-controller-manager — built from
//! their Go modules (`cluster/build.sh`, once, cached under the VM cache)
//! and run on 127.0.0.1 with certificates made for the run.
//!
//! `cluster-test` runs the project's Kubernetes suite (`tests/cluster.rs`,
//! its `#[ignore]`d tests) on the host against it, with `KUBECONFIG` set;
//! `cluster-script FILE` runs FILE with bash while the cluster is up, with
//! `KUBECONFIG` set and `kubectl` on PATH.
//!
//! Ports are fixed and uncommon (etcd 12379/12380/12381, the API server
//! 16443, scheduler 20259, controller-manager 20257); the run fails loudly
//! if one is taken. The API server's certificate also names 10.0.2.100,
//! the address the VM's nodes dial through QEMU's guestfwd. It authorizes
//! the kubelets with the Node authorizer (and NodeRestriction), verifies
//! their serving certificates, and reaches them through the egress proxy
//! (`egress.rs`).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::image;

mod chart;
mod egress;
mod nodes;
mod peer;
pub use chart::NAMESPACE;
pub use nodes::{
    guest_binaries, guest_data, AGENT_PORT, DEMO, EXTENDER_PORT, EXTENDER_SCHEDULER_PORT,
    GUEST_SCRIPT,
};
pub use peer::Peer;

pub const API_PORT: u16 = 16443;
const ETCD_CLIENT: u16 = 12379;
const ETCD_PEER: u16 = 12380;
const ETCD_METRICS: u16 = 12381;
const SCHEDULER_PORT: u16 = 20259;
const CONTROLLER_MANAGER_PORT: u16 = 20257;

/// The Go-built binaries, built by `cluster/build.sh` into `cache/cluster`.
pub fn tools(cache: &Path) -> Result<PathBuf, String> {
    let out = cache.join("cluster");
    let script = crate::workspace().join("vm-tests/cluster/build.sh");
    let started = Instant::now();
    image::run(
        Command::new("bash")
            .arg(&script)
            .arg(&out)
            .stderr(Stdio::inherit()),
    )?;
    if started.elapsed() > Duration::from_secs(5) {
        eprintln!(
            "vm-tests: the control plane was built in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(out)
}

/// A running control plane; every process is stopped on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    children: Vec<(String, Child)>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, c) in self.children.iter_mut().rev() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        for (_, c) in self.children.iter_mut().rev() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    image::run(Command::new("openssl").args(args).current_dir(dir)).map(|_| ())
}

/// A CA, the API server's serving certificate, an admin client
/// certificate (group system:masters) and the service-account key pair.
fn certificates(dir: &Path) -> Result<(), String> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3",
        "-subj",
        "/CN=ferrolvm-test-ca",
    ]);
    openssl(dir, &ca)?;
    let sign = |name: &str, subject: &str, ext: &str| -> Result<(), String> {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let extfile = format!("{name}.ext");
        fs::write(dir.join(&extfile), ext).map_err(|e| e.to_string())?;
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
        openssl(dir, &req)?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "3",
                "-extfile",
                &extfile,
            ],
        )
    };
    sign(
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,IP:10.0.2.100,IP:10.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n",
    )?;
    sign(
        "admin",
        "/O=system:masters/CN=ferrolvm-test-admin",
        "extendedKeyUsage=clientAuth\n",
    )?;
    // The API server's identity towards the kubelets (bound to the
    // bootstrap role system:kubelet-api-admin, as kubeadm does).
    sign(
        "apiserver-kubelet-client",
        "/CN=kube-apiserver-kubelet-client",
        "extendedKeyUsage=clientAuth\n",
    )?;
    for (node, _) in nodes::NODES {
        // The kubelet's client identity, which the Node authorizer knows...
        sign(
            &format!("kubelet-{node}-client"),
            &format!("/O=system:nodes/CN=system:node:{node}"),
            "extendedKeyUsage=clientAuth\n",
        )?;
        // ...and its serving certificate, which the API server verifies.
        sign(
            &format!("kubelet-{node}-serving"),
            &format!("/CN={node}"),
            &format!(
                "subjectAltName=IP:{},DNS:{node}\nextendedKeyUsage=serverAuth\n",
                egress::NODE_IP
            ),
        )?;
    }
    openssl(dir, &["genrsa", "-out", "sa.key", "2048"])?;
    openssl(dir, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])
}

fn kubeconfig_yaml(dir: &Path) -> String {
    let p = |f: &str| dir.join(f).display().to_string();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: ferrolvm-test\n  cluster:\n    server: https://127.0.0.1:{API_PORT}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: admin\n  context:\n    cluster: ferrolvm-test\n    user: admin\ncurrent-context: admin\n",
        ca = p("ca.crt"),
        crt = p("admin.crt"),
        key = p("admin.key"),
    )
}

/// The flags a control-plane component serves its health and metrics with:
/// delegated authentication and authorization, on 127.0.0.1:`port`.
pub(crate) fn serving_flags(kubeconfig: &str, port: u16) -> Vec<String> {
    [
        "--authentication-kubeconfig",
        kubeconfig,
        "--authorization-kubeconfig",
        kubeconfig,
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        &port.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

impl Cluster {
    /// Starts etcd, kube-apiserver, kube-scheduler and kube-controller-manager
    /// and waits until the API server is ready.
    pub fn start(cache: &Path) -> Result<Cluster, String> {
        let tools = tools(cache)?;
        let bin = tools.join("bin");
        for port in [
            API_PORT,
            ETCD_CLIENT,
            ETCD_PEER,
            ETCD_METRICS,
            SCHEDULER_PORT,
            CONTROLLER_MANAGER_PORT,
            nodes::CONTROLLER_METRICS_PORT,
            AGENT_PORT,
            EXTENDER_PORT,
            EXTENDER_SCHEDULER_PORT,
            nodes::KUBELET_PORTS[0],
            nodes::KUBELET_PORTS[1],
        ] {
            if !port_is_free(port) {
                return Err(format!(
                    "port 127.0.0.1:{port} is taken; is another cluster running?"
                ));
            }
        }
        let dir = tools.join("run");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        certificates(&dir)?;
        let kubeconfig = dir.join("kubeconfig");
        fs::write(&kubeconfig, kubeconfig_yaml(&dir)).map_err(|e| e.to_string())?;
        let mut c = Cluster {
            dir: dir.clone(),
            bin: bin.clone(),
            kubeconfig: kubeconfig.clone(),
            children: Vec::new(),
        };
        let d = |f: &str| dir.join(f).display().to_string();
        let egress_socket = dir.join("egress.sock");
        egress::serve(&egress_socket, &nodes::KUBELET_PORTS)?;
        fs::write(dir.join("egress.yaml"), egress::config(&egress_socket))
            .map_err(|e| e.to_string())?;
        let etcd_url = |p: u16| format!("http://127.0.0.1:{p}");
        c.spawn(
            "etcd",
            &[
                "--data-dir",
                &d("etcd"),
                "--listen-client-urls",
                &etcd_url(ETCD_CLIENT),
                "--advertise-client-urls",
                &etcd_url(ETCD_CLIENT),
                "--listen-peer-urls",
                &etcd_url(ETCD_PEER),
                "--initial-advertise-peer-urls",
                &etcd_url(ETCD_PEER),
                "--initial-cluster",
                &format!("default={}", etcd_url(ETCD_PEER)),
                "--listen-metrics-urls",
                &etcd_url(ETCD_METRICS),
                "--unsafe-no-fsync",
            ],
        )?;
        c.spawn(
            "kube-apiserver",
            &[
                "--etcd-servers",
                &etcd_url(ETCD_CLIENT),
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                &API_PORT.to_string(),
                "--cert-dir",
                &d("apiserver-certs"),
                "--tls-cert-file",
                &d("apiserver.crt"),
                "--tls-private-key-file",
                &d("apiserver.key"),
                "--client-ca-file",
                &d("ca.crt"),
                "--service-account-issuer",
                &format!("https://127.0.0.1:{API_PORT}"),
                "--service-account-key-file",
                &d("sa.pub"),
                "--service-account-signing-key-file",
                &d("sa.key"),
                "--service-cluster-ip-range",
                "10.0.0.0/24",
                "--authorization-mode",
                "Node,RBAC",
                "--enable-admission-plugins",
                "NodeRestriction",
                "--disable-admission-plugins",
                "ServiceAccount",
                "--kubelet-client-certificate",
                &d("apiserver-kubelet-client.crt"),
                "--kubelet-client-key",
                &d("apiserver-kubelet-client.key"),
                "--kubelet-certificate-authority",
                &d("ca.crt"),
                "--kubelet-preferred-address-types",
                "InternalIP",
                "--egress-selector-config-file",
                &d("egress.yaml"),
                // Pods' status.volumeHealth, from the kubelets' NodeGetVolumeHealth.
                "--feature-gates",
                "CSIVolumeHealth=true",
                "--allow-privileged=true",
                "--endpoint-reconciler-type",
                "none",
            ],
        )?;
        c.wait_ready("/readyz", Duration::from_secs(90))?;
        let kc = kubeconfig.display().to_string();
        let mut args = vec!["--kubeconfig", &kc, "--leader-elect=false"];
        let serving = serving_flags(&kc, SCHEDULER_PORT);
        args.extend(serving.iter().map(String::as_str));
        c.spawn("kube-scheduler", &args)?;
        let serving = serving_flags(&kc, CONTROLLER_MANAGER_PORT);
        let (sa_key, ca) = (d("sa.key"), d("ca.crt"));
        let mut args: Vec<&str> = serving.iter().map(String::as_str).collect();
        args.extend([
            "--kubeconfig",
            &kc,
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--service-account-private-key-file",
            &sa_key,
            "--root-ca-file",
            &ca,
            // Pod networks are the kubelets' own bridges, not podCIDRs.
            "--controllers",
            "*,-node-ipam-controller",
        ]);
        c.spawn("kube-controller-manager", &args)?;
        Ok(c)
    }

    fn spawn(&mut self, name: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(name);
        self.spawn_exe(name, &exe, args, &[])
    }

    /// Like [`Self::spawn_exe`], restarted whenever it exits, as kubelet
    /// restarts a pod's container (the CSI sidecars exit when they lose
    /// the driver; the fault tests kill the controller). The running
    /// process's pid is kept in `name.pid`.
    fn spawn_supervised(
        &mut self,
        name: &str,
        exe: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(), String> {
        const SUPERVISE: &str = "trap 'kill $pid 2>/dev/null; exit 0' TERM\npidfile=$1; shift\nwhile :; do\n  \"$@\" & pid=$!\n  echo $pid > \"$pidfile\"\n  wait $pid\n  echo \"vm-tests: $1 exited ($?); restarting\" >&2\n  sleep 0.5\ndone\n";
        let pid_file = self.dir.join(format!("{name}.pid")).display().to_string();
        let exe = exe.display().to_string();
        let mut all = vec!["-c", SUPERVISE, "supervise", &pid_file, &exe];
        all.extend_from_slice(args);
        self.spawn_exe(name, Path::new("/bin/bash"), &all, env)
    }

    /// Starts `exe` as the harness's child `name`, logging to `name.log`.
    fn spawn_exe(
        &mut self,
        name: &str,
        exe: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(), String> {
        let log =
            fs::File::create(self.dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.bin.join("kubectl"));
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// Polls an API server health endpoint; a process that died is reported
    /// with the tail of its log.
    fn wait_ready(&mut self, path: &str, within: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let ok = self
                .kubectl()
                .args(["get", "--raw", path])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                eprintln!(
                    "vm-tests: API server ready in {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            self.check_alive()?;
            if start.elapsed() > within {
                return Err(format!("the API server was not ready within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// An error naming the first control-plane process that exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for (name, c) in &mut self.children {
            if let Ok(Some(status)) = c.try_wait() {
                let log =
                    fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(format!(
                    "{name} exited ({status}):\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
        }
        Ok(())
    }
}

impl Cluster {
    /// What a suite or script run against the cluster gets: KUBECONFIG,
    /// and kubectl and vmsh on PATH (also named by FERROLVM_KUBECTL and
    /// FERROLVM_VMSH).
    fn environment(&self, cmd: &mut Command) {
        let path = format!(
            "{}:{}:{}",
            self.dir.join("bin").display(),
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("FERROLVM_KUBECTL", self.bin.join("kubectl"))
            .env("FERROLVM_VMSH", self.dir.join("bin/vmsh"))
            .env("FERROLVM_EXTENDER", format!("127.0.0.1:{EXTENDER_PORT}"))
            .env(
                "FERROLVM_CONTROLLER_METRICS",
                format!("127.0.0.1:{}", nodes::CONTROLLER_METRICS_PORT),
            )
            .env("FERROLVM_HELM", self.bin.join("helm"))
            .env("FERROLVM_CHART", Self::chart_dir())
            .env("FERROLVM_CHART_RENDERED", self.dir.join("chart.yaml"))
            .env("FERROLVM_NAMESPACE", NAMESPACE)
            .env("FERROLVM_RUN_DIR", &self.dir)
            .env(
                "FERROLVM_CONTROLLER_PID",
                self.dir.join("ferrolvm-controller.pid"),
            )
            .env("PATH", path);
    }
}

/// Runs `exe` (a test binary) with the cluster's environment, streaming its
/// output; returns it.
pub fn run_suite(c: &mut Cluster, exe: &Path) -> Result<(bool, Vec<String>), String> {
    let mut cmd = Command::new(exe);
    cmd.args(["--ignored", "--test-threads=1"]);
    run_streaming(c, &mut cmd)
}

/// Runs `cmd` with the cluster's environment, streaming its standard
/// output; returns whether it succeeded, and that output.
pub fn run_streaming(c: &mut Cluster, cmd: &mut Command) -> Result<(bool, Vec<String>), String> {
    c.environment(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.map_err(|e| e.to_string())?;
        println!("{line}");
        lines.push(line);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    c.check_alive()?;
    Ok((status.success(), lines))
}

/// Runs `script` with bash while the cluster is up, in the cluster's
/// environment.
pub fn run_script(c: &mut Cluster, script: &Path) -> Result<bool, String> {
    let mut cmd = Command::new("bash");
    cmd.arg(script);
    run_command(c, &mut cmd)
}

/// Runs `cmd` in the cluster's environment; whether it succeeded.
pub fn run_command(c: &mut Cluster, cmd: &mut Command) -> Result<bool, String> {
    c.environment(cmd);
    let status = cmd.status().map_err(|e| e.to_string())?;
    c.check_alive()?;
    Ok(status.success())
}
