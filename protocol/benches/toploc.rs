//! TOPLOC proof generation and verification on a 1000×5120 bf16 tensor (groups of 32 rows,
//! top-128: the paper's setting and the reference's `tests/test_proof_e2e.py` shape).
//!
//! `cargo bench -p conclave-protocol --bench toploc` measures with criterion, then (in the same
//! run) times the reference `toploc.build_proofs_bytes` and `toploc.verify_proofs_bytes` on the
//! same tensor through `tests/oracle/toploc_reference.py` and prints the ratios. The Python is
//! `$CONCLAVE_PYTHON` or the project's `.venv`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use conclave_protocol::toploc::{self, Bf16Matrix};
use criterion::{Criterion, black_box};

const ROWS: usize = 1000;
const HIDDEN: usize = 5120;
const BATCH: usize = 32;
const TOPK: usize = 128;
const REPS: usize = 20;

/// Normal bf16 values (SplitMix64 + Box–Muller, rounded to nearest even).
fn activations() -> Vec<u16> {
    let mut state = 7u64;
    let mut unit = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (((z ^ (z >> 31)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..ROWS * HIDDEN)
        .map(|_| {
            let (u, v) = (unit(), unit());
            let f = ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32;
            let b = f.to_bits();
            (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
        })
        .collect()
}

fn median_secs(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..REPS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// (build, verify) median seconds of the reference, or why not.
fn reference(bits: &[u16]) -> Result<(f64, f64), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("CONCLAVE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../.venv/bin/python"));
    if !python.exists() {
        return Err(format!(
            "no Python at {} (run `bash scripts/setup-python.sh`)",
            python.display()
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("acts.bf16");
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
    let spec = format!("{}:{ROWS}:{HIDDEN}:{BATCH}:{TOPK}", file.display());
    let out = Command::new(python)
        .arg(root.join("tests/oracle/toploc_reference.py"))
        .args(["bench", &spec, &REPS.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut secs = text.split_whitespace().map(str::parse::<f64>);
    match (secs.next(), secs.next()) {
        (Some(Ok(build)), Some(Ok(verify))) => Ok((build, verify)),
        _ => Err(format!("unexpected oracle output {text:?}")),
    }
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let bits = activations();
    let acts = Bf16Matrix::new(&bits, ROWS, HIDDEN).expect("shape");
    let proofs = toploc::build_proofs_bytes(&acts, BATCH, TOPK).expect("proofs");

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    c.bench_function("toploc_build_1000x5120_d32_k128", |b| {
        b.iter(|| black_box(toploc::build_proofs_bytes(black_box(&acts), BATCH, TOPK)))
    });
    c.bench_function("toploc_verify_1000x5120_d32_k128", |b| {
        b.iter(|| {
            black_box(toploc::verify_proofs_bytes(
                black_box(&acts),
                &proofs,
                BATCH,
                TOPK,
            ))
        })
    });
    c.final_summary();
    if !bench_mode {
        return;
    }

    let build = median_secs(|| {
        black_box(toploc::build_proofs_bytes(&acts, BATCH, TOPK).ok());
    });
    let verify = median_secs(|| {
        black_box(toploc::verify_proofs_bytes(&acts, &proofs, BATCH, TOPK).ok());
    });
    let threads = rayon::current_num_threads();
    println!(
        "\n{ROWS}x{HIDDEN} bf16, groups of {BATCH}, top-{TOPK}, median of {REPS} ({threads} threads)"
    );
    match reference(&bits) {
        Ok((ref_build, ref_verify)) => {
            println!(
                "build:  ours {:8.3} ms   toploc {:8.3} ms   {:5.1}x",
                build * 1e3,
                ref_build * 1e3,
                ref_build / build
            );
            println!(
                "verify: ours {:8.3} ms   toploc {:8.3} ms   {:5.1}x",
                verify * 1e3,
                ref_verify * 1e3,
                ref_verify / verify
            );
        }
        Err(why) => {
            println!("build:  ours {:8.3} ms", build * 1e3);
            println!("verify: ours {:8.3} ms", verify * 1e3);
            println!("reference not timed: {why}");
        }
    }
}
