//! Shared helpers: where the real vectors are, and the pinned times they verify at.
#![allow(dead_code)]

use std::path::PathBuf;

use conclave_attestation::snp::certs::load_certs;
use conclave_attestation::{Endorsements, UnixTime};

/// `../shared/vectors` beside the project root (or `$CONCLAVE_VECTORS`).
pub fn vectors() -> PathBuf {
    if let Ok(p) = std::env::var("CONCLAVE_VECTORS") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors")
}

pub fn read(rel: &str) -> Vec<u8> {
    let p = vectors().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading vector {}: {e}", p.display()))
}

pub fn certs(files: &[&str]) -> Endorsements {
    let mut e = Endorsements::default();
    for f in files {
        e.certs.extend(load_certs(&read(f)).unwrap());
    }
    e
}

/// 2026-07-01T00:00:00Z: inside every SNP vector's VCEK validity.
pub const SNP_NOW: UnixTime = UnixTime(1_782_864_000);
/// 2025-07-01T00:00:00Z: inside the dcap-qvl `tdx_quote` collateral window.
pub const TDX_NOW: UnixTime = UnixTime(1_751_328_000);
/// 2026-03-01T00:00:00Z: inside the `tdx_quote_outdated` collateral window.
pub const TDX_OUTDATED_NOW: UnixTime = UnixTime(1_772_323_200);

pub fn milan_report_s1() -> Vec<u8> {
    hex::decode(
        String::from_utf8(read("snp/virtee-milan/report_milan.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap()
}
