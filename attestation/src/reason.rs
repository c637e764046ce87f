//! Why an appraisal rejected evidence. Every check runs; every failure is kept, named, with the
//! values that failed it.

use std::fmt;

use serde::Serialize;

use crate::snp::certs::CertRole;
use crate::snp::report::TcbComponent;
use crate::types::{HostData, Measurement, ReportData, UnixTime};

/// Which of the report's TCB fields a floor was checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TcbField {
    /// REPORTED_TCB (the VCEK's TCB).
    Reported,
    /// COMMITTED_TCB (the firmware cannot roll back below it).
    Committed,
    /// CURRENT_TCB.
    Current,
    /// LAUNCH_TCB.
    Launch,
}

impl fmt::Display for TcbField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcbField::Reported => "reported",
            TcbField::Committed => "committed",
            TcbField::Current => "current",
            TcbField::Launch => "launch",
        })
    }
}

/// One reason for rejection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    // ---- authenticity: certificates, signatures, collateral ----
    /// A certificate the chain needs was not given.
    #[error("no {role} certificate was given (pass it with --certs)")]
    CertificateMissing {
        /// The missing role.
        role: CertRole,
    },
    /// A given certificate could not be used.
    #[error("the {role} certificate is unusable: {detail}")]
    CertificateUnusable {
        /// Its role.
        role: CertRole,
        /// What was wrong.
        detail: String,
    },
    /// A given ARK is not the AMD root built into the verifier.
    #[error("the given ARK is not AMD's {product} root key")]
    ArkNotTrusted {
        /// Product whose root it was compared with.
        product: String,
    },
    /// The chain from the root to the endorsement key does not verify.
    #[error("certificate chain does not verify: {detail}")]
    ChainInvalid {
        /// Which link failed.
        detail: String,
    },
    /// A certificate is not valid yet at `now`.
    #[error("the {role} certificate is not valid until {not_before:?} (now {now:?})")]
    CertificateNotYetValid {
        /// Its role.
        role: CertRole,
        /// Start of validity.
        not_before: UnixTime,
        /// The appraisal time.
        now: UnixTime,
    },
    /// A certificate has expired at `now`.
    #[error("the {role} certificate expired at {not_after:?} (now {now:?})")]
    CertificateExpired {
        /// Its role.
        role: CertRole,
        /// End of validity.
        not_after: UnixTime,
        /// The appraisal time.
        now: UnixTime,
    },
    /// The report's signature does not verify with the endorsement key.
    #[error("report signature does not verify with the {role} key")]
    ReportSignatureInvalid {
        /// The key used.
        role: CertRole,
    },
    /// KEY_INFO names a different key type than the certificate given.
    #[error("report says it was signed by {report}, but the certificate given is a {cert}")]
    SigningKeyMismatch {
        /// What the report says.
        report: String,
        /// What the certificate is.
        cert: CertRole,
    },
    /// A VCEK/VLEK TCB extension differs from REPORTED_TCB.
    #[error(
        "{role} certificate is for {component} SPL {cert}, but the report's reported_tcb has {report}"
    )]
    CertificateTcbMismatch {
        /// The key's role.
        role: CertRole,
        /// Which component.
        component: TcbComponent,
        /// Value in the certificate.
        cert: u8,
        /// Value in the report.
        report: u8,
    },
    /// A VCEK TCB extension is missing.
    #[error("{role} certificate has no {component} SPL extension")]
    CertificateTcbMissing {
        /// The key's role.
        role: CertRole,
        /// Which component.
        component: TcbComponent,
    },
    /// The VCEK's hwID is not the report's CHIP_ID.
    #[error("VCEK hwID {cert} does not match the report's chip_id {report}")]
    ChipIdMismatch {
        /// hwID in hex.
        cert: String,
        /// chip_id in hex.
        report: String,
    },
    /// TDX quote verification (dcap-qvl) failed.
    #[error("TDX quote verification failed: {detail}")]
    QuoteInvalid {
        /// dcap-qvl's message.
        detail: String,
    },
    /// No TDX collateral was given.
    #[error("no TDX collateral was given (pass QuoteCollateralV3 JSON with --collateral)")]
    CollateralMissing,

    // ---- encoding: one piece of evidence has one encoding (see `crate::canonical`) ----
    /// A reserved field of the SEV-SNP report (or of its signature) is not zero.
    #[error("SEV-SNP report bytes {field} are reserved and must be zero; byte {offset:#x} is not")]
    ReservedNotZero {
        /// Which reserved range (offsets and the field it follows).
        field: String,
        /// Offset of its first nonzero byte.
        offset: u32,
    },
    /// The upper bytes of a zero-padded signature component are not zero.
    #[error("{component} has nonzero padding: only its low 48 bytes may be set")]
    SignaturePaddingNotZero {
        /// Which component.
        component: String,
    },
    /// An ECDSA signature whose `s` is in the upper half, where only low-s is canonical
    /// (sim evidence; hardware signatures are normalised instead).
    #[error("the {signature} signature is not in low-s form (s > n/2)")]
    SignatureNotLowS {
        /// Which signature.
        signature: String,
    },
    /// Bytes after the end of a structure that declares its own length (only zero padding
    /// after a TDX quote is tolerated, and dropped from the canonical form).
    #[error("{extra} unexpected bytes after {after}")]
    TrailingBytes {
        /// What they follow.
        after: String,
        /// How many.
        extra: usize,
    },
    /// The TDX certification data is not an Intel PCK chain in canonical form.
    #[error("TDX certification data is not canonical: {detail}")]
    CertificationDataNotCanonical {
        /// What is wrong.
        detail: String,
    },
    /// The evidence's structure has no canonical encoding.
    #[error("evidence encoding is not canonical: {detail}")]
    EncodingNotCanonical {
        /// What is wrong.
        detail: String,
    },

    // ---- policy ----
    /// Sim evidence under a policy that does not allow it.
    #[error("evidence is from the sim backend (no hardware); the policy does not allow sim")]
    SimNotAllowed,
    /// SNP guest policy allows debugging, or a TDX TD is debuggable.
    #[error("guest is debuggable: the host can read and write its memory")]
    DebugGuest,
    /// TDX TD profiling/tracing (TUD bits 6:4).
    #[error("TD has profiling or tracing enabled (TD_ATTRIBUTES TUD bits {tud:#04x})")]
    TdProfiling {
        /// The TUD byte.
        tud: u8,
    },
    /// The report came from a VMPL above the allowed maximum.
    #[error("report was requested at VMPL {vmpl}; the policy allows at most VMPL {max}")]
    VmplTooHigh {
        /// VMPL in the report.
        vmpl: u32,
        /// Policy maximum.
        max: u32,
    },
    /// The guest may be migrated (SNP MIGRATE_MA, TDX MIGRATABLE).
    #[error("guest may be migrated (SNP MIGRATE_MA / TDX MIGRATABLE)")]
    MigratableGuest,
    /// A TDX TD bound to service TDs.
    #[error("TD is bound to a service TD (MR_SERVICETD {mr_service_td} / SERVTD_EXT)")]
    ServiceTd {
        /// MR_SERVICETD in hex.
        mr_service_td: String,
    },
    /// TDX SEPT_VE_DISABLE is not set.
    #[error("TD does not set SEPT_VE_DISABLE (the host can inject #VE on EPT violations)")]
    SeptVeNotDisabled,
    /// TD_ATTRIBUTES has bits set that no known feature owns.
    #[error("TD_ATTRIBUTES {attributes:#018x} sets reserved bits")]
    TdReservedAttributes {
        /// The attribute word.
        attributes: u64,
    },
    /// A TCB component is below the policy floor.
    #[error("{field} TCB {component} is {got}, below the minimum {min}")]
    TcbBelowMinimum {
        /// Which TCB field.
        field: TcbField,
        /// Which component.
        component: TcbComponent,
        /// Value in the report.
        got: u8,
        /// Policy floor.
        min: u8,
    },
    /// GUEST_SVN below the floor.
    #[error("guest SVN {got} is below the minimum {min}")]
    GuestSvnBelowMinimum {
        /// Value in the report.
        got: u32,
        /// Policy floor.
        min: u32,
    },
    /// The measurement (SNP MEASUREMENT / TDX MRTD) is not allowlisted.
    #[error("measurement {got} is not in the policy's allowlist")]
    MeasurementNotAllowed {
        /// The measurement.
        got: Measurement,
    },
    /// A TDX RTMR is not allowlisted.
    #[error("RTMR{index} {got} is not in the policy's allowlist")]
    RtmrNotAllowed {
        /// 0..=3.
        index: u8,
        /// The value.
        got: Measurement,
    },
    /// TDX MRCONFIGID differs from the policy's.
    #[error("MRCONFIGID {got} differs from the expected {expected}")]
    MrConfigIdMismatch {
        /// Expected.
        expected: Measurement,
        /// In the quote.
        got: Measurement,
    },
    /// REPORT_DATA differs from the expected value.
    #[error("report_data {got} differs from the expected {expected}")]
    ReportDataMismatch {
        /// Expected.
        expected: ReportData,
        /// In the evidence.
        got: ReportData,
    },
    /// SNP HOST_DATA differs from the expected value.
    #[error("host_data {got} differs from the expected {expected}")]
    HostDataMismatch {
        /// Expected.
        expected: HostData,
        /// In the report.
        got: HostData,
    },
    /// TDX TCB status not in the allowlist.
    #[error("TDX TCB status {status} is not allowed (allowed: {allowed})")]
    TcbStatusNotAllowed {
        /// Status from the collateral.
        status: String,
        /// The allowlist, comma-separated.
        allowed: String,
    },
    /// A TDX advisory not in the allowlist.
    #[error("TDX platform is affected by advisory {id}, which the policy does not allow")]
    AdvisoryNotAllowed {
        /// Advisory id, e.g. INTEL-SA-00837.
        id: String,
    },
}
