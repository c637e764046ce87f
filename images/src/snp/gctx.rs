//! The SEV-SNP guest context launch digest: each page the firmware measures at launch folds
//! into a running SHA-384 (SEV-SNP ABI spec §8.17.2, PAGE_INFO), as sev-snp-measure's `gctx.py`
//! does.

use conclave_attestation::Measurement;
use sha2::{Digest, Sha384};

/// A guest page.
pub(crate) const PAGE: usize = 4096;
/// VMSA pages are recorded with GPA (u64)-1, page-aligned, bits above 51 cleared.
pub(crate) const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

const ZEROS: [u8; 48] = [0; 48];

/// PAGE_TYPE values of SNP_LAUNCH_UPDATE.
#[derive(Clone, Copy)]
#[repr(u8)]
enum PageType {
    Normal = 1,
    Vmsa = 2,
    Zero = 3,
    Unmeasured = 4,
    Secrets = 5,
    Cpuid = 6,
}

/// The running launch digest.
pub(crate) struct Gctx {
    ld: [u8; 48],
}

fn sha384(data: &[u8]) -> [u8; 48] {
    Sha384::digest(data).into()
}

impl Gctx {
    /// Starts from a seed: 48 zero bytes, or an OVMF hash (the digest after the firmware pages).
    pub(crate) fn new(seed: [u8; 48]) -> Self {
        Gctx { ld: seed }
    }

    /// LD' = SHA-384(PAGE_INFO): LD ‖ contents ‖ len 0x70 ‖ type ‖ is_imi 0 ‖ vmpl3..1 perms 0
    /// ‖ reserved 0 ‖ gpa.
    fn update(&mut self, page_type: PageType, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.ld);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type as u8;
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.ld = sha384(&info);
    }

    /// Measured pages with contents. `data` is whole pages (callers check); a partial tail
    /// would be a caller bug and is not measured.
    pub(crate) fn normal_pages(&mut self, gpa: u64, data: &[u8]) {
        debug_assert_eq!(data.len() % PAGE, 0);
        for (i, page) in data.chunks_exact(PAGE).enumerate() {
            self.update(PageType::Normal, gpa + (i * PAGE) as u64, &sha384(page));
        }
    }

    /// One VMSA page (a vCPU's initial register state).
    pub(crate) fn vmsa_page(&mut self, page: &[u8; PAGE]) {
        self.update(PageType::Vmsa, VMSA_GPA, &sha384(page));
    }

    /// Zero pages covering `len` bytes (whole pages; callers check).
    pub(crate) fn zero_pages(&mut self, gpa: u64, len: u64) {
        self.each_page(PageType::Zero, gpa, len);
    }

    /// Unmeasured pages covering `len` bytes (whole pages; callers check).
    pub(crate) fn unmeasured_pages(&mut self, gpa: u64, len: u64) {
        self.each_page(PageType::Unmeasured, gpa, len);
    }

    fn each_page(&mut self, page_type: PageType, gpa: u64, len: u64) {
        let mut off = 0;
        while off < len {
            self.update(page_type, gpa + off, &ZEROS);
            off += PAGE as u64;
        }
    }

    /// The secrets page.
    pub(crate) fn secrets_page(&mut self, gpa: u64) {
        self.update(PageType::Secrets, gpa, &ZEROS);
    }

    /// The CPUID page.
    pub(crate) fn cpuid_page(&mut self, gpa: u64) {
        self.update(PageType::Cpuid, gpa, &ZEROS);
    }

    /// The digest so far.
    pub(crate) fn digest(&self) -> Measurement {
        Measurement(self.ld)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_info_layout_matches_the_spec() {
        // One zero page at GPA 0x1000 from a zero seed, hashed by hand.
        let mut info = [0u8; 0x70];
        info[96] = 0x70;
        info[98] = 3;
        info[105] = 0x10;
        let mut g = Gctx::new([0; 48]);
        g.zero_pages(0x1000, PAGE as u64);
        assert_eq!(g.digest().0, sha384(&info));
    }

    #[test]
    fn zero_length_ranges_measure_nothing() {
        let mut g = Gctx::new([7; 48]);
        g.zero_pages(0x1000, 0);
        g.normal_pages(0x1000, &[]);
        assert_eq!(g.digest().0, [7; 48]);
    }
}
