//! Peers' updates back to one dense tensor: dequantize, optionally clip each peer to the median
//! norm (Templar `batch_decompress(clip_norm=True)`), take each position's mean over the peers
//! that chose it (DeMo `scatter_reduce(mean, include_self=False)`; positions nobody chose stay
//! 0), then invert the transform.
//!
//! Everything here is reachable from a peer's or the host's bytes, so nothing is sized from the
//! update before [`TensorUpdate::validate`] has checked it against [`DecodeLimits`]: the dense
//! output is the validated element count, working memory per thread is the peers' kept entries
//! of one block (no scratch of a block's size), and DCT bases are built only for a DCT update,
//! of a side bounded by [`MAX_DCT_BLOCK_SIDE`].

use conclave_protocol::update::{MAX_DCT_BLOCK_SIDE, matrix_view};
use conclave_protocol::{DecodeLimits, TensorUpdate, Transform, UpdateError};
use rayon::prelude::*;
use thiserror::Error;

use super::dct::{self, Scratch};
use super::{Bases, Geometry};

/// Why updates could not be aggregated.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AggregateError {
    #[error("no updates to aggregate")]
    Empty,
    #[error("tensor {tensor:?}: peers disagree on the {what}")]
    Mismatch { tensor: String, what: &'static str },
    #[error("tensor {tensor:?}: a DCT basis of side {side} is over the limit of {max}")]
    BasisTooLarge {
        tensor: String,
        side: usize,
        max: usize,
    },
    #[error("tensor {tensor:?}: {numel} elements do not fit in this machine's memory")]
    TooLarge { tensor: String, numel: u64 },
    #[error(transparent)]
    Invalid(#[from] UpdateError),
}

/// Decodes one update to its dense tensor.
pub fn decode(update: &TensorUpdate, transform: Transform) -> Result<Vec<f32>, AggregateError> {
    aggregate(&[update], transform, false)
}

/// Aggregates several peers' updates of one tensor into the dense mean.
pub fn aggregate(
    updates: &[&TensorUpdate],
    transform: Transform,
    clip_to_median_norm: bool,
) -> Result<Vec<f32>, AggregateError> {
    let first = *updates.first().ok_or(AggregateError::Empty)?;
    let limits = DecodeLimits::default();
    for u in updates {
        u.validate(transform, &limits)?;
        let what = if u.shape != first.shape {
            Some("shape")
        } else if u.block != first.block {
            Some("block shape")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(AggregateError::Mismatch {
                tensor: first.name.clone(),
                what,
            });
        }
    }
    // Validated: the shape's product fits the limits, the block divides it.
    let too_large = || AggregateError::TooLarge {
        tensor: first.name.clone(),
        numel: first.numel(),
    };
    let (lead, rows, cols) = matrix_view(&first.shape).ok_or_else(too_large)?;
    let size = |v: u64| usize::try_from(v).map_err(|_| too_large());
    let g = Geometry {
        lead: size(lead)?,
        rows: size(rows)?,
        cols: size(cols)?,
        n1: first.block.rows as usize,
        n2: first.block.cols as usize,
    };
    let values: Vec<Vec<f32>> = updates.iter().map(|u| u.values.dequantize()).collect();
    let factors: Vec<f32> = if clip_to_median_norm && updates.len() > 1 {
        let norms: Vec<f32> = values
            .iter()
            .map(|v| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32)
            .collect();
        let mut sorted = norms.clone();
        sorted.sort_by(f32::total_cmp);
        // torch.median returns the lower of the two middle values.
        let median = sorted[(sorted.len() - 1) / 2];
        norms
            .iter()
            .map(|&n| (median / (n + 1e-8)).min(1.0))
            .collect()
    } else {
        vec![1.0; updates.len()]
    };
    // The bases only for the DCT: an identity update's block side says nothing about memory.
    let bases = match transform {
        Transform::Dct => {
            let b = Bases::default();
            let get = |n: usize| {
                b.try_get(n).ok_or(AggregateError::BasisTooLarge {
                    tensor: first.name.clone(),
                    side: n,
                    max: MAX_DCT_BLOCK_SIDE as usize,
                })
            };
            Some((get(g.n1)?, get(g.n2)?))
        }
        Transform::Identity => None,
    };
    let bps = g.blocks_per_stripe();
    let n2 = g.n2;
    let mut out = vec![0f32; g.numel()];
    out.par_chunks_mut(g.stripe_len())
        .enumerate()
        .for_each_init(
            || (Scratch::default(), Vec::new(), Vec::new(), Vec::new()),
            |(scratch, entries, pos, val), (s, stripe)| {
                for x in 0..bps {
                    let block = s * bps + x;
                    // Every peer's entries of this block keyed (position, peer): sorted, each
                    // position's run lists its peers in order, so the sums add in peer order.
                    entries.clear();
                    for (p, u) in updates.iter().enumerate() {
                        let k = u.k as usize;
                        let range = block * k..(block + 1) * k;
                        for (&i, &v) in u.indices[range.clone()].iter().zip(&values[p][range]) {
                            entries.push(((i as u64) << 32 | p as u64, v * factors[p]));
                        }
                    }
                    entries.sort_unstable_by_key(|e: &(u64, f32)| e.0);
                    pos.clear();
                    val.clear();
                    let mut j = 0;
                    while j < entries.len() {
                        let i = (entries[j].0 >> 32) as u32;
                        let mut sum = entries[j].1;
                        let mut count = 1u32;
                        j += 1;
                        while j < entries.len() && (entries[j].0 >> 32) as u32 == i {
                            sum += entries[j].1;
                            count += 1;
                            j += 1;
                        }
                        pos.push(i);
                        val.push(sum / count as f32);
                    }
                    match &bases {
                        Some((b1, b2)) => dct::decode_sparse_into(
                            pos, val, 1.0, stripe, g.cols, x, b1, b2, scratch,
                        ),
                        None => {
                            for (&p, &v) in pos.iter().zip(val.iter()) {
                                let (h, w) = (p as usize / n2, p as usize % n2);
                                stripe[h * g.cols + x * n2 + w] = v;
                            }
                        }
                    }
                }
            },
        );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, CodecConfig};
    use conclave_protocol::ValueEncoding;

    /// The scatter-mean as it was computed before (dense per-block sums and counts, in peer
    /// order), for identity updates: what [`aggregate`] must still give, bit for bit.
    fn dense_mean(updates: &[&TensorUpdate], factors: &[f32]) -> Vec<f32> {
        let u0 = updates[0];
        let (n1, n2) = (u0.block.rows as usize, u0.block.cols as usize);
        let (lead, rows, cols) = matrix_view(&u0.shape).unwrap();
        let (rows, cols) = (rows as usize, cols as usize);
        let bps = cols / n2;
        let mut out = vec![0f32; lead as usize * rows * cols];
        let values: Vec<Vec<f32>> = updates.iter().map(|u| u.values.dequantize()).collect();
        let (mut sum, mut count) = (vec![0f32; n1 * n2], vec![0u32; n1 * n2]);
        for block in 0..u0.num_blocks() as usize {
            let mut pos = Vec::new();
            for (p, u) in updates.iter().enumerate() {
                let k = u.k as usize;
                let range = block * k..(block + 1) * k;
                for (&i, &v) in u.indices[range.clone()].iter().zip(&values[p][range]) {
                    let (i, v) = (i as usize, v * factors[p]);
                    if count[i] == 0 {
                        pos.push(i);
                        sum[i] = v;
                    } else {
                        sum[i] += v;
                    }
                    count[i] += 1;
                }
            }
            pos.sort_unstable();
            let (s, x) = (block / bps, block % bps);
            for i in pos {
                let (h, w) = (i / n2, i % n2);
                out[(s * n1 + h) * cols + x * n2 + w] = sum[i] / count[i] as f32;
                count[i] = 0;
            }
        }
        out
    }

    #[test]
    fn the_sorted_mean_is_the_dense_scatter_mean_bit_for_bit() {
        let codec = Codec::new(CodecConfig {
            topk: 5,
            chunk: 8,
            transform: Transform::Identity,
            values: ValueEncoding::F32,
            ..CodecConfig::default()
        });
        let shape = [3, 16, 24];
        let n: usize = shape.iter().product();
        let updates: Vec<TensorUpdate> = (0..5u32)
            .map(|p| {
                // Overlapping selections: a shared pattern plus per-peer noise.
                let x: Vec<f32> = (0..n as u32)
                    .map(|i| {
                        let z = i.wrapping_mul(2_654_435_761) ^ p.wrapping_mul(40_503);
                        ((i % 7) as f32 - 3.0) + (z % 1000) as f32 / 997.0
                    })
                    .collect();
                codec.compress_only("t", &shape, &x)
            })
            .collect();
        let refs: Vec<&TensorUpdate> = updates.iter().collect();
        let ours = aggregate(&refs, Transform::Identity, false).unwrap();
        let want = dense_mean(&refs, &[1.0; 5]);
        assert!(
            ours.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        // 18 blocks × k = 5 per peer: the peers overlap, but not entirely.
        let kept = ours.iter().filter(|v| **v != 0.0).count();
        assert!(kept > 90 && kept < 5 * 90, "{kept}");
    }
}
