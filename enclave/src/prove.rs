//! The TOPLOC prover of a round: the probe batch, its last hidden states in bf16, and the
//! proofs over groups of 32 tokens with top-128 ([`conclave_protocol::toploc`]).
//!
//! The probe is a function of the job seed, the round and the operator's shard, so neither
//! the operator nor the host picks it: `PROBE_ROWS` windows drawn as `context`-token windows
//! (whole examples for SFT), of which the first [`probe_tokens`] are run and proved.
//!
//! Detection power comes from the number of proofs: `PROBE_ROWS` windows of up to 128 tokens
//! give 8 proofs of 32 tokens, and every scenario of `conclave-enclave toploc-trials` is
//! caught in 50 of 50 trials. A probe of one 32-token proof was measured too (it would cost
//! under 1 % of a 16 × 128-token step): it let 5 of 50 one-step weight changes, 1 of 50 other
//! shards and 39 of 50 cheaper models through, so the probe stays at 8 proofs.

use anyhow::Result;
use conclave_protocol::dataset::SplitMix64;
use conclave_protocol::toploc::{
    self, Bf16Matrix, Thresholds, VerificationResult, build_proofs_base64,
};
use tch::{Device, Kind, Tensor};

use crate::train::data::Shard;
use crate::train::model::Gpt;

/// Sequences in a probe batch.
pub const PROBE_ROWS: usize = 2;
/// Most tokens of each probe window run through the model (4 proof groups).
pub const PROBE_TOKENS: usize = 128;
/// Tokens per proof (TOPLOC's `decode_batching_size` in the paper's setting).
pub const GROUP: usize = 32;
/// Values interpolated per proof.
pub const TOPK: usize = 128;

/// The precision the prover casts its activations to. Only bf16 is honest; f16 exists so the
/// detection tests can play a prover that computed in the wrong precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Bf16,
    F16,
}

/// The probe's window starts for `round` on `shard` (whole examples for SFT data).
pub fn probe_starts(
    seed: u64,
    round: u64,
    shard: &Shard,
    rows: usize,
    context: usize,
    example_len: Option<usize>,
) -> Result<Vec<usize>> {
    let mut rng = SplitMix64::keyed("conclave/v1/probe", &[seed, round, shard.index as u64]);
    (0..rows)
        .map(|_| shard.draw_start(&mut rng, context, example_len))
        .collect()
}

/// Tokens proved per probe window for a model of `context` tokens.
pub fn probe_tokens(context: usize) -> usize {
    PROBE_TOKENS.min(context)
}

/// The last hidden states of the first `tokens` tokens of each probe window as 16-bit
/// patterns, `[rows·tokens, width]` row-major.
pub fn activations(
    model: &Gpt,
    shard: &Shard,
    starts: &[usize],
    tokens: usize,
    device: Device,
    precision: Precision,
) -> Result<(Vec<u16>, usize, usize)> {
    let mut ids = Vec::with_capacity(starts.len() * tokens);
    for &s in starts {
        let w = shard
            .tokens
            .get(s..s + tokens)
            .ok_or_else(|| anyhow::anyhow!("probe window at {s} runs past the shard"))?;
        ids.extend(w.iter().map(|&t| t as i64));
    }
    let x = Tensor::from_slice(&ids)
        .view([starts.len() as i64, tokens as i64])
        .to_device(device);
    let h = tch::no_grad(|| model.hidden(&x));
    bits_of(&h, starts.len(), tokens, precision)
}

/// The first `tokens` positions of the first `rows` sequences of hidden states
/// `[batch, time, width]`, cast to `precision`, as 16-bit patterns `[rows·tokens, width]`.
pub fn bits_of(
    h: &Tensor,
    rows: usize,
    tokens: usize,
    precision: Precision,
) -> Result<(Vec<u16>, usize, usize)> {
    let size = h.size();
    if size.len() != 3 || (size[0] as usize) < rows || (size[1] as usize) < tokens {
        anyhow::bail!("hidden states {size:?} hold no {rows} × {tokens} probe");
    }
    let width = size[2] as usize;
    let kind = match precision {
        Precision::Bf16 => Kind::BFloat16,
        Precision::F16 => Kind::Half,
    };
    let h = h
        .detach()
        .narrow(0, 0, rows as i64)
        .narrow(1, 0, tokens as i64)
        .to_kind(kind)
        .to_device(Device::Cpu)
        .contiguous()
        .view([-1])
        .view_dtype(Kind::Int16);
    let n = h.numel();
    let mut raw = vec![0i16; n];
    h.copy_data(&mut raw, n);
    let bits = raw.into_iter().map(|v| v as u16).collect();
    Ok((bits, rows * tokens, width))
}

/// Base64 proofs of the activations.
pub fn prove(bits: &[u16], rows: usize, hidden: usize) -> Result<Vec<String>> {
    let m = Bf16Matrix::new(bits, rows, hidden)?;
    Ok(build_proofs_base64(&m, GROUP, TOPK)?)
}

/// Every proof's figures and whether it passes the thresholds.
pub fn verify(
    bits: &[u16],
    rows: usize,
    hidden: usize,
    proofs: &[String],
    group: usize,
    topk: usize,
    thresholds: &Thresholds,
) -> Result<Vec<(VerificationResult, bool)>> {
    let m = Bf16Matrix::new(bits, rows, hidden)?;
    let results = toploc::verify_proofs_base64(&m, proofs, group, topk)?;
    Ok(results
        .into_iter()
        .map(|r| (r, thresholds.passes(&r)))
        .collect())
}

