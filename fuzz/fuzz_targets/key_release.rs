//! Key-release and sealed-dataset wire formats on arbitrary bytes: a key request (parsed, then
//! appraised under a sim policy: never released, since no evidence binds a key to the
//! fuzzer's nonce without the sim root's signature), a broker challenge, and a sealed dataset
//! index (a parsed index re-encodes to one that parses the same, and its root is stable).
#![no_main]

use conclave_attestation::sim::default_sim_measurement;
use conclave_attestation::{Endorsements, Policy, UnixTime};
use conclave_protocol::Hash32;
use conclave_protocol::keyrelease::{Challenge, KeyRequest, appraise_key_request};
use conclave_protocol::sealed_data::SealedDataset;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = KeyRequest::parse(data) {
        let policy = Policy {
            allow_sim: true,
            measurements: vec![default_sim_measurement()],
            ..Policy::default()
        };
        let r = appraise_key_request(
            &req,
            &req.sealing_id,
            &policy,
            &Endorsements::default(),
            UnixTime(1_800_000_000),
        );
        assert!(r.is_err(), "a fuzzed key request passed appraisal");
        assert_eq!(KeyRequest::parse(&req.encode()).ok(), Some(req));
    }
    let _ = serde_json::from_slice::<Challenge>(data);
    if let Ok(idx) = SealedDataset::parse(data) {
        let again = SealedDataset::parse(&idx.encode()).expect("a parsed index re-parses");
        assert_eq!(again, idx);
        assert_eq!(again.root(), idx.root());
        let _: Option<Hash32> = idx.files.first().map(|f| f.plaintext_sha256);
    }
});
