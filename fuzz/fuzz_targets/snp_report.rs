//! SEV-SNP report parsing and appraisal on arbitrary bytes (padded to report size so the
//! fuzzer spends its time past the length check).
#![no_main]

use conclave_attestation::snp::report::{REPORT_LEN, SnpReport};
use conclave_attestation::{Endorsements, Evidence, Policy, UnixTime, appraise};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SnpReport::parse(data);
    let mut report = data.to_vec();
    report.resize(REPORT_LEN, 0);
    if let Ok(r) = SnpReport::parse(&report) {
        let _ = r.signature();
        let _ = r.chip_id_masked();
    }
    let e = Evidence::snp(report);
    let _ = appraise(&e, &Endorsements::default(), &Policy::default(), UnixTime(1_782_864_000));
});
