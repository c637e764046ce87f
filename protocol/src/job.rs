//! The job document: everything a job's enclaves obey, published by the customer, hashed into
//! the spec hash the chain records. The training configuration, the dataset root, the initial
//! model, the operator count, the certificate quorum, the kind of enclave the job runs in and the
//! appraisal policy peers' evidence must pass (the allowed measurements among it) are all in it.
//!
//! The enclave takes the document's bytes from its host, hashes them itself, refuses them when
//! the hash is not the one the host says the chain names ([`JobDocument::spec_hash`]), and
//! derives everything else from the document: the host has no other way to tell it which
//! config to run or which peers to accept. Every statement the enclave signs names the spec
//! hash (its envelope domain, [`crate::job_domain`], and the EIP-712 statements), so a host that
//! feeds another document gets statements that the chain, the peers and the auditor refuse.
//!
//! The encoding is JSON with the fields in the order below; the spec hash is SHA-256 of the
//! exact bytes, so one document has one hash and a re-encoded one is another (refused) document.

use conclave_attestation::{Policy, Tee};
use serde::{Deserialize, Serialize};

use crate::Hash32;

/// The document format this code reads and writes.
pub const JOB_DOCUMENT_VERSION: u32 = 1;
/// The largest document accepted (the config and the policy are a few KiB).
pub const MAX_JOB_DOCUMENT: usize = 1 << 20;
/// The most operators a job may name (the contract's update-set bound).
pub const MAX_OPERATORS: u32 = 256;

/// What kind of enclave a job runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobTee {
    /// Development: sim enclaves (host processes with a locally made root). The policy must
    /// allow sim evidence; the job's results are worth nothing as a security claim.
    Sim,
    /// AMD SEV-SNP guests only.
    Snp,
    /// Intel TDX guests only.
    Tdx,
    /// Either kind of hardware guest.
    Hardware,
}

impl JobTee {
    /// Whether an enclave of kind `tee` may take part in the job.
    pub fn admits(self, tee: Tee) -> bool {
        matches!(
            (self, tee),
            (JobTee::Sim, Tee::Sim)
                | (JobTee::Snp, Tee::Snp)
                | (JobTee::Tdx, Tee::Tdx)
                | (JobTee::Hardware, Tee::Snp | Tee::Tdx)
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            JobTee::Sim => "sim",
            JobTee::Snp => "snp",
            JobTee::Tdx => "tdx",
            JobTee::Hardware => "hardware",
        }
    }
}

impl std::fmt::Display for JobTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The job document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDocument {
    pub version: u32,
    /// The kind of enclave the job runs in.
    pub tee: JobTee,
    /// The training configuration (TOML) as the customer wrote it.
    pub config: String,
    /// SHA-256 of the canonical configuration (the enclave recomputes it from `config`).
    pub config_hash: Hash32,
    /// Merkle root of the dataset's shard hashes (the chain's `datasetRoot`).
    pub data_root: Hash32,
    /// The model every enclave starts from (the only checkpoint loaded without a manifest).
    pub initial_model_hash: Hash32,
    /// Operators in the active set.
    pub operators: u32,
    /// Share of the active operators, in basis points, whose enclaves must sign a round
    /// certificate (more than half).
    pub quorum_bps: u16,
    /// The appraisal policy every enclave's evidence must pass.
    pub policy: Policy,
    /// A sealed job: its dataset, updates and checkpoints are encrypted under keys derived from
    /// a job secret that only enclaves passing `policy` get ([`crate::keyrelease`]). Absent
    /// for an unsealed job (whose data, updates and model the hosts can read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealing: Option<Sealing>,
}

/// How a sealed job is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealing {
    /// What every key of the job is derived for ([`crate::seal`]): the customer picks it at
    /// random when sealing the dataset. `data_root` is then the sealed dataset's root
    /// ([`crate::sealed_data::SealedDataset::root`]).
    pub sealing_id: Hash32,
    /// The job secret's public commitment ([`crate::seal::JobSecret::key_check`]): an enclave
    /// takes a released secret only when it matches.
    pub key_check: Hash32,
}

/// Why a job document is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobDocumentError {
    #[error("the job document is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the job document is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("job document version {0} is not supported (expected {JOB_DOCUMENT_VERSION})")]
    Version(u32),
    #[error("the job document is not in its canonical encoding (re-encode it with `encode`)")]
    NotCanonical,
    #[error("job document field {field}: {why}")]
    Field { field: &'static str, why: String },
    /// A hardware job whose policy admits sim evidence: a host could slip sim peers in.
    #[error("the job runs in {tee} enclaves but its policy allows sim evidence")]
    SimPolicyForHardwareJob { tee: JobTee },
    /// A hardware job that names no measurement: any guest image would be accepted.
    #[error("the job runs in {tee} enclaves but its policy lists no allowed measurement")]
    NoMeasurements { tee: JobTee },
}

fn field(field: &'static str, why: impl Into<String>) -> JobDocumentError {
    JobDocumentError::Field {
        field,
        why: why.into(),
    }
}

impl JobDocument {
    /// The document's bytes (the ones the spec hash is taken over).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The spec hash of a document's bytes.
    pub fn spec_hash(bytes: &[u8]) -> Hash32 {
        Hash32::sha256(bytes)
    }

