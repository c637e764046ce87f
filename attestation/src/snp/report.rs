//! The SEV-SNP ATTESTATION_REPORT (SEV-SNP ABI spec, table "ATTESTATION_REPORT Structure"):
//! 1184 bytes, little-endian, signed over bytes 0x000..0x2A0 with ECDSA P-384 / SHA-384.
//!
//! We parse it ourselves rather than through `sev::firmware::guest::AttestationReport` because
//! (a) that parser refuses v2 reports whose chip_id is masked, and (b) its `verify` re-serialises
//! the struct before hashing; we keep and hash the raw bytes.

use std::fmt;

use serde::Serialize;

use crate::types::{HostData, Measurement, ReportData};

/// Size of a report in bytes.
pub const REPORT_LEN: usize = 0x4A0;
/// End (exclusive) of the signed region.
pub const SIGNED_LEN: usize = 0x2A0;

/// Why report bytes could not be read as a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Not 1184 bytes.
    #[error("an SEV-SNP report is {REPORT_LEN} bytes, got {len}")]
    WrongLength {
        /// Bytes given.
        len: usize,
    },
    /// Versions 0 and 1 never shipped; versions above 5 have an unknown layout.
    #[error("unsupported SEV-SNP report version {version} (2, 3, 4 and 5 are known)")]
    UnsupportedVersion {
        /// Version field.
        version: u32,
    },
    /// Only ECDSA P-384 with SHA-384 (1) is defined.
    #[error("unsupported report signature algorithm {algo} (1 = ECDSA P-384/SHA-384)")]
    UnsupportedSignatureAlgorithm {
        /// SIGNATURE_ALGO field.
        algo: u32,
    },
}

/// The AMD product line a report came from, which decides the TCB_VERSION byte layout and
/// which AMD root signs its VCEK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Generation {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004.
    Genoa,
    /// EPYC 9005 (TCB_VERSION gains an FMC byte).
    Turin,
    /// A v2 report with a masked chip_id, or a CPUID we do not know: the TCB layout of
    /// Milan/Genoa is assumed and every AMD root is tried.
    Unknown,
}

impl Generation {
    fn from_cpuid(family: u8, model: u8) -> Self {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Generation::Milan,
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Generation::Genoa,
            (0x1A, _) => Generation::Turin,
            _ => Generation::Unknown,
        }
    }

    /// Name as AMD's KDS and the VCEK productName extension spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Generation::Milan => "Milan",
            Generation::Genoa => "Genoa",
            Generation::Turin => "Turin",
            Generation::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A TCB_VERSION: security patch levels of the firmware components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TcbVersion {
    /// Firmware for Turin and later; absent before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
    /// PSP bootloader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decodes the 8 raw bytes with the layout of `generation`.
    pub fn decode(bytes: [u8; 8], generation: Generation) -> Self {
        match generation {
            Generation::Turin => TcbVersion {
                fmc: Some(bytes[0]),
                bootloader: bytes[1],
                tee: bytes[2],
                snp: bytes[3],
                microcode: bytes[7],
            },
            _ => TcbVersion {
                fmc: None,
                bootloader: bytes[0],
                tee: bytes[1],
                snp: bytes[6],
                microcode: bytes[7],
            },
        }
    }

    /// Encodes with the layout of `generation` (the inverse of [`TcbVersion::decode`]).
    pub fn encode(&self, generation: Generation) -> [u8; 8] {
        match generation {
            Generation::Turin => [
                self.fmc.unwrap_or(0),
                self.bootloader,
                self.tee,
                self.snp,
                0,
                0,
                0,
                self.microcode,
            ],
            _ => [
                self.bootloader,
                self.tee,
                0,
                0,
                0,
                0,
                self.snp,
                self.microcode,
            ],
        }
    }

    /// The components as (name, value) pairs, in the order AMD lists them.
    pub fn components(&self) -> Vec<(TcbComponent, u8)> {
        let mut v = Vec::with_capacity(5);
        if let Some(fmc) = self.fmc {
            v.push((TcbComponent::Fmc, fmc));
        }
        v.push((TcbComponent::Bootloader, self.bootloader));
        v.push((TcbComponent::Tee, self.tee));
        v.push((TcbComponent::Snp, self.snp));
        v.push((TcbComponent::Microcode, self.microcode));
        v
    }
}

impl fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc={fmc} ")?;
        }
        write!(
            f,
            "bootloader={} tee={} snp={} microcode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// One component of a TCB_VERSION.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcbComponent {
    /// FMC (Turin+).
    Fmc,
    /// PSP bootloader.
    Bootloader,
    /// PSP OS.
    Tee,
    /// SNP firmware.
    Snp,
    /// CPU microcode.
    Microcode,
}

