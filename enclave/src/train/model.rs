//! A GPT-style decoder in `tch::nn`: token embedding, pre-norm blocks of causal self-attention
//! and a GELU MLP, final norm, and an output projection (tied to the embedding by default).
//! Positions are rotary (GPT-NeoX layout, base 10000) or learned; norms are RMSNorm or
//! LayerNorm. Parameters are f32 with stable names (`blocks.{i}.attn.qkv.weight`, …), so a
//! safetensors file of them is the checkpoint.

use tch::nn::{self, Init, Module};
use tch::{Device, Kind, Tensor};

use super::config::{ModelConfig, Norm, Positions};

struct NormLayer {
    weight: Tensor,
    bias: Option<Tensor>,
    kind: Norm,
    width: i64,
}

impl NormLayer {
    fn new(p: nn::Path, kind: Norm, width: usize) -> Self {
        let w = width as i64;
        NormLayer {
            weight: p.var("weight", &[w], Init::Const(1.0)),
            bias: (kind == Norm::Layer).then(|| p.var("bias", &[w], Init::Const(0.0))),
            kind,
            width: w,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self.kind {
            Norm::Rms => x.rms_norm([self.width], Some(&self.weight), 1e-5),
            Norm::Layer => x.layer_norm(
                [self.width],
                Some(&self.weight),
                self.bias.as_ref(),
                1e-5,
                false,
            ),
        }
    }
}

fn linear(p: nn::Path, inp: usize, out: usize) -> nn::Linear {
    nn::linear(
        p,
        inp as i64,
        out as i64,
        nn::LinearConfig {
            ws_init: Init::Const(0.0),
            bs_init: Some(Init::Const(0.0)),
            bias: true,
        },
    )
}

struct Block {
    ln1: NormLayer,
    qkv: nn::Linear,
    proj: nn::Linear,
    ln2: NormLayer,
    fc: nn::Linear,
    out: nn::Linear,
}

/// The model. Build it inside a [`nn::VarStore`]; [`Gpt::params`] lists its variables.
pub struct Gpt {
    cfg: ModelConfig,
    vocab: i64,
    wte: Tensor,
    wpe: Option<Tensor>,
    blocks: Vec<Block>,
    ln_f: NormLayer,
    head: Option<nn::Linear>,
    rope: Option<(Tensor, Tensor)>,
}

impl Gpt {
    /// Creates the variables under `root`, zeroed: initialise them with [`init_weights`].
    pub fn new(root: &nn::Path, cfg: &ModelConfig, vocab: usize) -> Self {
        let (c, v) = (cfg.width, vocab);
        let wte = root.var("wte", &[v as i64, c as i64], Init::Const(0.0));
        let wpe = (cfg.positions == Positions::Learned)
            .then(|| root.var("wpe", &[cfg.context as i64, c as i64], Init::Const(0.0)));
        let blocks = (0..cfg.layers)
            .map(|i| {
                let p = root / "blocks" / i;
                Block {
                    ln1: NormLayer::new(&p / "ln1", cfg.norm, c),
                    qkv: linear(&p / "attn" / "qkv", c, 3 * c),
                    proj: linear(&p / "attn" / "proj", c, c),
                    ln2: NormLayer::new(&p / "ln2", cfg.norm, c),
                    fc: linear(&p / "mlp" / "fc", c, cfg.mlp_ratio * c),
                    out: linear(&p / "mlp" / "out", cfg.mlp_ratio * c, c),
                }
            })
            .collect();
        let ln_f = NormLayer::new(root / "ln_f", cfg.norm, c);
        let head = (!cfg.tie_embeddings).then(|| {
            nn::linear(
                root / "head",
                c as i64,
                v as i64,
                nn::LinearConfig {
                    ws_init: Init::Const(0.0),
                    bs_init: None,
                    bias: false,
                },
            )
        });
        let rope = (cfg.positions == Positions::Rotary)
            .then(|| rope_tables(cfg.context, cfg.width / cfg.heads, root.device()));
        Gpt {
            cfg: cfg.clone(),
            vocab: v as i64,
            wte,
            wpe,
            blocks,
            ln_f,
            head,
            rope,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn vocab(&self) -> usize {
        self.vocab as usize
    }

    /// The last hidden states (after the final norm), `[batch, time, width]`.
    pub fn hidden(&self, tokens: &Tensor) -> Tensor {
        let (b, t) = tokens.size2().expect("tokens are [batch, time]");
        let c = self.cfg.width as i64;
        let nh = self.cfg.heads as i64;
        let hs = c / nh;
        let mut x = Tensor::embedding(&self.wte, tokens, -1, false, false);
        if let Some(wpe) = &self.wpe {
            x = &x + wpe.narrow(0, 0, t).unsqueeze(0);
        }
        for blk in &self.blocks {
            let h = blk.ln1.forward(&x);
            let qkv = blk
                .qkv
                .forward(&h)
                .view([b, t, 3, nh, hs])
                .permute([2, 0, 3, 1, 4]);
            let (mut q, mut k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
            if let Some((cos, sin)) = &self.rope {
                let (cos, sin) = (cos.narrow(0, 0, t), sin.narrow(0, 0, t));
                q = apply_rope(&q, &cos, &sin);
                k = apply_rope(&k, &cos, &sin);
            }
            let y = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                true,
                None,
                false,
            );
            let y = y.transpose(1, 2).contiguous().view([b, t, c]);
            x = &x + blk.proj.forward(&y);
            let h = blk.ln2.forward(&x);
            x = &x + blk.out.forward(&blk.fc.forward(&h).gelu("tanh"));
        }
        self.ln_f.forward(&x)
    }

    /// Logits `[batch, time, vocab]`.
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        let h = self.hidden(tokens);
        match &self.head {
            Some(head) => head.forward(&h),
            None => h.matmul(&self.wte.tr()),
        }
    }

    /// Mean cross-entropy of `targets` (`-100` = not a target).
    pub fn loss(&self, tokens: &Tensor, targets: &Tensor) -> Tensor {
        self.loss_and_hidden(tokens, targets).0
    }

    /// [`Gpt::loss`] and the last hidden states `[batch, time, width]` it was computed from
    /// (what the TOPLOC prover commits to, taken from the training step itself).
    pub fn loss_and_hidden(&self, tokens: &Tensor, targets: &Tensor) -> (Tensor, Tensor) {
        let h = self.hidden(tokens);
        let logits = match &self.head {
            Some(head) => head.forward(&h),
            None => h.matmul(&self.wte.tr()),
        };
        let loss = logits.view([-1, self.vocab]).cross_entropy_loss(
            &targets.view([-1]),
            None::<Tensor>,
            tch::Reduction::Mean,
            -100,
            0.0,
        );
        (loss, h)
    }
}

/// cos and sin tables `[context, head/2]` for rotary positions (base 10000).
fn rope_tables(context: usize, head: usize, device: Device) -> (Tensor, Tensor) {
    let half = head / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / 10000f64.powf(2.0 * i as f64 / head as f64) as f32)
        .collect();
    let mut ang = Vec::with_capacity(context * half);
    for p in 0..context {
        for f in &inv {
            ang.push(p as f32 * f);
        }
    }
    let a = Tensor::from_slice(&ang).view([context as i64, half as i64]);
    (a.cos().to_device(device), a.sin().to_device(device))
}

/// Rotates `[b, h, t, d]` by the tables (halves layout, as GPT-NeoX).
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let d = x.size()[3];
    let x1 = x.narrow(3, 0, d / 2);
    let x2 = x.narrow(3, d / 2, d / 2);
    Tensor::cat(&[&x1 * cos - &x2 * sin, &x1 * sin + &x2 * cos], 3)
}

