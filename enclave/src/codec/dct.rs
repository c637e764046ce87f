//! The orthonormal DCT-II applied per block, as dense products with the basis matrix.
//!
//! `C[k][i] = α_k cos(π(2i+1)k / 2N)`, `α_0 = √(1/N)`, `α_k = √(2/N)`, built in f64 and cast
//! to f32 (DeMo builds `f = dct(I) = Cᵀ` and `b = idct(I) = C`). A block `B` (n1 × n2) encodes
//! to `C₁ B C₂ᵀ` and coefficients `E` decode to `C₁ᵀ E C₂` (DeMo `_einsum_2d`/`_einsum_2d_t`).
//!
//! Every product is a sum of row "axpys" (`y += a·x` over contiguous rows), which vectorises
//! well. The arithmetic is fused multiply-add everywhere (`f32::mul_add`), with or without the
//! CPU's FMA unit, so results are bit-identical on every x86-64 machine: operators that
//! aggregate the same updates reach the same weights.
//!
//! Encoding blocks whose sides are powers of two from 8 to 64 (chunk 64 on typical shapes) takes
//! the fast factorised transform of [`fast`] instead of the products.

pub mod fast;

/// The largest basis side built for a block read from an update:
/// [`conclave_protocol::update::MAX_DCT_BLOCK_SIDE`]. A basis of side `n` holds `2·n²` f32
/// (`C` and `Cᵀ`): 128 MiB at 4096.
pub const MAX_SIDE: usize = conclave_protocol::update::MAX_DCT_BLOCK_SIDE as usize;

/// The DCT-II basis of one block size.
#[derive(Debug, Clone)]
pub struct Basis {
    pub n: usize,
    /// `C`, row-major: `c[k·n + i]`.
    pub c: Vec<f32>,
    /// `Cᵀ`, row-major: `ct[i·n + k] = C[k][i]`.
    pub ct: Vec<f32>,
}

impl Basis {
    pub fn new(n: usize) -> Self {
        let mut c = vec![0f32; n * n];
        let nf = n as f64;
        for k in 0..n {
            let alpha = if k == 0 {
                (1.0 / nf).sqrt()
            } else {
                (2.0 / nf).sqrt()
            };
            for i in 0..n {
                let v = alpha
                    * (std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2.0 * nf)).cos();
                c[k * n + i] = v as f32;
            }
        }
        let mut ct = vec![0f32; n * n];
        for k in 0..n {
            for i in 0..n {
                ct[i * n + k] = c[k * n + i];
            }
        }
        Basis { n, c, ct }
    }
}

#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = xi.mul_add(a, *yi);
    }
}

/// Working memory for one thread.
#[derive(Default)]
pub struct Scratch {
    /// `C₁ · stripe`: n1 × cols.
    t: Vec<f32>,
    /// One block (decode), or a panel's coefficients (encode).
    u: Vec<f32>,
    /// One block's coefficients, contiguous.
    block: Vec<f32>,
    nonzero_rows: Vec<bool>,
    fast: fast::Work,
}

/// Encodes one stripe (`n1` rows × `cols`, row-major) and calls `f(block, coefficients)` for
/// each of its `cols / n2` blocks, left to right.
///
/// Blocks with both sides powers of two from 8 to 64 go through [`fast::encode_stripe`], others
/// through [`encode_stripe_gemm`]. Encoding only feeds this operator's own selection, so its
/// rounding need not match other machines; decoding, which every operator must agree on, uses
/// [`decode_sparse_into`].
pub fn encode_stripe(
    stripe: &[f32],
    cols: usize,
    b1: &Basis,
    b2: &Basis,
    s: &mut Scratch,
    f: &mut dyn FnMut(usize, &[f32]),
) {
    if fast::supports(b1.n) && fast::supports(b2.n) {
        fast::encode_stripe(stripe, cols, b1.n, b2.n, &mut s.fast, f)
    } else {
        encode_stripe_gemm(stripe, cols, b1, b2, s, f)
    }
}

