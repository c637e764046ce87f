//! The guest image's parsers on arbitrary bytes: the kernel command line the init reads (with
//! the dataset's verity parameters), a kernel module's `.modinfo`, initramfs archives, the
//! launch measurement over a setup area, kernel, initrd and command line from the host (what
//! the init reads through fw_cfg), and the ELF dynamic section the image build edits. Never
//! panic; a command line that parses re-serializes to the same verity parameters; a parsed
//! archive's entries rebuild to an archive that parses to the same entries; dropping needed
//! libraries keeps their number.
#![no_main]

use conclave_images::guest::cpio::{self, Archive, Node};
use conclave_images::guest::{VerityParams, elf, launch, modules, parse_cmdline};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(p) = parse_cmdline(text) {
            let again = VerityParams::parse(&p.verity.to_string()).expect("re-parses");
            assert_eq!(again, p.verity);
            if let Some(d) = p.data {
                assert_eq!(VerityParams::parse(&d.to_string()).expect("re-parses"), d);
            }
        }
    }
    // The measurement of what a host loaded: any split of the bytes is measurable or refused.
    let cut = data.first().map_or(0, |b| *b as usize * 64).min(data.len());
    let (setup, rest) = data.split_at(cut);
    let half = rest.len() / 2;
    let _ = launch::measurement(setup, &rest[..half], &rest[half..], setup);
    let _ = launch::predict(data, &b""[..], "");
    if let Ok(names) = elf::needed_libraries(data) {
        let mut copy = data.to_vec();
        let first = names.first().cloned();
        if let Ok(dropped) = elf::drop_needed(&mut copy, |n| Some(n) != first.as_deref()) {
            assert_eq!(elf::needed_libraries(&copy).expect("still parses").len(), names.len());
            assert!(dropped.len() < names.len());
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
