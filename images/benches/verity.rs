//! Building the root filesystem's dm-verity tree against the reference in the same run: one
//! plain SHA-256 pass over the same bytes (the tree hashes every block once, plus ~1/128 more
//! for the upper levels, with the salt prepended to each block).
//!
//! `cargo bench -p conclave-images --bench verity`

use conclave_images::guest::verity;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

fn bench(c: &mut Criterion) {
    let data: Vec<u8> = (0..64usize << 20).map(|i| (i * 2654435761) as u8).collect();
    let mut g = c.benchmark_group("verity_64MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("reference_sha256_one_pass", |b| {
        b.iter(|| Sha256::digest(&data))
    });
    g.bench_function("hash_tree", |b| {
        b.iter(|| verity::build(&data[..], &[7u8; 32]).map(|t| t.root))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
