//! TOPLOC proof decoding on arbitrary bytes: never panics, whatever decodes re-encodes to the
//! same bytes (and the same base64), and a decoded proof evaluates anywhere.
//!
//! The top-k is read from the length (so most inputs have the right size) and also tried at the
//! paper's 128; the same bytes are tried as base64 text.
#![no_main]

use conclave_protocol::toploc::{PRIME, ProofPoly};
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8], topk: usize) {
    let Ok(proof) = ProofPoly::from_bytes(data, topk) else {
        return;
    };
    assert_eq!(proof.to_bytes(), data);
    assert_eq!(proof.coeffs.len(), topk);
    assert_eq!(
        ProofPoly::from_base64(&proof.to_base64(), topk),
        Ok(proof.clone())
    );
    for x in [
        0,
        1,
        u32::from(proof.modulus) - 1,
        u32::from(PRIME),
        u32::MAX,
    ] {
        assert!(proof.eval(x) < PRIME);
        assert!(proof.eval_index(x).is_some_and(|y| y < PRIME));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, data.len().saturating_sub(2) / 2);
    check(data, 128);
    if let Ok(text) = std::str::from_utf8(data) {
        let topk = (text.len() / 4 * 3).saturating_sub(2) / 2;
        if let Ok(proof) = ProofPoly::from_base64(text, topk) {
            assert_eq!(proof.to_base64(), text);
        }
    }
});
