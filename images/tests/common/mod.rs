//! Shared helpers: where the real vectors are.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/vectors` beside the project root (or `$CONCLAVE_VECTORS`).
pub fn vectors() -> PathBuf {
    if let Ok(p) = std::env::var("CONCLAVE_VECTORS") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors")
}

pub fn path(rel: &str) -> PathBuf {
    vectors().join(rel)
}

pub fn read(rel: &str) -> Vec<u8> {
    let p = path(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading vector {}: {e}", p.display()))
}

/// The MEASUREMENT of the real dstack Milan v3 report (vectors README).
pub const DSTACK_MEASUREMENT: &str = "7f51e17f72a04d5422cb2c00998166536019a217376f3aa45a630e59c805a599847ff250dbffcd07e1ba639771d6f05d";
/// SNP OVMF hash of `ovmf_AmdSev_suffix.bin` (vectors README).
pub const AMDSEV_SUFFIX_OVMF_HASH: &str = "086e2e9149ebf45abdc3445fba5b2da8270bdbb04094d7a2c37faaa4b24af3aa16aff8c374c2a55c467a50da6d466b74";
/// Its launch digest: 1 vCPU EPYC-v4, guest features 0x21, empty kernel and initrd, cmdline
/// `console=ttyS0 loglevel=7`, QEMU (vectors README).
pub const AMDSEV_SUFFIX_DIGEST: &str = "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977";
pub const AMDSEV_SUFFIX_CMDLINE: &str = "console=ttyS0 loglevel=7";

pub const AMDSEV: &str = "snp/ovmf-suffix/ovmf_AmdSev_suffix.bin";
pub const OVMFX64: &str = "snp/ovmf-suffix/ovmf_OvmfX64_suffix.bin";
pub const LAUNCH_INPUTS: &str = "snp/dstack-milan-v3/launch_inputs.json";
pub const DSTACK_REPORT: &str = "snp/dstack-milan-v3/sev_snp_report_extracted.bin";
pub const CCEL: &str = "tdx/go-tdx-guest-ccel/ccel_data.dat";
pub const COS_QUOTE: &str = "tdx/go-tdx-guest-ccel/cos-113-tdx-quote.dat";
pub const DCAP_QUOTE: &str = "tdx/dcap-qvl/tdx_quote";