impl TcbComponent {
    /// Lower-case name, as used in policies and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            TcbComponent::Fmc => "fmc",
            TcbComponent::Bootloader => "bootloader",
            TcbComponent::Tee => "tee",
            TcbComponent::Snp => "snp",
            TcbComponent::Microcode => "microcode",
        }
    }

    /// Parses a component name (`fmc`, `bootloader`/`bl`, `tee`, `snp`, `microcode`/`ucode`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "fmc" => TcbComponent::Fmc,
            "bootloader" | "bl" => TcbComponent::Bootloader,
            "tee" => TcbComponent::Tee,
            "snp" => TcbComponent::Snp,
            "microcode" | "ucode" => TcbComponent::Microcode,
            _ => return None,
        })
    }
}

impl fmt::Display for TcbComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The guest policy word (POLICY, offset 0x008).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// Bit 16: SMT allowed.
    pub fn smt_allowed(&self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// Bit 18: association with a migration agent allowed.
    pub fn migrate_ma_allowed(&self) -> bool {
        self.0 & (1 << 18) != 0
    }
    /// Bit 19: the hypervisor may debug the guest (read and write its memory).
    pub fn debug_allowed(&self) -> bool {
        self.0 & (1 << 19) != 0
    }
    /// Bit 20: guest may run on one socket only.
    pub fn single_socket(&self) -> bool {
        self.0 & (1 << 20) != 0
    }
    /// Minimum firmware ABI major (bits 15:8).
    pub fn abi_major(&self) -> u8 {
        (self.0 >> 8) as u8
    }
    /// Minimum firmware ABI minor (bits 7:0).
    pub fn abi_minor(&self) -> u8 {
        self.0 as u8
    }
}

/// Which key signed the report (KEY_INFO bits 4:2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key (per chip, per TCB).
    Vcek,
    /// Versioned Loaded Endorsement Key (per cloud provider).
    Vlek,
    /// No key: the report is unsigned.
    None,
    /// A reserved value.
    Reserved(u8),
}

/// A parsed SEV-SNP report. The raw bytes are kept: the signature is checked over them.
#[derive(Clone)]
pub struct SnpReport {
    raw: Box<[u8; REPORT_LEN]>,
    /// VERSION.
    pub version: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// POLICY.
    pub policy: GuestPolicy,
    /// FAMILY_ID (from the ID block).
    pub family_id: [u8; 16],
    /// IMAGE_ID (from the ID block).
    pub image_id: [u8; 16],
    /// VMPL that requested the report.
    pub vmpl: u32,
    /// Product line (from CPUID for v3+, assumed for v2).
    pub generation: Generation,
    /// CURRENT_TCB.
    pub current_tcb: TcbVersion,
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// KEY_INFO signing key.
    pub signing_key: SigningKey,
    /// REPORT_DATA, chosen by the guest.
    pub report_data: ReportData,
    /// MEASUREMENT, the launch digest.
    pub measurement: Measurement,
    /// HOST_DATA, chosen by the host at launch.
    pub host_data: HostData,
    /// ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    pub author_key_digest: [u8; 48],
    /// REPORTED_TCB: the TCB the VCEK is derived from.
    pub reported_tcb: TcbVersion,
    /// CPUID family/model/stepping (v3+).
    pub cpuid: Option<(u8, u8, u8)>,
    /// CHIP_ID (all zero when masked).
    pub chip_id: [u8; 64],
    /// COMMITTED_TCB.
    pub committed_tcb: TcbVersion,
    /// LAUNCH_TCB.
    pub launch_tcb: TcbVersion,
    /// CURRENT firmware version (build, minor, major).
    pub current_version: (u8, u8, u8),
}

