//! Properties of the codec: encode→decode is a projection, error feedback conserves the signal,
//! aggregation is the scatter-mean, and the tch path agrees with the CPU path.

use conclave_enclave::codec::tch_path::TchCodec;
use conclave_enclave::codec::{self, Codec, CodecConfig, TopkRule};
use conclave_protocol::{DecodeLimits, SparseUpdate, Transform, ValueEncoding};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn shapes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        (1usize..200).prop_map(|n| vec![n]),
        (1usize..130, 1usize..130).prop_map(|(a, b)| vec![a, b]),
        (1usize..4, 1usize..40, 1usize..70).prop_map(|(a, b, c)| vec![a, b, c]),
    ]
}

fn configs() -> impl Strategy<Value = CodecConfig> {
    (
        1usize..40,
        prop_oneof![Just(8usize), Just(16), Just(64)],
        any::<bool>(),
        prop_oneof![
            Just(ValueEncoding::F32),
            Just(ValueEncoding::Bf16),
            Just(ValueEncoding::TwoBit)
        ],
        any::<bool>(),
    )
        .prop_map(|(topk, chunk, dct, values, templar)| CodecConfig {
            topk,
            chunk,
            transform: if dct {
                Transform::Dct
            } else {
                Transform::Identity
            },
            values,
            topk_rule: if templar {
                TopkRule::Templar
            } else {
                TopkRule::Demo
            },
            ..CodecConfig::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn encode_then_decode_is_a_projection(shape in shapes(), cfg in configs(), seed in any::<u64>()) {
        let cfg = CodecConfig { values: ValueEncoding::F32, ..cfg };
        let codec = Codec::new(cfg);
        let x = random(shape.iter().product(), seed);
        let once = codec::decode(&codec.compress_only("t", &shape, &x), cfg.transform).unwrap();
        let twice = codec::decode(&codec.compress_only("t", &shape, &once), cfg.transform).unwrap();
        let scale = once.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        prop_assert!(max_diff(&once, &twice) <= 1e-5 * scale, "{}", max_diff(&once, &twice));
    }

    #[test]
    fn error_feedback_conserves_the_signal(shape in shapes(), cfg in configs(), seed in any::<u64>()) {
        let codec = Codec::new(cfg);
        let x = random(shape.iter().product(), seed);
        let mut residual = x.clone();
        let update = codec.compress("t", &shape, &mut residual);
        let sent = codec::decode(&update, cfg.transform).unwrap();
        let rebuilt: Vec<f32> = sent.iter().zip(&residual).map(|(a, b)| a + b).collect();
        prop_assert!(max_diff(&rebuilt, &x) <= 2e-5 * x.iter().fold(1.0f32, |m, v| m.max(v.abs())));
        // And the update survives the wire unchanged.
        let wire = SparseUpdate { transform: cfg.transform, tensors: vec![update.clone()] };
        let back = SparseUpdate::decode(&wire.encode().unwrap(), &DecodeLimits::default()).unwrap();
        prop_assert_eq!(&back.tensors[0], &update);
    }
}

#[test]
fn error_feedback_delivers_everything_over_rounds() {
    // With β = 1 and the same input every round, what was sent plus what is left is T·g.
    let shape = [64, 96];
    let g = random(64 * 96, 3);
    let codec = Codec::new(CodecConfig {
        topk: 8,
        ..CodecConfig::default()
    });
    let mut buf = vec![0f32; g.len()];
    let mut sent = vec![0f32; g.len()];
    for _ in 0..20 {
        codec::accumulate(&mut buf, 1.0, 1.0, &g);
        let u = codec.compress("w", &shape, &mut buf);
        for (s, d) in sent
            .iter_mut()
            .zip(codec::decode(&u, Transform::Dct).unwrap())
        {
            *s += d;
        }
    }
    let total: Vec<f32> = sent.iter().zip(&buf).map(|(s, b)| s + b).collect();
    let want: Vec<f32> = g.iter().map(|v| 20.0 * v).collect();
    assert!(
        max_diff(&total, &want) < 1e-3,
        "{}",
        max_diff(&total, &want)
    );
}

#[test]
fn aggregation_is_the_mean_over_contributors_not_over_peers() {
    // Identity transform, one block of 4: peer A keeps {0, 1}, peer B keeps {1, 2}.
    let codec = Codec::new(CodecConfig {
        topk: 2,
        chunk: 4,
        transform: Transform::Identity,
        ..CodecConfig::default()
    });
    let a = codec.compress_only("t", &[4], &[4.0, 2.0, 0.0, 0.0]);
    let b = codec.compress_only("t", &[4], &[0.0, 6.0, -3.0, 0.0]);
    let agg = codec::aggregate(&[&a, &b], Transform::Identity, false).unwrap();
    assert_eq!(agg, vec![4.0, 4.0, -3.0, 0.0]);
}

#[test]
fn median_norm_clipping_scales_down_the_outlier_only() {
    let codec = Codec::new(CodecConfig {
        topk: 1,
        chunk: 2,
        transform: Transform::Identity,
        ..CodecConfig::default()
    });
    let us: Vec<_> = [1.0f32, 2.0, 100.0]
        .iter()
        .map(|&v| codec.compress_only("t", &[2], &[v, 0.0]))
        .collect();
    let refs: Vec<_> = us.iter().collect();
    // Median norm 2: the 100 is scaled to 2; 1 and 2 are untouched.
    let clipped = codec::aggregate(&refs, Transform::Identity, true).unwrap();
    assert!((clipped[0] - 5.0 / 3.0).abs() < 1e-6, "{clipped:?}");
    let plain = codec::aggregate(&refs, Transform::Identity, false).unwrap();
    assert!((plain[0] - 103.0 / 3.0).abs() < 1e-5, "{plain:?}");
}

#[test]
fn one_bit_updates_decode_to_signs() {
    let codec = Codec::new(CodecConfig {
        topk: 2,
        chunk: 4,
        transform: Transform::Identity,
        values: ValueEncoding::OneBit,
        ..CodecConfig::default()
    });
    let u = codec.compress_only("t", &[4], &[0.5, -3.0, 2.0, 0.1]);
    assert_eq!(
        codec::decode(&u, Transform::Identity).unwrap(),
        vec![0.0, -1.0, 1.0, 0.0]
    );
}

#[test]
fn tch_path_agrees_with_the_cpu_path() {
    for (shape, values, transform) in [
        (vec![128usize, 192], ValueEncoding::F32, Transform::Dct),
        (vec![100, 96], ValueEncoding::TwoBit, Transform::Identity),
        (vec![2, 64, 50], ValueEncoding::Bf16, Transform::Dct),
        (vec![100], ValueEncoding::F32, Transform::Dct),
    ] {
        let cfg = CodecConfig {
            topk: 16,
            values,
            transform,
            ..CodecConfig::default()
        };
        let cpu = Codec::new(cfg);
        let mut gpu = TchCodec::new(cfg, tch::Device::Cpu);
        let n: usize = shape.iter().product();
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let peers: Vec<Vec<f32>> = (0..3).map(|p| random(n, 40 + p)).collect();
        let mut cpu_updates = Vec::new();
        let mut tch_updates = Vec::new();
        for x in &peers {
            let mut buf = x.clone();
            cpu_updates.push(cpu.compress("t", &shape, &mut buf));
            let mut t = tch::Tensor::from_slice(x).reshape(dims.as_slice());
            tch_updates.push(gpu.compress("t", &mut t).unwrap());
            let t_res: Vec<f32> = Vec::try_from(&t.reshape([-1])).unwrap();
            assert!(max_diff(&buf, &t_res) < 1e-4, "{shape:?}: residuals differ");
        }
        assert_eq!(
            cpu_updates[0].indices, tch_updates[0].indices,
            "{shape:?}: selections"
        );
        let refs: Vec<_> = cpu_updates.iter().collect();
        let ours = codec::aggregate(&refs, transform, true).unwrap();
        let refs: Vec<_> = tch_updates.iter().collect();
        let theirs = gpu.aggregate(&refs, true).unwrap();
        let theirs: Vec<f32> = Vec::try_from(&theirs.reshape([-1])).unwrap();
        assert!(
            max_diff(&ours, &theirs) < 1e-4,
            "{shape:?}: {}",
            max_diff(&ours, &theirs)
        );
    }
}

#[test]
fn outer_steps_follow_demo_and_sparseloco() {
    // DeMo: p ← p − lr·sign(g), sign(0) = 0.
    let mut p = vec![1.0f32, 1.0, 1.0];
    codec::sign_step(&mut p, &[0.3, -7.0, 0.0], 0.5);
    assert_eq!(p, vec![0.5, 1.5, 1.0]);
    // SparseLoCo: p ← p − lr·g.
    codec::sgd_step(&mut p, &[1.0, -1.0, 2.0], 0.25);
    assert_eq!(p, vec![0.25, 1.75, 0.5]);
    // Momentum / error feedback: buf ← β·buf + s·x.
    let mut buf = vec![2.0f32, -4.0];
    codec::accumulate(&mut buf, 0.5, 0.1, &[10.0, 20.0]);
    assert_eq!(buf, vec![2.0, 0.0]);
}
