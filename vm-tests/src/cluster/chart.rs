//! The chart, installed as an operator would: linted, rendered with the
//! harness's values (`values.yaml`), and every rendered object applied to
//! the API server (server-side apply, for real). The values keep the
//! chart's own pods from being made (no replicas, a node selector no Node
//! matches): the VM's kubelets run the tests' pods, but ferrolvm's image is
//! not in their containerd, so the harness runs ferrolvm's processes
//! itself — but with the chart's identities:
//! each component gets a token of its chart ServiceAccount (TokenRequest),
//! so the chart's RBAC is what every call of ferrolvm and its sidecars is
//! authorised by, and a missing permission fails a test.

use std::path::PathBuf;

use super::{Cluster, API_PORT};

/// The release's namespace.
pub const NAMESPACE: &str = "ferrolvm-system";
const RELEASE: &str = "ferrolvm";
/// The Kubernetes version the chart is rendered for (the harness's).
const KUBE_VERSION: &str = "1.37.2";
const VALUES: &str = include_str!("values.yaml");
/// The chart's ServiceAccounts that the harness's processes run as.
pub const ACCOUNTS: [&str; 3] = ["ferrolvm-controller", "ferrolvm-node", "ferrolvm-scheduler"];

fn run(cmd: &mut std::process::Command) -> Result<String, String> {
    crate::image::run(cmd)
}

impl Cluster {
    pub fn helm(&self) -> std::process::Command {
        std::process::Command::new(self.bin.join("helm"))
    }

    /// The chart's directory in the workspace.
    pub fn chart_dir() -> PathBuf {
        crate::workspace().join("deploy/helm/ferrolvm")
    }

    /// Lints and renders the chart, applies it, and mints the tokens.
    pub fn install_chart(&mut self) -> Result<(), String> {
        let chart = Self::chart_dir();
        let values = self.dir.join("values.yaml");
        std::fs::write(&values, VALUES).map_err(|e| e.to_string())?;
        let lint = run(self
            .helm()
            .args(["lint", "--strict", "--kube-version", KUBE_VERSION])
            .arg(&chart)
            .arg("-f")
            .arg(&values))
        .map_err(|e| format!("helm lint: {e}"))?;
        eprintln!("vm-tests: {}", lint.lines().last().unwrap_or_default());
        let rendered = run(self
            .helm()
            .args(["template", RELEASE])
            .arg(&chart)
            .args([
                "--namespace",
                NAMESPACE,
                "--kube-version",
                KUBE_VERSION,
                "--include-crds",
                "-f",
            ])
            .arg(&values))
        .map_err(|e| format!("helm template: {e}"))?;
        std::fs::write(self.dir.join("chart.yaml"), &rendered).map_err(|e| e.to_string())?;
        self.kubectl_apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
        ))?;
        // CRDs first, so the rest can refer to them.
        self.kubectl_apply(&rendered)
            .map_err(|e| format!("applying the rendered chart: {e}"))?;
        for sa in ACCOUNTS {
            self.mint_token(sa)?;
        }
        Ok(())
    }

    /// A day's token of ServiceAccount `sa` (TokenRequest), kept as
    /// `sa.token` and as the host's `sa.kubeconfig`.
    pub fn mint_token(&self, sa: &str) -> Result<(), String> {
        let token =
            run(self
                .kubectl()
                .args(["create", "token", sa, "-n", NAMESPACE, "--duration", "24h"]))
            .map_err(|e| format!("TokenRequest for {sa}: {e}"))?;
        let token = token.trim().to_string();
        let host = self.token_kubeconfig(
            &format!("https://127.0.0.1:{API_PORT}"),
            &self.dir.join("ca.crt").display().to_string(),
            &token,
        );
        std::fs::write(self.dir.join(format!("{sa}.kubeconfig")), host)
            .map_err(|e| e.to_string())?;
        std::fs::write(self.dir.join(format!("{sa}.token")), &token).map_err(|e| e.to_string())
    }

    /// A kubeconfig that authenticates with a bearer token only.
    pub fn token_kubeconfig(&self, server: &str, ca: &str, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: ferrolvm-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context:\n    cluster: ferrolvm-test\n    user: sa\ncurrent-context: sa\n"
        )
    }

    /// The host path of ServiceAccount `sa`'s kubeconfig.
    pub fn account_kubeconfig(&self, sa: &str) -> String {
        self.dir
            .join(format!("{sa}.kubeconfig"))
            .display()
            .to_string()
    }

    /// ServiceAccount `sa`'s token.
    pub fn account_token(&self, sa: &str) -> Result<String, String> {
        std::fs::read_to_string(self.dir.join(format!("{sa}.token"))).map_err(|e| e.to_string())
    }
}
