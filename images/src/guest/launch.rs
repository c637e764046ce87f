//! The launch measurement of a guest booted without a TEE: what the `sim` attester reports as
//! MEASUREMENT when the enclave runs in a plain VM (KVM or TCG).
//!
//! It is the analogue of SEV-SNP's kernel hashes: a digest of the kernel, initrd and command
//! line the VM was started with. The guest's init computes it at boot from what qemu actually
//! loaded, read back through qemu's firmware configuration device (`fw_cfg`: the setup
//! sectors, the protected-mode kernel, the initrd and the command line, the same items the
//! firmware loads from); `conclave image measure --image DIR --vm` predicts it from the files.
//! Nothing the host says after boot enters it, and the command line pins the root filesystem
//! and the dataset disk (their dm-verity root hashes), so the measurement names every byte the
//! enclave runs on and reads.
//!
//! qemu writes the boot loader's fields of the kernel's setup header (loader type, load flags,
//! initrd address and size, heap end, command-line pointer, setup_data) before it hands the
//! setup sectors over; those fields are zeroed on both sides before hashing ([`LOADER_FIELDS`]).
//! They are addresses the loader chooses (they depend on the guest's memory size); the
//! initrd's and the command line's bytes are measured themselves.
//!
//! ```text
//! MEASUREMENT = SHA-384( "conclave/v1/vm-launch" 0x00
//!                        || SHA-256(setup sectors, loader fields zeroed)
//!                        || SHA-256(protected-mode kernel)
//!                        || SHA-256(initrd)
//!                        || SHA-256(command line, without its terminating NULs) )
//! ```

use std::io::Read;

use sha2::{Digest, Sha256, Sha384};

use super::GuestError;

/// Domain separation of the digest.
pub const DOMAIN: &[u8] = b"conclave/v1/vm-launch\0";

/// Byte ranges of the setup header that the boot loader writes (Linux boot protocol,
/// `Documentation/arch/x86/boot.rst`): `type_of_loader` and `loadflags` (0x210..0x212),
/// `ramdisk_image` and `ramdisk_size` (0x218..0x220), `heap_end_ptr`, `ext_loader_ver`,
/// `ext_loader_type` and `cmd_line_ptr` (0x224..0x22c), `setup_data` (0x250..0x258).
pub const LOADER_FIELDS: &[(usize, usize)] = &[
    (0x210, 0x212),
    (0x218, 0x220),
    (0x224, 0x22c),
    (0x250, 0x258),
];

/// The largest setup area accepted (the header's `setup_sects` is one byte: at most 256
/// sectors after the boot sector).
pub const MAX_SETUP_BYTES: usize = 257 * 512;

/// The length of a bzImage's setup area (boot sector and setup sectors) from its first
/// sector: `(setup_sects + 1) * 512`, with 0 meaning 4, as qemu and the boot protocol read it.
pub fn setup_len(header: &[u8]) -> Result<usize, GuestError> {
    let sects = *header.get(0x1f1).ok_or_else(|| GuestError::BadKernel {
        detail: format!(
            "{} bytes is too short for a setup header (needs 0x1f2)",
            header.len()
        ),
    })?;
    if header.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(GuestError::BadKernel {
            detail: "no \"HdrS\" magic at 0x202: not a bzImage".into(),
        });
    }
    let sects = if sects == 0 { 4 } else { sects as usize };
    Ok((sects + 1) * 512)
}

/// The setup area with the loader-written fields zeroed.
pub fn masked_setup(setup: &[u8]) -> Vec<u8> {
    let mut s = setup.to_vec();
    for &(a, b) in LOADER_FIELDS {
        if b <= s.len() {
            s[a..b].fill(0);
        }
    }
    s
}

fn sha256_reader(mut r: impl Read, what: &str) -> Result<[u8; 32], GuestError> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| GuestError::Io {
            what: what.to_string(),
            detail: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// The SHA-256 of each measured item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Components {
    /// The setup area, loader fields zeroed.
    pub setup: [u8; 32],
    pub kernel: [u8; 32],
    pub initrd: [u8; 32],
    /// The command line without its terminating NULs.
    pub cmdline: [u8; 32],
}

impl Components {
    /// The measurement they make.
    pub fn measurement(&self) -> [u8; 48] {
        let mut h = Sha384::new();
        h.update(DOMAIN);
        h.update(self.setup);
        h.update(self.kernel);
        h.update(self.initrd);
        h.update(self.cmdline);
        h.finalize().into()
    }
}

impl std::fmt::Display for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |d: &[u8; 32]| {
            d[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        write!(
            f,
            "setup {} kernel {} initrd {} cmdline {}",
            short(&self.setup),
            short(&self.kernel),
            short(&self.initrd),
            short(&self.cmdline)
        )
    }
}

