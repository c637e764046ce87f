//! The trainer on the real corpus (set up by `scripts/setup-corpus.sh`): a tiny model learns,
//! runs are bit-for-bit reproducible, checkpoints round-trip, and damaged data is refused.

mod common;

use std::path::Path;

use conclave_enclave::train::checkpoint;
use conclave_enclave::train::config::{DataKind, Method};
use conclave_enclave::train::{TrainConfig, Trainer};
use conclave_protocol::ValueEncoding;

fn tiny(dir: &Path, method: Method) -> TrainConfig {
    let mut c = TrainConfig {
        device: "cpu".into(),
        threads: 1,
        replicas: 2,
        out: dir.join("run"),
        ..TrainConfig::default()
    };
    c.model.layers = 1;
    c.model.heads = 2;
    c.model.width = 32;
    c.model.context = 32;
    c.data.corpus = common::corpus();
    c.data.cache = dir.join("cache");
    c.data.vocab = 400;
    c.data.shards = 4;
    c.data.steps_per_epoch = 5;
    c.train.steps = 20;
    c.train.batch = 4;
    c.train.warmup = 2;
    c.train.eval_batches = 2;
    c.train.eval_every = 0;
    c.optimizer = method;
    c
}

fn sparseloco() -> Method {
    Method::Sparseloco {
        inner_steps: 5,
        outer_lr: 1.0,
        decay: 0.95,
        topk: 64,
        chunk: 64,
        values: ValueEncoding::TwoBit,
        clip_median_norm: true,
    }
}

fn demo(topk: usize, values: ValueEncoding) -> Method {
    Method::Demo {
        lr: 3e-3,
        decay: 0.999,
        topk,
        chunk: 64,
        values,
    }
}

#[test]
fn a_few_steps_reduce_the_loss_with_every_method() {
    for method in [Method::Adamw, demo(32, ValueEncoding::F32), sparseloco()] {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Trainer::new(tiny(dir.path(), method.clone())).unwrap();
        let before = t.evaluate();
        let s = t.run().unwrap();
        assert!(
            s.final_val_loss < before - 0.2,
            "{}: validation loss {before} → {}",
            method.name(),
            s.final_val_loss
        );
        assert!(s.bytes_sent_per_replica > 0);
        // The checkpoint and summary are on disk, and the manifest matches the weights.
        let m = dir.path().join("run/checkpoints/step-000020.json");
        let (man, _) = checkpoint::read_manifest(&m).unwrap();
        assert_eq!(man.model_hash, s.model_hash);
        assert_eq!(man.data_root, s.data_root);
        assert!(dir.path().join("run/summary.json").exists());
    }
}

#[test]
fn same_seed_same_data_same_weights() {
    let hash = |method: Method, seed: u64| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = tiny(dir.path(), method);
        c.seed = seed;
        c.train.steps = 10;
        let mut t = Trainer::new(c).unwrap();
        while t.step < 10 {
            t.advance().unwrap();
        }
        t.model_hash().unwrap()
    };
    for m in [Method::Adamw, demo(4, ValueEncoding::OneBit), sparseloco()] {
        let a = hash(m.clone(), 7);
        assert_eq!(a, hash(m.clone(), 7), "{}", m.name());
        assert_ne!(a, hash(m.clone(), 8), "{}: the seed must matter", m.name());
    }
}

#[test]
fn checkpoint_save_load_same_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(tiny(dir.path(), Method::Adamw)).unwrap();
    for _ in 0..3 {
        t.advance().unwrap();
    }
    let (mpath, man) = t.checkpoint(None).unwrap();
    assert_eq!(man.model_hash, t.model_hash().unwrap());
    // A fresh model (other seed) loaded from the file has the same hash and the same loss.
    let mut c = tiny(dir.path(), Method::Adamw);
    c.seed = 99;
    c.out = dir.path().join("other");
    let fresh = Trainer::new(c.clone()).unwrap();
    assert_ne!(fresh.model_hash().unwrap(), man.model_hash);
    let (_, weights) = checkpoint::read_manifest(&mpath).unwrap();
    c.init = Some(weights.clone());
    let loaded = Trainer::new(c).unwrap();
    assert_eq!(loaded.model_hash().unwrap(), man.model_hash);
    assert_eq!(loaded.evaluate(), t.evaluate());
    // A damaged weights file no longer matches its manifest.
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let e = checkpoint::read_manifest(&mpath).unwrap_err().to_string();
    assert!(e.contains("the manifest says"), "{e}");
}

#[test]
fn a_corrupted_shard_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let c = tiny(dir.path(), Method::Adamw);
    let mut t = Trainer::new(c.clone()).unwrap();
    let idx = t.shard_for(0, 0).unwrap();
    let path = conclave_enclave::train::data::shard_path(&t.dataset.dir, idx);
    drop(t);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0x01; // one token id
    std::fs::write(&path, &bytes).unwrap();
    let mut t = Trainer::new(c.clone()).unwrap();
    let e = format!("{:#}", t.advance().unwrap_err());
    assert!(
        e.contains(&format!("shard {idx}")) && e.contains("does not match"),
        "{e}"
    );
    // A job that pins another dataset root refuses the data before training.
    let mut pinned = c;
    pinned.data_root = Some("00".repeat(32));
    let e = format!("{:#}", Trainer::new(pinned).err().unwrap());
    assert!(e.contains("does not match the job's"), "{e}");
}

#[test]
fn sft_masks_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny(dir.path(), Method::Adamw);
    c.data.kind = DataKind::Sft;
    c.model.context = 64;
    let mut t = Trainer::new(c).unwrap();
    let b = t.batch(0, 0).unwrap();
    let masked = b.targets.iter().filter(|&&x| x == -100).count();
    assert!(masked > 0 && masked < b.targets.len(), "{masked}");
    let before = t.evaluate();
    for _ in 0..20 {
        t.advance().unwrap();
    }
    assert!(t.evaluate() < before, "SFT loss did not fall");
}
