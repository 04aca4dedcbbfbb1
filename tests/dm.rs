//! Device-mapper tests. They need a kernel with device-mapper, so the host
//! run leaves them out (`#[ignore]`) and `cargo run -p vm-tests -- test`
//! runs them inside a QEMU guest with `--ignored`.

mod common;

#[test]
#[ignore = "needs device-mapper: runs in the VM (cargo run -p vm-tests -- test)"]
fn dm_driver_is_there() {
    let v = std::fs::read_to_string("/proc/misc").unwrap();
    assert!(
        v.contains("device-mapper"),
        "no device-mapper in /proc/misc: {v}"
    );
    let out = std::process::Command::new("dmsetup")
        .arg("version")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
