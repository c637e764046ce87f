//! SEV-SNP: the launch digest a guest's attestation report carries as MEASUREMENT, computed
//! from what the host launches: the OVMF firmware (or its hash and metadata), the kernel,
//! initrd and command line bound through the SEV hashes table, and one VMSA page per vCPU.
//!
//! The order follows sev-snp-measure 0.0.13 `guest.py::snp_calc_launch_digest` (the Rust port
//! is the `sev` crate's `measurement` module): firmware pages (or the OVMF hash seed), then the
//! metadata sections in metadata order (EC2 moves the CPUID page to the end), then the BSP
//! VMSA and one AP VMSA per further vCPU. HOST_DATA is not part of the digest.

mod gctx;
pub mod hashes;
pub mod inputs;
pub mod ovmf;
pub mod vmsa;

use conclave_attestation::Measurement;

use crate::MeasureError;
use gctx::{Gctx, PAGE};
use hashes::SevHashes;
use ovmf::{MAX_SECTIONS, MetadataSection, Ovmf, SectionKind, ovmf_hash};
use vmsa::{BSP_EIP, CpuSignature, GuestFeatures, VmmType, vmsa_page};

/// The most vCPUs accepted (KVM's x86 limit).
pub const MAX_VCPUS: u32 = 4096;
/// The most metadata pages accepted (1 GiB; OVMF's sections cover well under 1 MiB).
pub const MAX_SECTION_PAGES: u64 = 1 << 18;

/// A GUID's in-memory (little-endian, `EFI_GUID`) byte order.
pub(crate) const fn guid_le(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// What the launch digest needs to know about the firmware. Read from an OVMF image with
/// [`Firmware::from_ovmf`], or given as numbers (dstack's launch inputs carry exactly these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firmware {
    /// The digest after the firmware's own pages ([`ovmf::ovmf_hash`]).
    pub ovmf_hash: Measurement,
    /// The SEV metadata sections, in metadata order.
    pub sections: Vec<MetadataSection>,
    /// Where QEMU writes the kernel hashes table (only its offset in the page matters).
    pub sev_hashes_table_gpa: Option<u64>,
    /// The application processors' reset address.
    pub sev_es_reset_eip: Option<u32>,
}

impl Firmware {
    /// Parses an OVMF image and hashes its pages.
    pub fn from_ovmf(data: &[u8]) -> Result<Self, MeasureError> {
        let ovmf = Ovmf::parse(data)?;
        Ok(Firmware {
            ovmf_hash: ovmf_hash(data)?,
            sections: ovmf.sections().to_vec(),
            sev_hashes_table_gpa: ovmf.sev_hashes_table_gpa()?.map(u64::from),
            sev_es_reset_eip: Some(ovmf.sev_es_reset_eip()?),
        })
    }
}

/// Everything the SNP launch digest depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpLaunch {
    /// The firmware.
    pub firmware: Firmware,
    /// Kernel, initrd and command line digests for a measured direct boot; `None` when QEMU is
    /// given no `-kernel` (the hashes page is then measured as zero pages).
    pub kernel: Option<SevHashes>,
    /// vCPU count.
    pub vcpus: u32,
    /// The vCPU model's CPUID signature (QEMU puts it in RDX; EC2 and GCE do not use it).
    pub vcpu_sig: CpuSignature,
    /// The VMSA SEV_FEATURES the host enables.
    pub guest_features: GuestFeatures,
    /// Which hypervisor builds the VMSAs.
    pub vmm: VmmType,
}

impl SnpLaunch {
    /// The expected MEASUREMENT.
    pub fn launch_digest(&self) -> Result<Measurement, MeasureError> {
        self.check()?;
        let fw = &self.firmware;
        let mut g = Gctx::new(fw.ovmf_hash.0);
        for s in &fw.sections {
            let (gpa, size) = (u64::from(s.gpa), u64::from(s.size));
            match s.kind {
                SectionKind::SnpSecMem if self.vmm == VmmType::Gce => g.unmeasured_pages(gpa, size),
                SectionKind::SnpSecMem | SectionKind::SvsmCaa => g.zero_pages(gpa, size),
                SectionKind::SnpSecrets => g.secrets_page(gpa),
                SectionKind::Cpuid if self.vmm == VmmType::Ec2 => {}
                SectionKind::Cpuid => g.cpuid_page(gpa),
                SectionKind::SnpKernelHashes => match (&self.kernel, fw.sev_hashes_table_gpa) {
                    (Some(h), Some(table)) => g.normal_pages(gpa, &h.page(table & 0xfff)?),
                    (Some(_), None) => return Err(MeasureError::NoHashesTableAddress),
                    (None, _) => g.zero_pages(gpa, size),
                },
            }
        }
        if self.vmm == VmmType::Ec2 {
            for s in fw.sections.iter().filter(|s| s.kind == SectionKind::Cpuid) {
                g.cpuid_page(u64::from(s.gpa));
            }
        }
        g.vmsa_page(&vmsa_page(
            BSP_EIP,
            self.vcpu_sig,
            self.guest_features,
            self.vmm,
        ));
        if self.vcpus > 1 {
            let eip = fw
                .sev_es_reset_eip
                .filter(|&e| e != 0)
                .ok_or(MeasureError::NoResetAddress { vcpus: self.vcpus })?;
            let ap = vmsa_page(eip, self.vcpu_sig, self.guest_features, self.vmm);
            for _ in 1..self.vcpus {
                g.vmsa_page(&ap);
            }
        }
        Ok(g.digest())
    }