/// [`encode_stripe`] for any block size.
///
/// Two matrix products per panel of blocks, `T = C₁ · S` then `U = T · C₂ᵀ` (the second with
/// every block of the panel stacked into one tall matrix), through `matrixmultiply`'s packed
/// kernels.
pub fn encode_stripe_gemm(
    stripe: &[f32],
    cols: usize,
    b1: &Basis,
    b2: &Basis,
    s: &mut Scratch,
    f: &mut dyn FnMut(usize, &[f32]),
) {
    let (n1, n2) = (b1.n, b2.n);
    assert!(
        cols.is_multiple_of(n2) && stripe.len() == n1 * cols && b1.c.len() == n1 * n1,
        "stripe geometry"
    );
    let blocks = cols / n2;
    // Panels of about 512 columns keep T and U (2 × 128 KiB for n1 = 64) in L2.
    let per_panel = (512 / n2).max(1);
    let mut px = 0;
    while px < blocks {
        let pb = per_panel.min(blocks - px);
        let pc = pb * n2;
        s.t.clear();
        s.t.resize(n1 * pc, 0.0);
        s.u.clear();
        s.u.resize(n1 * pc, 0.0);
        // SAFETY: A = C₁ is n1 × n1 (row stride n1). B is the panel of the stripe: rows 0..n1
        // with stride `cols`, columns px·n2 .. px·n2 + pc ≤ cols, all inside `stripe` (checked
        // above). C = T is n1 × pc, row stride pc, and has exactly n1·pc elements.
        unsafe {
            matrixmultiply::sgemm(
                n1,
                n1,
                pc,
                1.0,
                b1.c.as_ptr(),
                n1 as isize,
                1,
                stripe.as_ptr().add(px * n2),
                cols as isize,
                1,
                0.0,
                s.t.as_mut_ptr(),
                pc as isize,
                1,
            );
        }
        // T viewed as (n1·pb) × n2: row b·pb + x is block x's row b. U = that · C₂ᵀ.
        // SAFETY: A = T has n1·pb rows of n2 (row stride n2) = n1·pc elements; B = C₂ᵀ is
        // n2 × n2; C = U has n1·pc elements with row stride n2.
        unsafe {
            matrixmultiply::sgemm(
                n1 * pb,
                n2,
                n2,
                1.0,
                s.t.as_ptr(),
                n2 as isize,
                1,
                b2.ct.as_ptr(),
                n2 as isize,
                1,
                0.0,
                s.u.as_mut_ptr(),
                n2 as isize,
                1,
            );
        }
        s.block.clear();
        s.block.resize(n1 * n2, 0.0);
        for x in 0..pb {
            for b in 0..n1 {
                let from = (b * pb + x) * n2;
                s.block[b * n2..(b + 1) * n2].copy_from_slice(&s.u[from..from + n2]);
            }
            f(px + x, &s.block);
        }
        px += pb;
    }
}

