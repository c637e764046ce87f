//! TOPLOC proofs of inference (Prime Intellect's `toploc` 0.1.6; paper arXiv 2501.16007).
//!
//! A prover commits to its activations by keeping, for every group of `decode_batching_size`
//! rows of a bf16 `[T, hidden]` tensor, the `topk` values of largest magnitude and
//! interpolating their bit patterns, at their flat positions within the group, by a polynomial
//! over GF(65497). A verifier recomputes the activations, takes its own top-k, evaluates the
//! polynomial there and compares exponents and mantissas (REFERENCE-ALGORITHMS.md §4).
//!
//! Byte-exact with the reference's C++ path (`toploc/C/csrc/poly.cpp`, `ndd.cpp`: what
//! `build_proofs_bytes` and `verify_proofs_bytes` run for a single tensor with
//! `skip_prefill=True`), including which of several equal magnitudes torch's CPU `topk` keeps:
//! [`topk_abs_bf16`] replays libstdc++'s `partial_sort`/`nth_element` as `TopKImpl.h` calls
//! them. Where we deliberately differ, we refuse instead of crashing or answering garbage:
//!
//! - a group smaller than `topk` is an error (the reference turns every proof into a null proof
//!   when building, one more than there are groups, and aborts the process when verifying);
//! - proofs are decoded strictly: exactly `2 + 2·topk` bytes, modulus in `1..=65497`,
//!   coefficients below 65497, standard padded base64 (the reference takes any length and any
//!   value, dies of SIGFPE on a null proof and of SIGSEGV on one without coefficients, and its
//!   base64 decoder turns invalid characters into garbage bits);
//! - the number of proofs must equal the number of groups (the reference checks only the first
//!   groups, or aborts when there are more proofs than groups).
//!
//! The reference's Python path (a list of tensors, or `skip_prefill=False`) evaluates at the
//! flat index without reducing it by the modulus, so it rejects honest proofs whose modulus is
//! below 65497 (about one group in three at 32 × 5120 values), and it takes the mean of the two
//! middle errors as the median. We follow the C++ path; [`build_proof`] and [`verify_proof`] on
//! the flattened prefill give the prefill proof with C++ semantics.

use std::fmt;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The prime field of the interpolation (`MOD_N` in `ndd.cpp`); note it is not 65521.
pub const PRIME: u16 = 65497;
/// The most points a proof interpolates: more cannot have an injective modulus.
pub const MAX_TOPK: usize = PRIME as usize;
/// The most values a group may hold: the reference keeps flat indices in a C `int`.
pub const MAX_GROUP_LEN: usize = i32::MAX as usize;
/// The mean and median reported when no exponent matches (`std::pow(2, 64)` in `poly.cpp`).
pub const NO_MATCH_ERROR: f64 = 18_446_744_073_709_551_616.0;

const P: u32 = PRIME as u32;
const EXP_MASK: u16 = 0x7F80;
const MANT_MASK: u16 = 0x007F;
/// Below this many values per selected one, torch's `topk` uses `nth_element`, not a heap.
const PARTIAL_SORT_RATIO: usize = 64;

