//! Sealed-job wire formats on arbitrary bytes: an envelope's header, opening an envelope under a
//! fixed secret, and unwrapping a wrapped job secret. Never panic; nothing opens that was not
//! sealed with the key (a forged tag would be a break of AES-256-GCM); a header that parses
//! re-reads the same.
#![no_main]

use conclave_protocol::seal::{Header, JobSecret, Kind, Recipient};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::parse(data) {
        assert_eq!(Header::parse(data).ok(), Some(h));
        let s = JobSecret::from_bytes([3; 32]);
        assert!(s.open(&[1; 32], h.kind, h.index, data).is_err());
        let _ = s.open(&[1; 32], Kind::Update, 0, data);
    }
    if let Ok(r) = Recipient::generate() {
        assert!(r.unwrap(data, b"fuzz").is_err());
    }
});
