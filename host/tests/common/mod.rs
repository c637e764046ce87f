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

/// Every base64 string of a channel capture (`CONCLAVE_CAPTURE_CHANNEL`: one JSON frame per
/// line) decoded and concatenated, and the number of frames.
pub fn decoded_capture(path: &Path) -> (Vec<u8>, usize) {
    use base64::Engine as _;
    let cap = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut frames = 0;
    for line in cap.lines() {
        let mut stack = vec![serde_json::from_str::<serde_json::Value>(line).unwrap()];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::String(s) => {
                    if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(&s) {
                        out.extend_from_slice(&b);
                        out.push(0);
                    }
                }
                serde_json::Value::Array(a) => stack.extend(a),
                serde_json::Value::Object(o) => stack.extend(o.into_iter().map(|(_, v)| v)),
                _ => {}
            }
        }
        frames += 1;
    }
    (out, frames)
}

/// The signed update envelopes among `files`: each one's round and body.
pub fn update_bodies(files: &[PathBuf]) -> Vec<(u64, Vec<u8>)> {
    use conclave_protocol::{Signed, Statement, UpdatePayload};
    files
        .iter()
        .filter_map(|p| {
            let bytes = std::fs::read(p).ok()?;
            let env = Signed::<UpdatePayload>::decode_envelope(&bytes).ok()?;
            if env.kind != "update" {
                return None;
            }
            let u = UpdatePayload::from_payload(&env.payload).unwrap();
            Some((u.round, u.body))
        })
        .collect()
}

/// Needles for the plaintext of every sealed update among `files`, opened with the customer's
/// key file; and how many were opened.
pub fn sealed_update_needles(files: &[PathBuf], key: &Path) -> (Needles, usize) {
    let (kf, secret) = conclave_host::keys::KeyFile::read(key).unwrap();
    let mut n = Needles::default();
    let bodies = update_bodies(files);
    for (round, body) in &bodies {
        let plain = secret
            .open(
                &kf.sealing_id.0,
                conclave_protocol::seal::Kind::Update,
                *round,
                body,
            )
            .unwrap();
        n.add(&plain, 1);
    }
    (n, bodies.len())
}

/// The customer's `conclave-enclave spec` of `job` on the corpus, with its cache in `dir`:
/// writes `dir/published.json`; returns it and the prepared dataset folder.
pub fn customer_spec(job: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let o = std::process::Command::new(enclave_program())
        .args(["spec", "--config"])
        .arg(job)
        .arg("--corpus")
        .arg(root().join(".data/moby-dick/package"))
        .arg("--cache")
        .arg(dir.join("cache"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::create_dir_all(dir).unwrap();
    let published = dir.join("published.json");
    std::fs::write(&published, &o.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (published, PathBuf::from(v["dataset_dir"].as_str().unwrap()))
}

/// Builds the guest image into `scratch/image` (needs `scripts/setup-image.sh`).
pub fn build_image(scratch: &Path) -> PathBuf {
    let dir = scratch.join("image");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["image", "build", "--json", "--out"])
        .arg(&dir)
        .arg("--inputs")
        .arg(root().join(".image-inputs"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "image build failed (run scripts/setup-image.sh): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    dir
}

/// The names of the haystacks in `view` that hold any of `needles`.
pub fn leaks(needles: &Needles, view: &[(String, Vec<u8>)]) -> Vec<String> {
    view.iter()
        .filter(|(_, b)| needles.found_in(b))
        .map(|(n, _)| n.clone())
        .collect()
}