/// Initialises every variable from `seed` alone, with GPT-2's scheme (normal 0.02; residual
/// projections 0.02/√(2·layers); norms 1, biases 0). The draws come from the project's own
/// generator keyed by the seed and the variable's name, not libtorch's process-wide RNG, so
/// the weights do not depend on what else runs in the process, on the device or on the
/// libtorch build.
pub fn init_weights(params: &[(String, Tensor)], layers: usize, seed: u64) {
    use conclave_protocol::dataset::SplitMix64;
    let std = 0.02f64;
    let resid = std / (2.0 * layers as f64).sqrt();
    for (name, t) in params {
        let n = t.numel();
        let data: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; n]
        } else if name.contains("ln") {
            vec![1.0; n]
        } else {
            let s = if name.ends_with("attn.proj.weight") || name.ends_with("mlp.out.weight") {
                resid
            } else {
                std
            };
            let mut rng = SplitMix64::keyed(&format!("conclave/v1/init/{name}"), &[seed]);
            let mut unit = || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let mut out = Vec::with_capacity(n + 1);
            while out.len() < n {
                // Box–Muller on (0, 1].
                let (u1, u2) = (1.0 - unit(), unit());
                let r = (-2.0 * u1.ln()).sqrt();
                let a = 2.0 * std::f64::consts::PI * u2;
                out.push((s * r * a.cos()) as f32);
                out.push((s * r * a.sin()) as f32);
            }
            out.truncate(n);
            out
        };
        set_from(t, &data);
    }
}

/// The model's variables sorted by name (the checkpoint and codec order).
pub fn sorted_params(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Number of parameters.
pub fn count_params(vs: &nn::VarStore) -> usize {
    vs.variables().values().map(|t| t.numel()).sum::<usize>()
}

/// A tensor's values as f32 on the CPU.
pub fn to_vec(t: &Tensor) -> Vec<f32> {
    let flat = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view([-1]);
    let n = flat.numel();
    let mut out = vec![0f32; n];
    flat.copy_data(&mut out, n);
    out
}

/// Overwrites a variable with `data` (same number of elements).
pub fn set_from(t: &Tensor, data: &[f32]) {
    let src = Tensor::from_slice(data)
        .view(t.size().as_slice())
        .to_device(t.device())
        .to_kind(t.kind());
    tch::no_grad(|| {
        let mut t = t.shallow_clone();
        t.copy_(&src);
    });
}
