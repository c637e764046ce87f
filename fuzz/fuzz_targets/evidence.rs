//! Evidence bundle decoding on arbitrary bytes; a decoded bundle re-encodes to itself.
#![no_main]

use conclave_attestation::Evidence;
use conclave_attestation::evidence::BUNDLE_MAGIC;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bundle = BUNDLE_MAGIC.to_vec();
    bundle.extend_from_slice(data);
    if let Ok(e) = Evidence::decode(&bundle) {
        assert_eq!(Evidence::decode(&e.encode()).as_ref(), Ok(&e));
    }
});
