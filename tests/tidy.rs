//! Tidy checks that keep the tree as ARCHITECTURE.md describes it: every
//! Rust file says what it is for in a leading `//!` line, dependencies run
//! one way (`lvm ← node ← metrics ← csi ← k8s ← cli`), and the binary operators run holds
//! no failpoints.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file of the project, outside build output.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        // vendor/: third-party crates kept as published (plus a patch).
        if name == "target" || name == ".git" || name == "vendor" {
            continue;
        }
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let mut files = Vec::new();
    rust_files(&workspace(), &mut files);
    assert!(files.len() > 50, "found only {} .rs files", files.len());
    let undocumented: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.starts_with("//!")
        })
        .map(|f| {
            f.strip_prefix(workspace())
                .unwrap_or(f)
                .display()
                .to_string()
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "these files do not start with a `//!` line saying what they are for: {undocumented:?}"
    );
}

/// The folders of `src/` in dependency order: each may use the ones before it.
const LAYERS: &[&str] = &["lvm", "node", "metrics", "csi", "k8s", "cli"];

/// Which layers `crate::` paths in `text` name.
fn named_layers(text: &str) -> Vec<&'static str> {
    LAYERS
        .iter()
        .copied()
        .filter(|l| {
            text.contains(&format!("crate::{l}::"))
                || text.contains(&format!("crate::{l};"))
                || text.contains(&format!("crate::{l}}}"))
        })
        .collect()
}

#[test]
fn dependencies_run_one_way() {
    let src = workspace().join("src");
    let mut broken = Vec::new();
    for (rank, layer) in LAYERS.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "src/{layer} has no files");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for used in named_layers(&text) {
                let allowed = match *layer {
                    // csi/ speaks gRPC over node/ (its calls counted by metrics/)
                    // and never touches lvm/ (disks) itself.
                    "csi" => matches!(used, "node" | "metrics" | "csi"),
                    // k8s/ drives node/ and serves through csi/; disks are not its business.
                    "k8s" => used != "lvm" && LAYERS[..=rank].contains(&used),
                    _ => LAYERS[..=rank].contains(&used),
                };
                if !allowed {
                    broken.push(format!("{} uses crate::{used}", f.display()));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "dependencies against the layering: {broken:?}"
    );
}

#[test]
fn the_checker_sees_a_violation() {
    assert_eq!(named_layers("use crate::cli::report;"), vec!["cli"]);
    assert_eq!(named_layers("use crate::lvm::{disk, scan};"), vec!["lvm"]);
    assert!(named_layers("use super::x;").is_empty());
}

/// `failpoint::hit` compiles to nothing without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[test]
fn the_operators_binary_has_no_failpoints() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_ferrolvm")).unwrap();
    let needle = b"FERROLVM_FAILPOINT";
    assert!(
        !bin.windows(needle.len()).any(|w| w == needle),
        "the ferrolvm binary mentions FERROLVM_FAILPOINT: failpoints were compiled in"
    );
}