/// Adds `sign · C₁ᵀ E C₂` into block `x` of a stripe, where `E` (n1 × n2) is given sparsely as
/// positions (`r·n2 + c`) and values. Rows of `E` with no entry cost nothing.
#[allow(clippy::too_many_arguments)]
pub fn decode_sparse_into(
    positions: &[u32],
    values: &[f32],
    sign: f32,
    stripe: &mut [f32],
    cols: usize,
    x: usize,
    b1: &Basis,
    b2: &Basis,
    s: &mut Scratch,
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { decode_sparse_fma(positions, values, sign, stripe, cols, x, b1, b2, s) };
        return;
    }
    decode_sparse_impl(positions, values, sign, stripe, cols, x, b1, b2, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn decode_sparse_fma(
    positions: &[u32],
    values: &[f32],
    sign: f32,
    stripe: &mut [f32],
    cols: usize,
    x: usize,
    b1: &Basis,
    b2: &Basis,
    s: &mut Scratch,
) {
    decode_sparse_impl(positions, values, sign, stripe, cols, x, b1, b2, s)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn decode_sparse_impl(
    positions: &[u32],
    values: &[f32],
    sign: f32,
    stripe: &mut [f32],
    cols: usize,
    x: usize,
    b1: &Basis,
    b2: &Basis,
    s: &mut Scratch,
) {
    let (n1, n2) = (b1.n, b2.n);
    s.u.clear();
    s.u.resize(n1 * n2, 0.0);
    s.nonzero_rows.clear();
    s.nonzero_rows.resize(n1, false);
    // U = E · C₂ (only rows of E that hold entries).
    for (&p, &v) in positions.iter().zip(values) {
        let (b, l) = (p as usize / n2, p as usize % n2);
        if v != 0.0 {
            s.nonzero_rows[b] = true;
            axpy(
                &mut s.u[b * n2..(b + 1) * n2],
                v,
                &b2.c[l * n2..(l + 1) * n2],
            );
        }
    }
    // X[h, :] += sign · Σ_b C₁[b][h] · U[b, :]
    for h in 0..n1 {
        let dst = &mut stripe[h * cols + x * n2..h * cols + (x + 1) * n2];
        for b in 0..n1 {
            if s.nonzero_rows[b] {
                axpy(dst, sign * b1.c[b * n1 + h], &s.u[b * n2..(b + 1) * n2]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basis_matches_the_reference_rows_for_n4() {
        // Psyche distro.rs: dct(I) row 0 = [0.5, 0.6533, 0.5, 0.2706] (that is Cᵀ's row 0),
        // idct(I) row 0 = [0.5, 0.5, 0.5, 0.5] (C's row 0).
        let b = Basis::new(4);
        let expect = [0.5, 0.653_281_5, 0.5, 0.270_598_05];
        for (got, want) in b.ct[..4].iter().zip(expect) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!(b.c[..4].iter().all(|v| (v - 0.5).abs() < 1e-7));
    }

    #[test]
    fn encode_then_dense_decode_is_identity() {
        let (n1, n2, cols) = (4usize, 8usize, 16usize);
        let (b1, b2) = (Basis::new(n1), Basis::new(n2));
        let stripe: Vec<f32> = (0..n1 * cols)
            .map(|i| ((i * 37 % 11) as f32) - 5.0)
            .collect();
        let mut s = Scratch::default();
        let mut blocks = Vec::new();
        encode_stripe(&stripe, cols, &b1, &b2, &mut s, &mut |x, c| {
            blocks.push((x, c.to_vec()))
        });
        let mut out = vec![0f32; n1 * cols];
        let pos: Vec<u32> = (0..(n1 * n2) as u32).collect();
        for (x, c) in &blocks {
            decode_sparse_into(&pos, c, 1.0, &mut out, cols, *x, &b1, &b2, &mut s);
        }
        for (a, b) in out.iter().zip(&stripe) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    /// Deterministic pseudo-random values in about [-4, 4), with some large outliers.
    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|i| {
                z ^= z << 13;
                z ^= z >> 7;
                z ^= z << 17;
                let u = (z >> 40) as f32 / (1u64 << 24) as f32;
                if i % 97 == 0 {
                    300.0 * (u - 0.5)
                } else {
                    8.0 * u - 4.0
                }
            })
            .collect()
    }

    fn encode_both(
        stripe: &[f32],
        cols: usize,
        n1: usize,
        n2: usize,
    ) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let (b1, b2) = (Basis::new(n1), Basis::new(n2));
        let mut s = Scratch::default();
        let (mut fast, mut gemm) = (Vec::new(), Vec::new());
        encode_stripe(stripe, cols, &b1, &b2, &mut s, &mut |x, c| {
            assert_eq!(x, fast.len());
            fast.push(c.to_vec())
        });
        encode_stripe_gemm(stripe, cols, &b1, &b2, &mut s, &mut |x, c| {
            assert_eq!(x, gemm.len());
            gemm.push(c.to_vec())
        });
        (fast, gemm)
    }

    #[test]
    fn fast_path_agrees_with_the_products() {
        for n1 in [8, 16, 32, 64] {
            for n2 in [8, 16, 32, 64] {
                assert!(fast::supports(n1) && fast::supports(n2));
                let cols = 3 * n2;
                let stripe = noise(n1 * cols, (n1 * 100 + n2) as u64);
                let (fast, gemm) = encode_both(&stripe, cols, n1, n2);
                assert_eq!(fast.len(), 3);
                assert_eq!(gemm.len(), 3);
                for (a, b) in fast.iter().zip(&gemm) {
                    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
                    let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                    assert!(worst < 1e-5 * scale, "{n1}×{n2}: {worst} (scale {scale})");
                }
            }
        }
    }

    #[test]
    fn fast_path_matches_the_f64_definition() {
        let (n1, n2, cols) = (64, 64, 128);
        let stripe = noise(n1 * cols, 7);
        let (fast, _) = encode_both(&stripe, cols, n1, n2);
        let c = |n: usize, k: usize, i: usize| {
            let a = if k == 0 {
                (1.0 / n as f64).sqrt()
            } else {
                (2.0 / n as f64).sqrt()
            };
            a * (std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2 * n) as f64).cos()
        };
        for (x, got) in fast.iter().enumerate() {
            let mut worst = 0f64;
            for k in [0, 1, 2, 17, 31, 32, 63] {
                for l in [0, 1, 5, 32, 62, 63] {
                    let mut want = 0f64;
                    for h in 0..n1 {
                        for w in 0..n2 {
                            want +=
                                c(n1, k, h) * c(n2, l, w) * stripe[h * cols + x * n2 + w] as f64;
                        }
                    }
                    worst = worst.max((got[k * n2 + l] as f64 - want).abs());
                }
            }
            assert!(worst < 1e-3, "block {x}: {worst}");
        }
    }

    #[test]
    fn chunk_64_takes_the_fast_path_and_others_the_products() {
        assert!(fast::supports(64) && fast::supports(8));
        for n in [1, 2, 4, 25, 40, 48, 50, 63, 128] {
            assert!(!fast::supports(n), "{n}");
        }
        // A 64×64 block through encode_stripe uses `Scratch::fast`, not the product buffers.
        let (b, stripe) = (Basis::new(64), noise(64 * 64, 3));
        let mut s = Scratch::default();
        encode_stripe(&stripe, 64, &b, &b, &mut s, &mut |_, _| {});
        assert!(s.t.is_empty() && s.u.is_empty());
        // Mixed sizes (64 × 50) use the products and still invert.
        let b2 = Basis::new(50);
        let stripe = noise(64 * 100, 4);
        let (mut fast, mut gemm) = (Vec::new(), Vec::new());
        encode_stripe(&stripe, 100, &b, &b2, &mut s, &mut |_, c| {
            fast.push(c.to_vec())
        });
        assert!(!s.t.is_empty());
        encode_stripe_gemm(&stripe, 100, &b, &b2, &mut s, &mut |_, c| {
            gemm.push(c.to_vec())
        });
        assert_eq!(fast, gemm);
    }
}
