//! TOPLOC proving overhead: proving one round's probe batch (forward pass of the probe, bf16
//! cast, proofs of 32-token groups with top-128) against one training step of the same model,
//! both measured here with criterion: the convergence benchmark's 2.17 M-parameter GPT on the
//! real corpus (`scripts/setup-corpus.sh`); one operator's step (one replica, 16 sequences of
//! 128 tokens, an AdamW step: SparseLoCo's inner step). The probe is fixed (`PROBE_ROWS` ×
//! `PROBE_TOKENS` tokens, forward only), so its share falls as the step's batch grows.
//!
//! `source scripts/env.sh && cargo bench -p conclave-enclave --bench prove`

use std::path::Path;
use std::time::Duration;

use conclave_enclave::prove::{self, PROBE_ROWS, Precision};
use conclave_enclave::train::{Method, TrainConfig, Trainer};
use criterion::{Criterion, black_box};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cfg = TrainConfig::load(&root.join("configs/toploc-trials.toml"))
        .expect("configs/toploc-trials.toml");
    cfg.optimizer = Method::Adamw;
    cfg.replicas = 1;
    cfg.train.batch = 16;
    cfg.device = "cpu".into();
    cfg.data.corpus = root.join(".data/moby-dick/package");
    cfg.data.cache = root.join(".data/cache");
    cfg.out = std::env::temp_dir().join("conclave-bench-prove");
    let mut tr = Trainer::new(cfg).expect("trainer (run scripts/setup-corpus.sh)");
    let ctx = tr.cfg.model.context;
    let win = prove::probe_tokens(ctx);
    let idx = tr.shard_for(0, 0).expect("shard");
    let shard = tr.dataset.shard(idx).expect("shard");
    let starts = prove::probe_starts(tr.cfg.seed, 0, &shard, PROBE_ROWS, ctx, None).expect("probe");
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    let mut step_ns: Vec<f64> = Vec::new();
    c.bench_function("train_step_16x128_tokens_2.2M", |b| {
        b.iter_custom(|iters| {
            let t = std::time::Instant::now();
            for _ in 0..iters {
                black_box(tr.advance().expect("step"));
            }
            let e = t.elapsed();
            step_ns.push(e.as_nanos() as f64 / iters as f64);
            e
        })
    });
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
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (step_ns, prove_ns) = (median(step_ns), median(prove_ns));
    if step_ns > 0.0 {
        println!(
            "\nmedians: proving the probe batch: {:.2} ms; one training step: {:.1} ms; {:.2} % of a step per proof set;\n\
             a round proves twice (before, after): {:.2} % for a 1-step DeMo round, {:.2} % for a SparseLoCo round of 10 steps",
            prove_ns / 1e6,
            step_ns / 1e6,
            100.0 * prove_ns / step_ns,
            200.0 * prove_ns / step_ns,
            20.0 * prove_ns / step_ns,
        );
    }
}
