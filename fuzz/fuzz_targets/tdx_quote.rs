//! TDX quote parsing and appraisal (without collateral) on arbitrary bytes.
#![no_main]

use conclave_attestation::tdx::TdxQuote;
use conclave_attestation::{Endorsements, Evidence, Policy, UnixTime, appraise};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = TdxQuote::parse(data) {
        let _ = q.claims();
    }
    if let Ok(e) = Evidence::decode(data) {
        let _ = appraise(&e, &Endorsements::default(), &Policy::default(), UnixTime(1_751_328_000));
    }
});
