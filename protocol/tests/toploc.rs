//! TOPLOC proofs against the reference: byte-identical proofs from the same bf16 tensors
//! (ties included), identical verification figures on both sides, the paper's thresholds, and
//! named refusals for malformed proofs.
//!
//! The oracle is `tests/oracle/toploc_reference.py`, run with `$CONCLAVE_PYTHON` or the
//! project's `.venv` (see `scripts/setup-python.sh`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use conclave_protocol::toploc::{
    self, Bf16Matrix, NO_MATCH_ERROR, PRIME, ProofPoly, Thresholds, ToplocError, VerificationResult,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Tensors

/// A `[rows, hidden]` bf16 tensor, as bit patterns.
struct Tensor {
    bits: Vec<u16>,
    rows: usize,
    hidden: usize,
}

impl Tensor {
    fn matrix(&self) -> Bf16Matrix<'_> {
        Bf16Matrix::new(&self.bits, self.rows, self.hidden).unwrap()
    }

    fn map(&self, f: impl Fn(u16) -> u16) -> Tensor {
        Tensor {
            bits: self.bits.iter().map(|&b| f(b)).collect(),
            rows: self.rows,
            hidden: self.hidden,
        }
    }

    /// Every value ×1.01, rounded to bf16: a faithful recomputation on other hardware.
    fn jittered(&self) -> Tensor {
        self.map(|b| bf16(f32::from_bits(u32::from(b) << 16) * 1.01))
    }
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// f32 → bf16, round to nearest even (torch's conversion).
fn bf16(f: f32) -> u16 {
    let b = f.to_bits();
    if f.is_nan() {
        return (b >> 16) as u16 | 0x40;
    }
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// Activation-like values: normal, with a few outlier channels.
fn random(rows: usize, hidden: usize, seed: u64) -> Tensor {
    let mut rng = Rng(seed);
    let bits = (0..rows * hidden)
        .map(|i| {
            let scale = if (i % hidden) % 97 == 3 { 8.0 } else { 1.0 };
            bf16(rng.normal() * scale)
        })
        .collect();
    Tensor { bits, rows, hidden }
}

/// Few distinct magnitudes, both signs, and some NaN (including 0xFFFF, above the prime) and
/// infinities: nearly every top-k boundary is a tie.
fn tie_heavy(rows: usize, hidden: usize, seed: u64) -> Tensor {
    const VALUES: [u16; 12] = [
        0x3F00, 0xBF00, 0x3F80, 0xBF80, 0x4000, 0xC000, 0x4040, 0xC040, 0x3F80, 0x4000, 0x3F00,
        0xBF80,
    ];
    const RARE: [u16; 5] = [0x7FC0, 0xFFFF, 0xFFC1, 0x7F80, 0xFF80];
    let mut rng = Rng(seed);
    let bits = (0..rows * hidden)
        .map(|_| {
            let r = rng.next();
            if r.is_multiple_of(211) {
                RARE[(r >> 32) as usize % RARE.len()]
            } else {
                VALUES[(r >> 32) as usize % VALUES.len()]
            }
        })
        .collect();
    Tensor { bits, rows, hidden }
}

// ---------------------------------------------------------------------------------------------
// The oracle

fn python() -> PathBuf {
    let path = std::env::var_os("CONCLAVE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        path.exists(),
        "the toploc oracle needs the project's Python at {}: run `bash scripts/setup-python.sh` \
         (or point CONCLAVE_PYTHON at a Python with toploc 0.1.6 and torch)",
        path.display()
    );
    path
}

/// One job for the oracle: a tensor and its grouping.
struct Job<'a> {
    tensor: &'a Tensor,
    batch: usize,
    topk: usize,
    /// Proofs to verify (verify mode only).
    proofs: &'a [Vec<u8>],
}

