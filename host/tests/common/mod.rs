//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `conclave-enclave`, built by `cargo test --workspace` beside `conclave`.
pub fn enclave_program() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_conclave"))
        .parent()
        .unwrap()
        .join("conclave-enclave");
    assert!(
        p.exists(),
        "{} is missing: build it first (cargo build -p conclave-enclave)",
        p.display()
    );
    p
}
