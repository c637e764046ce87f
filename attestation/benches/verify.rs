//! Verification cost per evidence kind, each next to a reference measured in the same run:
//!
//! - `snp/appraise` (chain + validity + signature + VCEK extensions + policy, S1 Milan report)
//!   against `snp/sev-crate-reference`: the `sev` crate's chain and report signature checks alone.
//! - `tdx/appraise` (dcap-qvl verification + policy, dcap-qvl sample quote) against
//!   `tdx/dcap-qvl-reference`: `dcap_qvl::verify::rustcrypto::verify` alone.
//! - `sim/appraise` against the same SNP reference (sim runs the same code on a P-384 chain).
//! - `envelope/verify` against `envelope/k256-recover-reference`: one public-key recovery.
//!
//! Run: `cargo bench -p conclave-attestation --bench verify`.

use std::path::PathBuf;

use conclave_attestation::snp::certs::load_certs;
use conclave_attestation::tdx::parse_collateral;
use conclave_attestation::*;
use criterion::{Criterion, black_box, criterion_group, criterion_main};

fn vectors() -> PathBuf {
    std::env::var("CONCLAVE_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"))
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(vectors().join(rel)).expect("vector")
}

const SNP_NOW: UnixTime = UnixTime(1_782_864_000);
const TDX_NOW: UnixTime = UnixTime(1_751_328_000);

fn bench(c: &mut Criterion) {
    // SEV-SNP.
    let report = hex::decode(
        String::from_utf8(read("snp/virtee-milan/report_milan.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let vcek_der = read("snp/virtee-milan/vcek_milan.der");
    let chain_pem = read("snp/virtee-milan/cert_chain_milan");
    let evidence = Evidence::decode(&report).unwrap();
    let mut endorsements = Endorsements::default();
    endorsements.certs.extend(load_certs(&vcek_der).unwrap());
    endorsements.certs.extend(load_certs(&chain_pem).unwrap());
    let policy = Policy::default();
    assert!(
        appraise(&evidence, &endorsements, &policy, SNP_NOW)
            .unwrap()
            .accepted()
            .is_some()
    );

    let mut g = c.benchmark_group("snp");
    g.bench_function("appraise", |b| {
        b.iter(|| appraise(black_box(&evidence), &endorsements, &policy, SNP_NOW).unwrap())
    });
    {
        use sev::certs::snp::{Certificate, Chain, Verifiable, builtin::milan, ca};
        use sev::firmware::guest::AttestationReport;
        use sev::parser::ByteParser;
        let chain = Chain {
            ca: ca::Chain {
                ark: milan::ark().unwrap(),
                ask: milan::ask().unwrap(),
            },
            vek: Certificate::from_der(&vcek_der).unwrap(),
        };
        g.bench_function("sev-crate-reference", |b| {
            b.iter(|| {
                let r = AttestationReport::from_bytes(black_box(&report)).unwrap();
                (&chain, &r).verify().unwrap();
            })
        });
    }
    g.finish();

    // TDX.
    let quote = read("tdx/dcap-qvl/tdx_quote");
    let collateral = parse_collateral(&read("tdx/dcap-qvl/tdx_quote_collateral.json")).unwrap();
    let tdx_evidence = Evidence::decode(&quote).unwrap();
    let tdx_endorsements = Endorsements {
        certs: vec![],
        tdx_collateral: Some(collateral.clone()),
    };
    assert!(
        appraise(&tdx_evidence, &tdx_endorsements, &policy, TDX_NOW)
            .unwrap()
            .accepted()
            .is_some()
    );
    let mut g = c.benchmark_group("tdx");
    g.bench_function("appraise", |b| {
        b.iter(|| {
            appraise(
                black_box(&tdx_evidence),
                &tdx_endorsements,
                &policy,
                TDX_NOW,
            )
            .unwrap()
        })
    });
    g.bench_function("dcap-qvl-reference", |b| {
        b.iter(|| {
            dcap_qvl::verify::rustcrypto::verify(black_box(&quote), &collateral, TDX_NOW.0).unwrap()
        })
    });
    g.finish();

    // Sim.
    let sim = SimAttester::from_seed(&[1; 32], SimConfig::default()).unwrap();
    let sim_evidence = Evidence::decode(&sim.evidence(&ReportData([0; 64])).encode()).unwrap();
    let sim_policy = Policy {
        allow_sim: true,
        ..Policy::default()
    };
    let mut g = c.benchmark_group("sim");
    g.bench_function("appraise", |b| {
        b.iter(|| {
            appraise(
                black_box(&sim_evidence),
                &Endorsements::default(),
                &sim_policy,
                SNP_NOW,
            )
            .unwrap()
        })
    });
    g.finish();

    // Envelope.
    let ctx = BindingContext {
        job_id: JobId([1; 32]),
        nonce: Nonce([2; 32]),
    };
    let key = EnclaveKey::from_bytes(&[3; 32]).unwrap();
    let ev = sim.evidence(&key.report_data(&ctx));
    let accepted = appraise(&ev, &Endorsements::default(), &sim_policy, SNP_NOW)
        .unwrap()
        .accepted()
        .unwrap();
    let env = key
        .seal("conclave/v1/bench", "update", vec![7u8; 4096], ev.hash())
        .unwrap();
    let wire = env.encode();
    let mut g = c.benchmark_group("envelope");
    g.bench_function("verify", |b| {
        b.iter(|| {
            Envelope::decode(black_box(&wire))
                .unwrap()
                .verify(&accepted, &ctx)
                .unwrap()
        })
    });
    let statement = env.statement();
    g.bench_function("k256-recover-reference", |b| {
        b.iter(|| {
            conclave_attestation::envelope::recover_statement_signer(
                black_box(&statement),
                &env.signature,
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