/// The items' digests as the firmware sees them: the setup area (loader fields as written by
/// qemu or not: they are zeroed here), the protected-mode kernel, the initrd and the command
/// line (terminating NULs are dropped).
pub fn components(
    setup: &[u8],
    kernel: impl Read,
    initrd: impl Read,
    cmdline: &[u8],
) -> Result<Components, GuestError> {
    if setup.len() > MAX_SETUP_BYTES {
        return Err(GuestError::TooLarge {
            what: "the kernel's setup area",
            len: setup.len() as u64,
            max: MAX_SETUP_BYTES as u64,
        });
    }
    let mut end = cmdline.len();
    while end > 0 && cmdline[end - 1] == 0 {
        end -= 1;
    }
    Ok(Components {
        setup: Sha256::digest(masked_setup(setup)).into(),
        kernel: sha256_reader(kernel, "the kernel")?,
        initrd: sha256_reader(initrd, "the initrd")?,
        cmdline: Sha256::digest(&cmdline[..end]).into(),
    })
}

/// The measurement of the four items (see [`components`]).
pub fn measurement(
    setup: &[u8],
    kernel: impl Read,
    initrd: impl Read,
    cmdline: &[u8],
) -> Result<[u8; 48], GuestError> {
    Ok(components(setup, kernel, initrd, cmdline)?.measurement())
}

/// The command line a job's guest boots with: the image's, then `conclave.attester=sim` for
/// a VM without a TEE, then the dataset disk's verity parameters.
pub fn job_cmdline(image: &str, sim: bool, data: Option<&super::VerityParams>) -> String {
    let mut c = image.to_string();
    if sim {
        c.push_str(&format!(" {}=sim", super::ATTESTER_KEY));
    }
    if let Some(d) = data {
        c.push_str(&format!(" {}={d}", super::DATA_KEY));
    }
    c
}

/// The measurement predicted from a bzImage file's reader, an initrd's reader and the exact
/// command line qemu is started with (`-append`).
pub fn predict(
    bzimage: impl Read,
    initrd: impl Read,
    cmdline: &str,
) -> Result<[u8; 48], GuestError> {
    Ok(predict_components(bzimage, initrd, cmdline)?.measurement())
}

/// The items' digests predicted from the kernel and initrd files, streamed.
pub fn predict_files(
    kernel: &std::path::Path,
    initrd: &std::path::Path,
    cmdline: &str,
) -> Result<Components, GuestError> {
    let open = |p: &std::path::Path| {
        std::fs::File::open(p)
            .map(std::io::BufReader::new)
            .map_err(|e| GuestError::Io {
                what: p.display().to_string(),
                detail: e.to_string(),
            })
    };
    predict_components(open(kernel)?, open(initrd)?, cmdline)
}

/// The items' digests predicted from the files (see [`predict`]).
pub fn predict_components(
    mut bzimage: impl Read,
    initrd: impl Read,
    cmdline: &str,
) -> Result<Components, GuestError> {
    let mut first = vec![0u8; 1024];
    read_full(&mut bzimage, &mut first)?;
    let len = setup_len(&first)?;
    let mut setup = first;
    setup.resize(len, 0);
    read_full(&mut bzimage, &mut setup[1024.min(len)..])?;
    components(&setup, bzimage, initrd, cmdline.as_bytes())
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<(), GuestError> {
    r.read_exact(buf).map_err(|e| GuestError::BadKernel {
        detail: format!("reading the setup area: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage(sects: u8, body: &[u8]) -> Vec<u8> {
        let setup = (if sects == 0 { 4 } else { sects as usize } + 1) * 512;
        let mut f = vec![0x11u8; setup];
        f[0x1f1] = sects;
        f[0x202..0x206].copy_from_slice(b"HdrS");
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn the_prediction_equals_the_measurement_of_the_loaded_items() {
        let file = bzimage(3, b"kernel body");
        let predicted = predict(file.as_slice(), &b"initrd"[..], "console=ttyS0 a=b").unwrap();
        // What qemu hands over: the setup with loader fields written, the rest, NUL-ended
        // command line.
        let mut setup = file[..4 * 512].to_vec();
        setup[0x210] = 0xb0;
        setup[0x211] |= 0x80;
        setup[0x218..0x220].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        setup[0x228..0x22c].copy_from_slice(&[9, 9, 9, 9]);
        let seen = measurement(
            &setup,
            &file[4 * 512..],
            &b"initrd"[..],
            b"console=ttyS0 a=b\0",
        )
        .unwrap();
        assert_eq!(predicted, seen);
    }

    #[test]
    fn each_item_changes_the_measurement() {
        let base = predict(bzimage(0, b"k").as_slice(), &b"i"[..], "c").unwrap();
        let mut setup_changed = bzimage(0, b"k");
        setup_changed[0x300] ^= 1;
        for other in [
            predict(setup_changed.as_slice(), &b"i"[..], "c").unwrap(),
            predict(bzimage(0, b"K").as_slice(), &b"i"[..], "c").unwrap(),
            predict(bzimage(0, b"k").as_slice(), &b"I"[..], "c").unwrap(),
            predict(bzimage(0, b"k").as_slice(), &b"i"[..], "c ").unwrap(),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_file_that_is_not_a_bzimage_is_refused_by_name() {
        let e = predict(&[0u8; 2048][..], &b""[..], "").unwrap_err();
        assert!(e.to_string().contains("HdrS"), "{e}");
        let e = predict(&[0u8; 10][..], &b""[..], "").unwrap_err();
        assert!(e.to_string().contains("setup"), "{e}");
    }
}