/// Runs the oracle once over all `jobs`; the output of each job.
fn oracle(mode: &str, jobs: &[Job<'_>]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<String> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let t = job.tensor;
            let file = dir.path().join(format!("tensor{i}.bf16"));
            let bytes: Vec<u8> = t.bits.iter().flat_map(|b| b.to_le_bytes()).collect();
            std::fs::write(&file, bytes).unwrap();
            let mut spec = format!(
                "{}:{}:{}:{}:{}",
                file.display(),
                t.rows,
                t.hidden,
                job.batch,
                job.topk
            );
            if mode == "verify" {
                let proofs = dir.path().join(format!("proofs{i}.hex"));
                let text = job.proofs.iter().fold(String::new(), |mut s, p| {
                    writeln!(s, "{}", hex::encode(p)).unwrap();
                    s
                });
                std::fs::write(&proofs, text).unwrap();
                write!(spec, ":{}", proofs.display()).unwrap();
            }
            spec
        })
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/toploc_reference.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(mode)
        .args(&specs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oracle {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let outputs: Vec<String> = stdout
        .split_terminator("--\n")
        .map(str::to_string)
        .collect();
    assert_eq!(outputs.len(), jobs.len(), "oracle output: {stdout}");
    outputs
}

fn build_job(tensor: &Tensor, batch: usize, topk: usize) -> Job<'_> {
    Job {
        tensor,
        batch,
        topk,
        proofs: &[],
    }
}

