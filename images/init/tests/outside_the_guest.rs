//! Started anywhere but as PID 1 (a developer's shell, a test runner as root), the init must
//! touch nothing: it would mount over /dev, /proc and /sys and power the machine off.
//! (This test also makes `cargo test --workspace` build the binary the image tests put in the
//! initramfs.)

use std::process::Command;

#[test]
fn refuses_to_run_unless_pid_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_conclave-init"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only as PID 1"), "{err}");
    assert!(err.contains("nothing was done"), "{err}");
}
