//! The DeMo / SparseLoCo codec: chunked DCT (or no transform), top-k per block, value
//! quantization, error feedback, and aggregation of many peers' updates.
//!
//! Faithful to the references (REFERENCE-ALGORITHMS §1–3, 5, 9): DeMo `TransformDCT` /
//! `CompressDCT` (chunk = largest divisor ≤ target, orthonormal DCT-II per block, top-k over |x|
//! per block, scatter-*mean* over the peers that chose each position), Templar's no-DCT mode,
//! 2-bit codebook and median-norm clipping, Psyche's 1-bit signs and index narrowing.
//! Deliberate differences, none of which changes a decoded tensor: ties in top-k go to the lower
//! position and positions are sent sorted (the references leave order unspecified); DCT bases
//! are built in f64 (DeMo builds them in f32 with an FFT); and a fifth index encoding,
//! Elias–Fano, is the default because it is the smallest.
//!
//! [`Codec::compress`] works on the caller's error-feedback buffer (DeMo's `delta`, SparseLoCo's
//! `e`) and subtracts what it transmits; [`aggregate`] turns peers' updates back into a dense
//! tensor. [`tch_path`] does the same on libtorch tensors (for GPUs).

pub mod aggregate;
pub mod dct;
pub mod geometry;
pub mod quant;
pub mod tch_path;
pub mod topk;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use conclave_protocol::pack::{bf16_to_f32, f32_to_bf16};
use conclave_protocol::{
    BlockShape, IndexEncoding, TensorUpdate, Transform, ValueEncoding, Values,
};
use rayon::prelude::*;

pub use aggregate::{AggregateError, aggregate, decode};
pub use geometry::{Geometry, smaller_split};

use dct::{Basis, Scratch};
use topk::TopK;

/// How `k` is fitted to a block of `totalk` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopkRule {
    /// DeMo / Psyche: `clamp(k, 1, totalk)`.
    Demo,
    /// Templar: at least 2 and even (for 12-bit pairs), at most `totalk`.
    Templar,
}

impl TopkRule {
    pub fn fit(self, k: usize, totalk: usize) -> usize {
        match self {
            TopkRule::Demo => k.clamp(1, totalk.max(1)),
            TopkRule::Templar => {
                let k = k.min(totalk).max(2);
                (k - k % 2).clamp(1, totalk.max(1))
            }
        }
    }
}

/// Which index encoding to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexChoice {
    /// The fewest bytes for each tensor (Elias–Fano for sparse blocks).
    Smallest,
    /// The narrowest integer (Psyche `compress_idx`).
    Narrowest,
    /// This encoding where it can address the block, else the narrowest integer.
    Prefer(IndexEncoding),
}

/// Codec settings. The defaults are DeMo's: chunk 64, k 32, DCT, f32 values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecConfig {
    /// Target block side; the block is the largest divisor of each dimension at most this.
    /// With the DCT a target above [`dct::MAX_SIDE`] (4096, the largest block side receivers
    /// accept) acts as 4096 (see [`CodecConfig::block_target`]).
    pub chunk: usize,
    /// Positions kept per block.
    pub topk: usize,
    pub transform: Transform,
    pub values: ValueEncoding,
    pub index: IndexChoice,
    pub topk_rule: TopkRule,
}

impl Default for CodecConfig {
    fn default() -> Self {
        CodecConfig {
            chunk: 64,
            topk: 32,
            transform: Transform::Dct,
            values: ValueEncoding::F32,
            index: IndexChoice::Smallest,
            topk_rule: TopkRule::Demo,
        }
    }
}

impl CodecConfig {
    /// The block side target actually used: [`CodecConfig::chunk`], capped at [`dct::MAX_SIDE`]
    /// for the DCT, so the codec never builds a basis larger than that nor sends blocks that
    /// receivers refuse ([`conclave_protocol::DecodeLimits::max_dct_block_side`]).
    pub fn block_target(&self) -> usize {
        match self.transform {
            Transform::Dct => self.chunk.min(dct::MAX_SIDE),
            Transform::Identity => self.chunk,
        }
    }

    /// SparseLoCo as Templar runs it: no DCT, k = 64, 2-bit values, 12-bit pairs replaced by the
    /// smaller Elias–Fano.
    pub fn sparseloco() -> Self {
        CodecConfig {
            topk: 64,
            transform: Transform::Identity,
            values: ValueEncoding::TwoBit,
            topk_rule: TopkRule::Templar,
            ..CodecConfig::default()
        }
    }
}

/// Cached DCT bases by size.
#[derive(Default)]
pub struct Bases(Mutex<HashMap<usize, Arc<Basis>>>);