    /// Parses and checks a document: bounded size, known version, canonical encoding (so the
    /// hash of what was parsed is the hash of what is obeyed) and coherent fields.
    pub fn parse(bytes: &[u8]) -> Result<Self, JobDocumentError> {
        if bytes.len() > MAX_JOB_DOCUMENT {
            return Err(JobDocumentError::TooLarge {
                len: bytes.len(),
                max: MAX_JOB_DOCUMENT,
            });
        }
        let doc: JobDocument = serde_json::from_slice(bytes)
            .map_err(|e| JobDocumentError::Malformed(e.to_string()))?;
        if doc.version != JOB_DOCUMENT_VERSION {
            return Err(JobDocumentError::Version(doc.version));
        }
        if doc.encode() != bytes {
            return Err(JobDocumentError::NotCanonical);
        }
        doc.check()?;
        Ok(doc)
    }

    /// The rules every document keeps, whoever made it.
    pub fn check(&self) -> Result<(), JobDocumentError> {
        if self.operators == 0 || self.operators > MAX_OPERATORS {
            return Err(field(
                "operators",
                format!("{} (1 to {MAX_OPERATORS})", self.operators),
            ));
        }
        if self.quorum_bps <= 5000 || self.quorum_bps > 10_000 {
            return Err(field(
                "quorum_bps",
                format!("{} (more than 5000, at most 10000)", self.quorum_bps),
            ));
        }
        if self.config.is_empty() {
            return Err(field("config", "empty"));
        }
        match self.tee {
            JobTee::Sim => {
                if !self.policy.allow_sim {
                    return Err(field(
                        "policy.allow_sim",
                        "a sim job's policy must allow sim",
                    ));
                }
            }
            tee => {
                if self.policy.allow_sim {
                    return Err(JobDocumentError::SimPolicyForHardwareJob { tee });
                }
                if self.policy.measurements.is_empty() {
                    return Err(JobDocumentError::NoMeasurements { tee });
                }
            }
        }
        Ok(())
    }

    /// The certificate quorum for `active` operators: ⌈active · quorum_bps / 10000⌉, at least 1
    /// (the contract's `quorumNeeded`).
    pub fn quorum(&self, active: u32) -> u32 {
        let q = (u64::from(active) * u64::from(self.quorum_bps)).div_ceil(10_000);
        (q as u32).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_attestation::Measurement;

    fn doc() -> JobDocument {
        JobDocument {
            version: JOB_DOCUMENT_VERSION,
            tee: JobTee::Sim,
            config: "rounds = 2\n".into(),
            config_hash: Hash32([1; 32]),
            data_root: Hash32([2; 32]),
            initial_model_hash: Hash32([3; 32]),
            operators: 3,
            quorum_bps: 6667,
            policy: Policy {
                allow_sim: true,
                ..Policy::default()
            },
            sealing: None,
        }
    }

    #[test]
    fn round_trips_and_hashes_its_bytes() {
        let d = doc();
        let bytes = d.encode();
        assert_eq!(JobDocument::parse(&bytes).unwrap(), d);
        assert_eq!(JobDocument::spec_hash(&bytes), Hash32::sha256(&bytes));
        let mut other = d.clone();
        other.policy.measurements.push(Measurement([7; 48]));
        assert_ne!(
            JobDocument::spec_hash(&other.encode()),
            JobDocument::spec_hash(&bytes)
        );
    }

    #[test]
    fn refuses_re_encodings_unknown_fields_and_oversize() {
        let d = doc();
        let pretty = serde_json::to_vec_pretty(&d).unwrap();
        assert_eq!(
            JobDocument::parse(&pretty).unwrap_err(),
            JobDocumentError::NotCanonical
        );
        let mut v: serde_json::Value = serde_json::from_slice(&d.encode()).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(matches!(
            JobDocument::parse(&serde_json::to_vec(&v).unwrap()),
            Err(JobDocumentError::Malformed(m)) if m.contains("extra")
        ));
        let big = vec![b' '; MAX_JOB_DOCUMENT + 1];
        assert!(matches!(
            JobDocument::parse(&big),
            Err(JobDocumentError::TooLarge { .. })
        ));
        assert!(matches!(
            JobDocument::parse(b"\xff\x00"),
            Err(JobDocumentError::Malformed(_))
        ));
        let mut v2 = d.clone();
        v2.version = 2;
        assert_eq!(
            JobDocument::parse(&v2.encode()).unwrap_err(),
            JobDocumentError::Version(2)
        );
    }

    #[test]
    fn a_hardware_job_cannot_allow_sim_or_skip_measurements() {
        let mut d = doc();
        d.tee = JobTee::Snp;
        assert_eq!(
            d.check().unwrap_err(),
            JobDocumentError::SimPolicyForHardwareJob { tee: JobTee::Snp }
        );
        d.policy.allow_sim = false;
        assert_eq!(
            d.check().unwrap_err(),
            JobDocumentError::NoMeasurements { tee: JobTee::Snp }
        );
        d.policy.measurements.push(Measurement([7; 48]));
        d.check().unwrap();
        let mut s = doc();
        s.policy.allow_sim = false;
        assert!(matches!(
            s.check(),
            Err(JobDocumentError::Field {
                field: "policy.allow_sim",
                ..
            })
        ));
        assert!(JobTee::Hardware.admits(Tee::Tdx) && !JobTee::Hardware.admits(Tee::Sim));
        assert!(JobTee::Sim.admits(Tee::Sim) && !JobTee::Snp.admits(Tee::Tdx));
    }

    #[test]
    fn quorum_is_a_ceiling_majority() {
        let mut d = doc();
        for (bps, active, q) in [
            (6667, 3, 3),
            (6666, 3, 2),
            (5001, 2, 2),
            (5001, 4, 3),
            (10_000, 5, 5),
            (6667, 0, 1),
        ] {
            d.quorum_bps = bps;
            assert_eq!(d.quorum(active), q, "{bps} of {active}");
        }
        d.quorum_bps = 5000;
        assert!(d.check().is_err());
    }
}