/// `toploc.build_proofs` for each job: (bytes, base64) per proof.
fn reference_build(jobs: &[Job<'_>]) -> Vec<Vec<(Vec<u8>, String)>> {
    oracle("build", jobs)
        .iter()
        .map(|out| {
            out.lines()
                .map(|line| {
                    let (hex, b64) = line.split_once(' ').unwrap();
                    (hex::decode(hex).unwrap(), b64.to_string())
                })
                .collect()
        })
        .collect()
}

/// `toploc.verify_proofs_bytes` for each job.
fn reference_verify(jobs: &[Job<'_>]) -> Vec<Vec<VerificationResult>> {
    oracle("verify", jobs)
        .iter()
        .map(|out| {
            out.lines()
                .map(|line| {
                    let f: Vec<&str> = line.split(' ').collect();
                    VerificationResult {
                        exp_mismatches: f[0].parse().unwrap(),
                        mant_err_mean: f[1].parse().unwrap(),
                        mant_err_median: f[2].parse().unwrap(),
                    }
                })
                .collect()
        })
        .collect()
}

/// Builds every job's proofs on both sides and compares bytes and base64.
fn assert_same_proofs(jobs: &[Job<'_>]) {
    let theirs = reference_build(jobs);
    for (job, theirs) in jobs.iter().zip(&theirs) {
        let ours = toploc::build_proofs(&job.tensor.matrix(), job.batch, job.topk).unwrap();
        let shape = (job.tensor.rows, job.tensor.hidden, job.batch, job.topk);
        assert_eq!(ours.len(), theirs.len(), "proof count for {shape:?}");
        for (g, (p, (bytes, b64))) in ours.iter().zip(theirs).enumerate() {
            assert_eq!(&p.to_bytes(), bytes, "proof #{g} for {shape:?}");
            assert_eq!(&p.to_base64(), b64, "base64 of proof #{g} for {shape:?}");
            assert_eq!(bytes.len(), ProofPoly::byte_len(job.topk));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Byte-identical proofs

#[test]
fn proofs_are_byte_identical_to_reference_on_a_1000x5120_tensor() {
    assert_same_proofs(&[build_job(&random(1000, 5120, 1), 32, 128)]);
}

#[test]
fn proofs_are_byte_identical_to_reference_on_smaller_shapes() {
    // 100×256: groups of exactly 64·k (torch's partial_sort boundary), last group 4 rows
    // (nth_element); 10×16 with 3 / 4 is the README's setting.
    let cases = [
        (100, 256, 32, 128),
        (70, 300, 32, 128),
        (10, 16, 3, 4),
        (64, 1000, 8, 64),
        (33, 50, 1, 50),
        (5, 7, 2, 1),
    ];
    let tensors: Vec<Tensor> = (0..)
        .zip(&cases)
        .map(|(i, &(rows, hidden, _, _))| random(rows, hidden, 10 + i))
        .collect();
    let jobs: Vec<Job<'_>> = tensors
        .iter()
        .zip(&cases)
        .map(|(t, &(_, _, batch, topk))| build_job(t, batch, topk))
        .collect();
    assert_same_proofs(&jobs);
}

#[test]
fn proofs_are_byte_identical_to_reference_when_magnitudes_tie() {
    let cases = [
        (64, 512, 32, 128),
        (300, 64, 32, 128),
        (40, 40, 4, 100),
        (12, 9, 3, 4),
    ];
    let mut tensors: Vec<(Tensor, usize, usize)> = (0..)
        .zip(&cases)
        .map(|(i, &(rows, hidden, batch, topk))| (tie_heavy(rows, hidden, 20 + i), batch, topk))
        .collect();
    // Structured orders for libstdc++'s introselect: ascending, descending, organ pipe, equal.
    let n = 4096;
    let patterns: [&dyn Fn(usize) -> u16; 4] = [
        &|i| 0x3F80 + (i / 8) as u16,
        &|i| 0x3F80 + ((n - i) / 8) as u16,
        &|i| 0x3F80 + (i.min(n - 1 - i) / 4) as u16,
        &|i| if i % 2 == 0 { 0x4000 } else { 0xC000 },
    ];
    for f in patterns {
        let bits = (0..n).map(f).collect();
        tensors.push((
            Tensor {
                bits,
                rows: 16,
                hidden: n / 16,
            },
            8,
            100,
        ));
    }
    let jobs: Vec<Job<'_>> = tensors
        .iter()
        .map(|(t, batch, topk)| build_job(t, *batch, *topk))
        .collect();
    assert_same_proofs(&jobs);
}

// ---------------------------------------------------------------------------------------------
// (b), (c) Verification on both sides

#[test]
fn each_side_verifies_the_others_proofs_with_identical_figures() {
    let (batch, topk) = (32, 128);
    let honest = [random(256, 512, 30), tie_heavy(96, 256, 31)];
    let theirs = reference_build(&[
        build_job(&honest[0], batch, topk),
        build_job(&honest[1], batch, topk),
    ]);
    let mut cases = Vec::new();
    for (h, theirs) in honest.iter().zip(theirs) {
        let theirs: Vec<Vec<u8>> = theirs.into_iter().map(|p| p.0).collect();
        let ours = toploc::build_proofs_bytes(&h.matrix(), batch, topk).unwrap();
        for recomputed in [h.map(|b| b), h.jittered(), random(h.rows, h.hidden, 32)] {
            let by_us =
                toploc::verify_proofs_bytes(&recomputed.matrix(), &theirs, batch, topk).unwrap();
            cases.push((recomputed, ours.clone(), by_us));
        }
    }
    let jobs: Vec<Job<'_>> = cases
        .iter()
        .map(|(t, proofs, _)| Job {
            tensor: t,
            batch,
            topk,
            proofs,
        })
        .collect();
    let by_them = reference_verify(&jobs);
    for ((_, _, by_us), by_them) in cases.iter().zip(&by_them) {
        assert_eq!(by_us, by_them);
    }
    // The cases cover exact, near and far figures.
    assert!(
        by_them[1]
            .iter()
            .any(|r| r.mant_err_mean > 0.0 && r.exp_mismatches > 0)
    );
    assert!(by_them[2].iter().all(|r| r.exp_mismatches > 64));
}

#[test]
fn jittered_activations_pass_and_another_tensor_fails_on_both_sides() {
    let (batch, topk) = (32, 128);
    let honest = random(512, 1024, 40);
    let proofs = toploc::build_proofs_bytes(&honest.matrix(), batch, topk).unwrap();
    let thresholds = Thresholds::default();
    let jittered = honest.jittered();
    let other = random(512, 1024, 41);
    let job = |tensor| Job {
        tensor,
        batch,
        topk,
        proofs: &proofs,
    };
    let theirs = reference_verify(&[job(&jittered), job(&other)]);

    let ours = toploc::verify_proofs_bytes(&jittered.matrix(), &proofs, batch, topk).unwrap();
    assert_eq!(ours, theirs[0]);
    for r in &ours {
        assert!(thresholds.passes(r), "jittered group rejected: {r}");
        assert!(r.mant_err_mean > 0.0, "the jitter changed nothing: {r}");
    }

    let ours = toploc::verify_proofs_bytes(&other.matrix(), &proofs, batch, topk).unwrap();
    assert_eq!(ours, theirs[1]);
    for r in &ours {
        assert!(!thresholds.passes(r), "a different tensor passed: {r}");
    }
}

#[test]
fn honest_activations_verify_exactly() {
    let t = random(70, 300, 50);
    let proofs = toploc::build_proofs_base64(&t.matrix(), 32, 128).unwrap();
    let results = toploc::verify_proofs_base64(&t.matrix(), &proofs, 32, 128).unwrap();
    let exact = VerificationResult {
        exp_mismatches: 0,
        mant_err_mean: 0.0,
        mant_err_median: 0.0,
    };
    assert_eq!(results, vec![exact; 3]);
}

#[test]
fn no_matching_exponent_reports_two_to_the_64() {
    let t = Tensor {
        bits: vec![0x3F80; 64],
        rows: 4,
        hidden: 16,
    };
    let proofs = toploc::build_proofs(&t.matrix(), 4, 8).unwrap();
    let r = toploc::verify_proofs(&t.map(|_| 0x4400).matrix(), &proofs, 4, 8).unwrap();
    assert_eq!(r[0].exp_mismatches, 8);
    assert_eq!(r[0].mant_err_mean, NO_MATCH_ERROR);
    assert_eq!(r[0].mant_err_median, NO_MATCH_ERROR);
    assert!(!Thresholds::default().passes(&r[0]));
}

// ---------------------------------------------------------------------------------------------
// (d) Refusals

#[test]
fn malformed_proofs_are_rejected_with_named_errors() {
    let good = ProofPoly::from_points(&[1, 2, 3, 4], &[5, 6, 7, 8]).unwrap();
    let bytes = good.to_bytes();
    assert_eq!(ProofPoly::from_bytes(&bytes, 4), Ok(good.clone()));

    assert_eq!(
        ProofPoly::from_bytes(&bytes[..9], 4),
        Err(ToplocError::ProofLength {
            len: 9,
            expected: 10,
            topk: 4
        })
    );
    assert!(matches!(
        ProofPoly::from_bytes(&bytes, 5),
        Err(ToplocError::ProofLength { len: 10, .. })
    ));
    assert!(matches!(
        ProofPoly::from_bytes(&[], 4),
        Err(ToplocError::ProofLength { len: 0, .. })
    ));
    assert_eq!(
        ProofPoly::from_bytes(&ProofPoly::null(4).to_bytes(), 4),
        Err(ToplocError::NullProof)
    );
    let mut big_modulus = bytes.clone();
    big_modulus[..2].copy_from_slice(&65498u16.to_be_bytes());
    assert_eq!(
        ProofPoly::from_bytes(&big_modulus, 4),
        Err(ToplocError::ModulusOutOfRange { modulus: 65498 })
    );
    let mut big_coeff = bytes.clone();
    big_coeff[6..8].copy_from_slice(&PRIME.to_be_bytes());
    assert_eq!(
        ProofPoly::from_bytes(&big_coeff, 4),
        Err(ToplocError::CoefficientOutOfRange {
            index: 2,
            value: PRIME
        })
    );
    assert_eq!(
        ProofPoly::from_bytes(&bytes, 0),
        Err(ToplocError::TopkOutOfRange { topk: 0 })
    );

    let b64 = good.to_base64();
    assert_eq!(ProofPoly::from_base64(&b64, 4), Ok(good));
    assert_eq!(
        ProofPoly::from_base64(&b64[1..], 4),
        Err(ToplocError::Base64Length {
            len: b64.len() - 1,
            expected: b64.len()
        })
    );
    let garbled = format!("*{}", &b64[1..]);
    assert!(matches!(
        ProofPoly::from_base64(&garbled, 4),
        Err(ToplocError::Base64 { .. })
    ));

    // In a batch, the index of the bad proof is named.
    let t = random(8, 16, 60);
    let mut proofs = toploc::build_proofs_bytes(&t.matrix(), 4, 4).unwrap();
    proofs[1] = ProofPoly::null(4).to_bytes();
    assert_eq!(
        toploc::verify_proofs_bytes(&t.matrix(), &proofs, 4, 4),
        Err(ToplocError::InvalidProof {
            index: 1,
            source: Box::new(ToplocError::NullProof)
        })
    );
}

#[test]
fn unusable_activations_and_proof_counts_are_refused() {
    let t = random(33, 4, 70);
    let m = t.matrix();
    // The last group (1 row, 4 values) is smaller than top-8; the reference would return null
    // proofs for every group.
    assert_eq!(
        toploc::build_proofs(&m, 32, 8),
        Err(ToplocError::GroupTooSmall {
            group: 1,
            len: 4,
            topk: 8
        })
    );
    assert_eq!(
        toploc::build_proofs(&m, 0, 4),
        Err(ToplocError::BatchingSizeZero)
    );
    assert_eq!(
        toploc::build_proofs(&m, 4, 0),
        Err(ToplocError::TopkOutOfRange { topk: 0 })
    );
    assert!(matches!(
        Bf16Matrix::new(&t.bits, 32, 4),
        Err(ToplocError::ShapeMismatch { len: 132, .. })
    ));
    let proofs = toploc::build_proofs(&m, 4, 4).unwrap();
    assert_eq!(proofs.len(), 9);
    assert_eq!(
        toploc::verify_proofs(&m, &proofs[..8], 4, 4),
        Err(ToplocError::ProofCountMismatch {
            proofs: 8,
            groups: 9
        })
    );
    assert_eq!(toploc::build_proofs(&m, 4, 4).map(|p| p.len()), Ok(9));
    let empty = Bf16Matrix::new(&[], 0, 5120).unwrap();
    assert_eq!(toploc::build_proofs(&empty, 32, 128), Ok(vec![]));
}

// ---------------------------------------------------------------------------------------------
// (e) Interpolation by hand

#[test]
fn two_points_give_the_line_through_them() {
    // P(x) = 5 + 2x
    let p = ProofPoly::from_points(&[0, 1], &[5, 7]).unwrap();
    assert_eq!(
        p,
        ProofPoly {
            modulus: PRIME,
            coeffs: vec![5, 2]
        }
    );
    assert_eq!(p.eval(10), 25);
    // P(x) = 3 − 2x: the slope wraps to PRIME − 2.
    let p = ProofPoly::from_points(&[0, 1], &[3, 1]).unwrap();
    assert_eq!(p.coeffs, vec![3, PRIME - 2]);
    assert_eq!(p.eval(2), PRIME - 1);
}

#[test]
fn three_points_give_the_parabola_through_them() {
    // P(x) = x² + 1, points given out of order.
    let p = ProofPoly::from_points(&[2, 0, 1], &[5, 1, 2]).unwrap();
    assert_eq!(p.coeffs, vec![1, 0, 1]);
    assert_eq!(p.eval(3), 10);
    assert_eq!(p.eval(300), (90001 % 65497) as u16);
}

#[test]
fn colliding_indices_lower_the_modulus() {
    // 0 and 65497 collide mod the prime, not mod 65496.
    let p = ProofPoly::from_points(&[0, 65497, 5], &[0x3F80, 0xBF80, 0x4000]).unwrap();
    assert_eq!(p.modulus, 65496);
    assert_eq!(p.eval_index(0), Some(0x3F80));
    assert_eq!(p.eval_index(65497), Some(0xBF80));
    assert_eq!(p.eval_index(5), Some(0x4000));
    assert_eq!(ProofPoly::null(3).eval_index(5), None);
}

#[test]
fn values_above_the_prime_are_reduced_like_the_reference() {
    // 0xFFFF (a NaN pattern) is stored as 0xFFFF mod 65497 = 38.
    let p = ProofPoly::from_points(&[7], &[0xFFFF]).unwrap();
    assert_eq!(
        p,
        ProofPoly {
            modulus: PRIME,
            coeffs: vec![38]
        }
    );
}

#[test]
fn points_without_an_injective_modulus_are_refused() {
    assert_eq!(
        ProofPoly::from_points(&[4, 4], &[1, 2]),
        Err(ToplocError::NoInjectiveModulus { points: 2 })
    );
    assert_eq!(
        ProofPoly::from_points(&[1, 2], &[1]),
        Err(ToplocError::PointCountMismatch { x: 2, y: 1 })
    );
    assert_eq!(ProofPoly::from_points(&[], &[]), Err(ToplocError::NoPoints));
    assert_eq!(
        ProofPoly::from_points(&[1 << 31], &[1]),
        Err(ToplocError::PointOutOfRange { x: 1 << 31 })
    );
}

#[test]
fn thresholds_are_the_papers_and_inclusive() {
    let t = Thresholds::default();
    let at = VerificationResult {
        exp_mismatches: 38,
        mant_err_mean: 10.0,
        mant_err_median: 8.0,
    };
    assert!(t.passes(&at));
    assert!(!t.passes(&VerificationResult {
        exp_mismatches: 39,
        ..at
    }));
    assert!(!t.passes(&VerificationResult {
        mant_err_mean: 10.01,
        ..at
    }));
    assert!(!t.passes(&VerificationResult {
        mant_err_median: 9.0,
        ..at
    }));
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #[test]
    fn interpolation_goes_through_every_point(
        points in prop::collection::btree_map(0u32..1 << 20, any::<u16>(), 1..64)
    ) {
        let (x, y): (Vec<u32>, Vec<u16>) = points.into_iter().unzip();
        let p = ProofPoly::from_points(&x, &y).unwrap();
        prop_assert_eq!(p.coeffs.len(), x.len());
        for (&xi, &yi) in x.iter().zip(&y) {
            prop_assert_eq!(p.eval_index(xi), Some(yi % PRIME));
        }
    }

    #[test]
    fn valid_proofs_round_trip(
        modulus in 1..=PRIME,
        coeffs in prop::collection::vec(0..PRIME, 1..200),
    ) {
        let p = ProofPoly { modulus, coeffs };
        let topk = p.coeffs.len();
        prop_assert_eq!(ProofPoly::from_bytes(&p.to_bytes(), topk), Ok(p.clone()));
        prop_assert_eq!(ProofPoly::from_base64(&p.to_base64(), topk), Ok(p.clone()));
    }

    #[test]
    fn topk_matches_a_sort_when_magnitudes_are_distinct(
        seed in any::<u64>(),
        len in 1usize..3000,
        k in 1usize..200,
    ) {
        let k = k.min(len);
        // Distinct magnitudes with random signs.
        let mut rng = Rng(seed);
        let mut values: Vec<u16> = (0..len as u16).collect();
        for i in (1..len).rev() {
            values.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let bits: Vec<u16> = values.iter().map(|&v| v | ((rng.next() as u16) & 0x8000)).collect();
        let mut expected: Vec<u32> = (0..len as u32).collect();
        expected.sort_by_key(|&i| std::cmp::Reverse(values[i as usize]));
        expected.truncate(k);
        expected.sort_unstable();
        prop_assert_eq!(toploc::topk_abs_bf16(&bits, k), Ok(expected));
    }
}