/// Why a proof could not be built, decoded or checked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ToplocError {
    #[error("proof is {len} bytes, expected {expected} (2 + 2 x top-{topk})")]
    ProofLength {
        len: usize,
        expected: usize,
        topk: usize,
    },
    #[error("proof is {len} base64 characters, expected {expected}")]
    Base64Length { len: usize, expected: usize },
    #[error("proof is not standard padded base64: {source}")]
    Base64 { source: base64::DecodeError },
    #[error("null proof (modulus 0): the prover could not build one")]
    NullProof,
    #[error("modulus {modulus} is above the prime {PRIME}")]
    ModulusOutOfRange { modulus: u16 },
    #[error("coefficient #{index} is {value}, not below the prime {PRIME}")]
    CoefficientOutOfRange { index: usize, value: u16 },
    #[error("proof has {got} coefficients, expected top-{topk}")]
    CoefficientCount { got: usize, topk: usize },
    #[error("top-k of {topk} is outside 1..={MAX_TOPK}")]
    TopkOutOfRange { topk: usize },
    #[error("decode batching size is 0")]
    BatchingSizeZero,
    #[error("{len} activation values do not form a {rows} x {hidden} matrix")]
    ShapeMismatch {
        len: usize,
        rows: usize,
        hidden: usize,
    },
    #[error("group #{group} holds {len} values, fewer than top-{topk}")]
    GroupTooSmall {
        group: usize,
        len: usize,
        topk: usize,
    },
    #[error("group #{group} holds {len} values, over the limit of {MAX_GROUP_LEN}")]
    GroupTooLarge { group: usize, len: usize },
    #[error("{x} x values but {y} y values")]
    PointCountMismatch { x: usize, y: usize },
    #[error("no points to interpolate")]
    NoPoints,
    #[error("{points} points, over the limit of {MAX_TOPK}")]
    TooManyPoints { points: usize },
    #[error("x value {x} is outside the reference's C int range")]
    PointOutOfRange { x: u32 },
    #[error("no modulus up to {PRIME} maps the {points} x values injectively")]
    NoInjectiveModulus { points: usize },
    #[error("{proofs} proofs for {groups} groups of activations")]
    ProofCountMismatch { proofs: usize, groups: usize },
    #[error("proof #{index}: {source}")]
    InvalidProof {
        index: usize,
        source: Box<ToplocError>,
    },
}

/// A TOPLOC proof: the polynomial through the top-k points of one group, with the modulus that
/// made their flat indices distinct (`ProofPoly` in `poly.cpp`).
///
/// Invariants of a proof built or decoded here: `1 <= modulus <= PRIME`, every coefficient
/// below [`PRIME`]. The fields are public as in the reference; [`ProofPoly::validate`] checks
/// them. A null proof ([`ProofPoly::null`]) has modulus 0 and zero coefficients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProofPoly {
    pub modulus: u16,
    /// Ascending degree: `coeffs[i]` multiplies `x^i`.
    pub coeffs: Vec<u16>,
}

impl ProofPoly {
    /// Bytes of a top-`topk` proof: big-endian modulus, then big-endian coefficients.
    pub fn byte_len(topk: usize) -> usize {
        topk.saturating_mul(2).saturating_add(2)
    }

    /// What the reference returns in place of every proof when building fails.
    pub fn null(topk: usize) -> Self {
        Self {
            modulus: 0,
            coeffs: vec![0; topk],
        }
    }

    pub fn is_null(&self) -> bool {
        self.modulus == 0
    }

    /// Interpolates `y` (bf16 bit patterns, reduced mod [`PRIME`]) at `x mod m`, where `m` is
    /// the [`injective_modulus`] of `x` (`ProofPoly::from_points`, `poly.cpp`). O(n²).
    pub fn from_points(x: &[u32], y: &[u16]) -> Result<Self, ToplocError> {
        if x.len() != y.len() {
            return Err(ToplocError::PointCountMismatch {
                x: x.len(),
                y: y.len(),
            });
        }
        if x.is_empty() {
            return Err(ToplocError::NoPoints);
        }
        if x.len() > MAX_TOPK {
            return Err(ToplocError::TooManyPoints { points: x.len() });
        }
        if let Some(&x) = x.iter().find(|&&v| v > i32::MAX as u32) {
            return Err(ToplocError::PointOutOfRange { x });
        }
        let modulus =
            injective_modulus(x).ok_or(ToplocError::NoInjectiveModulus { points: x.len() })?;
        let reduced: Vec<u32> = x.iter().map(|&v| v % u32::from(modulus)).collect();
        Ok(Self {
            modulus,
            coeffs: newton_coefficients(&reduced, y),
        })
    }

    /// `P(x) mod PRIME` by Horner's rule, without reducing `x` by the modulus (the reference's
    /// `__call__`). An empty polynomial is 0.
    pub fn eval(&self, x: u32) -> u16 {
        let Some((&last, rest)) = self.coeffs.split_last() else {
            return 0;
        };
        let x = u64::from(x);
        let r = rest.iter().rev().fold(u64::from(last), |r, &c| {
            (r * x + u64::from(c)) % u64::from(P)
        });
        (r % u64::from(P)) as u16
    }

