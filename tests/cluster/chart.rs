//! The Helm chart: lint-clean, its checked-in render current, its roles
//! without wildcards, its node config one ferrolvm reads, and its accounts
//! no stronger than their job. The harness applied the render to the API
//! server and runs every ferrolvm component with the chart's tokens, so
//! the rest of the suite passing is the proof that the RBAC is enough.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::Api;

use super::client;

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os(name).unwrap_or_else(|| panic!("{name}: run under vm-tests cluster-test")),
    )
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every document of a multi-document YAML file.
fn documents(path: &std::path::Path) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The chart rendered with the harness's values, and with the defaults.
fn renders() -> Vec<PathBuf> {
    vec![
        env_path("FERROLVM_CHART_RENDERED"),
        workspace().join("deploy/manifests/ferrolvm.yaml"),
    ]
}

#[test]
#[ignore = "needs the cluster: cargo run -p vm-tests -- cluster-test"]
fn helm_lint_is_clean_with_the_default_values() {
    let out = Command::new(env_path("FERROLVM_HELM"))
        .args(["lint", "--strict", "--kube-version", "1.37.2"])
        .arg(env_path("FERROLVM_CHART"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helm lint: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{text}"
    );
    assert!(
        !text.contains("[WARNING]") && !text.contains("[ERROR]"),
        "{text}"
    );
}

#[test]
#[ignore = "needs the cluster: cargo run -p vm-tests -- cluster-test"]
fn the_checked_in_manifests_are_the_chart_rendered() {
    let status = Command::new("bash")
        .arg(workspace().join("scripts/render-manifests.sh"))
        .arg("--check")
        .env("HELM", env_path("FERROLVM_HELM"))
        .status()
        .unwrap();
    assert!(status.success(), "deploy/manifests/ferrolvm.yaml is stale");
}

#[test]
#[ignore = "needs the cluster: cargo run -p vm-tests -- cluster-test"]
fn no_role_of_the_chart_grants_a_wildcard() {
    for render in renders() {
        let mut roles = 0;
        for doc in documents(&render) {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind != "ClusterRole" && kind != "Role" {
                continue;
            }
            roles += 1;
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            let rules = doc["rules"].as_array().expect("a role has rules");
            assert!(!rules.is_empty(), "{kind} {name} has no rules");
            for rule in rules {
                for field in ["verbs", "resources", "apiGroups", "resourceNames"] {
                    let wild = rule[field].as_array().is_some_and(|v| {
                        v.iter()
                            .any(|x| x.as_str().is_some_and(|s| s.contains('*')))
                    });
                    assert!(
                        !wild,
                        "{kind} {name} in {}: a wildcard in {field}: {rule}",
                        render.display()
                    );
                }
                assert!(
                    rule.get("nonResourceURLs").is_none(),
                    "{kind} {name}: {rule}"
                );
            }
        }
        assert!(
            roles >= 5,
            "{}: only {roles} roles rendered",
            render.display()
        );
    }
}

#[test]
#[ignore = "needs the cluster: cargo run -p vm-tests -- cluster-test"]
fn the_charts_node_config_is_one_ferrolvm_reads() {
    for render in renders() {
        let config = documents(&render)
            .into_iter()
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "ferrolvm-node")
            .expect("the node ConfigMap");
        let text = config["data"]["lvmd.yaml"].as_str().expect("lvmd.yaml");
        let parsed = ferrolvm::node::config::NodeConfig::parse(text)
            .unwrap_or_else(|e| panic!("{}: lvmd.yaml refused: {e}\n{text}", render.display()));
        assert!(!parsed.device_classes.is_empty());
    }
}

#[tokio::test]
#[ignore = "needs the cluster: cargo run -p vm-tests -- cluster-test"]
async fn the_rendered_chart_is_on_the_api_server() {
    let c = client().await;
    let driver = Api::<CSIDriver>::all(c).get("ferrolvm.io").await.unwrap();
    let spec = driver.spec;
    assert_eq!(spec.attach_required, Some(false));
    assert_eq!(spec.pod_info_on_mount, Some(true));
    assert_eq!(spec.storage_capacity, Some(true));
    let kubectl = env_path("FERROLVM_KUBECTL");
    for object in [
        "clusterrole/ferrolvm-controller",
        "clusterrole/ferrolvm-node",
        "clusterrole/ferrolvm-scheduler",
        "storageclass/ferrolvm-thick",
        "priorityclass/ferrolvm",
    ] {
        let ok = Command::new(&kubectl)
            .args(["get", object])
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{object}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
}

/// `kubectl auth can-i` as one of the chart's accounts; `resource` may
/// name a subresource (`pods/binding`), which can-i takes as a flag.
fn can(account: &str, verb: &str, resource: &str) -> bool {
    let ns = std::env::var("FERROLVM_NAMESPACE").expect("FERROLVM_NAMESPACE");
    let mut cmd = Command::new(env_path("FERROLVM_KUBECTL"));
    cmd.args(["auth", "can-i", verb]);
    match resource.split_once('/') {
        Some((r, sub)) => cmd.arg(r).arg(format!("--subresource={sub}")),
        None => cmd.arg(resource),
    };
    let out = cmd
        .arg("--as")
        .arg(format!("system:serviceaccount:{ns}:{account}"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        said == "yes" || said == "no",
        "can-i said {said:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    said == "yes"
}

#[test]
#[ignore = "needs the cluster: cargo run -p vm-tests -- cluster-test"]
fn each_account_can_do_its_job_and_no_more() {
    // The node: its LogicalVolumes' status and finalizer, its Node's
    // annotations; never another's claims, volumes or secrets.
    assert!(can(
        "ferrolvm-node",
        "patch",
        "logicalvolumes.ferrolvm.io/status"
    ));
    assert!(can("ferrolvm-node", "patch", "nodes"));
    for (verb, what) in [
        ("create", "logicalvolumes.ferrolvm.io"),
        ("delete", "logicalvolumes.ferrolvm.io"),
        ("delete", "persistentvolumeclaims"),
        ("get", "secrets"),
        ("list", "pods"),
        ("delete", "nodes"),
    ] {
        assert!(
            !can("ferrolvm-node", verb, what),
            "the node may {verb} {what}"
        );
    }
    // The controller: places volumes, never writes their status or reads secrets.
    assert!(can(
        "ferrolvm-controller",
        "create",
        "logicalvolumes.ferrolvm.io"
    ));
    for (verb, what) in [
        ("patch", "logicalvolumes.ferrolvm.io/status"),
        ("get", "secrets"),
        ("delete", "nodes"),
        ("create", "pods"),
    ] {
        assert!(
            !can("ferrolvm-controller", verb, what),
            "the controller may {verb} {what}"
        );
    }
    // The extender only reads.
    assert!(can("ferrolvm-scheduler", "watch", "persistentvolumeclaims"));
    for (verb, what) in [
        ("patch", "nodes"),
        ("create", "pods/binding"),
        ("delete", "persistentvolumeclaims"),
        ("get", "secrets"),
    ] {
        assert!(
            !can("ferrolvm-scheduler", verb, what),
            "the extender may {verb} {what}"
        );
    }
}
