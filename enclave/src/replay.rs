//! `conclave-enclave replay`: an auditor re-executes a round outside any VM.
//!
//! Given the checkpoint before the round, the round's updates, its receipt and the probe's
//! shard, it checks that the checkpoint is the one the receipt names, that the probe was drawn
//! from the job seed, that the proofs before hold on the recomputed activations, that the
//! updates are the ones named and, aggregated and stepped exactly as the trainer does, give the
//! weights named after, and that the proofs after hold on those.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use conclave_protocol::dataset::shard_hash;
use conclave_protocol::receipt::{OuterStep, RoundReceipt};
use conclave_protocol::toploc::VerificationResult;
use conclave_protocol::{DecodeLimits, Hash32, SparseUpdate, TensorUpdate};
use serde::Serialize;
use tch::{Device, nn};

use crate::codec;
use crate::prove::{self, Precision};
use crate::train::checkpoint::{self, model_hash};
use crate::train::config::ModelConfig;
use crate::train::data::{Shard, parse_shard};
use crate::train::model::{Gpt, set_from, sorted_params, to_vec};
use crate::train::run::outer_step;

/// What to replay.
pub struct ReplayInput {
    /// The checkpoint manifest (`.json`) of the weights before the round.
    pub checkpoint: PathBuf,
    /// The round's updates, in the receipt's order.
    pub updates: Vec<PathBuf>,
    pub receipt: PathBuf,
    /// The probe's shard file.
    pub data: PathBuf,
    /// Run the model with this architecture instead of the checkpoint's.
    pub model: Option<ModelConfig>,
}

/// One named check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// One proof's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ProofCheck {
    pub phase: &'static str,
    pub index: usize,
    pub exp_mismatches: u32,
    pub mant_err_mean: f64,
    pub mant_err_median: f64,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub pass: bool,
    pub checks: Vec<Check>,
    pub proofs: Vec<ProofCheck>,
}

impl ReplayReport {
    fn check(&mut self, name: &str, pass: bool, detail: String) {
        self.checks.push(Check {
            name: name.into(),
            pass,
            detail,
        });
    }
}

fn proof_checks(phase: &'static str, r: Vec<(VerificationResult, bool)>) -> Vec<ProofCheck> {
    r.into_iter()
        .enumerate()
        .map(|(index, (v, pass))| ProofCheck {
            phase,
            index,
            exp_mismatches: v.exp_mismatches,
            mant_err_mean: v.mant_err_mean,
            mant_err_median: v.mant_err_median,
            pass,
        })
        .collect()
}

/// Replays a round. `Err` means the input could not be used (exit 2); a report with
/// `pass = false` means a check failed (exit 1).
pub fn replay(input: &ReplayInput) -> Result<ReplayReport> {
    replay_with(input, Precision::Bf16)
}