    /// `P(index mod modulus)`: the value the proof claims at flat `index` of its group, as the
    /// verifier computes it. `None` for a null proof.
    pub fn eval_index(&self, index: u32) -> Option<u16> {
        (self.modulus != 0).then(|| self.eval(index % u32::from(self.modulus)))
    }

    /// Checks the invariants a verifier relies on, for a top-`topk` proof.
    pub fn validate(&self, topk: usize) -> Result<(), ToplocError> {
        if self.coeffs.len() != topk {
            return Err(ToplocError::CoefficientCount {
                got: self.coeffs.len(),
                topk,
            });
        }
        if self.modulus == 0 {
            return Err(ToplocError::NullProof);
        }
        if self.modulus > PRIME {
            return Err(ToplocError::ModulusOutOfRange {
                modulus: self.modulus,
            });
        }
        match self.coeffs.iter().position(|&c| c >= PRIME) {
            Some(index) => Err(ToplocError::CoefficientOutOfRange {
                index,
                value: self.coeffs[index],
            }),
            None => Ok(()),
        }
    }

    /// `modulus ‖ coeffs`, all big-endian u16 (`ProofPoly::to_bytes`, `poly.cpp`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::byte_len(self.coeffs.len()));
        out.extend_from_slice(&self.modulus.to_be_bytes());
        for c in &self.coeffs {
            out.extend_from_slice(&c.to_be_bytes());
        }
        out
    }

    /// Decodes a top-`topk` proof and checks it ([`ProofPoly::validate`]).
    pub fn from_bytes(bytes: &[u8], topk: usize) -> Result<Self, ToplocError> {
        check_topk(topk)?;
        let expected = Self::byte_len(topk);
        let Some((modulus, rest)) = bytes
            .split_first_chunk::<2>()
            .filter(|_| bytes.len() == expected)
        else {
            return Err(ToplocError::ProofLength {
                len: bytes.len(),
                expected,
                topk,
            });
        };
        let proof = Self {
            modulus: u16::from_be_bytes(*modulus),
            coeffs: rest
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect(),
        };
        proof.validate(topk)?;
        Ok(proof)
    }

    /// Standard base64 with `=` padding of [`ProofPoly::to_bytes`].
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.to_bytes())
    }

    /// Decodes [`ProofPoly::to_base64`], checking the length before decoding.
    pub fn from_base64(text: &str, topk: usize) -> Result<Self, ToplocError> {
        check_topk(topk)?;
        let expected = Self::byte_len(topk).div_ceil(3) * 4;
        if text.len() != expected {
            return Err(ToplocError::Base64Length {
                len: text.len(),
                expected,
            });
        }
        let bytes = STANDARD
            .decode(text)
            .map_err(|source| ToplocError::Base64 { source })?;
        Self::from_bytes(&bytes, topk)
    }
}

/// The largest `m <= PRIME` under which the `x` are pairwise distinct, searching downwards as
/// `poly.cpp` does (the Python helper `find_injective_modulus`, which stops above 2^15, is not
/// what `build_proofs` calls). `None` if there is none; `x` empty gives `PRIME`.
pub fn injective_modulus(x: &[u32]) -> Option<u16> {
    if x.len() > MAX_TOPK {
        return None;
    }
    // Fewer residues than points cannot be injective, so the search may stop at `x.len()`
    // (the reference goes on down to 1 and fails the same way).
    let lowest = x.len().max(1) as u32;
    let mut seen = vec![0u16; MAX_TOPK];
    (lowest..=P).rev().find_map(|m| {
        let stamp = m as u16;
        let injective = x.iter().all(|&v| {
            let slot = &mut seen[(v % m) as usize];
            let fresh = *slot != stamp;
            *slot = stamp;
            fresh
        });
        injective.then_some(stamp)
    })
}

/// `1/a mod PRIME` for every `a` (index 0 holds 0).
fn inverses() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut inv = vec![0u32; MAX_TOPK];
        inv[1] = 1;
        for a in 2..P {
            inv[a as usize] = (P - (P / a) * inv[(P % a) as usize] % P) % P;
        }
        inv.into_iter().map(|v| v as u16).collect()
    })
}