/// Outcome counts of [`detection_trials`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TrialCounts {
    pub scenario: &'static str,
    /// Whether an honest verifier should accept.
    pub honest: bool,
    pub trials: usize,
    pub accepted: usize,
    pub rejected: usize,
}

impl TrialCounts {
    /// Honest rounds rejected (false positives) or dishonest ones accepted (false negatives).
    pub fn errors(&self) -> usize {
        if self.honest {
            self.rejected
        } else {
            self.accepted
        }
    }
}

/// Plays `trials` rounds per scenario on a model trained a few steps from `base` (seed varied
/// per trial): the verifier recomputes the probe's activations with the claimed weights,
/// config, data and bf16, and checks proofs made by an honest prover, by one whose weights
/// took one more DeMo step (sign-SGD at the DeMo learning rate), one that ran the probe from
/// another shard, one that ran a model with a layer fewer (other weights equal), and one that cast
/// its activations to f16.
pub fn detection_trials(
    base: &crate::train::TrainConfig,
    trials: usize,
    warm_steps: u64,
) -> Result<Vec<TrialCounts>> {
    use crate::train::Trainer;
    use crate::train::model::{set_from, to_vec};
    let names = [
        ("honest", true),
        ("weights one DeMo step off", false),
        ("probe from another shard", false),
        ("model with a layer fewer", false),
        ("activations in f16", false),
    ];
    let mut counts: Vec<TrialCounts> = names
        .iter()
        .map(|&(scenario, honest)| TrialCounts {
            scenario,
            honest,
            ..Default::default()
        })
        .collect();
    for t in 0..trials {
        let mut cfg = base.clone();
        cfg.seed = base.seed.wrapping_add(t as u64);
        cfg.optimizer = crate::train::Method::Adamw;
        let mut tr = Trainer::new(cfg)?;
        while tr.step < warm_steps {
            tr.advance()?;
        }
        let ctx = tr.cfg.model.context;
        let win = probe_tokens(ctx);
        let s = tr.shard_for(tr.step, 0)?;
        let other = tr.shard_for(tr.step, 1)?;
        let shard = tr.dataset.shard(s)?;
        let other_shard = tr.dataset.shard(other)?;
        let starts = probe_starts(tr.cfg.seed, t as u64, &shard, PROBE_ROWS, ctx, None)?;
        let dev = tr.device;
        let honest_bits = activations(&tr.model, &shard, &starts, win, dev, Precision::Bf16)?;
        let (rows, hidden) = (honest_bits.1, honest_bits.2);
        let check = |proofs: &[String]| -> Result<bool> {
            let r = verify(
                &honest_bits.0,
                rows,
                hidden,
                proofs,
                GROUP,
                TOPK,
                &Thresholds::default(),
            )?;
            Ok(r.iter().all(|x| x.1))
        };
        // The honest prover commits to the probe rows of its training forward pass (the
        // probe windows are the first rows of a full training batch, gradients on); the
        // verifier recomputes the probe alone.
        let probe = conclave_protocol::receipt::Probe {
            shard: s,
            shard_sha256: tr.dataset.shard_sha256(s)?,
            starts: starts.iter().map(|&x| x as u64).collect(),
            context: ctx as u32,
            tokens: win as u32,
            example_len: None,
        };
        let step_bits = tr.step_activations(tr.step, 0, &probe)?;
        let mut claims: Vec<Vec<String>> = Vec::new();
        claims.push(prove(&step_bits.0, step_bits.1, step_bits.2)?);
        // One DeMo step: the gradient of a training batch, sign-SGD at lr 1e-3.
        let saved: Vec<Vec<f32>> = tr.params.iter().map(|(_, p)| to_vec(p)).collect();
        let b = tr.batch(tr.step, 0)?;
        for (_, p) in &tr.params {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
        let (x, y) = b.to_tensors(dev);
        tr.model.loss(&x, &y).backward();
        for ((_, p), w) in tr.params.iter().zip(&saved) {
            let g = to_vec(&p.grad());
            let mut w = w.clone();
            crate::codec::sign_step(&mut w, &g, 1e-3);
            set_from(p, &w);
        }
        let bits = activations(&tr.model, &shard, &starts, win, dev, Precision::Bf16)?;
        claims.push(prove(&bits.0, rows, hidden)?);
        for ((_, p), w) in tr.params.iter().zip(&saved) {
            set_from(p, w);
        }
        // The same windows of another shard.
        let bits = activations(&tr.model, &other_shard, &starts, win, dev, Precision::Bf16)?;
        claims.push(prove(&bits.0, rows, hidden)?);
        // A cheaper model: the last layer left out, every other weight the same.
        let mut mc = tr.cfg.model.clone();
        mc.layers = mc.layers.saturating_sub(1).max(1);
        if mc.layers == tr.cfg.model.layers {
            mc.layers += 1;
        }
        let vs = tch::nn::VarStore::new(dev);
        let alt = Gpt::new(&vs.root(), &mc, tr.dataset.vocab());
        for (name, a) in crate::train::model::sorted_params(&vs) {
            if let Some(i) = tr.params.iter().position(|(n, _)| *n == name) {
                set_from(&a, &saved[i]);
            }
        }
        let bits = activations(&alt, &shard, &starts, win, dev, Precision::Bf16)?;
        claims.push(prove(&bits.0, rows, hidden)?);
        // f16 activations.
        let bits = activations(&tr.model, &shard, &starts, win, dev, Precision::F16)?;
        claims.push(prove(&bits.0, rows, hidden)?);
        for (c, proofs) in counts.iter_mut().zip(&claims) {
            c.trials += 1;
            if check(proofs)? {
                c.accepted += 1;
            } else {
                c.rejected += 1;
            }
        }
    }
    Ok(counts)
}
