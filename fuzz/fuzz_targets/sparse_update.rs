//! Sparse-update decoding on arbitrary bytes: never panics, and whatever decodes re-encodes to
//! the same bytes (one update, one encoding).
#![no_main]

use conclave_protocol::{DecodeLimits, SparseUpdate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_entries: 1 << 20,
        max_numel: 1 << 24,
        ..DecodeLimits::default()
    };
    if let Ok(u) = SparseUpdate::decode(data, &limits) {
        assert_eq!(u.encode().as_deref(), Ok(data));
        for t in &u.tensors {
            let _ = t.values.dequantize();
        }
    }
});