/// Newton divided differences, then expansion into ascending monomial coefficients
/// (`compute_newton_coefficients`, `ndd.cpp`). `x` are distinct and below [`PRIME`].
fn newton_coefficients(x: &[u32], y: &[u16]) -> Vec<u16> {
    let inv = inverses();
    let n = x.len();
    let mut dd: Vec<u32> = y.iter().map(|&v| u32::from(v) % P).collect();
    for k in 1..n {
        for i in (k..n).rev() {
            let numerator = (dd[i] + P - dd[i - 1]) % P;
            let denominator = (x[i] + P - x[i - k]) % P;
            dd[i] = numerator * u32::from(inv[denominator as usize]) % P;
        }
    }
    // `factor` is Π_{j<i} (X − x_j), ascending degree.
    let mut coeffs = vec![0u32; n];
    let mut factor = vec![0u32; n];
    factor[0] = 1;
    for i in 0..n {
        for (c, f) in coeffs[..=i].iter_mut().zip(&factor) {
            *c = (*c + dd[i] * f % P) % P;
        }
        if i + 1 < n {
            let minus_xi = (P - x[i] % P) % P;
            let mut prev = 0;
            for f in factor[..=i + 1].iter_mut() {
                let old = *f;
                *f = (prev + old * minus_xi % P) % P;
                prev = old;
            }
        }
    }
    coeffs.into_iter().map(|c| c as u16).collect()
}

/// How torch orders bf16 magnitudes (`abs()` widened to f32): by the bits without the sign,
/// every NaN above infinity and equal to the others.
#[inline]
fn magnitude(bits: u16) -> u16 {
    (bits & 0x7FFF).min(0x7F81)
}

/// A candidate of the selection: (magnitude, flat index). Only the magnitude is compared.
type Entry = (u16, u32);

#[inline]
fn greater(a: &Entry, b: &Entry) -> bool {
    a.0 > b.0
}

/// The flat indices of the `k` largest magnitudes of `values` (bf16 bit patterns), ascending:
/// the very set `values.abs().topk(k)` selects on CPU, ties included.
///
/// torch's `topk_impl_loop` (`ATen/native/TopKImpl.h`) runs libstdc++'s `std::partial_sort`
/// when `64·k <= len` and `std::nth_element` otherwise, comparing magnitudes only; which of
/// several equal magnitudes survive is a property of those algorithms, replayed here step by
/// step. The heap path skips blocks whose largest magnitude cannot enter the heap, which is
/// exact because only a strictly larger value displaces the heap's top.
pub fn topk_abs_bf16(values: &[u16], k: usize) -> Result<Vec<u32>, ToplocError> {
    check_topk(k)?;
    check_group(0, values.len(), k)?;
    let mut chosen: Vec<u32> = select(values, k).into_iter().map(|e| e.1).collect();
    chosen.sort_unstable();
    Ok(chosen)
}

/// Unchecked [`topk_abs_bf16`]: `1 <= k <= values.len() <= MAX_GROUP_LEN`. Unordered.
fn select(values: &[u16], k: usize) -> Vec<Entry> {
    if k.saturating_mul(PARTIAL_SORT_RATIO) <= values.len() {
        heap_select_scan(values, k)
    } else {
        let mut queue: Vec<Entry> = values
            .iter()
            .zip(0u32..)
            .map(|(&b, i)| (magnitude(b), i))
            .collect();
        nth_element(&mut queue, k - 1);
        queue.truncate(k);
        queue
    }
}

