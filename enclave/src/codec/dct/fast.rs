//! A fast path for [`encode_stripe`](super::encode_stripe): the same orthonormal DCT-II through
//! Lee's recursive factorisation, for blocks whose sides are powers of two from 8 to 64.
//!
//! Lee (1984): for the unnormalised `X[k] = Σᵢ x[i] cos(π(2i+1)k / 2N)`, with
//! `a[i] = x[i] + x[N−1−i]` and `b[i] = (x[i] − x[N−1−i]) / (2 cos(π(2i+1) / 2N))` (i < N/2),
//! `X[2m] = A[m]` and `X[2m+1] = B[m] + B[m+1]` (`B[N/2] = 0`), where `A`, `B` are the
//! half-size transforms. That is `N/2 · log₂N` multiplications and about `3N/2 · log₂N`
//! additions per column instead of `N²` multiply-adds; the orthonormal scale `α_k` is applied
//! to the outputs. Every operation works on 8 independent columns or rows at once (one AVX
//! register, or a `[f32; 8]` the compiler vectorises where AVX2 is missing): the horizontal pass
//! loads 8×8 tiles of the stripe transposed, so 8 rows of the block sit in the lanes, and stores
//! its output transposed back; the vertical pass then takes 8 adjacent columns of that output
//! and stores its result straight into the row-major block.
//!
//! Rounding differs from the matrix products (encoding is local to this operator, see
//! [`encode_stripe`](super::encode_stripe)); the unit tests bound the difference.

use std::sync::OnceLock;

const LANES: usize = 8;

/// The largest block side this path handles.
pub const MAX: usize = 64;

/// Whether a block side can take this path.
pub fn supports(n: usize) -> bool {
    n.is_power_of_two() && (LANES..=MAX).contains(&n)
}

/// `1 / (2 cos(π(2i+1) / 2m))` for `i < m/2`, for every `m = 2, 4, …, 64`: the constants of
/// size `m` start at `m/2 − 1`.
fn lee_constants() -> &'static [f32; MAX - 1] {
    static C: OnceLock<[f32; MAX - 1]> = OnceLock::new();
    C.get_or_init(|| {
        let mut c = [0f32; MAX - 1];
        let mut m = 2;
        while m <= MAX {
            for i in 0..m / 2 {
                let theta = std::f64::consts::PI * (2 * i + 1) as f64 / (2 * m) as f64;
                c[m / 2 - 1 + i] = (0.5 / theta.cos()) as f32;
            }
            m *= 2;
        }
        c
    })
}

/// The orthonormal scales `α_k` of size `n`.
fn alphas(n: usize) -> [f32; MAX] {
    let mut a = [0f32; MAX];
    let nf = n as f64;
    for (k, ak) in a.iter_mut().enumerate().take(n) {
        *ak = if k == 0 {
            (1.0 / nf).sqrt()
        } else {
            (2.0 / nf).sqrt()
        } as f32;
    }
    a
}

/// The vector operations the transform needs, on 8 lanes.
trait Simd {
    type V: Copy;
    /// The first 8 elements of `s`.
    fn load(s: &[f32]) -> Self::V;
    /// Into the first 8 elements of `s`.
    fn store(v: Self::V, s: &mut [f32]);
    fn zero() -> Self::V;
    fn add(x: Self::V, y: Self::V) -> Self::V;
    /// `(x − y) · c`
    fn sub_mul(x: Self::V, y: Self::V, c: f32) -> Self::V;
    fn mul(x: Self::V, c: f32) -> Self::V;
    /// Loads the 8×8 tile whose row `r` is `s[r·stride ..][..8]` as its 8 columns.
    fn load_transposed(s: &[f32], stride: usize) -> [Self::V; 8];
    /// Stores the tile whose columns are `t` as rows `s[r·stride ..][..8]`.
    fn store_transposed(t: &[Self::V; 8], s: &mut [f32], stride: usize);
}

