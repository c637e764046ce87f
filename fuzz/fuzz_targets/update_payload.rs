//! Update statement payloads on arbitrary bytes (what every node parses from a peer's signed
//! update before the body is decoded): never panics, the header split and the full parse
//! agree, whatever parses re-encodes to the same bytes, and the body, when it decodes as a
//! sparse update, re-encodes to the same bytes.
#![no_main]

use conclave_protocol::{DecodeLimits, SparseUpdate, Statement, UpdatePayload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = UpdatePayload::split(data);
    let parsed = UpdatePayload::from_payload(data);
    assert_eq!(split.is_ok(), parsed.is_ok());
    if let (Ok((header, body)), Ok(p)) = (split, parsed) {
        assert_eq!((header.round, header.base_model), (p.round, p.base_model));
        assert_eq!(body, &p.body[..]);
        assert_eq!(p.to_payload(), data);
        let limits = DecodeLimits {
            max_bytes: 1 << 20,
            max_entries: 1 << 20,
            max_numel: 1 << 24,
            ..DecodeLimits::default()
        };
        if let Ok(u) = SparseUpdate::decode(body, &limits) {
            assert_eq!(u.encode().as_deref(), Ok(body));
        }
    }
});