fn u32_at(b: &[u8; REPORT_LEN], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8; REPORT_LEN], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn arr<const N: usize>(b: &[u8; REPORT_LEN], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

impl SnpReport {
    /// Parses exactly 1184 bytes. Fails only on a wrong length, version or signature
    /// algorithm; every field value is otherwise accepted and judged later by the policy.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReportError> {
        let raw: [u8; REPORT_LEN] = bytes
            .try_into()
            .map_err(|_| ReportError::WrongLength { len: bytes.len() })?;
        let raw = Box::new(raw);
        let version = u32_at(&raw, 0x000);
        if !(2..=5).contains(&version) {
            return Err(ReportError::UnsupportedVersion { version });
        }
        let algo = u32_at(&raw, 0x034);
        if algo != 1 {
            return Err(ReportError::UnsupportedSignatureAlgorithm { algo });
        }
        let cpuid = (version >= 3).then(|| (raw[0x188], raw[0x189], raw[0x18A]));
        let generation = match cpuid {
            Some((fam, model, _)) => Generation::from_cpuid(fam, model),
            None => Generation::Unknown,
        };
        let tcb = |off| TcbVersion::decode(arr::<8>(&raw, off), generation);
        let key_info = u32_at(&raw, 0x048);
        let signing_key = match ((key_info >> 2) & 0x7) as u8 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => SigningKey::Reserved(other),
        };
        Ok(SnpReport {
            version,
            guest_svn: u32_at(&raw, 0x004),
            policy: GuestPolicy(u64_at(&raw, 0x008)),
            family_id: arr(&raw, 0x010),
            image_id: arr(&raw, 0x020),
            vmpl: u32_at(&raw, 0x030),
            generation,
            current_tcb: tcb(0x038),
            platform_info: u64_at(&raw, 0x040),
            signing_key,
            report_data: ReportData(arr(&raw, 0x050)),
            measurement: Measurement(arr(&raw, 0x090)),
            host_data: HostData(arr(&raw, 0x0C0)),
            id_key_digest: arr(&raw, 0x0E0),
            author_key_digest: arr(&raw, 0x110),
            reported_tcb: tcb(0x180),
            cpuid,
            chip_id: arr(&raw, 0x1A0),
            committed_tcb: tcb(0x1E0),
            launch_tcb: tcb(0x1F0),
            current_version: (raw[0x1E8], raw[0x1E9], raw[0x1EA]),
            raw,
        })
    }

    /// The 1184 bytes as given.
    pub fn raw(&self) -> &[u8; REPORT_LEN] {
        &self.raw
    }

    /// The signed region, bytes 0x000..0x2A0.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// The raw reported_tcb bytes (for re-decoding once the product is known).
    pub fn reported_tcb_bytes(&self) -> [u8; 8] {
        arr(&self.raw, 0x180)
    }

    /// Re-decodes the TCB fields for a product learned elsewhere (the VCEK's productName),
    /// used when the report itself cannot tell (v2 reports).
    pub fn assume_generation(&mut self, generation: Generation) {
        if self.generation != Generation::Unknown || generation == Generation::Unknown {
            return;
        }
        self.generation = generation;
        self.current_tcb = TcbVersion::decode(arr(&self.raw, 0x038), generation);
        self.reported_tcb = TcbVersion::decode(arr(&self.raw, 0x180), generation);
        self.committed_tcb = TcbVersion::decode(arr(&self.raw, 0x1E0), generation);
        self.launch_tcb = TcbVersion::decode(arr(&self.raw, 0x1F0), generation);
    }

    /// True when CHIP_ID is all zero (MASK_CHIP_ID set by the guest owner).
    pub fn chip_id_masked(&self) -> bool {
        self.chip_id.iter().all(|&b| b == 0)
    }

    /// The signature as a P-384 ECDSA signature, or `None` when R or S does not fit 48 bytes
    /// (the spec stores them as 72-byte little-endian integers, zero-padded).
    pub fn signature(&self) -> Option<p384::ecdsa::Signature> {
        let r = &self.raw[0x2A0..0x2A0 + 72];
        let s = &self.raw[0x2E8..0x2E8 + 72];
        if r[48..].iter().any(|&b| b != 0) || s[48..].iter().any(|&b| b != 0) {
            return None;
        }
        let mut rb = [0u8; 48];
        let mut sb = [0u8; 48];
        for i in 0..48 {
            rb[i] = r[47 - i];
            sb[i] = s[47 - i];
        }
        p384::ecdsa::Signature::from_scalars(rb, sb).ok()
    }
}

impl fmt::Debug for SnpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnpReport")
            .field("version", &self.version)
            .field("generation", &self.generation)
            .field("policy", &format_args!("{:#x}", self.policy.0))
            .field("vmpl", &self.vmpl)
            .field("measurement", &self.measurement)
            .field("report_data", &self.report_data)
            .field("reported_tcb", &self.reported_tcb)
            .finish_non_exhaustive()
    }
}

/// Writes fields into a report buffer; used by the sim attester to produce evidence in the real
/// format, and by tests to build reports with chosen fields.
#[derive(Clone, Debug)]
pub struct ReportBuilder {
    raw: Box<[u8; REPORT_LEN]>,
}