/// Plain arrays: vectorised as far as the compiler manages.
struct Portable;

impl Simd for Portable {
    type V = [f32; LANES];
    #[inline(always)]
    fn load(s: &[f32]) -> Self::V {
        let mut v = [0f32; LANES];
        v.copy_from_slice(&s[..LANES]);
        v
    }
    #[inline(always)]
    fn store(v: Self::V, s: &mut [f32]) {
        s[..LANES].copy_from_slice(&v);
    }
    #[inline(always)]
    fn zero() -> Self::V {
        [0.0; LANES]
    }
    #[inline(always)]
    fn add(x: Self::V, y: Self::V) -> Self::V {
        std::array::from_fn(|l| x[l] + y[l])
    }
    #[inline(always)]
    fn sub_mul(x: Self::V, y: Self::V, c: f32) -> Self::V {
        std::array::from_fn(|l| (x[l] - y[l]) * c)
    }
    #[inline(always)]
    fn mul(x: Self::V, c: f32) -> Self::V {
        std::array::from_fn(|l| x[l] * c)
    }
    #[inline(always)]
    fn load_transposed(s: &[f32], stride: usize) -> [Self::V; 8] {
        std::array::from_fn(|c| std::array::from_fn(|r| s[r * stride + c]))
    }
    #[inline(always)]
    fn store_transposed(t: &[Self::V; 8], s: &mut [f32], stride: usize) {
        for r in 0..8 {
            for (c, col) in t.iter().enumerate() {
                s[r * stride + c] = col[r];
            }
        }
    }
}

