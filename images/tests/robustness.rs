//! Malformed input is an error, never a panic: random corruptions of the real OVMF fixture,
//! CCEL log and launch inputs, and random bytes.

mod common;

use std::sync::OnceLock;

use common::*;
use conclave_images::snp::inputs::from_dstack_json;
use conclave_images::snp::{Firmware, ovmf::Ovmf};
use conclave_images::tdx::ccel;
use proptest::prelude::*;

fn cached(slot: &'static OnceLock<Vec<u8>>, rel: &str) -> &'static [u8] {
    slot.get_or_init(|| read(rel))
}

fn corrupt(base: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(at, v) in edits {
        let i = at % b.len();
        b[i] = v;
    }
    b.truncate(b.len().saturating_sub(cut));
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn corrupted_ovmf_never_panics(
        // Edits near the end, where the footer table and metadata are.
        edits in prop::collection::vec((3000usize..4096, any::<u8>()), 1..6),
        cut in prop_oneof![Just(0usize), 0usize..4096],
    ) {
        static OVMF: OnceLock<Vec<u8>> = OnceLock::new();
        let b = corrupt(cached(&OVMF, AMDSEV), &edits, cut);
        let _ = Ovmf::parse(&b);
        if let Ok(fw) = Firmware::from_ovmf(&b) {
            let _ = fw.sections.len();
        }
    }

    #[test]
    fn corrupted_ccel_never_panics(
        edits in prop::collection::vec((0usize..18200, any::<u8>()), 1..6),
        cut in prop_oneof![Just(0usize), 243_000usize..262_144],
    ) {
        static LOG: OnceLock<Vec<u8>> = OnceLock::new();
        let b = corrupt(cached(&LOG, CCEL), &edits, cut);
        let _ = ccel::replay(&b);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = ccel::replay(&bytes);
        let _ = Ovmf::parse(&bytes);
        let _ = from_dstack_json(&bytes);
    }

    #[test]
    fn corrupted_launch_inputs_never_panic(
        edits in prop::collection::vec((0usize..1971, 0x20u8..0x7f), 1..4),
    ) {
        static INPUTS: OnceLock<Vec<u8>> = OnceLock::new();
        let b = corrupt(cached(&INPUTS, LAUNCH_INPUTS), &edits, 0);
        if let Ok(launch) = from_dstack_json(&b) {
            let _ = launch.launch_digest();
        }
    }
}
