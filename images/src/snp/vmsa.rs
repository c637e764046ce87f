//! The initial VMSA page of each vCPU, which SNP measures: the register state at reset as the
//! VMM sets it. Field offsets are those of the SEV-ES save area (AMD APM vol. 2 table B-4;
//! Linux `struct sev_es_save_area`); the values follow sev-snp-measure 0.0.13 `vmsa.py` per
//! VMM type. Where the `sev` crate differs (it puts 0 in RDX for EC2, sev-snp-measure 0x600)
//! we follow sev-snp-measure, the reference the cross-check runs against.

use std::fmt;
use std::str::FromStr;

use super::gctx::PAGE;
use crate::MeasureError;

/// Where the bootstrap processor starts.
pub const BSP_EIP: u32 = 0xFFFF_FFF0;

/// The hypervisor that builds the VMSAs; each sets a few registers differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VmmType {
    /// QEMU/KVM (what Conclave launches).
    #[default]
    Qemu,
    /// AWS EC2.
    Ec2,
    /// Google Compute Engine.
    Gce,
}

impl FromStr for VmmType {
    type Err = MeasureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "qemu" => Ok(VmmType::Qemu),
            "ec2" => Ok(VmmType::Ec2),
            "gce" => Ok(VmmType::Gce),
            _ => Err(MeasureError::UnknownVmmType {
                name: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for VmmType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmmType::Qemu => "qemu",
            VmmType::Ec2 => "ec2",
            VmmType::Gce => "gce",
        })
    }
}

/// The CPUID signature (Fn0000_0001_EAX) QEMU puts in RDX at reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSignature(pub u32);

/// QEMU's EPYC models (`builtin_x86_defs`) and their family/model/stepping, as
/// sev-snp-measure lists them, plus the Turin versions the `sev` crate knows.
const QEMU_EPYC_MODELS: [(&str, u32, u32, u32); 18] = [
    ("EPYC", 23, 1, 2),
    ("EPYC-v1", 23, 1, 2),
    ("EPYC-v2", 23, 1, 2),
    ("EPYC-IBPB", 23, 1, 2),
    ("EPYC-v3", 23, 1, 2),
    ("EPYC-v4", 23, 1, 2),
    ("EPYC-Rome", 23, 49, 0),
    ("EPYC-Rome-v1", 23, 49, 0),
    ("EPYC-Rome-v2", 23, 49, 0),
    ("EPYC-Rome-v3", 23, 49, 0),
    ("EPYC-Milan", 25, 1, 1),
    ("EPYC-Milan-v1", 25, 1, 1),
    ("EPYC-Milan-v2", 25, 1, 1),
    ("EPYC-Genoa", 25, 17, 0),
    ("EPYC-Genoa-v1", 25, 17, 0),
    ("EPYC-Turin", 26, 0, 0),
    ("EPYC-Turin-v1", 26, 0, 0),
    ("EPYC-Turin-v2", 26, 0, 0),
];

impl CpuSignature {
    /// From family, model and stepping (AMD CPUID spec #25481, Fn0000_0001_EAX).
    pub fn from_fms(family: u32, model: u32, stepping: u32) -> Self {
        let (family_low, family_high) = if family > 0xf {
            (0xf, (family - 0xf) & 0xff)
        } else {
            (family, 0)
        };
        CpuSignature(
            (family_high << 20)
                | (((model >> 4) & 0xf) << 16)
                | (family_low << 8)
                | ((model & 0xf) << 4)
                | (stepping & 0xf),
        )
    }