/// AVX registers. Its methods use AVX instructions without checking for them: they are only
/// called from [`encode_avx2`], which runs after the CPU was found to support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
struct Avx;

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{Avx, LANES, Simd};
    use std::arch::x86_64::*;

    /// `[r0 r1 … r7]` (rows) → columns.
    #[inline(always)]
    unsafe fn transpose(r: [__m256; 8]) -> [__m256; 8] {
        // SAFETY (for every intrinsic below): AVX is available, see `Avx`.
        unsafe {
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            [
                _mm256_permute2f128_ps::<0x20>(s0, s4),
                _mm256_permute2f128_ps::<0x20>(s1, s5),
                _mm256_permute2f128_ps::<0x20>(s2, s6),
                _mm256_permute2f128_ps::<0x20>(s3, s7),
                _mm256_permute2f128_ps::<0x31>(s0, s4),
                _mm256_permute2f128_ps::<0x31>(s1, s5),
                _mm256_permute2f128_ps::<0x31>(s2, s6),
                _mm256_permute2f128_ps::<0x31>(s3, s7),
            ]
        }
    }

    impl Simd for Avx {
        type V = __m256;
        #[inline(always)]
        fn load(s: &[f32]) -> __m256 {
            let s = &s[..LANES];
            // SAFETY: AVX is available (see `Avx`); `s` holds the 8 floats read.
            unsafe { _mm256_loadu_ps(s.as_ptr()) }
        }
        #[inline(always)]
        fn store(v: __m256, s: &mut [f32]) {
            let s = &mut s[..LANES];
            // SAFETY: AVX is available (see `Avx`); `s` holds the 8 floats written.
            unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn zero() -> __m256 {
            // SAFETY: AVX is available (see `Avx`).
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn add(x: __m256, y: __m256) -> __m256 {
            // SAFETY: AVX is available (see `Avx`).
            unsafe { _mm256_add_ps(x, y) }
        }
        #[inline(always)]
        fn sub_mul(x: __m256, y: __m256, c: f32) -> __m256 {
            // SAFETY: AVX is available (see `Avx`).
            unsafe { _mm256_mul_ps(_mm256_sub_ps(x, y), _mm256_set1_ps(c)) }
        }
        #[inline(always)]
        fn mul(x: __m256, c: f32) -> __m256 {
            // SAFETY: AVX is available (see `Avx`).
            unsafe { _mm256_mul_ps(x, _mm256_set1_ps(c)) }
        }
        #[inline(always)]
        fn load_transposed(s: &[f32], stride: usize) -> [__m256; 8] {
            let rows: [__m256; 8] = std::array::from_fn(|r| Self::load(&s[r * stride..]));
            // SAFETY: AVX is available (see `Avx`).
            unsafe { transpose(rows) }
        }
        #[inline(always)]
        fn store_transposed(t: &[__m256; 8], s: &mut [f32], stride: usize) {
            // SAFETY: AVX is available (see `Avx`).
            let rows = unsafe { transpose(*t) };
            for (r, v) in rows.into_iter().enumerate() {
                Self::store(v, &mut s[r * stride..]);
            }
        }
    }
}

macro_rules! lee {
    ($name:ident, $n:literal, $half:ident) => {
        /// Unnormalised DCT-II of size
        #[doc = stringify!($n)]
        /// over the lanes, in place.
        #[inline(always)]
        fn $name<S: Simd>(x: &mut [S::V; $n], c: &[f32; MAX - 1]) {
            const H: usize = $n / 2;
            let mut a = [S::zero(); H];
            let mut b = [S::zero(); H];
            for i in 0..H {
                a[i] = S::add(x[i], x[$n - 1 - i]);
                b[i] = S::sub_mul(x[i], x[$n - 1 - i], c[H - 1 + i]);
            }
            $half::<S>(&mut a, c);
            $half::<S>(&mut b, c);
            for m in 0..H - 1 {
                x[2 * m] = a[m];
                x[2 * m + 1] = S::add(b[m], b[m + 1]);
            }
            x[$n - 2] = a[H - 1];
            x[$n - 1] = b[H - 1];
        }
    };
}

/// Unnormalised DCT-II of size 2: `[x₀ + x₁, (x₀ − x₁) / √2]`.
#[inline(always)]
fn lee2<S: Simd>(x: &mut [S::V; 2], c: &[f32; MAX - 1]) {
    let (u, w) = (x[0], x[1]);
    x[0] = S::add(u, w);
    x[1] = S::sub_mul(u, w, c[0]);
}

lee!(lee4, 4, lee2);
lee!(lee8, 8, lee4);
lee!(lee16, 16, lee8);
lee!(lee32, 32, lee16);
lee!(lee64, 64, lee32);

/// Unnormalised DCT-II over the lanes of `x` (length 8, 16, 32 or 64), in place.
#[inline(always)]
fn lee<S: Simd>(x: &mut [S::V], c: &[f32; MAX - 1]) {
    if let Ok(x) = <&mut [S::V; 64]>::try_from(&mut *x) {
        lee64::<S>(x, c)
    } else if let Ok(x) = <&mut [S::V; 32]>::try_from(&mut *x) {
        lee32::<S>(x, c)
    } else if let Ok(x) = <&mut [S::V; 16]>::try_from(&mut *x) {
        lee16::<S>(x, c)
    } else if let Ok(x) = <&mut [S::V; 8]>::try_from(&mut *x) {
        lee8::<S>(x, c)
    } else {
        unreachable!("fast DCT of an unsupported size")
    }
}

/// Working memory.
#[derive(Default)]
pub struct Work {
    /// The horizontal pass's output `B·C₂ᵀ` of one block, row-major (n1 × n2).
    w: Vec<f32>,
    /// One block's coefficients, row-major.
    block: Vec<f32>,
}

/// Encodes one stripe like [`encode_stripe`](super::encode_stripe); both block sides must pass
/// [`supports`].
pub fn encode_stripe(
    stripe: &[f32],
    cols: usize,
    n1: usize,
    n2: usize,
    s: &mut Work,
    f: &mut dyn FnMut(usize, &[f32]),
) {
    assert!(
        supports(n1) && supports(n2) && cols.is_multiple_of(n2) && stripe.len() == n1 * cols,
        "stripe geometry"
    );
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { encode_avx2(stripe, cols, n1, n2, s, f) };
        return;
    }
    encode_impl::<Portable>(stripe, cols, n1, n2, s, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn encode_avx2(
    stripe: &[f32],
    cols: usize,
    n1: usize,
    n2: usize,
    s: &mut Work,
    f: &mut dyn FnMut(usize, &[f32]),
) {
    encode_impl::<Avx>(stripe, cols, n1, n2, s, f)
}

#[inline(always)]
fn encode_impl<S: Simd>(
    stripe: &[f32],
    cols: usize,
    n1: usize,
    n2: usize,
    s: &mut Work,
    f: &mut dyn FnMut(usize, &[f32]),
) {
    let c = lee_constants();
    let (a1, a2) = (alphas(n1), alphas(n2));
    s.w.clear();
    s.w.resize(n1 * n2, 0.0);
    s.block.clear();
    s.block.resize(n1 * n2, 0.0);
    let mut v = [S::zero(); MAX];
    for x in 0..cols / n2 {
        // Horizontal pass, `W = B·C₂ᵀ`: lanes are 8 rows of the block, loaded as transposed
        // 8×8 tiles (the rows' cache lines are read together).
        for g in 0..n1 / LANES {
            let base = g * LANES * cols + x * n2;
            for lg in 0..n2 / LANES {
                let t = S::load_transposed(&stripe[base + lg * LANES..], cols);
                v[lg * LANES..(lg + 1) * LANES].copy_from_slice(&t);
            }
            lee::<S>(&mut v[..n2], c);
            for lg in 0..n2 / LANES {
                let t: [S::V; 8] =
                    std::array::from_fn(|j| S::mul(v[lg * LANES + j], a2[lg * LANES + j]));
                S::store_transposed(&t, &mut s.w[g * LANES * n2 + lg * LANES..], n2);
            }
        }
        // Vertical pass, `C₁·W`: lanes are 8 adjacent columns, stored straight into the block.
        for lg in 0..n2 / LANES {
            for (h, vh) in v[..n1].iter_mut().enumerate() {
                *vh = S::load(&s.w[h * n2 + lg * LANES..]);
            }
            lee::<S>(&mut v[..n1], c);
            for (k, &vk) in v[..n1].iter().enumerate() {
                S::store(S::mul(vk, a1[k]), &mut s.block[k * n2 + lg * LANES..]);
            }
        }
        f(x, &s.block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable kernels (which machines with AVX2 never run otherwise) agree with the
    /// products, and with the AVX kernels where those run.
    #[test]
    fn portable_kernels_agree() {
        for (n1, n2) in [(64, 64), (8, 32), (16, 8), (32, 64)] {
            let cols = 2 * n2;
            let stripe: Vec<f32> = (0..n1 * cols)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 100.0)
                .collect();
            let (b1, b2) = (super::super::Basis::new(n1), super::super::Basis::new(n2));
            let mut want = Vec::new();
            let mut scratch = super::super::Scratch::default();
            super::super::encode_stripe_gemm(&stripe, cols, &b1, &b2, &mut scratch, &mut |_, c| {
                want.extend_from_slice(c)
            });
            let mut got = Vec::new();
            let mut w = Work::default();
            encode_impl::<Portable>(&stripe, cols, n1, n2, &mut w, &mut |_, c| {
                got.extend_from_slice(c)
            });
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert_eq!(got.len(), want.len());
            assert!(worst < 1e-5 * scale, "{n1}×{n2}: {worst}");
            let mut fast = Vec::new();
            encode_stripe(&stripe, cols, n1, n2, &mut w, &mut |_, c| {
                fast.extend_from_slice(c)
            });
            let worst = got
                .iter()
                .zip(&fast)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                worst < 1e-5 * scale,
                "{n1}×{n2}: portable vs dispatched {worst}"
            );
        }
    }
}