/// [`replay`], computing the activations in `precision` (the detection tests use f16 to play
/// a verifier against a prover that differs).
pub fn replay_with(input: &ReplayInput, precision: Precision) -> Result<ReplayReport> {
    let mut rep = ReplayReport {
        pass: false,
        checks: Vec::new(),
        proofs: Vec::new(),
    };
    let rbytes = std::fs::read(&input.receipt)
        .with_context(|| format!("reading {}", input.receipt.display()))?;
    let receipt =
        RoundReceipt::from_json(&rbytes).with_context(|| format!("{}", input.receipt.display()))?;
    let (manifest, weights) = checkpoint::read_manifest(&input.checkpoint)?;
    rep.check(
        "checkpoint is the receipt's starting point",
        manifest.model_hash == receipt.model_hash_before,
        format!(
            "checkpoint {} vs receipt {}",
            manifest.model_hash, receipt.model_hash_before
        ),
    );
    rep.check(
        "checkpoint belongs to the receipt's dataset",
        manifest.data_root == receipt.data_root,
        format!("{} vs {}", manifest.data_root, receipt.data_root),
    );

    // The probe's data.
    let sbytes =
        std::fs::read(&input.data).with_context(|| format!("reading {}", input.data.display()))?;
    let (tokens, mask) = parse_shard(&sbytes, &input.data.display().to_string())?;
    let p = &receipt.probe;
    let shard = Shard {
        index: p.shard,
        tokens,
        mask,
    };
    let sh = Hash32(shard_hash(p.shard, &shard.tokens, &shard.mask));
    rep.check(
        "probe shard is the receipt's",
        sh == p.shard_sha256,
        format!(
            "shard {} hashes to {sh}, receipt names {}",
            p.shard, p.shard_sha256
        ),
    );
    let ctx = p.context as usize;
    let win = p.tokens as usize;
    let example_len = p.example_len.map(|l| l as usize);
    let derived = prove::probe_starts(
        receipt.seed,
        receipt.round,
        &shard,
        p.starts.len(),
        ctx,
        example_len,
    )?;
    let starts: Vec<usize> = p.starts.iter().map(|&s| s as usize).collect();
    rep.check(
        "probe drawn from the job seed and round",
        derived == starts,
        format!("receipt {:?}, derived {:?}", p.starts, derived),
    );

    // The model before.
    let cfg = input
        .model
        .clone()
        .unwrap_or_else(|| manifest.model.clone());
    if cfg.context < ctx {
        bail!(
            "the model's context {} is shorter than the probe's {ctx}",
            cfg.context
        );
    }
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), &cfg, manifest.vocab as usize);
    let params = sorted_params(&vs);
    checkpoint::load_into(&weights, &params)?;
    let (group, topk) = (receipt.toploc.group as usize, receipt.toploc.topk as usize);
    let th = receipt.toploc.thresholds;
    let (bits, rows, hidden) =
        prove::activations(&model, &shard, &starts, win, Device::Cpu, precision)?;
    let before = prove::verify(
        &bits,
        rows,
        hidden,
        &receipt.proofs_before,
        group,
        topk,
        &th,
    )
    .context("verifying the proofs before")?;
    let ok = before.iter().all(|r| r.1);
    rep.check(
        "proofs before hold",
        ok,
        format!(
            "{} of {} pass",
            before.iter().filter(|r| r.1).count(),
            before.len()
        ),
    );
    rep.proofs.extend(proof_checks("before", before));

    // The updates, aggregated and stepped as the trainer does.
    if input.updates.len() != receipt.updates.len() {
        bail!(
            "the receipt names {} updates, {} were given",
            receipt.updates.len(),
            input.updates.len()
        );
    }
    let mut decoded = Vec::new();
    let mut hashes_ok = true;
    for (path, want) in input.updates.iter().zip(&receipt.updates) {
        let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if Hash32::sha256(&b) != *want {
            hashes_ok = false;
        }
        decoded.push(
            SparseUpdate::decode(&b, &DecodeLimits::default())
                .with_context(|| format!("{}", path.display()))?,
        );
    }
    rep.check(
        "updates are the receipt's",
        hashes_ok,
        "SHA-256 of each update file against the receipt".into(),
    );
    let transform = decoded[0].transform;
    let clip = matches!(
        receipt.outer,
        OuterStep::Sgd {
            clip_median_norm: true,
            ..
        }
    );
    for (name, t) in &params {
        let peers: Vec<&TensorUpdate> = decoded
            .iter()
            .map(|u| {
                u.tensors
                    .iter()
                    .find(|x| &x.name == name)
                    .with_context(|| format!("an update has no tensor {name:?}"))
            })
            .collect::<Result<_>>()?;
        let agg = codec::aggregate(&peers, transform, clip)?;
        let mut w = to_vec(t);
        if agg.len() != w.len() {
            bail!("tensor {name:?}: the update's shape does not match the model");
        }
        outer_step(&mut w, &agg, &receipt.outer);
        set_from(t, &w);
    }
    let after_hash = model_hash(&params)?;
    rep.check(
        "updates give the receipt's weights after",
        after_hash == receipt.model_hash_after,
        format!(
            "replayed {after_hash}, receipt {}",
            receipt.model_hash_after
        ),
    );
    // Receipts made since proofs come from the training forward pass carry no proofs after:
    // the weights after are the replayed ones above, and the next round's receipt proves them.
    if !receipt.proofs_after.is_empty() {
        let (bits, rows, hidden) =
            prove::activations(&model, &shard, &starts, win, Device::Cpu, precision)?;
        let after = prove::verify(&bits, rows, hidden, &receipt.proofs_after, group, topk, &th)
            .context("verifying the proofs after")?;
        let ok = after.iter().all(|r| r.1);
        rep.check(
            "proofs after hold",
            ok,
            format!(
                "{} of {} pass",
                after.iter().filter(|r| r.1).count(),
                after.len()
            ),
        );
        rep.proofs.extend(proof_checks("after", after));
    }
    rep.pass = rep.checks.iter().all(|c| c.pass);
    Ok(rep)
}
