//! Why a measurement could not be computed. Every variant names what was wrong with the input
//! and carries the offending values.

use conclave_attestation::tdx::QuoteError;

/// Why launch inputs, firmware or an event log are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeasureError {
    // ---- OVMF firmware ----
    /// The firmware image is larger than we accept.
    #[error("OVMF image is {len} bytes, more than the {max} accepted")]
    OvmfTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The firmware is measured page by page, so it must be whole 4 KiB pages.
    #[error("OVMF image is {len} bytes, not a whole number of 4 KiB pages")]
    OvmfNotPageAligned {
        /// Its length.
        len: usize,
    },
    /// No OVMF footer table where OVMF puts it (32 bytes before the end).
    #[error(
        "OVMF image has no footer table (GUID 96b582de-1fb2-45f7-baea-a366c55a082d) 32 bytes \
         before its end: not an SEV-capable OVMF build"
    )]
    NoFooterTable,
    /// The footer table's sizes do not fit the image.
    #[error("OVMF footer table is malformed: {detail}")]
    BadFooterTable {
        /// What does not fit.
        detail: String,
    },
    /// A footer-table entry the measurement needs is absent.
    #[error("OVMF footer table has no {name} entry (GUID {guid})")]
    MissingTableEntry {
        /// The entry's name in OVMF's sources.
        name: &'static str,
        /// Its GUID.
        guid: &'static str,
    },
    /// The "ASEV" SEV metadata block is malformed.
    #[error("OVMF SEV metadata is malformed: {detail}")]
    BadMetadata {
        /// What is wrong.
        detail: String,
    },
    /// A metadata section type this code (and QEMU) does not know.
    #[error(
        "unknown OVMF SEV metadata section type {value:#x} (known: 1 SNP_SEC_MEM, 2 SNP_SECRETS, \
         3 CPUID, 4 SVSM_CAA, 0x10 SNP_KERNEL_HASHES)"
    )]
    UnknownSectionType {
        /// The type number.
        value: u32,
    },
    /// More metadata sections than any OVMF has.
    #[error("{count} OVMF metadata sections, more than the {max} accepted")]
    TooManySections {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A section measured page by page whose size is not whole pages.
    #[error("OVMF metadata section {kind} at {gpa:#x} is {size:#x} bytes, not whole 4 KiB pages")]
    SectionNotPageAligned {
        /// The section's type name.
        kind: &'static str,
        /// Its guest physical address.
        gpa: u32,
        /// Its size.
        size: u32,
    },
    /// The sections add up to more pages than we are willing to hash.
    #[error("OVMF metadata sections cover {pages} pages, more than the {max} accepted")]
    TooManyPages {
        /// Pages asked for.
        pages: u64,
        /// The limit.
        max: u64,
    },

    // ---- launch parameters ----
    /// A kernel was given but the firmware cannot measure one.
    #[error(
        "a kernel was given but the OVMF metadata has no SNP_KERNEL_HASHES section: this OVMF \
         cannot measure a kernel (use an OvmfPkg/AmdSev/AmdSevX64.dsc build)"
    )]
    NoKernelHashesSection,
    /// The kernel-hashes section must be exactly the one page QEMU fills.
    #[error("the SNP_KERNEL_HASHES section is {size:#x} bytes; QEMU fills exactly one 4 KiB page")]
    KernelHashesSectionSize {
        /// Its size.
        size: u32,
    },
    /// A kernel was given but the firmware does not say where the hashes table goes.
    #[error(
        "a kernel was given but the SEV hashes table address is missing or zero (OVMF footer \
         entry SEV_HASH_TABLE_RV_GUID 7255371f-3a3b-4b04-927b-1da6efa8d454)"
    )]
    NoHashesTableAddress,
    /// The hashes table would run past the end of its page.
    #[error("the SEV hashes table at page offset {offset:#x} does not fit in its 4 KiB page")]
    HashesTableOffset {
        /// Offset within the page.
        offset: u64,
    },
    /// vCPU count out of range.
    #[error("vCPU count {vcpus} is out of range 1..={max}")]
    VcpuCount {
        /// The count given.
        vcpus: u32,
        /// The limit.
        max: u32,
    },
    /// Application processors need the firmware's SEV-ES reset address.
    #[error(
        "{vcpus} vCPUs need the SEV-ES AP reset address, which is missing or zero (OVMF footer \
         entry SEV_ES_RESET_BLOCK_GUID 00f771de-1a7e-4fcb-890e-68c77e2fb44e)"
    )]
    NoResetAddress {
        /// The vCPU count.
        vcpus: u32,
    },
    /// A vCPU model name that is not in QEMU's EPYC list.
    #[error("unknown vCPU type {name:?} (known: {known})")]
    UnknownVcpuType {
        /// The name given.
        name: String,
        /// The names accepted.
        known: String,
    },
    /// A VMM name we do not model.
    #[error("unknown VMM type {name:?} (known: qemu, ec2, gce)")]
    UnknownVmmType {
        /// The name given.
        name: String,
    },
    /// A launch-inputs document that does not decode or is inconsistent.
    #[error("launch inputs: {detail}")]
    LaunchInputs {
        /// What is wrong.
        detail: String,
    },
    /// A hex field of the wrong form or length.
    #[error("{field}: {detail}")]
    BadHex {
        /// The field name.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },

    // ---- TDX CCEL event log ----
    /// The log is larger than we accept.
    #[error("CCEL event log is {len} bytes, more than the {max} accepted")]
    CcelTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The log ends inside a structure.
    #[error("CCEL event log is truncated: {what} at byte {offset} runs past its end")]
    CcelTruncated {
        /// Which structure.
        what: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// The first event is not a TCG2 crypto-agile Spec ID event.
    #[error("CCEL event log does not start with a TCG2 \"Spec ID Event03\" header: {detail}")]
    CcelNoSpecId {
        /// What is wrong.
        detail: String,
    },
    /// An event uses an algorithm the header did not declare.
    #[error(
        "CCEL event at byte {offset} has a digest with algorithm {alg:#06x}, not declared in the log header"
    )]
    CcelUnknownAlgorithm {
        /// Where the event starts.
        offset: usize,
        /// TPM_ALG_ID.
        alg: u16,
    },
    /// An event's digest count is outside what the header declared.
    #[error(
        "CCEL event at byte {offset} has {count} digests; the log header declares {declared} algorithms"
    )]
    CcelDigestCount {
        /// Where the event starts.
        offset: usize,
        /// Digests in the event.
        count: u32,
        /// Algorithms in the header.
        declared: usize,
    },
    /// A measured event without a SHA-384 digest, which is what RTMRs extend.
    #[error("CCEL event at byte {offset} has no SHA-384 digest, which TDX RTMRs extend")]
    CcelNoSha384 {
        /// Where the event starts.
        offset: usize,
    },
    /// An MR index beyond RTMR3.
    #[error(
        "CCEL event at byte {offset} names MR index {index}; TDX has MRTD (0) and RTMR0..3 (1..4)"
    )]
    CcelMrIndex {
        /// Where the event starts.
        offset: usize,
        /// The index.
        index: u32,
    },
    /// The quote to compare against does not decode.
    #[error(transparent)]
    Quote(#[from] QuoteError),
}
