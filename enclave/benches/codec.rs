//! Codec throughput and wire size on a 64M-parameter set of GPT-shaped tensors.
//!
//! `cargo bench -p conclave-enclave --bench codec` measures with criterion, then (in the same
//! run) times the PyTorch reference (detonation's DCTTransform.encode + DCTCompress.compress,
//! 2 threads) on the same shapes and prints the ratio, and prints wire bytes per 4096
//! parameters for DeMo k=32 f32, DeMo k=4 1-bit and SparseLoCo k=64 2-bit.

use std::process::Command;
use std::time::Instant;

use conclave_enclave::codec::{Codec, CodecConfig};
use conclave_protocol::{SparseUpdate, ValueEncoding};
use criterion::{Criterion, black_box};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// A 4-layer, 1024-wide GPT plus a 12800-token embedding: 63.4 M parameters.
fn shapes() -> Vec<Vec<usize>> {
    let d = 1024;
    let mut s = vec![vec![12_800, d]];
    for _ in 0..4 {
        s.extend([
            vec![3 * d, d],
            vec![d, d],
            vec![4 * d, d],
            vec![d, 4 * d],
            vec![d],
            vec![d],
        ]);
    }
    s.push(vec![d]);
    s
}

fn tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    shapes()
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let n = s.iter().product();
            let data = (0..n)
                .map(|_| rng.sample::<f32, _>(StandardNormal))
                .collect();
            (format!("t{i}"), s, data)
        })
        .collect()
}

fn encode_all(codec: &Codec, ts: &[(String, Vec<usize>, Vec<f32>)]) -> SparseUpdate {
    SparseUpdate {
        transform: codec.config.transform,
        tensors: ts
            .iter()
            .map(|(n, s, d)| codec.compress_only(n, s, d))
            .collect(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let ts = tensors();
    let params: usize = ts.iter().map(|t| t.2.len()).sum();
    let demo = Codec::new(CodecConfig::default());
    let mut c = Criterion::default()
        .sample_size(10)
        .measurement_time(std::time::Duration::from_secs(8))
        .configure_from_args();
    c.bench_function("demo_k32_encode_compress_64M", |b| {
        b.iter(|| black_box(encode_all(&demo, &ts)))
    });
    let sparseloco = Codec::new(CodecConfig::sparseloco());
    c.bench_function("sparseloco_k64_2bit_encode_compress_64M", |b| {
        b.iter(|| black_box(encode_all(&sparseloco, &ts)))
    });
    c.final_summary();
    if !bench_mode {
        return;
    }

    // Same run: ours vs the PyTorch reference on the same shapes.
    let ours = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                black_box(encode_all(&demo, &ts));
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let python = std::env::var("CONCLAVE_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_owned());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/demo_reference_bench.py"
    );
    let shapes_json = serde_json::to_string(&shapes()).unwrap_or_default();
    println!("\nencode+compress of {params} parameters (DCT, chunk 64, k 32, 2 threads each):");
    println!("  conclave (rust, median of 5)   {:8.1} ms", ours * 1e3);
    match Command::new(&python)
        .args([script, &shapes_json, "32", "64", "5"])
        .output()
    {
        Ok(out) if out.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let reference = v["median_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "  detonation (pytorch reference) {:8.1} ms",
                reference * 1e3
            );
            println!("  ratio reference / conclave     {:8.2}×", reference / ours);
        }
        Ok(out) => println!(
            "  reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => println!("  reference not run ({python}: {e}); run scripts/setup-python.sh"),
    }

    println!("\nwire bytes per 4096 parameters (whole encoded update incl. headers):");
    let one_bit = Codec::new(CodecConfig {
        topk: 4,
        values: ValueEncoding::OneBit,
        ..CodecConfig::default()
    });
    for (label, codec, reference) in [
        ("DeMo k=32 f32", &demo, "reference int64+f32: 384 B"),
        ("DeMo k=4 1-bit", &one_bit, "Psyche u16+1bit: 8.5 B"),
        (
            "SparseLoCo k=64 2-bit",
            &sparseloco,
            "Templar as coded 160 B, 12-bit+2-bit packed 112 B",
        ),
    ] {
        let bytes = encode_all(codec, &ts)
            .encode()
            .map(|b| b.len())
            .unwrap_or(0);
        println!(
            "  {label:<24} {:8.2} B  ({reference})",
            bytes as f64 * 4096.0 / params as f64
        );
    }
}
