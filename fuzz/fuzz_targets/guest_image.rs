//! The guest image's parsers on arbitrary bytes: the kernel command line the init reads, a
//! kernel module's `.modinfo`, and initramfs archives. Never panic; a command line that parses
//! re-serializes to the same verity parameters; a parsed archive's entries rebuild to an
//! archive that parses to the same entries.
#![no_main]

use conclave_images::guest::cpio::{self, Archive, Node};
use conclave_images::guest::{VerityParams, modules, parse_cmdline};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = parse_cmdline(text) {
            let again = VerityParams::parse(&p.verity.to_string()).expect("re-parses");
            assert_eq!(again, p.verity);
        }
    }
    let _ = modules::modinfo(data);
    if let Ok(entries) = cpio::parse(data) {
        let mut a = Archive::new();
        let mut ok = true;
        for e in &entries {
            let node = match e.mode & 0o170000 {
                0o040000 => Node::Dir,
                0o100000 => Node::File(e.data.clone()),
                _ => {
                    ok = false;
                    break;
                }
            };
            if a.add(&e.path, node, e.mode & 0o7777).is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            let bytes = a.to_bytes().expect("small archives encode");
            assert!(cpio::parse(&bytes).is_ok());
        }
    }
});