/// `std::__heap_select(first, first + k, last)` over the magnitudes of `values`.
fn heap_select_scan(values: &[u16], k: usize) -> Vec<Entry> {
    const BLOCK: usize = 128;
    let (head, tail) = values.split_at(k);
    let mut heap: Vec<Entry> = head
        .iter()
        .zip(0u32..)
        .map(|(&b, i)| (magnitude(b), i))
        .collect();
    make_heap(&mut heap);
    let mut base = k as u32;
    for block in tail.chunks(BLOCK) {
        let top = heap[0].0;
        // Nothing exceeds a NaN top, and below it `magnitude` is the masked bits.
        let largest = block.iter().map(|&b| (b & 0x7FFF) as i16).max();
        if top < 0x7F81 && largest.is_some_and(|m| m as u16 > top) {
            for (&b, i) in block.iter().zip(base..) {
                let entry = (magnitude(b), i);
                if greater(&entry, &heap[0]) {
                    adjust_heap(&mut heap, 0, entry);
                }
            }
        }
        base += block.len() as u32;
    }
    heap
}

/// `std::__make_heap` with `greater`: the smallest magnitude on top.
fn make_heap(heap: &mut [Entry]) {
    let len = heap.len();
    if len < 2 {
        return;
    }
    for parent in (0..=(len - 2) / 2).rev() {
        let value = heap[parent];
        adjust_heap(heap, parent, value);
    }
}

/// `std::__adjust_heap(first, hole, len, value)` followed by `std::__push_heap`.
fn adjust_heap(heap: &mut [Entry], mut hole: usize, value: Entry) {
    let len = heap.len();
    let top = hole;
    let mut child = hole;
    while child < (len - 1) / 2 {
        child = 2 * (child + 1);
        if greater(&heap[child], &heap[child - 1]) {
            child -= 1;
        }
        heap[hole] = heap[child];
        hole = child;
    }
    if len.is_multiple_of(2) && child == (len - 2) / 2 {
        child = 2 * (child + 1);
        heap[hole] = heap[child - 1];
        hole = child - 1;
    }
    while hole > top {
        let parent = (hole - 1) / 2;
        if !greater(&heap[parent], &value) {
            break;
        }
        heap[hole] = heap[parent];
        hole = parent;
    }
    heap[hole] = value;
}

