//! Helpers for tests against the real lvm2 on loop devices. These tests need
//! root, losetup and lvm2; without them they fail loudly, never skip.
#![allow(dead_code)]

pub mod mem;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub const LV_FIELDS: &str =
    "lv_name,vg_name,lv_uuid,lv_size,lv_attr,lv_tags,segtype,seg_count,stripes,devices";
pub const VG_FIELDS: &str = "vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count,pv_count,lv_count,vg_seqno,vg_tags";
pub const PV_FIELDS: &str =
    "pv_name,pv_uuid,vg_name,pv_size,pv_free,pe_start,pv_pe_count,pv_pe_alloc_count";

pub fn require_root_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "interop tests need root (loop devices); run them as root"
    );
    let lvm = Command::new("lvm")
        .arg("version")
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output();
    assert!(
        lvm.is_ok(),
        "interop tests need lvm2 installed (apt-get install lvm2)"
    );
}

/// Loop devices over sparse files, detached on drop.
pub struct Loops {
    pub devs: Vec<PathBuf>,
    /// Run lvm2 with its device-mapper driver (inside the VM).
    pub dm: bool,
    _dir: tempfile::TempDir,
}

impl Loops {
    pub fn new(n: usize, mib: u64) -> Loops {
        Loops::with_sector_size(n, mib, 512)
    }

    /// Loop devices with the given logical sector size (4096: a 4Kn disk).
    pub fn with_sector_size(n: usize, mib: u64, sector: u32) -> Loops {
        require_root_tools();
        let dir = tempfile::tempdir().unwrap();
        let mut devs = Vec::new();
        for i in 0..n {
            let f = dir.path().join(format!("d{i}.img"));
            std::fs::File::create(&f)
                .unwrap()
                .set_len(mib << 20)
                .unwrap();
            let out = Command::new("losetup")
                .args(["-f", "--show", "--sector-size", &sector.to_string()])
                .arg(&f)
                .output()
                .expect("losetup");
            assert!(
                out.status.success(),
                "losetup: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            devs.push(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()));
        }
        Loops {
            devs,
            dm: false,
            _dir: dir,
        }
    }

    /// Loop devices for tests that use the kernel's device-mapper.
    pub fn with_dm(n: usize, mib: u64) -> Loops {
        let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
        assert!(misc.contains("device-mapper"), "device-mapper is not available: run this inside the VM (cargo run -p vm-tests -- test)");
        let mut l = Loops::new(n, mib);
        l.dm = true;
        l
    }

    pub fn list(&self) -> String {
        self.devs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn dev(&self, i: usize) -> &str {
        self.devs[i].to_str().unwrap()
    }

    pub fn lvm(&self, args: &[&str]) -> Output {
        let mut c = Command::new("lvm");
        c.arg(args[0]).args(["--devices", &self.list()]);
        if !self.dm {
            c.args(["--driverloaded", "n"]);
        }
        c.args(&args[1..]);
        c.env("LVM_SUPPRESS_FD_WARNINGS", "1");
        c.output().expect("run lvm")
    }

    pub fn ferro(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferrolvm"));
        c.arg(args[0]).args(["--devices", &self.list()]);
        if !self.dm {
            c.args(["--driverloaded", "n"]);
        }
        c.args(&args[1..]);
        c.output().expect("run ferrolvm")
    }

    pub fn lvm_ok(&self, args: &[&str]) -> String {
        ok(self.lvm(args), "lvm", args)
    }

    pub fn ferro_ok(&self, args: &[&str]) -> String {
        ok(self.ferro(args), "ferrolvm", args)
    }

    fn report(&self, ferro: bool, cmd: &str, fields: &str, extra: &[&str]) -> Value {
        let mut args = vec![
            cmd,
            "--reportformat",
            "json",
            "-o",
            fields,
            "--units",
            "b",
            "--nosuffix",
        ];
        args.extend_from_slice(extra);
        let out = if ferro {
            self.ferro_ok(&args)
        } else {
            self.lvm_ok(&args)
        };
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON from {cmd}: {e}\n{out}"))
    }

    /// Asserts both tools report the same lvs, vgs and pvs; returns lvm2's vgs.
    pub fn assert_same_reports(&self) -> Value {
        for (cmd, fields) in [("lvs", LV_FIELDS), ("pvs", PV_FIELDS), ("vgs", VG_FIELDS)] {
            let a = self.report(true, cmd, fields, &[]);
            let b = self.report(false, cmd, fields, &[]);
            assert_eq!(a, b, "{cmd} differs:\nferrolvm: {a:#}\nlvm2: {b:#}");
        }
        self.report(false, "vgs", VG_FIELDS, &[])
    }

    /// `lvm vgck` exits 0 and warns about nothing.
    pub fn assert_vgck_clean(&self, vg: &str) {
        let out = self.lvm(&["vgck", vg]);
        let err = String::from_utf8_lossy(&out.stderr);
        let noise: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("Activation disabled"))
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            out.status.success() && noise.is_empty(),
            "vgck {vg} not clean: {noise:?}"
        );
    }

    pub fn seqno(&self, vg: &str) -> u64 {
        let v = self.report(false, "vgs", "vg_seqno", &[vg]);
        v["report"][0]["vg"][0]["vg_seqno"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn lv_names(&self, ferro: bool) -> Vec<String> {
        let v = self.report(ferro, "lvs", "lv_name", &[]);
        let mut names: Vec<String> = v["report"][0]["lv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["lv_name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        for d in &self.devs {
            let _ = Command::new("losetup").arg("-d").arg(d).status();
        }
    }
}

pub fn ok(out: Output, tool: &str, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Reads the mda headers of a device through the metadata crate.
pub fn mda_headers(dev: &Path) -> Vec<ferrolvm_metadata::mda::MdaHeader> {
    use ferrolvm::lvm::disk::{BlockDisk, Disk};
    let d = BlockDisk::open(dev, false).unwrap();
    let label = ferrolvm_metadata::label::PvLabel::find(&d.read_at(0, 2048).unwrap())
        .unwrap()
        .unwrap();
    label
        .metadata_areas
        .iter()
        .map(|m| {
            ferrolvm_metadata::mda::MdaHeader::decode(&d.read_at(m.offset, 512).unwrap(), m.offset)
                .unwrap()
        })
        .collect()
}
