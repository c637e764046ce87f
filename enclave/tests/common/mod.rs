//! What the trainer's integration tests share.

use std::path::{Path, PathBuf};

/// The corpus (`scripts/setup-corpus.sh`), or `$CONCLAVE_CORPUS`.
pub fn corpus() -> PathBuf {
    std::env::var_os("CONCLAVE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.data/moby-dick/package"))
}
