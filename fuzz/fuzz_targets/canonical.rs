//! Canonical encodings on arbitrary bytes (a TDX quote, an SEV-SNP report or a sim report):
//! canonicalising never panics, is idempotent, and the evidence hash is the canonical form's.
#![no_main]

use conclave_attestation::snp::report::REPORT_LEN;
use conclave_attestation::{Evidence, Tee};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let e = match kind % 3 {
        0 => Evidence::tdx(rest.to_vec()),
        k => {
            let mut report = rest.to_vec();
            report.resize(REPORT_LEN, 0);
            let mut e = Evidence::snp(report);
            if k == 2 {
                e.tee = Tee::Sim;
            }
            e
        }
    };
    let hash = e.hash();
    if let Ok(c) = e.canonical() {
        assert_eq!(c.canonical().as_ref(), Ok(&c));
        assert_eq!(c.hash(), hash);
    }
});
