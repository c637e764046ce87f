//! Round-receipt parsing on arbitrary bytes: never panics, and whatever parses re-serialises to
//! a receipt that parses to the same value.
#![no_main]

use conclave_protocol::receipt::RoundReceipt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = RoundReceipt::from_json(data) {
        assert_eq!(RoundReceipt::from_json(&r.to_json()).as_ref(), Ok(&r));
    }
});
