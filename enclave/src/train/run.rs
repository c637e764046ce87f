//! The training loop: R replicas in one process, each on its own shard, synchronised by the
//! configured method, exchanging compressed updates in memory exactly as they would over the
//! network (the same [`SparseUpdate`] bytes are counted).
//!
//! - AdamW: every replica's gradient is averaged (what an all-reduce computes), then one AdamW
//!   step. Replicas stay identical, so one model is kept.
//! - DeMo: per replica `δ ← β·δ + lr·g`, compress with error feedback; all replicas' updates
//!   are scatter-mean aggregated and every replica takes `p ← p·(1 − lr·wd) − lr·sign(·)`.
//!   Replicas stay identical, so one model and R error buffers are kept.
//! - SparseLoCo: each replica runs H AdamW steps from the shared θ on its own data,
//!   `Δ = θ − θ_r`, `e ← β·e + Δ`, compress (no DCT, 2-bit); the median-norm-clipped
//!   scatter-mean `Δ̄` gives `θ ← θ − α·Δ̄`. R replica models with their own AdamW state.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use conclave_protocol::dataset::{SplitMix64, assign_shard};
use conclave_protocol::receipt::{OuterStep, Probe, RoundReceipt, ToplocParams};
use conclave_protocol::toploc::Thresholds;
use conclave_protocol::{DecodeLimits, Hash32, SparseUpdate, TensorUpdate};
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::checkpoint::{self, CheckpointManifest};
use super::config::{Method, TrainConfig};
use super::data::{Batch, Dataset, Shard};
use super::model::{Gpt, count_params, init_weights, set_from, sorted_params, to_vec};
use crate::codec::{self, Codec};
use crate::prove;

/// What a run reports at its end (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub method: String,
    pub replicas: usize,
    pub steps: u64,
    pub params: u64,
    pub tokens_per_replica: u64,
    pub final_val_loss: f64,
    pub val_history: Vec<(u64, f64)>,
    /// Bytes one replica sent over the whole run (mean over replicas): encoded sparse updates,
    /// or for AdamW a ring all-reduce of f32 gradients, `2·(R−1)/R·4·params` per step.
    pub bytes_sent_per_replica: u64,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub model_hash: Hash32,
    pub config_hash: Hash32,
    pub data_root: Hash32,
    pub device: String,
}

struct Replica {
    _vs: nn::VarStore,
    model: Gpt,
    params: Vec<(String, Tensor)>,
    opt: nn::Optimizer,
}

enum State {
    Adamw {
        opt: nn::Optimizer,
    },
    Demo {
        codec: Codec,
        delta: Vec<Vec<Vec<f32>>>,
    },
    Sparseloco {
        codec: Codec,
        replicas: Vec<Replica>,
        ef: Vec<Vec<Vec<f32>>>,
    },
}

/// One operator's update for a round ([`Trainer::local_update`]).
#[derive(Debug, Clone)]
pub struct LocalUpdate {
    /// The encoded [`SparseUpdate`].
    pub bytes: Vec<u8>,
    /// Mean training loss of its local steps.
    pub loss: f64,
    /// Training steps the round covers.
    pub steps: u64,
    /// With a probe: TOPLOC proofs of the model the round started from, taken from the last
    /// hidden states of the round's first training forward pass (the probe windows are that
    /// batch's first rows), so proving costs no forward pass of its own.
    pub proofs_before: Option<Vec<String>>,
}

/// A trainer holding the shared model, the data and the method's state.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub device: Device,
    pub dataset: Dataset,
    vs: nn::VarStore,
    pub model: Gpt,
    pub params: Vec<(String, Tensor)>,
    state: State,
    shards: HashMap<u32, Shard>,
    validation: Shard,
    val_starts: Vec<usize>,
    pub step: u64,
    bytes_sent: u64,
    /// The last round's encoded updates (one per replica, in aggregation order) and the outer
    /// step applied to their aggregate.
    pub last_round: Option<(Vec<Vec<u8>>, OuterStep)>,
}