    /// From a QEMU `-cpu` model name such as `EPYC-v4` (case-insensitive).
    pub fn from_qemu_model(name: &str) -> Result<Self, MeasureError> {
        QEMU_EPYC_MODELS
            .iter()
            .find(|(n, ..)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f, m, s)| Self::from_fms(f, m, s))
            .ok_or_else(|| MeasureError::UnknownVcpuType {
                name: name.to_string(),
                known: QEMU_EPYC_MODELS
                    .iter()
                    .map(|(n, ..)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl fmt::Display for CpuSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// The VMSA SEV_FEATURES word the host KVM enables: bit 0 SNPActive, 5 DebugSwap, 14
/// VmsaRegProt, ... 0x1 on kernels that do not enable DebugSwap by default, 0x21 where they
/// do. A wrong value is the classic cause of a measurement mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFeatures(pub u64);

impl Default for GuestFeatures {
    /// SNPActive only: sev-snp-measure's default, and what dstack launches with.
    fn default() -> Self {
        GuestFeatures(0x1)
    }
}

impl fmt::Display for GuestFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

fn put(page: &mut [u8; PAGE], off: usize, bytes: &[u8]) {
    page[off..off + bytes.len()].copy_from_slice(bytes);
}

/// A VMCB segment: selector u16, attrib u16, limit u32, base u64.
fn seg(page: &mut [u8; PAGE], off: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
    put(page, off, &selector.to_le_bytes());
    put(page, off + 2, &attrib.to_le_bytes());
    put(page, off + 4, &limit.to_le_bytes());
    put(page, off + 8, &base.to_le_bytes());
}

/// The save area of a vCPU starting at `eip`.
pub(crate) fn vmsa_page(
    eip: u32,
    sig: CpuSignature,
    features: GuestFeatures,
    vmm: VmmType,
) -> [u8; PAGE] {
    const PAT: u64 = 0x0007_0406_0007_0406; // AMD APM vol. 2 §A.3
    // (cs attrib, ss attrib, tr attrib, rdx, mxcsr, x87 fcw, g_pat)
    let (cs, ss, tr, rdx, mxcsr, fcw, g_pat): (u16, u16, u16, u64, u32, u16, u64) = match vmm {
        VmmType::Qemu => (0x9b, 0x93, 0x8b, u64::from(sig.0), 0x1f80, 0x37f, PAT),
        VmmType::Ec2 => {
            let cs = if eip == BSP_EIP { 0x9a } else { 0x9b };
            (cs, 0x92, 0x83, 0x600, 0, 0, PAT)
        }
        // The GCE hypervisor overwrites the default PAT.
        VmmType::Gce => (0x9b, 0x93, 0x8b, 0x600, 0, 0, 0x0007_0106),
    };
    let eip = u64::from(eip);
    let mut p = [0u8; PAGE];
    seg(&mut p, 0x00, 0, 0x93, 0xffff, 0); // es
    seg(&mut p, 0x10, 0xf000, cs, 0xffff, eip & 0xffff_0000); // cs
    seg(&mut p, 0x20, 0, ss, 0xffff, 0); // ss
    seg(&mut p, 0x30, 0, 0x93, 0xffff, 0); // ds
    seg(&mut p, 0x40, 0, 0x93, 0xffff, 0); // fs
    seg(&mut p, 0x50, 0, 0x93, 0xffff, 0); // gs
    seg(&mut p, 0x60, 0, 0, 0xffff, 0); // gdtr
    seg(&mut p, 0x70, 0, 0x82, 0xffff, 0); // ldtr
    seg(&mut p, 0x80, 0, 0, 0xffff, 0); // idtr
    seg(&mut p, 0x90, 0, tr, 0xffff, 0); // tr
    put(&mut p, 0xd0, &0x1000u64.to_le_bytes()); // efer: KVM sets SVME
    put(&mut p, 0x148, &0x40u64.to_le_bytes()); // cr4: KVM sets MCE
    put(&mut p, 0x158, &0x10u64.to_le_bytes()); // cr0
    put(&mut p, 0x160, &0x400u64.to_le_bytes()); // dr7
    put(&mut p, 0x168, &0xffff_0ff0u64.to_le_bytes()); // dr6
    put(&mut p, 0x170, &0x2u64.to_le_bytes()); // rflags
    put(&mut p, 0x178, &(eip & 0xffff).to_le_bytes()); // rip
    put(&mut p, 0x268, &g_pat.to_le_bytes()); // g_pat
    put(&mut p, 0x310, &rdx.to_le_bytes()); // rdx
    put(&mut p, 0x3b0, &features.0.to_le_bytes()); // sev_features
    put(&mut p, 0x3e8, &0x1u64.to_le_bytes()); // xcr0
    put(&mut p, 0x408, &mxcsr.to_le_bytes()); // mxcsr
    put(&mut p, 0x410, &fcw.to_le_bytes()); // x87_fcw
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epyc_v4_is_family_23_model_1_stepping_2() {
        assert_eq!(
            CpuSignature::from_qemu_model("epyc-V4").unwrap(),
            CpuSignature(0x0080_0f12)
        );
        assert_eq!(
            CpuSignature::from_qemu_model("EPYC-Genoa").unwrap(),
            CpuSignature(0x00a1_0f10)
        );
        let err = CpuSignature::from_qemu_model("Skylake").unwrap_err();
        assert!(err.to_string().contains("EPYC-v4"), "{err}");
    }

    #[test]
    fn vmm_names_parse_and_print() {
        for v in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
            assert_eq!(v.to_string().parse::<VmmType>().unwrap(), v);
        }
        assert!("QEMU".parse::<VmmType>().is_ok());
        assert!("kvmtool".parse::<VmmType>().is_err());
    }

    #[test]
    fn qemu_bsp_page_carries_the_reset_state() {
        let p = vmsa_page(
            BSP_EIP,
            CpuSignature(0x800f12),
            GuestFeatures(0x21),
            VmmType::Qemu,
        );
        assert_eq!(&p[0x18..0x20], &0xffff_0000u64.to_le_bytes()); // cs.base
        assert_eq!(&p[0x178..0x180], &0xfff0u64.to_le_bytes()); // rip
        assert_eq!(&p[0x310..0x318], &0x800f12u64.to_le_bytes()); // rdx
        assert_eq!(&p[0x3b0..0x3b8], &0x21u64.to_le_bytes()); // sev_features
    }
}
