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
    /// One block: n1 × n2.
    u: Vec<f32>,
    nonzero_rows: Vec<bool>,
}

/// Encodes one stripe (`n1` rows × `cols`, row-major) and calls `f(block, coefficients)` for
/// each of its `cols / n2` blocks, left to right.
pub fn encode_stripe(
    stripe: &[f32],
    cols: usize,
    b1: &Basis,
    b2: &Basis,
    s: &mut Scratch,
    f: &mut dyn FnMut(usize, &[f32]),
) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { encode_stripe_fma(stripe, cols, b1, b2, s, f) };
        return;
    }
    encode_stripe_impl(stripe, cols, b1, b2, s, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn encode_stripe_fma(
    stripe: &[f32],
    cols: usize,
    b1: &Basis,
    b2: &Basis,
    s: &mut Scratch,
    f: &mut dyn FnMut(usize, &[f32]),
) {
    encode_stripe_impl(stripe, cols, b1, b2, s, f)
}

#[inline(always)]
fn encode_stripe_impl(
    stripe: &[f32],
    cols: usize,
    b1: &Basis,
    b2: &Basis,
    s: &mut Scratch,
    f: &mut dyn FnMut(usize, &[f32]),
) {
    let (n1, n2) = (b1.n, b2.n);
    s.t.clear();
    s.t.resize(n1 * cols, 0.0);
    // T = C₁ · S, row by row over the full stripe width.
    for b in 0..n1 {
        let trow = &mut s.t[b * cols..(b + 1) * cols];
        for h in 0..n1 {
            axpy(trow, b1.c[b * n1 + h], &stripe[h * cols..(h + 1) * cols]);
        }
    }
    s.u.clear();
    s.u.resize(n1 * n2, 0.0);
    for x in 0..cols / n2 {
        s.u.fill(0.0);
        // out[b, :] = Σ_w T[b, x·n2 + w] · C₂ᵀ[w, :]
        for b in 0..n1 {
            let urow = &mut s.u[b * n2..(b + 1) * n2];
            let trow = &s.t[b * cols + x * n2..b * cols + (x + 1) * n2];
            for (w, &a) in trow.iter().enumerate() {
                axpy(urow, a, &b2.ct[w * n2..(w + 1) * n2]);
            }
        }
        f(x, &s.u);
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
}