fn device_for(cfg: &TrainConfig) -> Result<Device> {
    Ok(match cfg.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => {
            if !tch::Cuda::is_available() {
                bail!("device = \"cuda\" but libtorch sees no CUDA device");
            }
            Device::Cuda(0)
        }
        _ => Device::cuda_if_available(),
    })
}

fn adamw(cfg: &TrainConfig, vs: &nn::VarStore) -> Result<nn::Optimizer> {
    let t = &cfg.train;
    nn::AdamW {
        beta1: t.beta1,
        beta2: t.beta2,
        wd: t.weight_decay,
        eps: t.eps,
        amsgrad: false,
    }
    .build(vs, t.lr)
    .map_err(|e| anyhow!("building AdamW: {e}"))
}

fn shapes(params: &[(String, Tensor)]) -> Vec<Vec<usize>> {
    params
        .iter()
        .map(|(_, t)| t.size().iter().map(|&d| d as usize).collect())
        .collect()
}

fn zeros_like(params: &[(String, Tensor)]) -> Vec<Vec<f32>> {
    params.iter().map(|(_, t)| vec![0f32; t.numel()]).collect()
}

impl Trainer {
    /// Prepares the data, builds (or loads) the model and the method's state.
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        let dataset = Dataset::prepare(&cfg.data, cfg.model.context, cfg.data_root.as_deref())?;
        Self::with_dataset(cfg, dataset)
    }

    /// Builds (or loads) the model and the method's state over a dataset already opened (a
    /// sealed one, for example).
    pub fn with_dataset(cfg: TrainConfig, dataset: Dataset) -> Result<Self> {
        cfg.validate()?;
        if cfg.threads > 0 {
            tch::set_num_threads(cfg.threads as i32);
        }
        let device = device_for(&cfg)?;
        let vocab = dataset.vocab();
        let vs = nn::VarStore::new(device);
        let model = Gpt::new(&vs.root(), &cfg.model, vocab);
        let params = sorted_params(&vs);
        init_weights(&params, cfg.model.layers, cfg.seed);
        if let Some(init) = &cfg.init {
            checkpoint::load_into(init, &params)
                .with_context(|| format!("loading init weights {}", init.display()))?;
        }
        let state = match &cfg.optimizer {
            Method::Adamw => State::Adamw {
                opt: adamw(&cfg, &vs)?,
            },
            Method::Demo { .. } => State::Demo {
                codec: Codec::new(cfg.optimizer.codec().context("demo codec")?),
                delta: (0..cfg.replicas).map(|_| zeros_like(&params)).collect(),
            },
            Method::Sparseloco { .. } => {
                let replicas = (0..cfg.replicas)
                    .map(|_| {
                        let rvs = nn::VarStore::new(device);
                        let model = Gpt::new(&rvs.root(), &cfg.model, vocab);
                        let rparams = sorted_params(&rvs);
                        let opt = adamw(&cfg, &rvs)?;
                        Ok(Replica {
                            _vs: rvs,
                            model,
                            params: rparams,
                            opt,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                State::Sparseloco {
                    codec: Codec::new(cfg.optimizer.codec().context("sparseloco codec")?),
                    replicas,
                    ef: (0..cfg.replicas).map(|_| zeros_like(&params)).collect(),
                }
            }
        };
        let validation = dataset.shard(u32::MAX)?;
        let val_starts = validation.fixed(
            cfg.train.eval_batches * cfg.train.batch,
            cfg.model.context,
            dataset.example_len,
        )?;
        Ok(Trainer {
            cfg,
            device,
            dataset,
            vs,
            model,
            params,
            state,
            shards: HashMap::new(),
            validation,
            val_starts,
            step: 0,
            bytes_sent: 0,
            last_round: None,
        })
    }

    pub fn param_count(&self) -> usize {
        count_params(&self.vs)
    }

    /// The shard replica `replica` reads at `step` (checked against the manifest on first use).
    pub fn shard_for(&mut self, step: u64, replica: usize) -> Result<u32> {
        let d = &self.cfg.data;
        let epoch = step / d.steps_per_epoch;
        let idx =
            assign_shard(self.cfg.seed, epoch, replica as u64, d.shards).context("no shards")?;
        if !self.shards.contains_key(&idx) {
            let s = self.dataset.shard(idx)?;
            self.shards.insert(idx, s);
        }
        Ok(idx)
    }

    /// The batch of `replica` at `step` (a pure function of seed, step and replica).
    pub fn batch(&mut self, step: u64, replica: usize) -> Result<Batch> {
        let idx = self.shard_for(step, replica)?;
        let mut rng = SplitMix64::keyed(
            "conclave/v1/batch",
            &[self.cfg.seed, step, replica as u64, idx as u64],
        );
        let shard = &self.shards[&idx];
        shard.sample(
            &mut rng,
            self.cfg.train.batch,
            self.cfg.model.context,
            self.dataset.example_len,
        )
    }

    /// Mean validation loss of the shared model.
    pub fn evaluate(&self) -> f64 {
        let _g = tch::no_grad_guard();
        let ctx = self.cfg.model.context;
        let mut total = 0.0;
        let chunks: Vec<&[usize]> = self.val_starts.chunks(self.cfg.train.batch).collect();
        for c in &chunks {
            let b = self.validation.batch_at(c, ctx);
            let (x, y) = b.to_tensors(self.device);
            total += self.model.loss(&x, &y).double_value(&[]);
        }
        total / chunks.len().max(1) as f64
    }

    /// One step (AdamW, DeMo) or one round of `inner_steps` steps (SparseLoCo). Returns the mean
    /// training loss and the number of steps taken.
    pub fn advance(&mut self) -> Result<(f64, u64)> {
        let r = self.cfg.replicas;
        let step = self.step;
        match &self.cfg.optimizer {
            Method::Adamw => {
                let batches = (0..r)
                    .map(|i| self.batch(step, i))
                    .collect::<Result<Vec<_>>>()?;
                let lr = self.cfg.lr_at(self.cfg.train.lr, step);
                let clip = self.cfg.train.clip;
                let State::Adamw { opt } = &mut self.state else {
                    unreachable!()
                };
                opt.zero_grad();
                let mut loss = 0.0;
                for b in &batches {
                    let (x, y) = b.to_tensors(self.device);
                    let l = self.model.loss(&x, &y);
                    loss += l.double_value(&[]);
                    (l / r as f64).backward();
                }
                if clip > 0.0 {
                    opt.clip_grad_norm(clip);
                }
                opt.set_lr(lr);
                opt.step();
                // Ring all-reduce of the f32 gradient: 2·(R−1)/R of it sent per replica.
                let n = self.param_count() as u64 * 4;
                self.bytes_sent += 2 * (r as u64 - 1) * n;
                self.step += 1;
                Ok((loss / r as f64, 1))
            }
            Method::Demo { .. } | Method::Sparseloco { .. } => {
                let mut encoded = Vec::with_capacity(r);
                let (mut loss, mut steps) = (0.0, 1);
                for i in 0..r {
                    let u = self.local_update(i, None)?;
                    loss += u.loss;
                    steps = u.steps;
                    encoded.push(u.bytes);
                }
                self.apply_updates(encoded)?;
                Ok((loss / r as f64, steps))
            }
        }
    }

    /// One operator's share of the current round, as replica `me`: DeMo's momentum update and
    /// compression of its gradient, or SparseLoCo's H inner AdamW steps from the shared model
    /// and the compressed pseudo-gradient. The shared model is left as it was; the result is
    /// the update in the wire format ([`SparseUpdate`]), checked as a receiver would. With a
    /// `probe`, the round's first batch starts with the probe windows and the proofs of the
    /// starting model come from that forward pass.
    pub fn local_update(&mut self, me: usize, probe: Option<&Probe>) -> Result<LocalUpdate> {
        let r = self.cfg.replicas;
        if me >= r {
            bail!("replica {me} is outside the job's {r} replicas");
        }
        let step = self.step;
        let shapes = shapes(&self.params);
        match &self.cfg.optimizer {
            Method::Adamw => bail!("AdamW replicas exchange dense gradients, not updates"),
            Method::Demo {
                lr: peak, decay, ..
            } => {
                let (peak, decay) = (*peak, *decay);
                let lr = self.cfg.lr_at(peak, step);
                let b = match probe {
                    Some(p) => self.probe_batch(step, me, p)?,
                    None => self.batch(step, me)?,
                };
                let (loss, hidden) = self.backward(&b)?;
                let proofs_before = probe.map(|p| prove_hidden(&hidden, p)).transpose()?;
                drop(hidden);
                let grads = self.grads()?;
                let State::Demo { codec, delta } = &mut self.state else {
                    unreachable!()
                };
                let mut ups = Vec::with_capacity(self.params.len());
                for (j, (name, _)) in self.params.iter().enumerate() {
                    codec::accumulate(&mut delta[me][j], decay, lr as f32, &grads[j]);
                    ups.push(codec.compress(name, &shapes[j], &mut delta[me][j]));
                }
                let bytes = wire_bytes(ups, conclave_protocol::Transform::Dct)?;
                Ok(LocalUpdate {
                    bytes,
                    loss,
                    steps: 1,
                    proofs_before,
                })
            }
            Method::Sparseloco {
                inner_steps, decay, ..
            } => {
                let (h, decay) = (*inner_steps, *decay);
                let theta: Vec<Vec<f32>> = self.params.iter().map(|(_, t)| to_vec(t)).collect();
                let batches = (0..h)
                    .map(|s| match probe {
                        Some(p) if s == 0 => self.probe_batch(step, me, p),
                        _ => self.batch(step + s, me),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let lrs: Vec<f64> = (0..h)
                    .map(|s| self.cfg.lr_at(self.cfg.train.lr, step + s))
                    .collect();
                let clip = self.cfg.train.clip;
                let device = self.device;
                let names: Vec<String> = self.params.iter().map(|(n, _)| n.clone()).collect();
                let State::Sparseloco {
                    codec,
                    replicas,
                    ef,
                } = &mut self.state
                else {
                    unreachable!()
                };
                let rep = &mut replicas[me];
                for ((_, t), w) in rep.params.iter().zip(&theta) {
                    set_from(t, w);
                }
                let mut loss = 0.0;
                let mut proofs_before = None;
                for (s, b) in batches.iter().enumerate() {
                    let (x, y) = b.to_tensors(device);
                    rep.opt.zero_grad();
                    let (l, hidden) = rep.model.loss_and_hidden(&x, &y);
                    if let (Some(p), 0) = (probe, s) {
                        proofs_before = Some(prove_hidden(&hidden, p)?);
                    }
                    drop(hidden);
                    let v = l.double_value(&[]);
                    if !v.is_finite() {
                        bail!("the loss is not finite at step {}", step + s as u64);
                    }
                    loss += v;
                    l.backward();
                    if clip > 0.0 {
                        rep.opt.clip_grad_norm(clip);
                    }
                    rep.opt.set_lr(lrs[s]);
                    rep.opt.step();
                }
                let mut ups = Vec::with_capacity(names.len());
                for (j, (_, t)) in rep.params.iter().enumerate() {
                    let after = to_vec(t);
                    let delta: Vec<f32> = theta[j].iter().zip(&after).map(|(a, b)| a - b).collect();
                    codec::accumulate(&mut ef[me][j], decay, 1.0, &delta);
                    ups.push(codec.compress(&names[j], &shapes[j], &mut ef[me][j]));
                }
                let bytes = wire_bytes(ups, conclave_protocol::Transform::Identity)?;
                Ok(LocalUpdate {
                    bytes,
                    loss: loss / h as f64,
                    steps: h,
                    proofs_before,
                })
            }
        }
    }

    /// Closes the current round with `updates` (encoded [`SparseUpdate`]s, in aggregation
    /// order): decodes each within the default limits, checks it names every parameter with
    /// its shape, aggregates (scatter-mean, median-norm clipping for SparseLoCo) and applies
    /// the outer step to the shared model. Returns the outer step.
    pub fn apply_updates(&mut self, updates: Vec<Vec<u8>>) -> Result<OuterStep> {
        if updates.is_empty() {
            bail!("a round needs at least one update");
        }
        let shapes = shapes(&self.params);
        let (transform, outer, steps) = match &self.cfg.optimizer {
            Method::Adamw => bail!("AdamW rounds have no updates to apply"),
            Method::Demo { lr: peak, .. } => (
                conclave_protocol::Transform::Dct,
                OuterStep::Sign {
                    lr: self.cfg.lr_at(*peak, self.step) as f32,
                    weight_decay: self.cfg.train.weight_decay as f32,
                },
                1,
            ),
            Method::Sparseloco {
                inner_steps,
                outer_lr,
                clip_median_norm,
                ..
            } => (
                conclave_protocol::Transform::Identity,
                OuterStep::Sgd {
                    lr: *outer_lr,
                    clip_median_norm: *clip_median_norm,
                },
                *inner_steps,
            ),
        };
        let clip_mn = matches!(
            outer,
            OuterStep::Sgd {
                clip_median_norm: true,
                ..
            }
        );
        let decoded = updates
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let su = SparseUpdate::decode(u, &DecodeLimits::default())
                    .with_context(|| format!("update {i}"))?;
                if su.transform != transform {
                    bail!(
                        "update {i}: transform {:?}, the job uses {transform:?}",
                        su.transform
                    );
                }
                if su.tensors.len() != self.params.len() {
                    bail!(
                        "update {i}: {} tensors, the model has {}",
                        su.tensors.len(),
                        self.params.len()
                    );
                }
                for (t, ((name, _), shape)) in
                    su.tensors.iter().zip(self.params.iter().zip(&shapes))
                {
                    if &t.name != name
                        || !t
                            .shape
                            .iter()
                            .map(|&d| d as usize)
                            .eq(shape.iter().copied())
                    {
                        bail!(
                            "update {i}: tensor {} {:?} where the model has {name} {shape:?}",
                            t.name,
                            t.shape
                        );
                    }
                }
                Ok(su)
            })
            .collect::<Result<Vec<_>>>()?;
        for (j, (_, p)) in self.params.iter().enumerate() {
            let peers: Vec<&TensorUpdate> = decoded.iter().map(|u| &u.tensors[j]).collect();
            let agg = codec::aggregate(&peers, transform, clip_mn)?;
            let mut w = to_vec(p);
            outer_step(&mut w, &agg, &outer);
            set_from(p, &w);
        }
        self.bytes_sent += updates.iter().map(|e| e.len() as u64).sum::<u64>();
        self.last_round = Some((updates, outer.clone()));
        self.step += steps;
        Ok(outer)
    }

    /// Forward and backward on the shared model (gradients zeroed first); returns the loss and
    /// the last hidden states.
    fn backward(&mut self, b: &Batch) -> Result<(f64, Tensor)> {
        for (_, p) in &self.params {
            let mut p = p.shallow_clone();
            p.zero_grad();
        }
        let (x, y) = b.to_tensors(self.device);
        let (l, hidden) = self.model.loss_and_hidden(&x, &y);
        let v = l.double_value(&[]);
        if !v.is_finite() {
            bail!("the loss is not finite at step {}", self.step);
        }
        l.backward();
        Ok((v, hidden.detach()))
    }

    /// The shared model's gradients as f32, clipped to `train.clip` in global norm.
    fn grads(&self) -> Result<Vec<Vec<f32>>> {
        let gs: Vec<Tensor> = self.params.iter().map(|(_, p)| p.grad()).collect();
        let clip = self.cfg.train.clip;
        let mut scale = 1.0;
        if clip > 0.0 {
            let total: f64 = gs
                .iter()
                .map(|g| {
                    g.to_kind(Kind::Double)
                        .pow_tensor_scalar(2)
                        .sum(Kind::Double)
                        .double_value(&[])
                })
                .sum::<f64>()
                .sqrt();
            if total > clip {
                scale = clip / (total + 1e-6);
            }
        }
        Ok(gs
            .iter()
            .map(|g| {
                let mut v = to_vec(g);
                if scale != 1.0 {
                    let s = scale as f32;
                    v.iter_mut().for_each(|x| *x *= s);
                }
                v
            })
            .collect())
    }

    /// The dataset and config facts a checkpoint manifest records.
    pub fn manifest(&self, val_loss: Option<f64>) -> CheckpointManifest {
        CheckpointManifest {
            version: 1,
            model_hash: Hash32::ZERO,
            step: self.step,
            config_hash: self.cfg.hash(),
            data_root: self.dataset.root(),
            tokenizer_sha256: self.dataset.tokenizer_sha256(),
            method: self.cfg.optimizer.name(),
            params: self.param_count() as u64,
            val_loss,
            weights: String::new(),
            model: self.cfg.model.clone(),
            vocab: self.dataset.vocab() as u32,
            sealed_hash: None,
        }
    }

    /// Writes a checkpoint of the shared model under `out/checkpoints`.
    pub fn checkpoint(&self, val_loss: Option<f64>) -> Result<(PathBuf, CheckpointManifest)> {
        checkpoint::save(
            &self.cfg.out.join("checkpoints"),
            &self.params,
            self.manifest(val_loss),
        )
    }

    pub fn model_hash(&self) -> Result<Hash32> {
        checkpoint::model_hash(&self.params)
    }

    /// The round number of the current step.
    pub fn round(&self) -> u64 {
        match self.cfg.optimizer {
            Method::Sparseloco { inner_steps, .. } => self.step / inner_steps,
            _ => self.step,
        }
    }

    /// The current round's probe on the shard replica `me` reads: windows drawn from the
    /// job seed and the round, of which the first [`prove::probe_tokens`] tokens are proved.
    pub fn probe(&mut self, me: usize) -> Result<Probe> {
        let ctx = self.cfg.model.context;
        let round = self.round();
        let idx = self.shard_for(self.step, me)?;
        let starts = prove::probe_starts(
            self.cfg.seed,
            round,
            &self.shards[&idx],
            prove::PROBE_ROWS,
            ctx,
            self.dataset.example_len,
        )?;
        Ok(Probe {
            shard: idx,
            shard_sha256: self.dataset.shard_sha256(idx)?,
            starts: starts.iter().map(|&s| s as u64).collect(),
            context: ctx as u32,
            tokens: prove::probe_tokens(ctx) as u32,
            example_len: self.dataset.example_len.map(|l| l as u32),
        })
    }

    /// The canonical safetensors bytes of the shared model.
    pub fn weights(&self) -> Result<Vec<u8>> {
        checkpoint::weights_bytes(&self.params)
    }

    /// Replaces the shared model's weights with safetensors `bytes` (names and shapes must
    /// match) and moves to `step`; returns their model hash. Optimizer state (error feedback,
    /// inner AdamW moments) starts afresh.
    pub fn load_weights(&mut self, bytes: &[u8], step: u64) -> Result<Hash32> {
        let h = checkpoint::load_bytes_into(bytes, &self.params)?;
        self.step = step;
        Ok(h)
    }

    /// The batch of `replica` at `step` with its first rows replaced by the probe's windows
    /// (the batch keeps its size; it must hold the probe).
    pub fn probe_batch(&mut self, step: u64, replica: usize, probe: &Probe) -> Result<Batch> {
        let regular = self.batch(step, replica)?;
        let n = probe.starts.len();
        if regular.rows < n {
            bail!(
                "train.batch {} is smaller than the probe's {n} windows",
                regular.rows
            );
        }
        if !self.shards.contains_key(&probe.shard) {
            let s = self.dataset.shard(probe.shard)?;
            self.shards.insert(probe.shard, s);
        }
        let ctx = regular.cols;
        let shard = &self.shards[&probe.shard];
        let mut b = Batch {
            inputs: Vec::with_capacity(regular.inputs.len()),
            targets: Vec::with_capacity(regular.targets.len()),
            rows: 0,
            cols: ctx,
        };
        for &s in &probe.starts {
            let s = s as usize;
            if s + ctx + 1 > shard.tokens.len() {
                bail!("probe window at {s} runs past shard {}", probe.shard);
            }
            shard.window(s, ctx, &mut b);
        }
        b.inputs.extend_from_slice(&regular.inputs[n * ctx..]);
        b.targets.extend_from_slice(&regular.targets[n * ctx..]);
        b.rows = regular.rows;
        Ok(b)
    }

    /// What an honest prover commits to for `probe` at `step`: the bf16 hidden states of the
    /// probe rows in the training forward pass of the shared model (gradients are taken and
    /// dropped). For the detection trials and benchmarks.
    pub fn step_activations(
        &mut self,
        step: u64,
        replica: usize,
        probe: &Probe,
    ) -> Result<(Vec<u16>, usize, usize)> {
        let b = self.probe_batch(step, replica, probe)?;
        let (x, y) = b.to_tensors(self.device);
        let (l, hidden) = self.model.loss_and_hidden(&x, &y);
        drop(l);
        prove::bits_of(
            &hidden,
            probe.starts.len(),
            probe.tokens as usize,
            prove::Precision::Bf16,
        )
    }

    /// Runs one round and states it: TOPLOC proofs of the starting model on the probe windows
    /// (drawn from replica 0's shard by the job seed and the round, and trained on as the first
    /// rows of the round's first batch), the model hashes, the hashes of every aggregated update
    /// and the outer step. Returns the receipt and the encoded updates.
    pub fn prove_round(&mut self) -> Result<(RoundReceipt, Vec<Vec<u8>>)> {
        if matches!(self.cfg.optimizer, Method::Adamw) {
            bail!("round receipts need a compressed method (demo or sparseloco), not adamw");
        }
        let (step_before, round) = (self.step, self.round());
        let probe = self.probe(0)?;
        let hash_before = self.model_hash()?;
        let mut updates = Vec::with_capacity(self.cfg.replicas);
        let (mut loss, mut proofs_before) = (0.0, None);
        for i in 0..self.cfg.replicas {
            let u = self.local_update(i, (i == 0).then_some(&probe))?;
            loss += u.loss / self.cfg.replicas as f64;
            if i == 0 {
                proofs_before = u.proofs_before;
            }
            updates.push(u.bytes);
        }
        let proofs_before = proofs_before.context("the round made no proofs")?;
        self.apply_updates(updates)?;
        let hash_after = self.model_hash()?;
        let (encoded, outer) = self
            .last_round
            .clone()
            .context("the round left no updates")?;
        let receipt = RoundReceipt {
            version: conclave_protocol::receipt::RECEIPT_VERSION,
            config_hash: self.cfg.hash(),
            data_root: self.dataset.root(),
            seed: self.cfg.seed,
            round,
            step_before,
            step_after: self.step,
            model_hash_before: hash_before,
            model_hash_after: hash_after,
            updates: encoded.iter().map(|e| Hash32::sha256(e)).collect(),
            outer,
            probe,
            toploc: ToplocParams {
                group: prove::GROUP as u32,
                topk: prove::TOPK as u32,
                thresholds: Thresholds::default(),
            },
            proofs_before,
            // The weights after are bound by their hash (replay recomputes them exactly) and
            // proved by the next round's first forward pass.
            proofs_after: Vec::new(),
            loss,
        };
        Ok((receipt, encoded))
    }

    /// Trains to `train.steps`, printing progress, writing metrics, checkpoints and the summary.
    pub fn run(&mut self) -> Result<Summary> {
        let out = self.cfg.out.clone();
        std::fs::create_dir_all(&out)
            .with_context(|| format!("creating the output folder {}", out.display()))?;
        let mut metrics = std::fs::File::create(out.join("metrics.jsonl"))?;
        let total = self.cfg.train.steps;
        let start = Instant::now();
        let tty = std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        eprintln!(
            "training {} params, {} replicas, {} on {:?}, data root {}",
            self.param_count(),
            self.cfg.replicas,
            self.cfg.optimizer.name(),
            self.device,
            self.dataset.root()
        );
        let mut history = Vec::new();
        let (eval_every, ckpt_every) = (self.cfg.train.eval_every, self.cfg.train.checkpoint_every);
        while self.step < total {
            let before = self.step;
            let loss = if self.cfg.receipts {
                let dir = out.join("rounds").join(format!("{:06}", self.round()));
                checkpoint::save(&dir, &self.params, self.manifest(None))?;
                let (receipt, updates) = self.prove_round()?;
                for (i, u) in updates.iter().enumerate() {
                    crate::tensors::write_atomic(&dir.join(format!("update-{i}.bin")), u)?;
                }
                crate::tensors::write_atomic(&dir.join("receipt.json"), &receipt.to_json())?;
                receipt.loss
            } else {
                self.advance()?.0
            };
            let lr = self.cfg.lr_at(self.cfg.train.lr, before);
            writeln!(
                metrics,
                "{}",
                serde_json::json!({"step": self.step, "loss": loss, "lr": lr,
                    "bytes_sent_per_replica": self.bytes_sent / self.cfg.replicas as u64,
                    "seconds": start.elapsed().as_secs_f64()})
            )?;
            let msg = format!("loss {loss:.4}");
            match &bar {
                Some(b) => {
                    b.set_position(self.step);
                    b.set_message(msg);
                }
                None => eprintln!("step {}/{} {msg} lr {lr:.2e}", self.step, total),
            }
            let crossed = |every: u64| every > 0 && before / every != self.step / every;
            if crossed(eval_every) && self.step < total {
                let v = self.evaluate();
                history.push((self.step, v));
                writeln!(
                    metrics,
                    "{}",
                    serde_json::json!({"step": self.step, "val_loss": v})
                )?;
                let line = format!("step {} validation loss {v:.4}", self.step);
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
            if crossed(ckpt_every) && self.step < total {
                self.checkpoint(None)?;
            }
        }
        if let Some(b) = &bar {
            b.finish();
        }
        let final_val = self.evaluate();
        history.push((self.step, final_val));
        writeln!(
            metrics,
            "{}",
            serde_json::json!({"step": self.step, "val_loss": final_val})
        )?;
        let (mpath, manifest) = self.checkpoint(Some(final_val))?;
        let secs = start.elapsed().as_secs_f64();
        let tokens_per_replica =
            self.step * self.cfg.train.batch as u64 * self.cfg.model.context as u64;
        let summary = Summary {
            method: self.cfg.optimizer.name(),
            replicas: self.cfg.replicas,
            steps: self.step,
            params: self.param_count() as u64,
            tokens_per_replica,
            final_val_loss: final_val,
            val_history: history,
            bytes_sent_per_replica: self.bytes_sent / self.cfg.replicas as u64,
            seconds: secs,
            tokens_per_second: (tokens_per_replica * self.cfg.replicas as u64) as f64 / secs,
            model_hash: manifest.model_hash,
            config_hash: self.cfg.hash(),
            data_root: self.dataset.root(),
            device: format!("{:?}", self.device),
        };
        crate::tensors::write_atomic(
            &out.join("summary.json"),
            &serde_json::to_vec_pretty(&summary)?,
        )?;
        eprintln!(
            "done: validation loss {final_val:.4}, model {} ({}), {} bytes sent per replica, {:.0} tokens/s",
            manifest.model_hash,
            mpath.display(),
            summary.bytes_sent_per_replica,
            summary.tokens_per_second
        );
        Ok(summary)
    }
}

/// One replica's update in the wire format (checked as a receiver would).
fn wire_bytes(
    tensors: Vec<TensorUpdate>,
    transform: conclave_protocol::Transform,
) -> Result<Vec<u8>> {
    let bytes = SparseUpdate { transform, tensors }.encode()?;
    SparseUpdate::decode(&bytes, &DecodeLimits::default())?;
    Ok(bytes)
}

/// Applies the outer step to one tensor's weights given the aggregate (what the trainer does
/// and what an auditor's replay repeats, bit for bit).
pub fn outer_step(w: &mut [f32], aggregate: &[f32], step: &OuterStep) {
    match *step {
        OuterStep::Sign { lr, weight_decay } => {
            if weight_decay != 0.0 {
                let f = 1.0 - lr * weight_decay;
                w.iter_mut().for_each(|x| *x *= f);
            }
            codec::sign_step(w, aggregate, lr);
        }
        OuterStep::Sgd { lr, .. } => codec::sgd_step(w, aggregate, lr),
    }
}

/// TOPLOC proofs of the probe rows of training-forward hidden states.
fn prove_hidden(hidden: &Tensor, probe: &Probe) -> Result<Vec<String>> {
    let (bits, rows, width) = prove::bits_of(
        hidden,
        probe.starts.len(),
        probe.tokens as usize,
        prove::Precision::Bf16,
    )?;
    prove::prove(&bits, rows, width)
}
