//! Top-k by magnitude within a block, by radix selection on the bits of |x|.
//!
//! The positive f32 bit patterns order like the numbers, so one pass builds a histogram of the
//! top 11 bits of `|x|`, a scan finds the bucket holding the k-th largest, and a second pass keeps
//! everything above it plus the best of that bucket. Ties go to the lower position, and the
//! result is sorted ascending, so the selection and its encoding are deterministic (torch's
//! `topk(sorted=False)` leaves both unspecified; decoded results do not depend on it).

const BUCKET_SHIFT: u32 = 20;
const BUCKETS: usize = 1 << (31 - BUCKET_SHIFT);

/// Reusable working memory.
pub struct TopK {
    hist: Vec<u32>,
    cand: Vec<(u32, u32)>,
}

impl Default for TopK {
    fn default() -> Self {
        TopK {
            hist: vec![0; BUCKETS],
            cand: Vec::new(),
        }
    }
}

#[inline]
fn key(x: f32) -> u32 {
    x.to_bits() & 0x7FFF_FFFF
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
        self.hist.fill(0);
        for &v in x {
            self.hist[(key(v) >> BUCKET_SHIFT) as usize] += 1;
        }
        let mut above = 0usize;
        let mut bucket = BUCKETS - 1;
        loop {
            let c = self.hist[bucket] as usize;
            if above + c >= k {
                break;
            }
            above += c;
            bucket -= 1;
        }
        let need = k - above;
        self.cand.clear();
        for (i, &v) in x.iter().enumerate() {
            let kv = key(v);
            let b = (kv >> BUCKET_SHIFT) as usize;
            if b > bucket {
                out.push(i as u32);
            } else if b == bucket {
                self.cand.push((kv, i as u32));
            }
        }
        let by_rank = |a: &(u32, u32), b: &(u32, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        if need < self.cand.len() {
            self.cand.select_nth_unstable_by(need - 1, by_rank);
        }
        out.extend(self.cand[..need].iter().map(|&(_, i)| i));
        out[start..].sort_unstable();
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
    }
}
