//! Top-k by magnitude within a block, in three cheap passes.
//!
//! Positive f32 bit patterns order like the numbers, so `|x|` is compared as `bits & 0x7FFF_FFFF`.
//! Each candidate is scored `(|x| bits) << 32 | !position`, so among equal magnitudes the lower
//! position wins. The block is cut into `G ≥ k` interleaved groups (element `i` in group
//! `i mod G`) and each group's largest key is found in one vectorisable pass; the `k`-th largest
//! of those maxima, `t`, is at most the block's `k`-th largest key (at least `k` groups each hold
//! an element `≥ t`), so every member of the top k is among the few elements with key `≥ t`.
//! Those candidates are gathered (testing 16 elements at a time, branch-free) and the exact top k
//! of them chosen by score. The result is sorted ascending, so the selection and its encoding are
//! deterministic (torch's `topk(sorted=False)` leaves both unspecified; decoded tensors do not
//! depend on it).

/// Reusable working memory.
#[derive(Default)]
pub struct TopK {
    /// Per-group maximum keys.
    maxima: Vec<u32>,
    /// Candidates' scores.
    cand: Vec<u64>,
}

#[inline(always)]
fn key(x: f32) -> u32 {
    x.to_bits() & 0x7FFF_FFFF
}

#[inline(always)]
fn score(x: f32, i: usize) -> u64 {
    ((key(x) as u64) << 32) | (!(i as u32)) as u64
}

/// Groups used for a block of `len` with `k < len`: all elements when the block is small, else
/// at least 256 and at least `8k` (about `k` and a few candidates survive the threshold).
fn groups(len: usize, k: usize) -> usize {
    if len <= 256 {
        len
    } else {
        (k.saturating_mul(8)).max(256).min(len)
    }
}

impl TopK {
    /// Appends to `out` the positions of the `k` largest `|x|`, ascending.
    pub fn select(&mut self, x: &[f32], k: usize, out: &mut Vec<u32>) {
        let start = out.len();
        if k >= x.len() {
            out.extend(0..x.len() as u32);
            return;
        }
        if k == 0 {
            return;
        }
        let g = groups(x.len(), k);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { threshold_avx2(x, g, k, &mut self.maxima, &mut self.cand) };
        } else {
            threshold(x, g, k, &mut self.maxima, &mut self.cand);
        }
        #[cfg(not(target_arch = "x86_64"))]
        threshold(x, g, k, &mut self.maxima, &mut self.cand);
        let cand = &mut self.cand;
        // At least k candidates (see the module comment); keep the k best scores.
        if cand.len() > k {
            cand.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        }
        out.extend(cand[..k].iter().map(|&s| !(s as u32)));
        out[start..].sort_unstable();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn threshold_avx2(x: &[f32], g: usize, k: usize, maxima: &mut Vec<u32>, cand: &mut Vec<u64>) {
    threshold(x, g, k, maxima, cand)
}

/// Finds the threshold `t` from `g` interleaved groups' maxima and fills `cand` with the scores
/// of every element whose key is `≥ t` (at least `k` of them).
#[inline(always)]
fn threshold(x: &[f32], g: usize, k: usize, maxima: &mut Vec<u32>, cand: &mut Vec<u64>) {
    // Keys are below 2³¹, so they compare alike as i32 (cheaper without AVX-512).
    let ikey = |v: f32| key(v) as i32;
    // Interleaved group maxima: row r of the block (elements r·g .. r·g + g) folds into
    // `maxima` element-wise.
    maxima.clear();
    maxima.extend(x[..g].iter().map(|&v| key(v)));
    for row in x[g..].chunks(g) {
        for (m, &v) in maxima.iter_mut().zip(row) {
            *m = (*m as i32).max(ikey(v)) as u32;
        }
    }
    // k ≤ g here: g = len > k, or g ≥ min(8k, len) with len > k.
    let (_, &mut t, _) = maxima.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    let ti = t as i32;
    cand.clear();
    let mut base = 0;
    for chunk in x.chunks(16) {
        let any = chunk.iter().fold(false, |a, &v| a | (ikey(v) >= ti));
        if any {
            for (j, &v) in chunk.iter().enumerate() {
                if ikey(v) >= ti {
                    cand.push(score(v, base + j));
                }
            }
        }
        base += chunk.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(x: &[f32], k: usize) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..x.len() as u32).collect();
        idx.sort_by(|&a, &b| key(x[b as usize]).cmp(&key(x[a as usize])).then(a.cmp(&b)));
        let mut top = idx[..k.min(x.len())].to_vec();
        top.sort_unstable();
        top
    }

    #[test]
    fn ties_go_to_the_lower_position() {
        let mut t = TopK::default();
        let mut out = Vec::new();
        t.select(&[1.0, -2.0, 2.0, 0.5, -2.0], 2, &mut out);
        assert_eq!(out, vec![1, 2]);
    }

    proptest! {
        #[test]
        fn agrees_with_a_full_sort(
            x in proptest::collection::vec(prop_oneof![-1e3f32..1e3, Just(0.0f32), Just(1.5f32), Just(-1.5f32)], 1..300),
            k in 1usize..40,
        ) {
            let mut t = TopK::default();
            let mut out = Vec::new();
            t.select(&x, k, &mut out);
            prop_assert_eq!(out, naive(&x, k));
        }

        #[test]
        fn agrees_with_a_full_sort_on_large_blocks(
            x in proptest::collection::vec(prop_oneof![-1e3f32..1e3, Just(0.0f32), Just(7.0f32), Just(-7.0f32)], 257..5000),
            k in prop_oneof![1usize..80, 300usize..700],
        ) {
            let mut t = TopK::default();
            let mut out = Vec::new();
            t.select(&x, k, &mut out);
            prop_assert_eq!(out, naive(&x, k));
        }
    }

    #[test]
    fn all_equal_magnitudes_keep_the_first_positions() {
        let x: Vec<f32> = (0..4096)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect();
        let mut t = TopK::default();
        let mut out = vec![99];
        t.select(&x, 32, &mut out);
        assert_eq!(out[0], 99);
        assert_eq!(&out[1..], &(0..32).collect::<Vec<u32>>()[..]);
    }
}
