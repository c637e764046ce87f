//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
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

/// 64-byte windows to look for, indexed by their first 8 bytes.
#[derive(Default)]
pub struct Needles {
    by_prefix: HashMap<u64, Vec<[u8; 64]>>,
}

impl Needles {
    /// Every window of `bytes` at offsets that are multiples of `step` (2 for u16 tokens),
    /// skipping low-entropy ones (zeros, padding) that any file may hold by chance.
    pub fn add(&mut self, bytes: &[u8], step: usize) {
        let mut off = 0;
        while off + 64 <= bytes.len() {
            let w: [u8; 64] = bytes[off..off + 64].try_into().unwrap();
            let distinct: HashSet<u8> = w.iter().copied().collect();
            if distinct.len() >= 12 {
                let p = u64::from_le_bytes(w[..8].try_into().unwrap());
                self.by_prefix.entry(p).or_default().push(w);
            }
            off += step;
        }
    }

    pub fn len(&self) -> usize {
        self.by_prefix.values().map(Vec::len).sum()
    }

    /// Whether any needle occurs in `hay`.
    pub fn found_in(&self, hay: &[u8]) -> bool {
        if hay.len() < 64 {
            return false;
        }
        (0..=hay.len() - 64).any(|i| {
            let p = u64::from_le_bytes(hay[i..i + 8].try_into().unwrap());
            self.by_prefix
                .get(&p)
                .is_some_and(|ws| ws.iter().any(|w| w[..] == hay[i..i + 64]))
        })
    }
}

/// Every file under `dir` (recursively).
pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

/// The token ids of a prepared shard file (`CNVSHRD1`, count, u16 LE tokens, mask).
pub fn shard_tokens(bytes: &[u8]) -> &[u8] {
    assert_eq!(&bytes[..8], b"CNVSHRD1");
    let n = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
    &bytes[16..16 + 2 * n]
}
