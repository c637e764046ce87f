//! Host-to-enclave channel frames on arbitrary bytes (what an untrusted host can send): never
//! panics; whatever parses re-encodes to a frame that parses to the same request.
#![no_main]

use conclave_protocol::channel::{MAX_FRAME, Request, read_frame, write_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = read_frame::<Request>(&mut &data[..], MAX_FRAME) {
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).expect("a parsed request re-encodes");
        assert_eq!(read_frame::<Request>(&mut buf.as_slice(), MAX_FRAME).ok(), Some(req));
    }
});