/// `std::nth_element` (libstdc++ `__introselect`) with `greater`.
fn nth_element(q: &mut [Entry], nth: usize) {
    let (mut first, mut last) = (0, q.len());
    if nth >= last {
        return;
    }
    let mut depth = 2 * last.ilog2();
    while last - first > 3 {
        if depth == 0 {
            let range = &mut q[first..last];
            let middle = nth + 1 - first;
            make_heap(&mut range[..middle]);
            for i in middle..range.len() {
                if greater(&range[i], &range[0]) {
                    let value = range[i];
                    range[i] = range[0];
                    adjust_heap(&mut range[..middle], 0, value);
                }
            }
            q.swap(first, nth);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(q, first, last);
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    insertion_sort(&mut q[first..last]);
}

/// `std::__unguarded_partition_pivot`: median of three to `first`, then Hoare partition.
fn partition_pivot(q: &mut [Entry], first: usize, last: usize) -> usize {
    let (a, b, c) = (first + 1, first + (last - first) / 2, last - 1);
    let median = if greater(&q[a], &q[b]) {
        if greater(&q[b], &q[c]) {
            b
        } else if greater(&q[a], &q[c]) {
            c
        } else {
            a
        }
    } else if greater(&q[a], &q[c]) {
        a
    } else if greater(&q[b], &q[c]) {
        c
    } else {
        b
    };
    q.swap(first, median);
    let (mut lo, mut hi) = (first + 1, last);
    loop {
        while greater(&q[lo], &q[first]) {
            lo += 1;
        }
        hi -= 1;
        while greater(&q[first], &q[hi]) {
            hi -= 1;
        }
        if lo >= hi {
            return lo;
        }
        q.swap(lo, hi);
        lo += 1;
    }
}

/// `std::__insertion_sort` with `greater` (stable).
fn insertion_sort(q: &mut [Entry]) {
    for i in 1..q.len() {
        let value = q[i];
        let mut j = i;
        while j > 0 && greater(&value, &q[j - 1]) {
            q[j] = q[j - 1];
            j -= 1;
        }
        q[j] = value;
    }
}

fn check_topk(topk: usize) -> Result<(), ToplocError> {
    if topk == 0 || topk > MAX_TOPK {
        return Err(ToplocError::TopkOutOfRange { topk });
    }
    Ok(())
}

fn check_group(group: usize, len: usize, topk: usize) -> Result<(), ToplocError> {
    if len < topk {
        return Err(ToplocError::GroupTooSmall { group, len, topk });
    }
    if len > MAX_GROUP_LEN {
        return Err(ToplocError::GroupTooLarge { group, len });
    }
    Ok(())
}

/// A row-major `[rows, hidden]` matrix of bf16 bit patterns: the activations of `rows` tokens
/// (the last hidden state, one row per token).
#[derive(Debug, Clone, Copy)]
pub struct Bf16Matrix<'a> {
    bits: &'a [u16],
    rows: usize,
    hidden: usize,
}

impl<'a> Bf16Matrix<'a> {
    pub fn new(bits: &'a [u16], rows: usize, hidden: usize) -> Result<Self, ToplocError> {
        if rows.checked_mul(hidden) != Some(bits.len()) {
            return Err(ToplocError::ShapeMismatch {
                len: bits.len(),
                rows,
                hidden,
            });
        }
        Ok(Self { bits, rows, hidden })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    pub fn bits(&self) -> &'a [u16] {
        self.bits
    }

    /// Number of groups of `decode_batching_size` rows (the last may be shorter).
    pub fn group_count(&self, decode_batching_size: usize) -> usize {
        self.rows.div_ceil(decode_batching_size.max(1))
    }

    /// Rows `g·d .. min((g+1)·d, rows)`, flattened; empty past the end.
    pub fn group(&self, decode_batching_size: usize, g: usize) -> &'a [u16] {
        let d = decode_batching_size.max(1);
        let start = g.saturating_mul(d).min(self.rows);
        let end = start.saturating_add(d).min(self.rows);
        self.bits
            .get(start * self.hidden..end * self.hidden)
            .unwrap_or(&[])
    }

    /// Every group, checked against `topk`.
    fn groups(
        &self,
        decode_batching_size: usize,
        topk: usize,
    ) -> Result<Vec<&'a [u16]>, ToplocError> {
        check_topk(topk)?;
        if decode_batching_size == 0 {
            return Err(ToplocError::BatchingSizeZero);
        }
        (0..self.group_count(decode_batching_size))
            .map(|g| {
                let group = self.group(decode_batching_size, g);
                check_group(g, group.len(), topk).map(|()| group)
            })
            .collect()
    }
}

/// The proof of one flattened group: top-k of the magnitudes, interpolated at their flat
/// indices (the body of `build_proofs`' loop, `poly.py`). Building a prefill proof, as the
/// reference does without `skip_prefill`, is this on the flattened prefill.
pub fn build_proof(group: &[u16], topk: usize) -> Result<ProofPoly, ToplocError> {
    check_topk(topk)?;
    check_group(0, group.len(), topk)?;
    build_checked(group, topk)
}

fn build_checked(group: &[u16], topk: usize) -> Result<ProofPoly, ToplocError> {
    let chosen = select(group, topk);
    let x: Vec<u32> = chosen.iter().map(|e| e.1).collect();
    let y: Vec<u16> = x.iter().map(|&i| group[i as usize]).collect();
    ProofPoly::from_points(&x, &y)
}

/// One proof per group of `decode_batching_size` rows (`build_proofs(activations,
/// decode_batching_size, topk, skip_prefill=True)` on a `[T, hidden]` tensor).
pub fn build_proofs(
    activations: &Bf16Matrix<'_>,
    decode_batching_size: usize,
    topk: usize,
) -> Result<Vec<ProofPoly>, ToplocError> {
    activations
        .groups(decode_batching_size, topk)?
        .into_par_iter()
        .map(|group| build_checked(group, topk))
        .collect()
}

/// [`build_proofs`], each as [`ProofPoly::to_bytes`] (`build_proofs_bytes`).
pub fn build_proofs_bytes(
    activations: &Bf16Matrix<'_>,
    decode_batching_size: usize,
    topk: usize,
) -> Result<Vec<Vec<u8>>, ToplocError> {
    let proofs = build_proofs(activations, decode_batching_size, topk)?;
    Ok(proofs.iter().map(ProofPoly::to_bytes).collect())
}

