//! TOPLOC proving overhead against one training step of the same model, both measured here
//! with criterion: the convergence benchmark's 2.17 M-parameter GPT on the real corpus
//! (`scripts/setup-corpus.sh`); one operator's step (one replica, 16 and 64 sequences of 128
//! tokens, an AdamW step: SparseLoCo's inner step). A round is proved from the hidden states
//! its first training forward pass computes anyway (the probe windows are that batch's first
//! rows): proving adds the bf16 cast and the proofs (32-token groups, top-128). The old way, a
//! forward pass of the probe of its own, is timed too.
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
    let probe = tr.probe(0).expect("probe");
    // What proving adds to a step: the probe rows' hidden states are already computed by the
    // training forward pass; proving casts them to bf16 and builds the proofs.
    let b = tr.probe_batch(0, 0, &probe).expect("batch");
    let (x, y) = b.to_tensors(tr.device);
    let (_, hidden) = tch::no_grad(|| tr.model.loss_and_hidden(&x, &y));
    let mut prove_ns: Vec<f64> = Vec::new();
    c.bench_function("prove_from_step_activations", |bch| {
        bch.iter_custom(|iters| {
            let t = std::time::Instant::now();
            for _ in 0..iters {
                let (bits, rows, width) = prove::bits_of(
                    &hidden,
                    probe.starts.len(),
                    probe.tokens as usize,
                    Precision::Bf16,
                )
                .expect("bits");
                black_box(prove::prove(&bits, rows, width).expect("proofs"));
            }
            let e = t.elapsed();
            prove_ns.push(e.as_nanos() as f64 / iters as f64);
            e
        })
    });
    // For reference: a separate forward pass of the probe (how rounds were proved before).
    let idx = tr.shard_for(0, 0).expect("shard");
    let shard = tr.dataset.shard(idx).expect("shard");
    let starts: Vec<usize> = probe.starts.iter().map(|&s| s as usize).collect();
    let win = prove::probe_tokens(ctx);
    let mut forward_ns: Vec<f64> = Vec::new();
    c.bench_function("prove_with_own_forward_pass", |bch| {
        bch.iter_custom(|iters| {
            let t = std::time::Instant::now();
            for _ in 0..iters {
                let (bits, rows, hidden) =
                    prove::activations(&tr.model, &shard, &starts, win, tr.device, Precision::Bf16)
                        .expect("activations");
                black_box(prove::prove(&bits, rows, hidden).expect("proofs"));
            }
            let e = t.elapsed();
            forward_ns.push(e.as_nanos() as f64 / iters as f64);
            e
        })
    });
    c.final_summary();
    let (prove_ns, forward_ns) = (median(prove_ns), median(forward_ns));
    println!(
        "\nmedians: proving a round from its first step's activations ({PROBE_ROWS} x {win} tokens, {} proofs): {:.3} ms;\n\
         with a forward pass of its own (the old way): {:.2} ms",
        probe.starts.len() * win / prove::GROUP,
        prove_ns / 1e6,
        forward_ns / 1e6
    );
    for (batch, step_ns) in steps {
        if step_ns > 0.0 {
            println!(
                "  step of {batch} x 128 tokens: {:.1} ms; proving {:.3} % of a step (one proof set per round: \
                 {:.3} % per step of a 10-step SparseLoCo round); with its own forward pass {:.2} %",
                step_ns / 1e6,
                100.0 * prove_ns / step_ns,
                10.0 * prove_ns / step_ns,
                100.0 * forward_ns / step_ns,
            );
        }
    }
}
