//! TOPLOC-proved round receipts: a trainer writes them, `conclave-enclave replay` re-executes
//! the round and accepts it, and refuses every kind of lie (tests on the real corpus).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use conclave_enclave::prove::detection_trials;
use conclave_enclave::train::{Method, TrainConfig, Trainer};
use conclave_protocol::ValueEncoding;

fn tiny(dir: &Path, method: Method) -> TrainConfig {
    let mut c = TrainConfig {
        device: "cpu".into(),
        threads: 1,
        replicas: 3,
        out: dir.join("run"),
        receipts: true,
        optimizer: method,
        ..TrainConfig::default()
    };
    c.model.layers = 2;
    c.model.heads = 4;
    c.model.width = 64;
    c.model.context = 64;
    c.data.corpus = common::corpus();
    c.data.cache = dir.join("cache");
    c.data.vocab = 400;
    c.data.shards = 4;
    c.train.steps = 6;
    c.train.batch = 4;
    c.train.warmup = 1;
    c.train.eval_batches = 1;
    c.train.eval_every = 0;
    c
}

fn replay(round: &Path, data: &Path, extra: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conclave-enclave"));
    cmd.arg("replay")
        .arg("--checkpoint")
        .arg(
            round
                .join("step-000000.json")
                .canonicalize()
                .unwrap_or(round.join("x")),
        )
        .arg("--receipt")
        .arg(round.join("receipt.json"))
        .arg("--data")
        .arg(data);
    let mut i = 0;
    while round.join(format!("update-{i}.bin")).exists() {
        cmd.arg("--update")
            .arg(round.join(format!("update-{i}.bin")));
        i += 1;
    }
    cmd.args(extra);
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn first_round(dir: &Path, method: Method) -> (PathBuf, PathBuf) {
    let mut t = Trainer::new(tiny(dir, method)).unwrap();
    t.run().unwrap();
    let round = dir.join("run/rounds/000000");
    let receipt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(round.join("receipt.json")).unwrap()).unwrap();
    let shard = receipt["probe"]["shard"].as_u64().unwrap() as u32;
    let data = conclave_enclave::train::data::shard_path(&t.dataset.dir, shard);
    (round, data)
}

#[test]
fn an_honest_round_replays_and_lies_are_refused() {
    for method in [
        Method::Sparseloco {
            inner_steps: 3,
            outer_lr: 1.0,
            decay: 0.95,
            topk: 64,
            chunk: 64,
            values: ValueEncoding::TwoBit,
            clip_median_norm: true,
        },
        Method::Demo {
            lr: 1e-3,
            decay: 0.999,
            topk: 32,
            chunk: 64,
            values: ValueEncoding::F32,
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (round, data) = first_round(dir.path(), method.clone());
        let (code, out) = replay(&round, &data, &[]);
        assert_eq!(code, 0, "{}: {out}", method.name());
        assert!(
            out.starts_with("PASS")
                && out.contains("proof before #0: pass")
                && !out.contains("proof after"),
            "{out}"
        );

        // A receipt claiming proofs after that are not of the weights after fails.
        let text = std::fs::read_to_string(round.join("receipt.json")).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let before = v["proofs_before"].clone();
        v["proofs_after"] = before;
        std::fs::write(round.join("receipt.json"), serde_json::to_vec(&v).unwrap()).unwrap();
        let (code, out) = replay(&round, &data, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("[FAIL] proofs after hold"), "{out}");
        std::fs::write(round.join("receipt.json"), &text).unwrap();

        // An altered update: its hash and the weights after no longer match.
        let u = round.join("update-1.bin");
        let orig = std::fs::read(&u).unwrap();
        let mut bad = orig.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x10;
        std::fs::write(&u, &bad).unwrap();
        let (code, out) = replay(&round, &data, &[]);
        assert!(code == 1 || code == 2, "{out}");
        assert!(out.contains("FAIL") || out.contains("error"), "{out}");
        std::fs::write(&u, &orig).unwrap();

        // Another shard as the probe's data.
        let other = data.with_file_name(if data.ends_with("shard-0000.bin") {
            "shard-0001.bin"
        } else {
            "shard-0000.bin"
        });
        let (code, out) = replay(&round, &other, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("[FAIL] probe shard is the receipt's"), "{out}");

        // A damaged receipt is unusable input (exit 2), not a crash.
        std::fs::write(round.join("receipt.json"), &text[..text.len() / 2]).unwrap();
        let (code, out) = replay(&round, &data, &[]);
        assert_eq!(code, 2, "{out}");
        std::fs::write(round.join("receipt.json"), &text).unwrap();
    }
}

#[test]
fn toploc_detects_wrong_weights_data_config_and_precision() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny(dir.path(), Method::Adamw);
    let counts = detection_trials(&base, 4, 25).unwrap();
    for c in &counts {
        assert_eq!(c.trials, 4);
        assert_eq!(c.errors(), 0, "{c:?}");
    }
}