/// [`build_proofs`], each as [`ProofPoly::to_base64`] (`build_proofs_base64`).
pub fn build_proofs_base64(
    activations: &Bf16Matrix<'_>,
    decode_batching_size: usize,
    topk: usize,
) -> Result<Vec<String>, ToplocError> {
    let proofs = build_proofs(activations, decode_batching_size, topk)?;
    Ok(proofs.iter().map(ProofPoly::to_base64).collect())
}

/// How far a group's recomputed top-k lies from what its proof claims
/// (`VerificationResult`, `poly.cpp`). Every figure grows with the distance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerificationResult {
    /// Top-k positions whose bf16 exponent differs from the proof's value there.
    pub exp_mismatches: u32,
    /// Mean |mantissa difference| over the positions whose exponents match, or
    /// [`NO_MATCH_ERROR`] when none does.
    pub mant_err_mean: f64,
    /// The upper median (`sorted[n / 2]`) of the same, or [`NO_MATCH_ERROR`].
    pub mant_err_median: f64,
}

impl fmt::Display for VerificationResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exp_mismatches={}, mant_err_mean={}, mant_err_median={}",
            self.exp_mismatches, self.mant_err_mean, self.mant_err_median
        )
    }
}

/// When a group's figures are close enough to accept it: a group fails if any figure is above
/// its bound. Defaults are the paper's (`toploc-experiments/vllm_validate_poly.py`: at least
/// 90 of 128 exponents match, mean ≤ 10, median ≤ 8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub max_exp_mismatches: u32,
    pub max_mant_err_mean: f64,
    pub max_mant_err_median: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_exp_mismatches: 38,
            max_mant_err_mean: 10.0,
            max_mant_err_median: 8.0,
        }
    }
}

impl Thresholds {
    pub fn passes(&self, result: &VerificationResult) -> bool {
        result.exp_mismatches <= self.max_exp_mismatches
            && result.mant_err_mean <= self.max_mant_err_mean
            && result.mant_err_median <= self.max_mant_err_median
    }
}

/// Checks one flattened group against its proof as `verify_proofs`' C++ path does: the
/// verifier's own top-k, the proof evaluated at `index mod modulus`, sign ignored.
pub fn verify_proof(
    group: &[u16],
    proof: &ProofPoly,
    topk: usize,
) -> Result<VerificationResult, ToplocError> {
    check_topk(topk)?;
    check_group(0, group.len(), topk)?;
    proof.validate(topk)?;
    Ok(verify_checked(group, proof, topk))
}

fn verify_checked(group: &[u16], proof: &ProofPoly, topk: usize) -> VerificationResult {
    let chosen = select(group, topk);
    let modulus = u32::from(proof.modulus);
    // Horner at every point in lockstep; values stay below 2^32 since x, r < PRIME.
    let xs: Vec<u32> = chosen.iter().map(|e| e.1 % modulus).collect();
    let (&last, rest) = proof.coeffs.split_last().unwrap_or((&0, &[]));
    let mut claimed = vec![u32::from(last); xs.len()];
    for &c in rest.iter().rev() {
        let c = u32::from(c);
        for (r, &x) in claimed.iter_mut().zip(&xs) {
            *r = (*r * x + c) % P;
        }
    }
    let mut exp_mismatches = 0u32;
    let mut histogram = [0u32; MANT_MASK as usize + 1];
    for (entry, &claim) in chosen.iter().zip(&claimed) {
        let claim = claim as u16;
        let actual = group[entry.1 as usize];
        if claim & EXP_MASK != actual & EXP_MASK {
            exp_mismatches += 1;
        } else {
            histogram[usize::from((claim & MANT_MASK).abs_diff(actual & MANT_MASK))] += 1;
        }
    }
    let matched = topk as u32 - exp_mismatches;
    if matched == 0 {
        return VerificationResult {
            exp_mismatches,
            mant_err_mean: NO_MATCH_ERROR,
            mant_err_median: NO_MATCH_ERROR,
        };
    }
    let sum: u64 = (0u64..)
        .zip(&histogram)
        .map(|(e, &n)| e * u64::from(n))
        .sum();
    let mut below = 0;
    let median = (0u32..)
        .zip(&histogram)
        .find_map(|(e, &n)| {
            below += n;
            (below > matched / 2).then_some(e)
        })
        .unwrap_or(0);
    VerificationResult {
        exp_mismatches,
        mant_err_mean: sum as f64 / f64::from(matched),
        mant_err_median: f64::from(median),
    }
}