    /// Bounds and consistency, before hashing anything.
    fn check(&self) -> Result<(), MeasureError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(MeasureError::VcpuCount {
                vcpus: self.vcpus,
                max: MAX_VCPUS,
            });
        }
        let sections = &self.firmware.sections;
        if sections.len() > MAX_SECTIONS {
            return Err(MeasureError::TooManySections {
                count: sections.len(),
                max: MAX_SECTIONS,
            });
        }
        let mut pages = 0u64;
        for s in sections {
            let ranged = match s.kind {
                SectionKind::SnpSecMem | SectionKind::SvsmCaa => true,
                SectionKind::SnpKernelHashes => self.kernel.is_none(),
                SectionKind::SnpSecrets | SectionKind::Cpuid => false,
            };
            if ranged && !(s.size as usize).is_multiple_of(PAGE) {
                return Err(MeasureError::SectionNotPageAligned {
                    kind: s.kind.name(),
                    gpa: s.gpa,
                    size: s.size,
                });
            }
            if s.kind == SectionKind::SnpKernelHashes
                && self.kernel.is_some()
                && s.size as usize != PAGE
            {
                return Err(MeasureError::KernelHashesSectionSize { size: s.size });
            }
            pages += if ranged {
                u64::from(s.size) / PAGE as u64
            } else {
                1
            };
        }
        if pages > MAX_SECTION_PAGES {
            return Err(MeasureError::TooManyPages {
                pages,
                max: MAX_SECTION_PAGES,
            });
        }
        if self.kernel.is_some() {
            if !sections
                .iter()
                .any(|s| s.kind == SectionKind::SnpKernelHashes)
            {
                return Err(MeasureError::NoKernelHashesSection);
            }
            if self.firmware.sev_hashes_table_gpa.unwrap_or(0) == 0 {
                return Err(MeasureError::NoHashesTableAddress);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> SnpLaunch {
        SnpLaunch {
            firmware: Firmware {
                ovmf_hash: Measurement([0; 48]),
                sections: vec![
                    MetadataSection {
                        gpa: 0x80_0000,
                        size: 0x9000,
                        kind: SectionKind::SnpSecMem,
                    },
                    MetadataSection {
                        gpa: 0x80_9000,
                        size: 0x1000,
                        kind: SectionKind::SnpKernelHashes,
                    },
                ],
                sev_hashes_table_gpa: Some(0x80_9c00),
                sev_es_reset_eip: Some(0x80_b004),
            },
            kernel: Some(SevHashes::from_contents(b"k", b"", "")),
            vcpus: 2,
            vcpu_sig: CpuSignature(0x800f12),
            guest_features: GuestFeatures(1),
            vmm: VmmType::Qemu,
        }
    }

    #[test]
    fn guid_bytes_are_little_endian() {
        assert_eq!(
            guid_le(0x0102_0304, 0x0506, 0x0708, [9, 10, 11, 12, 13, 14, 15, 16]),
            [4, 3, 2, 1, 6, 5, 8, 7, 9, 10, 11, 12, 13, 14, 15, 16]
        );
    }

    #[test]
    fn every_input_changes_the_digest() {
        let base = launch().launch_digest().unwrap();
        let mut l = launch();
        l.vcpus = 3;
        assert_ne!(l.launch_digest().unwrap(), base);
        let mut l = launch();
        l.guest_features = GuestFeatures(0x21);
        assert_ne!(l.launch_digest().unwrap(), base);
        let mut l = launch();
        l.kernel = Some(SevHashes::from_contents(b"k", b"", "quiet"));
        assert_ne!(l.launch_digest().unwrap(), base);
        let mut l = launch();
        l.vmm = VmmType::Gce;
        assert_ne!(l.launch_digest().unwrap(), base);
    }

    #[test]
    fn inconsistent_launches_are_refused_by_name() {
        let mut l = launch();
        l.vcpus = 0;
        assert!(matches!(
            l.launch_digest(),
            Err(MeasureError::VcpuCount { .. })
        ));
        let mut l = launch();
        l.firmware.sev_es_reset_eip = None;
        assert_eq!(
            l.launch_digest(),
            Err(MeasureError::NoResetAddress { vcpus: 2 })
        );
        l.vcpus = 1;
        assert!(
            l.launch_digest().is_ok(),
            "one vCPU needs no AP reset address"
        );
        let mut l = launch();
        l.firmware.sections.pop();
        assert_eq!(l.launch_digest(), Err(MeasureError::NoKernelHashesSection));
        let mut l = launch();
        l.firmware.sev_hashes_table_gpa = None;
        assert_eq!(l.launch_digest(), Err(MeasureError::NoHashesTableAddress));
        let mut l = launch();
        l.firmware.sections[0].size = 0x1234;
        assert!(matches!(
            l.launch_digest(),
            Err(MeasureError::SectionNotPageAligned { .. })
        ));
        let mut l = launch();
        l.firmware.sections[0].size = 0xffff_f000;
        assert!(matches!(
            l.launch_digest(),
            Err(MeasureError::TooManyPages { .. })
        ));
        let mut l = launch();
        l.firmware.sections[1].size = 0x2000;
        assert_eq!(
            l.launch_digest(),
            Err(MeasureError::KernelHashesSectionSize { size: 0x2000 })
        );
    }
}
