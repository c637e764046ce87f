//! # conclave-attestation
//!
//! Everything about evidence, and nothing else: SEV-SNP reports, TDX quotes and the `sim`
//! backend; parsing them; verifying them offline against vendor roots at a given `now`; the
//! appraisal [`Policy`] (measurements, TCB floors, debug / VMPL / migration rules, report_data
//! binding); getting evidence inside a guest ([`attester`]); and the signed [`Envelope`] that
//! binds a payload to an attested enclave key.
//!
//! A piece of evidence is identified by [`Evidence::hash`], taken over its one canonical
//! encoding ([`canonical`]): re-encoding evidence never gives it a second identity, and what
//! cannot be canonicalised is refused by name.
//!
//! This crate does no clock or network reads: callers pass the evidence bytes, certificates,
//! collateral, policy and `now`. Start reading at [`appraise`], then [`Envelope::verify`].
//!
//! ```no_run
//! use conclave_attestation::{appraise, Endorsements, Evidence, Policy, UnixTime};
//! # fn f(bytes: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! let evidence = Evidence::decode(bytes)?;
//! let appraisal = appraise(&evidence, &Endorsements::default(), &Policy::default(), UnixTime(1_780_000_000))?;
//! for reason in &appraisal.reasons {
//!     eprintln!("rejected: {reason}");
//! }
//! # Ok(()) }
//! ```

pub mod appraisal;
pub mod attester;
pub mod binding;
pub mod canonical;
pub mod eip712;
pub mod envelope;
pub mod evidence;
pub mod policy;
pub mod reason;
pub mod sim;
pub mod snp;
pub mod tdx;
pub mod types;

pub use appraisal::{
    AcceptedEvidence, Appraisal, AppraisalError, Claims, Endorsements, Verdict, appraise,
};
pub use attester::{AttestError, Attester, ConfigfsTsm, SnpAttester, TdxAttester};
pub use binding::{
    BindingContext, KEY_BINDING_TAG, KEY_REQUEST_TAG, check_key_binding, key_binding,
    key_request_binding,
};
pub use envelope::{EnclaveKey, Envelope, EnvelopeError};
pub use evidence::{Evidence, EvidenceError};
pub use policy::{MinTcb, Policy, PolicyError, SnpPolicy, TdxPolicy};
pub use reason::Reason;
pub use sim::{SimAttester, SimConfig};
pub use types::{
    EnclaveAddress, EvidenceHash, HostData, JobId, Measurement, Nonce, ReportData, Tee, UnixTime,
};