/// One result per group (`verify_proofs(activations, proofs, decode_batching_size, topk)` on a
/// `[T, hidden]` tensor, C++ path). Every proof must be valid and there must be one per group.
pub fn verify_proofs(
    activations: &Bf16Matrix<'_>,
    proofs: &[ProofPoly],
    decode_batching_size: usize,
    topk: usize,
) -> Result<Vec<VerificationResult>, ToplocError> {
    let groups = activations.groups(decode_batching_size, topk)?;
    if proofs.len() != groups.len() {
        return Err(ToplocError::ProofCountMismatch {
            proofs: proofs.len(),
            groups: groups.len(),
        });
    }
    for (index, proof) in proofs.iter().enumerate() {
        proof
            .validate(topk)
            .map_err(|e| ToplocError::InvalidProof {
                index,
                source: Box::new(e),
            })?;
    }
    Ok(groups
        .into_par_iter()
        .zip(proofs)
        .map(|(group, proof)| verify_checked(group, proof, topk))
        .collect())
}

/// [`verify_proofs`] on proofs as bytes (`verify_proofs_bytes`).
pub fn verify_proofs_bytes<B: AsRef<[u8]>>(
    activations: &Bf16Matrix<'_>,
    proofs: &[B],
    decode_batching_size: usize,
    topk: usize,
) -> Result<Vec<VerificationResult>, ToplocError> {
    let proofs = decode_all(proofs, |p| ProofPoly::from_bytes(p.as_ref(), topk))?;
    verify_proofs(activations, &proofs, decode_batching_size, topk)
}

/// [`verify_proofs`] on proofs as base64 (`verify_proofs_base64`).
pub fn verify_proofs_base64<S: AsRef<str>>(
    activations: &Bf16Matrix<'_>,
    proofs: &[S],
    decode_batching_size: usize,
    topk: usize,
) -> Result<Vec<VerificationResult>, ToplocError> {
    let proofs = decode_all(proofs, |p| ProofPoly::from_base64(p.as_ref(), topk))?;
    verify_proofs(activations, &proofs, decode_batching_size, topk)
}

fn decode_all<T>(
    proofs: &[T],
    decode: impl Fn(&T) -> Result<ProofPoly, ToplocError>,
) -> Result<Vec<ProofPoly>, ToplocError> {
    proofs
        .iter()
        .enumerate()
        .map(|(index, p)| {
            decode(p).map_err(|e| ToplocError::InvalidProof {
                index,
                source: Box::new(e),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverses_invert() {
        let inv = inverses();
        for a in 1..P {
            assert_eq!(a * u32::from(inv[a as usize]) % P, 1, "a = {a}");
        }
    }

    #[test]
    fn nth_element_keeps_the_k_largest() {
        let mut q: Vec<Entry> = [5u16, 1, 9, 9, 3, 7, 9, 2, 8, 0, 4]
            .iter()
            .zip(0u32..)
            .map(|(&v, i)| (v, i))
            .collect();
        nth_element(&mut q, 3);
        let mut top: Vec<u16> = q[..4].iter().map(|e| e.0).collect();
        top.sort_unstable();
        assert_eq!(top, vec![8, 9, 9, 9]);
        assert!(q[4..].iter().all(|e| e.0 <= 8));
    }

    #[test]
    fn nan_outranks_infinity_and_sign_is_ignored() {
        // -inf, 1.0, NaN (negative payload), -2.0
        let v = [0xFF80, 0x3F80, 0xFFC1, 0xC000];
        assert_eq!(topk_abs_bf16(&v, 2), Ok(vec![0, 2]));
        assert_eq!(topk_abs_bf16(&v, 3), Ok(vec![0, 2, 3]));
    }
}
