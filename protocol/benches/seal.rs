//! Sealing throughput: AES-256-GCM sealing and opening of a 16 MiB update against a plain copy
//! of the same bytes (the reference measured in the same run), and wrapping a job secret.
//!
//! `cargo bench -p conclave-protocol --bench seal`; the ratios print after criterion's figures.

use std::time::{Duration, Instant};

use conclave_protocol::seal::{JobSecret, Kind, Recipient, wrap};
use criterion::{Criterion, Throughput, black_box};

const BYTES: usize = 16 << 20;
const JOB: [u8; 32] = [5; 32];

fn per_iter(mut f: impl FnMut(), reps: u32) -> Duration {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed() / reps
}

fn main() {
    let data: Vec<u8> = (0..BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let secret = JobSecret::from_bytes([9; 32]);
    let sealed = secret.seal(&JOB, Kind::Update, 1, &data).expect("seals");

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Bytes(BYTES as u64));
    g.bench_function("copy 16 MiB", |b| b.iter(|| black_box(data.clone())));
    g.bench_function("seal 16 MiB", |b| {
        b.iter(|| {
            secret
                .seal(&JOB, Kind::Update, 1, black_box(&data))
                .expect("seals")
        })
    });
    g.bench_function("open 16 MiB", |b| {
        b.iter(|| {
            secret
                .open(&JOB, Kind::Update, 1, black_box(&sealed))
                .expect("opens")
        })
    });
    g.finish();
    c.bench_function("wrap and unwrap a job secret", |b| {
        b.iter(|| {
            let r = Recipient::generate().expect("key");
            let w = wrap(&secret, &r.public_key(), b"ctx").expect("wraps");
            r.unwrap(&w, b"ctx").expect("unwraps")
        })
    });
    c.final_summary();

    let copy = per_iter(|| drop(black_box(data.clone())), 20);
    let seal = per_iter(
        || {
            drop(black_box(
                secret.seal(&JOB, Kind::Update, 1, &data).expect("seals"),
            ))
        },
        20,
    );
    let open = per_iter(
        || {
            drop(black_box(
                secret.open(&JOB, Kind::Update, 1, &sealed).expect("opens"),
            ))
        },
        20,
    );
    let gbs = |d: Duration| BYTES as f64 / d.as_secs_f64() / 1e9;
    println!(
        "16 MiB: copy {:.2} GB/s; seal {:.2} GB/s ({:.1}x the copy's time); open {:.2} GB/s ({:.1}x)",
        gbs(copy),
        gbs(seal),
        seal.as_secs_f64() / copy.as_secs_f64(),
        gbs(open),
        open.as_secs_f64() / copy.as_secs_f64()
    );
}
