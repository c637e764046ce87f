//! Top-k by magnitude within a block: one pass with a k-element min-heap.
//!
//! Positive f32 bit patterns order like the numbers, so `|x|` is compared as `bits & 0x7FFF_FFFF`.
//! Each candidate is scored `(|x| bits) << 32 | !position`, so among equal magnitudes the lower
//! position wins; the scan tests 16 elements at a time against the heap's weakest member
//! (a branch-free, vectorisable comparison) and touches the heap only when one of them beats
//! it, which for k ≪ n is rare. The result is sorted ascending, so the selection and its
//! encoding are deterministic (torch's `topk(sorted=False)` leaves both unspecified; decoded
//! tensors do not depend on it).

/// Reusable working memory.
#[derive(Default)]
pub struct TopK {
    heap: Vec<u64>,
}

#[inline(always)]
fn key(x: f32) -> u32 {
    x.to_bits() & 0x7FFF_FFFF
}

#[inline(always)]
fn score(x: f32, i: usize) -> u64 {
    ((key(x) as u64) << 32) | (!(i as u32)) as u64
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
        let heap = &mut self.heap;
        heap.clear();
        heap.extend(x[..k].iter().enumerate().map(|(i, &v)| score(v, i)));
        for i in (0..k / 2).rev() {
            sift_down(heap, i);
        }
        let mut i = k;
        while i < x.len() {
            let end = (i + 16).min(x.len());
            let thr = (heap[0] >> 32) as u32;
            let any = x[i..end].iter().fold(false, |a, &v| a | (key(v) > thr));
            if any {
                for (j, &v) in x[i..end].iter().enumerate() {
                    let s = score(v, i + j);
                    if s > heap[0] {
                        heap[0] = s;
                        sift_down(heap, 0);
                    }
                }
            }
            i = end;
        }
        out.extend(heap.iter().map(|&s| !(s as u32)));
        out[start..].sort_unstable();
    }
}

#[inline]
fn sift_down(h: &mut [u64], mut i: usize) {
    let n = h.len();
    loop {
        let l = 2 * i + 1;
        if l >= n {
            return;
        }
        let r = l + 1;
        let m = if r < n && h[r] < h[l] { r } else { l };
        if h[m] >= h[i] {
            return;
        }
        h.swap(i, m);
        i = m;
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
