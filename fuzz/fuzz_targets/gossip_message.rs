//! Gossip message decoding on arbitrary bytes (what any peer can send): never panics, and
//! whatever decodes re-encodes to bytes that decode to the same message.
#![no_main]

use conclave_protocol::gossip::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let bytes = m.encode().expect("a decoded message re-encodes");
        assert_eq!(Message::decode(&bytes).as_ref(), Ok(&m));
    }
});