impl ReportBuilder {
    /// A v3 Milan-shaped report: policy 0x30000 (SMT, reserved bit, debug off), VMPL 0,
    /// ECDSA P-384 signature algorithm, VCEK signing key, no migration agent.
    pub fn new() -> Self {
        let mut raw = Box::new([0u8; REPORT_LEN]);
        raw[0x000..0x004].copy_from_slice(&3u32.to_le_bytes());
        raw[0x008..0x010].copy_from_slice(&0x30000u64.to_le_bytes());
        raw[0x034..0x038].copy_from_slice(&1u32.to_le_bytes());
        raw[0x160..0x180].fill(0xFF);
        raw[0x188] = 0x19;
        raw[0x189] = 0x01;
        raw[0x18A] = 0x01;
        ReportBuilder { raw }
    }

    /// Sets POLICY.
    pub fn policy(mut self, policy: u64) -> Self {
        self.raw[0x008..0x010].copy_from_slice(&policy.to_le_bytes());
        self
    }
    /// Sets VMPL.
    pub fn vmpl(mut self, vmpl: u32) -> Self {
        self.raw[0x030..0x034].copy_from_slice(&vmpl.to_le_bytes());
        self
    }
    /// Sets FAMILY_ID.
    pub fn family_id(mut self, id: [u8; 16]) -> Self {
        self.raw[0x010..0x020].copy_from_slice(&id);
        self
    }
    /// Sets REPORT_DATA.
    pub fn report_data(mut self, data: &ReportData) -> Self {
        self.raw[0x050..0x090].copy_from_slice(&data.0);
        self
    }
    /// Sets MEASUREMENT.
    pub fn measurement(mut self, m: &Measurement) -> Self {
        self.raw[0x090..0x0C0].copy_from_slice(&m.0);
        self
    }
    /// Sets HOST_DATA.
    pub fn host_data(mut self, h: &HostData) -> Self {
        self.raw[0x0C0..0x0E0].copy_from_slice(&h.0);
        self
    }
    /// Sets CHIP_ID.
    pub fn chip_id(mut self, id: &[u8; 64]) -> Self {
        self.raw[0x1A0..0x1E0].copy_from_slice(id);
        self
    }
    /// Sets current, reported, committed and launch TCB to one value (Milan layout).
    pub fn tcb(mut self, tcb: &TcbVersion) -> Self {
        let bytes = tcb.encode(Generation::Milan);
        for off in [0x038, 0x180, 0x1E0, 0x1F0] {
            self.raw[off..off + 8].copy_from_slice(&bytes);
        }
        self
    }
    /// Sets REPORT_ID.
    pub fn report_id(mut self, id: [u8; 32]) -> Self {
        self.raw[0x140..0x160].copy_from_slice(&id);
        self
    }

    /// Signs bytes 0x000..0x2A0 with `key` and writes R and S little-endian, S in low-s form
    /// (the one canonical form: sim evidence with a high S is refused).
    pub fn sign(mut self, key: &p384::ecdsa::SigningKey) -> [u8; REPORT_LEN] {
        use p384::ecdsa::signature::Signer;
        let sig: p384::ecdsa::Signature = key.sign(&self.raw[..SIGNED_LEN]);
        let sig = sig.normalize_s().unwrap_or(sig);
        let (r, s) = sig.split_bytes();
        for i in 0..48 {
            self.raw[0x2A0 + i] = r[47 - i];
            self.raw[0x2E8 + i] = s[47 - i];
        }
        *self.raw
    }
}

impl Default for ReportBuilder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_length_is_named() {
        assert_eq!(
            SnpReport::parse(&[0u8; 100]).unwrap_err(),
            ReportError::WrongLength { len: 100 }
        );
    }

    #[test]
    fn version_one_is_refused() {
        let mut raw = *ReportBuilder::new().raw;
        raw[0] = 1;
        assert_eq!(
            SnpReport::parse(&raw).unwrap_err(),
            ReportError::UnsupportedVersion { version: 1 }
        );
    }

    #[test]
    fn tcb_layouts_round_trip() {
        let t = TcbVersion {
            fmc: Some(1),
            bootloader: 2,
            tee: 3,
            snp: 4,
            microcode: 5,
        };
        assert_eq!(
            TcbVersion::decode(t.encode(Generation::Turin), Generation::Turin),
            t
        );
        let m = TcbVersion { fmc: None, ..t };
        assert_eq!(
            TcbVersion::decode(m.encode(Generation::Milan), Generation::Milan),
            m
        );
    }
}
