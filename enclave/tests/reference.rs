//! The codec against the public DeMo reference (PyPI `detonation` 0.5.2, run by
//! `tests/oracle/demo_reference.py` in the project's venv): same tensors in, decoded dense
//! tensors compared, alone and aggregated over peers with overlapping selections.

use std::path::PathBuf;
use std::process::Command;

use conclave_enclave::codec::{self, Codec, CodecConfig};
use conclave_enclave::tensors::{self, NamedTensor};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn python() -> PathBuf {
    let p = std::env::var_os("CONCLAVE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        p.exists(),
        "the reference oracles need the project's venv at {} (run `bash scripts/setup-python.sh`)",
        p.display()
    );
    p
}

fn random(shape: &[usize], seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// Peers share a common component so their selections overlap.
fn peers(shape: &[usize], count: usize, seed: u64) -> Vec<Vec<f32>> {
    let common = random(shape, seed);
    (0..count)
        .map(|p| {
            let own = random(shape, seed + 1 + p as u64);
            common
                .iter()
                .zip(own)
                .map(|(c, o)| 2.0 * c + 0.7 * o)
                .collect()
        })
        .collect()
}

fn run_reference(inputs: &[NamedTensor], topk: usize, chunk: usize) -> Vec<NamedTensor> {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    tensors::write(&src, inputs).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/demo_reference.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&src)
        .arg(&dst)
        .arg(topk.to_string())
        .arg(chunk.to_string())
        .output()
        .expect("running the reference script");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tensors::read(&dst).unwrap()
}

fn close(name: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{name}: lengths");
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 2e-5 * scale.max(1.0),
        "{name}: max |ours − reference| = {worst} (reference max {scale})"
    );
}

fn compare(shapes: &[(&str, Vec<usize>)], npeers: usize, topk: usize, chunk: usize) {
    let mut inputs = Vec::new();
    let mut data = Vec::new();
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let ps = peers(shape, npeers, 1000 * i as u64 + 7);
        for (p, d) in ps.iter().enumerate() {
            inputs.push(NamedTensor {
                name: format!("peer{p}/{name}"),
                shape: shape.clone(),
                data: d.clone(),
            });
        }
        data.push(ps);
    }
    let reference = run_reference(&inputs, topk, chunk);
    let get = |key: &str| {
        reference
            .iter()
            .find(|t| t.name == key)
            .unwrap_or_else(|| panic!("reference lacks {key}"))
    };
    let codec = Codec::new(CodecConfig {
        topk,
        chunk,
        ..CodecConfig::default()
    });
    for ((name, shape), ps) in shapes.iter().zip(&data) {
        let updates: Vec<_> = ps
            .iter()
            .map(|d| codec.compress_only(name, shape, d))
            .collect();
        for (p, u) in updates.iter().enumerate() {
            let ours = codec::decode(u, codec.config.transform).unwrap();
            let r = get(&format!("peer{p}/{name}"));
            assert_eq!(r.shape, *shape);
            close(&format!("peer{p}/{name}"), &ours, &r.data);
        }
        let refs: Vec<_> = updates.iter().collect();
        let ours = codec::aggregate(&refs, codec.config.transform, false).unwrap();
        close(
            &format!("agg/{name}"),
            &ours,
            &get(&format!("agg/{name}")).data,
        );
    }
}

#[test]
fn matches_detonation_on_dims_divisible_by_64_other_divisors_primes_and_1d() {
    compare(
        &[
            ("w.square", vec![128, 192]),
            ("w.divisors", vec![100, 96]),
            ("w.thousand", vec![1000, 64]),
            ("w.prime", vec![97, 61]),
            ("w.primes_above_chunk", vec![67, 71]),
            ("b.100", vec![100]),
            ("b.256", vec![256]),
            ("b.prime", vec![97]),
        ],
        3,
        32,
        64,
    );
}

#[test]
fn matches_detonation_aggregating_five_peers_with_k4_and_chunk_32() {
    compare(
        &[
            ("w.a", vec![96, 64]),
            ("w.b", vec![64, 100]),
            ("b", vec![64]),
        ],
        5,
        4,
        32,
    );
}
