//! Peers' updates back to one dense tensor: dequantize, optionally clip each peer to the median
//! norm (Templar `batch_decompress(clip_norm=True)`), take each position's mean over the peers
//! that chose it (DeMo `scatter_reduce(mean, include_self=False)`; positions nobody chose stay
//! 0), then invert the transform.

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
        u.validate(&limits)?;
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
    let shape: Vec<usize> = first.shape.iter().map(|&d| d as usize).collect();
    let (n1, n2) = (first.block.rows as usize, first.block.cols as usize);
    let (lead, rows, cols) = match shape.as_slice() {
        [] => (1, 1, 1),
        [l] => (1, 1, *l),
        [lead @ .., r, c] => (lead.iter().product(), *r, *c),
    };
    let g = Geometry {
        lead,
        rows,
        cols,
        n1,
        n2,
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
    let bases = Bases::default();
    let (b1, b2) = (bases.get(n1), bases.get(n2));
    let totalk = g.totalk();
    let bps = g.blocks_per_stripe();
    let mut out = vec![0f32; g.numel()];
    out.par_chunks_mut(g.stripe_len())
        .enumerate()
        .for_each_init(
            || {
                (
                    Scratch::default(),
                    vec![0f32; totalk],
                    vec![0u32; totalk],
                    Vec::new(),
                    Vec::new(),
                )
            },
            |(scratch, sum, count, pos, val), (s, stripe)| {
                for x in 0..bps {
                    let block = s * bps + x;
                    pos.clear();
                    for (p, u) in updates.iter().enumerate() {
                        let k = u.k as usize;
                        let range = block * k..(block + 1) * k;
                        for (&i, &v) in u.indices[range.clone()].iter().zip(&values[p][range]) {
                            let i = i as usize;
                            let v = v * factors[p];
                            if count[i] == 0 {
                                pos.push(i as u32);
                                sum[i] = v;
                            } else {
                                sum[i] += v;
                            }
                            count[i] += 1;
                        }
                    }
                    pos.sort_unstable();
                    val.clear();
                    for &i in pos.iter() {
                        let i = i as usize;
                        val.push(sum[i] / count[i] as f32);
                        count[i] = 0;
                    }
                    match transform {
                        Transform::Dct => dct::decode_sparse_into(
                            pos, val, 1.0, stripe, g.cols, x, &b1, &b2, scratch,
                        ),
                        Transform::Identity => {
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
