//! TOPLOC proving overhead: proving one round's probe batch (forward pass of the probe, bf16
//! cast, proofs of 32-token groups with top-128) against one training step of the same model,
//! both measured here with criterion: the convergence benchmark's 2.17 M-parameter GPT on the
//! real corpus (`scripts/setup-corpus.sh`); one operator's step (one replica, 16 sequences of
//! 128 tokens, and 64 sequences, an AdamW step: SparseLoCo's inner step). The probe is fixed (`PROBE_ROWS` ×
//! `PROBE_TOKENS` tokens, forward only), so its share falls as the step's batch grows.
//!
//! `source scripts/env.sh && cargo bench -p conclave-enclave --bench prove`

use std::path::Path;
use std::time::Duration;

use conclave_enclave::prove::{self, PROBE_ROWS, Precision};
use conclave_enclave::train::{Method, TrainConfig, Trainer};
use criterion::{Criterion, black_box};

fn trainer(root: &Path, batch: usize) -> Trainer {
    let mut cfg = TrainConfig::load(&root.join("configs/toploc-trials.toml"))
        .expect("configs/toploc-trials.toml");
    cfg.optimizer = Method::Adamw;
    cfg.replicas = 1;
    cfg.train.batch = batch;
    cfg.device = "cpu".into();
    cfg.data.corpus = root.join(".data/moby-dick/package");
    cfg.data.cache = root.join(".data/cache");
    cfg.out = std::env::temp_dir().join("conclave-bench-prove");
    Trainer::new(cfg).expect("trainer (run scripts/setup-corpus.sh)")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    // One operator's step at two batch sizes: the probe's cost is fixed, the step's grows.
    let mut steps: Vec<(usize, f64)> = Vec::new();
    for batch in [16usize, 64] {
        let mut tr = trainer(&root, batch);
        let mut ns: Vec<f64> = Vec::new();
        c.bench_function(&format!("train_step_{batch}x128_tokens_2.2M"), |b| {
            b.iter_custom(|iters| {
                let t = std::time::Instant::now();
                for _ in 0..iters {
                    black_box(tr.advance().expect("step"));
                }
                let e = t.elapsed();
                ns.push(e.as_nanos() as f64 / iters as f64);
                e
            })
        });
        steps.push((batch, median(ns)));
    }
    let mut tr = trainer(&root, 16);
    let ctx = tr.cfg.model.context;
    let win = prove::probe_tokens(ctx);
    let idx = tr.shard_for(0, 0).expect("shard");
    let shard = tr.dataset.shard(idx).expect("shard");
    let starts = prove::probe_starts(tr.cfg.seed, 0, &shard, PROBE_ROWS, ctx, None).expect("probe");
    let mut prove_ns: Vec<f64> = Vec::new();
    c.bench_function("prove_probe_batch", |b| {
        b.iter_custom(|iters| {
            let t = std::time::Instant::now();
            for _ in 0..iters {
                let (bits, rows, hidden) =
                    prove::activations(&tr.model, &shard, &starts, win, tr.device, Precision::Bf16)
                        .expect("activations");
                black_box(prove::prove(&bits, rows, hidden).expect("proofs"));
            }
            let e = t.elapsed();
            prove_ns.push(e.as_nanos() as f64 / iters as f64);
            e
        })
    });
    c.final_summary();
    let prove_ns = median(prove_ns);
    println!(
        "\nmedians: proving the probe batch ({PROBE_ROWS} x {win} tokens): {:.2} ms",
        prove_ns / 1e6
    );
    for (batch, step_ns) in steps {
        if step_ns > 0.0 {
            println!(
                "  step of {batch} x 128 tokens: {:.1} ms; one proof set {:.2} % of a step; a round proves twice: \
                 {:.2} % for a 1-step DeMo round, {:.2} % per step of a 10-step SparseLoCo round",
                step_ns / 1e6,
                100.0 * prove_ns / step_ns,
                200.0 * prove_ns / step_ns,
                20.0 * prove_ns / step_ns,
            );
        }
    }
}
