//! Signed envelope decoding and signature recovery on arbitrary bytes.
#![no_main]

use conclave_attestation::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        let _ = env.recover_signer();
        assert_eq!(Envelope::decode(&env.encode()).as_ref(), Ok(&env));
    }
});
