//! TOPLOC proof decoding on arbitrary bytes (filled in with the TOPLOC format).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = data;
});