impl Bases {
    /// The basis of side `n`, built on first use. `n` must come from this codec's own geometry
    /// (at most [`dct::MAX_SIDE`] for the DCT, see [`CodecConfig::block_target`]); a side read
    /// from an update goes through [`Bases::try_get`].
    pub fn get(&self, n: usize) -> Arc<Basis> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(n)
            .or_insert_with(|| Arc::new(Basis::new(n)))
            .clone()
    }

    /// The basis of side `n`, or `None` above [`dct::MAX_SIDE`] (nothing is allocated then).
    pub fn try_get(&self, n: usize) -> Option<Arc<Basis>> {
        (n <= dct::MAX_SIDE).then(|| self.get(n))
    }
}

/// The compressor. Holds no per-tensor state: the caller owns the error-feedback buffers.
pub struct Codec {
    pub config: CodecConfig,
    bases: Bases,
}

/// One block's selection: positions (ascending) and the values there.
struct Selected {
    idx: Vec<u32>,
    val: Vec<f32>,
}

impl Codec {
    pub fn new(config: CodecConfig) -> Self {
        Codec {
            config,
            bases: Bases::default(),
        }
    }

    /// Geometry of a tensor under this codec.
    pub fn geometry(&self, shape: &[usize]) -> Geometry {
        Geometry::new(shape, self.config.block_target())
    }

    /// Compresses `buf` (a tensor of `shape`, row-major) and subtracts what is transmitted from
    /// it (error feedback): after the call `buf` is the residual, and
    /// `decode(update) + residual = input` up to rounding. With 2-bit or bf16 values the
    /// transmitted part is the dequantized one, so the quantization error stays in `buf`; with
    /// 1-bit values it is the full-precision one (Psyche keeps its own EF unquantized).
    pub fn compress(&self, name: &str, shape: &[usize], buf: &mut [f32]) -> TensorUpdate {
        let (update, sent) = self.select(name, shape, buf, true);
        self.subtract(&update, &sent, buf);
        update
    }

    /// Compresses without touching the input.
    pub fn compress_only(&self, name: &str, shape: &[usize], data: &[f32]) -> TensorUpdate {
        self.select(name, shape, data, false).0
    }

    /// Chooses and encodes the kept entries; returns the update and, per entry, the value that
    /// error feedback removes (empty for f32 values when `need_sent` is false, saving a copy).
    fn select(
        &self,
        name: &str,
        shape: &[usize],
        data: &[f32],
        need_sent: bool,
    ) -> (TensorUpdate, Vec<f32>) {
        let cfg = &self.config;
        let g = self.geometry(shape);
        assert_eq!(
            data.len(),
            g.numel(),
            "tensor {name}: data does not match its shape"
        );
        let totalk = g.totalk();
        let k = cfg.topk_rule.fit(cfg.topk, totalk);
        let bases = self.bases_for(&g);
        let stripes: Vec<Selected> = data
            .par_chunks(g.stripe_len())
            .map_init(
                || (Scratch::default(), TopK::default(), Vec::<f32>::new()),
                |(scratch, topk, block), stripe| {
                    let mut sel = Selected {
                        idx: Vec::with_capacity(k * g.blocks_per_stripe()),
                        val: Vec::with_capacity(k * g.blocks_per_stripe()),
                    };
                    let mut take = |_x: usize, coeffs: &[f32]| {
                        let from = sel.idx.len();
                        topk.select(coeffs, k, &mut sel.idx);
                        for &i in &sel.idx[from..] {
                            sel.val.push(coeffs[i as usize]);
                        }
                    };
                    match &bases {
                        Some((b1, b2)) => {
                            dct::encode_stripe(stripe, g.cols, b1, b2, scratch, &mut take)
                        }
                        None => {
                            for x in 0..g.blocks_per_stripe() {
                                block.clear();
                                for h in 0..g.n1 {
                                    let row = h * g.cols + x * g.n2;
                                    block.extend_from_slice(&stripe[row..row + g.n2]);
                                }
                                take(x, block);
                            }
                        }
                    }
                    sel
                },
            )
            .collect();
        let count = g.blocks() * k;
        let mut indices = Vec::with_capacity(count);
        let mut raw = Vec::with_capacity(count);
        for s in stripes {
            indices.extend_from_slice(&s.idx);
            raw.extend_from_slice(&s.val);
        }
        let (values, sent) = match cfg.values {
            ValueEncoding::F32 if !need_sent => (Values::F32(raw), Vec::new()),
            enc => encode_values(enc, raw),
        };
        let index_encoding = choose_index(cfg.index, k, totalk);
        let update = TensorUpdate {
            name: name.to_owned(),
            shape: shape.iter().map(|&d| d as u64).collect(),
            block: BlockShape {
                rows: g.n1 as u32,
                cols: g.n2 as u32,
            },
            k: k as u32,
            index_encoding,
            indices,
            values,
        };
        (update, sent)
    }

