//! The SEV hashes table QEMU writes into the firmware's SNP_KERNEL_HASHES page for a measured
//! direct boot (`-kernel/-initrd/-append` with `kernel-hashes=on`): SHA-256 of the kernel, the
//! initrd and the command line, laid out byte-for-byte as QEMU's `target/i386/sev.c` does
//! (and sev-snp-measure's `sev_hashes.py`).

use sha2::{Digest, Sha256};

use super::gctx::PAGE;
use super::guid_le;
use crate::MeasureError;

const TABLE_GUID: [u8; 16] = guid_le(
    0x9438_d606,
    0x4f22,
    0x4cc9,
    [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
);
const CMDLINE_GUID: [u8; 16] = guid_le(
    0x97d0_2dd8,
    0xbd20,
    0x4c94,
    [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
);
const INITRD_GUID: [u8; 16] = guid_le(
    0x44ba_f731,
    0x3a2f,
    0x4bd7,
    [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
);
const KERNEL_GUID: [u8; 16] = guid_le(
    0x4de7_9437,
    0xabd2,
    0x427f,
    [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
);

const ENTRY_LEN: usize = 16 + 2 + 32;
const TABLE_LEN: usize = 16 + 2 + 3 * ENTRY_LEN; // 168
/// The table as written: padded to 16 bytes.
pub const PADDED_TABLE_LEN: usize = (TABLE_LEN + 15) & !15; // 176

/// The three SHA-256 digests a measured direct boot binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevHashes {
    /// SHA-256 of the kernel file as given to QEMU (the bzImage, unmodified).
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd (of no bytes when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line followed by one NUL byte.
    pub cmdline: [u8; 32],
}

/// SHA-256 of a kernel or initrd, fed in pieces so a caller can stream a large file.
#[derive(Clone, Default)]
pub struct ComponentDigest(Sha256);

impl ComponentDigest {
    /// An empty digest.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The SHA-256.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// SHA-256 of `cmdline ‖ 0x00`, as QEMU hashes `-append` (a missing command line hashes as
/// the empty one). The string is taken as given, not trimmed (the `sev` crate trims it).
pub fn cmdline_digest(cmdline: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(cmdline.as_bytes());
    h.update([0u8]);
    h.finalize().into()
}

impl SevHashes {
    /// From the kernel and initrd digests and the command line.
    pub fn new(kernel: [u8; 32], initrd: [u8; 32], cmdline: &str) -> Self {
        SevHashes {
            kernel,
            initrd,
            cmdline: cmdline_digest(cmdline),
        }
    }

    /// From the kernel and initrd contents (`initrd` empty when there is none).
    pub fn from_contents(kernel: &[u8], initrd: &[u8], cmdline: &str) -> Self {
        Self::new(
            Sha256::digest(kernel).into(),
            Sha256::digest(initrd).into(),
            cmdline,
        )
    }

    /// `{GUID, len u16 = 168, cmdline, initrd, kernel}`, each entry `{GUID, len u16 = 50,
    /// sha256}`, zero-padded to 176 bytes.
    pub fn table(&self) -> [u8; PADDED_TABLE_LEN] {
        let mut t = [0u8; PADDED_TABLE_LEN];
        t[..16].copy_from_slice(&TABLE_GUID);
        t[16..18].copy_from_slice(&(TABLE_LEN as u16).to_le_bytes());
        let entries = [
            (CMDLINE_GUID, self.cmdline),
            (INITRD_GUID, self.initrd),
            (KERNEL_GUID, self.kernel),
        ];
        for (i, (guid, hash)) in entries.iter().enumerate() {
            let at = 18 + i * ENTRY_LEN;
            t[at..at + 16].copy_from_slice(guid);
            t[at + 16..at + 18].copy_from_slice(&(ENTRY_LEN as u16).to_le_bytes());
            t[at + 18..at + ENTRY_LEN].copy_from_slice(hash);
        }
        t
    }

    /// The measured page: zeros with the padded table at `offset` (the table GPA's offset in
    /// its page).
    pub(crate) fn page(&self, offset: u64) -> Result<[u8; PAGE], MeasureError> {
        let at = usize::try_from(offset)
            .ok()
            .filter(|at| at + PADDED_TABLE_LEN <= PAGE)
            .ok_or(MeasureError::HashesTableOffset { offset })?;
        let mut page = [0u8; PAGE];
        page[at..at + PADDED_TABLE_LEN].copy_from_slice(&self.table());
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout_matches_qemu() {
        let h = SevHashes::from_contents(b"kernel", b"", "console=ttyS0");
        let t = h.table();
        // GUIDs are stored little-endian: 9438d606-... begins 06 d6 38 94.
        assert_eq!(&t[..4], &[0x06, 0xd6, 0x38, 0x94]);
        assert_eq!(&t[16..18], &[168, 0]);
        assert_eq!(&t[18..22], &[0xd8, 0x2d, 0xd0, 0x97]);
        assert_eq!(&t[34..36], &[50, 0]);
        assert_eq!(
            &t[68..84],
            &[
                0x31, 0xf7, 0xba, 0x44, 0x2f, 0x3a, 0xd7, 0x4b, 0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69,
                0x78, 0x1d
            ]
        );
        assert_eq!(&t[118..122], &[0x37, 0x94, 0xe7, 0x4d]);
        assert_eq!(&t[36..68], &cmdline_digest("console=ttyS0"));
        assert_eq!(&t[136..168], &<[u8; 32]>::from(Sha256::digest(b"kernel")));
        assert_eq!(&t[168..], &[0u8; 8]);
        // The empty command line hashes as a lone NUL, as QEMU does without -append.
        assert_eq!(cmdline_digest(""), <[u8; 32]>::from(Sha256::digest([0u8])));
    }

    #[test]
    fn the_table_must_fit_its_page() {
        let h = SevHashes::from_contents(b"", b"", "");
        assert!(h.page(0xc00).is_ok());
        assert!(h.page((PAGE - PADDED_TABLE_LEN) as u64).is_ok());
        assert_eq!(
            h.page(0xf80).unwrap_err(),
            MeasureError::HashesTableOffset { offset: 0xf80 }
        );
    }

    #[test]
    fn streamed_digest_equals_one_shot() {
        let mut d = ComponentDigest::new();
        d.update(b"ker");
        d.update(b"nel");
        assert_eq!(d.finish(), <[u8; 32]>::from(Sha256::digest(b"kernel")));
    }
}
