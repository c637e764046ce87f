//! Templar's 2-bit codebook quantizer (`TopKCompressor._quantize_values`, tplr compress.py), with
//! its exact rules: shift = mean, std with n − 1, scale = 6σ / 4 (1.0 when that is 0 or not
//! finite), `q = clamp(round_half_even(c / scale + 2), 0, 3)`, and each bin's value the f32 mean
//! of its members (+0 for an empty bin). A code decodes to `lookup[q] + shift`. The codebook is
//! in the canonical form decoders require (`conclave_protocol::update`): unused entries +0, used
//! ones strictly increasing.

use conclave_protocol::Codebook;

/// Bins of the 2-bit quantizer.
pub const BINS: usize = 4;
/// Width of the quantized range in standard deviations (Templar `quantization_range`).
pub const RANGE_SIGMAS: f64 = 6.0;

/// Quantizes a tensor's kept values; returns the codes and the codebook.
pub fn quantize_2bit(vals: &[f32]) -> (Vec<u8>, Codebook) {
    let n = vals.len();
    let shift = if n == 0 {
        0.0
    } else {
        (vals.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32
    };
    let centered: Vec<f32> = vals.iter().map(|&v| v - shift).collect();
    let norm = centered
        .iter()
        .map(|&c| (c as f64) * (c as f64))
        .sum::<f64>()
        .sqrt() as f32;
    let std = norm / ((n as f64 - 1.0).sqrt() as f32);
    let mut scale = (RANGE_SIGMAS as f32) * std / BINS as f32;
    if scale == 0.0 || !scale.is_finite() {
        scale = 1.0;
    }
    let offset = (BINS / 2) as f32;
    let codes: Vec<u8> = centered
        .iter()
        .map(|&c| {
            (c / scale + offset)
                .round_ties_even()
                .clamp(0.0, (BINS - 1) as f32) as u8
        })
        .collect();
    let mut sums = [0f64; BINS];
    let mut counts = [0u64; BINS];
    let mut lo = [f32::INFINITY; BINS];
    let mut hi = [f32::NEG_INFINITY; BINS];
    for (&q, &c) in codes.iter().zip(&centered) {
        let q = q as usize;
        sums[q] += c as f64;
        counts[q] += 1;
        lo[q] = lo[q].min(c);
        hi[q] = hi[q].max(c);
    }
    // Each bin's mean, kept within its members' range. Codes are monotone in the value, so every
    // member of a lower bin is below every member of a higher one, and the clamped means strictly
    // increase with the code: the canonical order receivers insist on. (The mean lies in that
    // range in exact arithmetic; the clamp only undoes rounding in the f64 sum.) Empty bins
    // stay +0.0, the other half of the canonical form.
    let mut lookup = [0f32; BINS];
    for b in 0..BINS {
        if counts[b] > 0 {
            // Not `f64::clamp`, which panics on a NaN bound (non-finite input; the codebook is
            // then refused by the encoder as not finite).
            let (mean, lo, hi) = (sums[b] / counts[b] as f64, lo[b] as f64, hi[b] as f64);
            lookup[b] = if mean < lo {
                lo
            } else if mean > hi {
                hi
            } else {
                mean
            } as f32;
        }
    }
    (
        codes,
        Codebook {
            shift,
            scale,
            lookup,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_case() {
        // vals = [-3, -1, 0, 1, 3]: mean 0, ‖c‖ = √20, std = √20/√4 = √5 ≈ 2.2360680,
        // scale = 1.5·√5 ≈ 3.3541020. c/scale + 2 = [1.1056, 1.7019, 2, 2.2981, 2.8944]
        // → round → [1, 2, 2, 2, 3]; bins: 0 → empty, 1 → {-3}, 2 → {-1, 0, 1}, 3 → {3}.
        let (codes, cb) = quantize_2bit(&[-3.0, -1.0, 0.0, 1.0, 3.0]);
        assert_eq!(codes, vec![1, 2, 2, 2, 3]);
        assert_eq!(cb.shift, 0.0);
        assert!((cb.scale - 3.354_102).abs() < 1e-6);
        assert_eq!(cb.lookup, [0.0, -3.0, 0.0, 3.0]);
    }

    #[test]
    fn rounding_is_half_to_even() {
        // vals = [-1, 1] → mean 0, std = √2, scale = 1.5√2; make exact halves with a shifted set:
        // vals = [0, 0, 0, 4]: mean 1, c = [-1, -1, -1, 3], ‖c‖ = √12, std = 2, scale = 3.
        // c/scale + 2 = [1.6667, 1.6667, 1.6667, 3] → [2, 2, 2, 3].
        let (codes, cb) = quantize_2bit(&[0.0, 0.0, 0.0, 4.0]);
        assert_eq!(codes, vec![2, 2, 2, 3]);
        assert_eq!((cb.shift, cb.scale), (1.0, 3.0));
        assert_eq!(cb.lookup, [0.0, 0.0, -1.0, 3.0]);
        // Exact halves: four each of ±0.5 and ±1.5 plus 30 zeros. Mean 0, ‖c‖² = 20, n − 1 = 45,
        // std = 2/3, scale = 1.0 exactly; c + 2 = 2.5 → 2, 1.5 → 2, 3.5 → 4 → 3, 0.5 → 0.
        let mut v = vec![0.0f32; 30];
        for _ in 0..4 {
            v.extend([0.5, -0.5, 1.5, -1.5]);
        }
        let (codes, cb) = quantize_2bit(&v);
        assert_eq!(cb.scale, 1.0);
        assert_eq!(&codes[30..34], &[2, 2, 3, 0]);
        assert_eq!(cb.lookup, [-1.5, 0.0, 0.0, 1.5]);
    }

    #[test]
    fn degenerate_inputs_use_scale_one() {
        let (codes, cb) = quantize_2bit(&[2.5, 2.5, 2.5]);
        assert_eq!(cb.scale, 1.0);
        assert_eq!(codes, vec![2, 2, 2]);
        assert_eq!(cb.lookup[2] + cb.shift, 2.5);
        let (codes, cb) = quantize_2bit(&[7.0]);
        assert_eq!((codes, cb.scale), (vec![2], 1.0));
    }
}