    /// The two bases of a DCT geometry; none without a transform.
    fn bases_for(&self, g: &Geometry) -> Option<(Arc<Basis>, Arc<Basis>)> {
        match self.config.transform {
            Transform::Dct => Some((self.bases.get(g.n1), self.bases.get(g.n2))),
            Transform::Identity => None,
        }
    }

    /// `buf -= decode(sparse(sent))`, block by block.
    fn subtract(&self, update: &TensorUpdate, sent: &[f32], buf: &mut [f32]) {
        let shape: Vec<usize> = update.shape.iter().map(|&d| d as usize).collect();
        let g = self.geometry(&shape);
        let k = update.k as usize;
        let per_stripe = k * g.blocks_per_stripe();
        let bases = self.bases_for(&g);
        buf.par_chunks_mut(g.stripe_len())
            .zip(update.indices.par_chunks(per_stripe))
            .zip(sent.par_chunks(per_stripe))
            .for_each_init(Scratch::default, |scratch, ((stripe, idx), val)| {
                for x in 0..g.blocks_per_stripe() {
                    let (bi, bv) = (&idx[x * k..(x + 1) * k], &val[x * k..(x + 1) * k]);
                    match &bases {
                        Some((b1, b2)) => dct::decode_sparse_into(
                            bi, bv, -1.0, stripe, g.cols, x, b1, b2, scratch,
                        ),
                        None => {
                            for (&p, &v) in bi.iter().zip(bv) {
                                let (h, w) = (p as usize / g.n2, p as usize % g.n2);
                                stripe[h * g.cols + x * g.n2 + w] -= v;
                            }
                        }
                    }
                }
            });
    }
}

/// `buf ← β·buf + scale·x`: DeMo's momentum (`δ ← β·δ + lr·g`) and SparseLoCo's error
/// feedback (`e ← β·e + Δ`, Templar scales Δ by the outer learning rate).
pub fn accumulate(buf: &mut [f32], beta: f32, scale: f32, x: &[f32]) {
    buf.par_iter_mut().zip(x.par_iter()).for_each(|(b, &v)| {
        *b = beta * *b + scale * v;
    });
}

/// DeMo's outer step: `p ← p − lr·sign(g)` (torch `sign(0) = 0`).
pub fn sign_step(param: &mut [f32], grad: &[f32], lr: f32) {
    param
        .par_iter_mut()
        .zip(grad.par_iter())
        .for_each(|(p, &g)| {
            let s = if g > 0.0 {
                1.0
            } else if g < 0.0 {
                -1.0
            } else {
                0.0
            };
            *p -= lr * s;
        });
}

/// SparseLoCo's outer step: plain SGD `p ← p − lr·g`.
pub fn sgd_step(param: &mut [f32], grad: &[f32], lr: f32) {
    param
        .par_iter_mut()
        .zip(grad.par_iter())
        .for_each(|(p, &g)| *p -= lr * g);
}

/// Encodes kept values; returns them with what error feedback subtracts.
pub(crate) fn encode_values(enc: ValueEncoding, raw: Vec<f32>) -> (Values, Vec<f32>) {
    match enc {
        ValueEncoding::F32 => (Values::F32(raw.clone()), raw),
        ValueEncoding::Bf16 => {
            let bits: Vec<u16> = raw.iter().map(|&v| f32_to_bf16(v)).collect();
            let sent = bits.iter().map(|&b| bf16_to_f32(b)).collect();
            (Values::Bf16(bits), sent)
        }
        ValueEncoding::TwoBit => {
            let (codes, codebook) = quant::quantize_2bit(&raw);
            let v = Values::TwoBit { codes, codebook };
            let sent = v.dequantize();
            (v, sent)
        }
        ValueEncoding::OneBit => (
            Values::OneBit(raw.iter().map(|v| v.is_sign_negative()).collect()),
            raw,
        ),
    }
}

pub(crate) fn choose_index(choice: IndexChoice, k: usize, totalk: usize) -> IndexEncoding {
    let (k, totalk) = (k as u64, totalk as u64);
    match choice {
        IndexChoice::Smallest => IndexEncoding::smallest(k, totalk),
        IndexChoice::Narrowest => IndexEncoding::narrowest(totalk),
        IndexChoice::Prefer(e) if e.holds(totalk) => e,
        IndexChoice::Prefer(_) => IndexEncoding::narrowest(totalk),
    }
}
