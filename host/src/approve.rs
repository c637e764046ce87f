//! Verifier approvals: the job's appointed verifiers (the customer, or a committee named when
//! the job was created) appraise an enclave's evidence off chain with the attestation crate and
//! sign an EIP-712 `EnclaveApproval` over (job, operator, enclave key, evidence hash,
//! measurement); the contract registers a key only with enough of them. A key an operator made
//! itself, evidence the job's policy rejects, or evidence that does not bind the key is never
//! approved.
//!
//! The flow: a node asks its enclave for its registration consent and writes an
//! [`ApprovalRequest`] into its job folder (`approval-request.json`); the verifier runs
//! `conclave approve --request FILE --document FILE` ([`approve`], which checks the request
//! against the job document and the chain's terms) and the resulting [`Approval`] goes into the
//! node's `approvals/` folder, where the node picks it up and registers. How the two files
//! travel between the operator and the verifier is up to them (the demo's customer reads the
//! nodes' folders).

use std::path::Path;

use anyhow::{Context, Result, bail};
use conclave_attestation::eip712::{Domain, JobTerms, chain_measurement, job_word, recover_key};
use conclave_attestation::{
    BindingContext, EnclaveAddress, EnclaveKey, Endorsements, Evidence, JobId, Nonce, UnixTime,
    appraise, check_key_binding,
};
use conclave_protocol::channel::Blob;
use conclave_protocol::{Hash32, JobDocument};
use serde::{Deserialize, Serialize};

use crate::store::read_bounded;

/// The largest request or approval file read (the evidence is a few KiB; TDX quotes with their
/// certificate chains about 10 KiB).
pub const MAX_APPROVAL_FILE: u64 = 1 << 20;

/// A node's request for approval of its enclave key, with everything a verifier checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    pub chain_id: u64,
    /// The contract, `0x` + 40 hex digits.
    pub contract: String,
    pub job: u64,
    /// The operator account that will register the key, `0x` + 40 hex digits.
    pub operator: String,
    /// The enclave key's address.
    pub enclave: EnclaveAddress,
    /// The enclave's evidence bundle and the nonce it binds with the key and the job.
    pub evidence: Blob,
    pub nonce: Nonce,
    /// The enclave's consent to the registration (EIP-712 `EnclaveRegistration`, r ‖ s ‖ v,
    /// hex): it recovers to the key the evidence binds, over the job's spec hash.
    pub consent: String,
    pub evidence_hash: Hash32,
    pub measurement: Hash32,
    /// The spec hash the enclave loaded.
    pub spec_hash: Hash32,
}

/// A verifier's approval of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub job: u64,
    pub operator: String,
    pub enclave: EnclaveAddress,
    pub evidence_hash: Hash32,
    pub measurement: Hash32,
    /// The verifier account, `0x` + 40 hex digits.
    pub verifier: String,
    /// EIP-712 `EnclaveApproval` signature, r ‖ s ‖ v, hex.
    pub signature: String,
}

fn addr20(what: &str, text: &str) -> Result<[u8; 20]> {
    EnclaveAddress::from_hex(text)
        .map(|a| a.0)
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

fn sig65(what: &str, text: &str) -> Result<[u8; 65]> {
    let bytes =
        hex::decode(text.trim_start_matches("0x")).with_context(|| format!("{what}: not hex"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what}: not 65 bytes"))
}

/// The chain's terms of the job as the verifier reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainTerms {
    pub spec_hash: Hash32,
    pub dataset_root: Hash32,
}

/// Checks a request against the job document (whose hash must be the chain's spec hash) at
/// `now`: the enclave loaded that spec, its evidence passes the document's policy and is of the
/// document's kind of enclave, the evidence binds the key that signed the consent to the
/// on-chain job and the request's nonce, and the evidence hash and measurement are the
/// evidence's own. Returns nothing but an error naming the first failure.
pub fn check_request(
    req: &ApprovalRequest,
    document: &[u8],
    chain: ChainTerms,
    now: UnixTime,
) -> Result<()> {
    let spec_hash = JobDocument::spec_hash(document);
    if spec_hash != chain.spec_hash {
        bail!(
            "the job document hashes to {spec_hash}, the chain's spec hash is {}",
            chain.spec_hash
        );
    }
    let doc = JobDocument::parse(document).context("the job document")?;
    if doc.data_root != chain.dataset_root {
        bail!(
            "the job document's dataset root {} is not the chain's {}",
            doc.data_root,
            chain.dataset_root
        );
    }
    if req.spec_hash != spec_hash {
        bail!(
            "the enclave loaded spec {}, the job's is {spec_hash}",
            req.spec_hash
        );
    }
    let ev = Evidence::decode(&req.evidence.0).context("the evidence")?;
    let appraisal = appraise(&ev, &Endorsements::default(), &doc.policy, now)?;
    let acc = appraisal.accepted().with_context(|| {
        format!(
            "the evidence is rejected by the job's policy: {}",
            appraisal
                .reasons
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    if !doc.tee.admits(acc.tee()) {
        bail!("{} evidence for a {} job", acc.tee(), doc.tee);
    }
    let evidence_hash = Hash32(acc.evidence_hash().0);
    let measurement = Hash32(chain_measurement(acc.tee(), &acc.measurement()));
    if evidence_hash != req.evidence_hash {
        bail!(
            "the request names evidence {}, the evidence hashes to {evidence_hash}",
            req.evidence_hash
        );
    }
    if measurement != req.measurement {
        bail!(
            "the request names measurement {}, the evidence's is {measurement}",
            req.measurement
        );
    }
    // The consent recovers to the key the report data binds to the job and nonce.
    let domain = Domain {
        chain_id: req.chain_id,
        contract: addr20("contract", &req.contract)?,
    };
    let terms = JobTerms {
        job_id: job_word(req.job),
        spec_hash: spec_hash.0,
        dataset_root: doc.data_root.0,
    };
    let operator = addr20("operator", &req.operator)?;
    let digest = domain.registration_digest(&terms, &operator, &evidence_hash.0, &measurement.0);
    let (signer, xy) = recover_key(&digest, &sig65("consent", &req.consent)?)
        .map_err(|e| anyhow::anyhow!("the consent signature: {e}"))?;
    if signer != req.enclave {
        bail!(
            "the consent is signed by 0x{signer}, not the enclave key 0x{}",
            req.enclave
        );
    }
    let ctx = BindingContext {
        job_id: JobId(job_word(req.job)),
        nonce: req.nonce,
    };
    if !check_key_binding(&acc.report_data(), &xy, &ctx) {
        bail!(
            "the evidence does not bind key 0x{} to job {} and nonce {}",
            req.enclave,
            req.job,
            req.nonce
        );
    }
    Ok(())
}

/// Checks `req` ([`check_request`]) and signs the approval with the verifier's key.
pub fn approve(
    req: &ApprovalRequest,
    document: &[u8],
    chain: ChainTerms,
    verifier_secret: &[u8; 32],
    now: UnixTime,
) -> Result<Approval> {
    check_request(req, document, chain, now)?;
    let key = EnclaveKey::from_bytes(verifier_secret).context("the verifier key")?;
    let domain = Domain {
        chain_id: req.chain_id,
        contract: addr20("contract", &req.contract)?,
    };
    let digest = domain.approval_digest(
        &job_word(req.job),
        &addr20("operator", &req.operator)?,
        &req.enclave,
        &req.evidence_hash.0,
        &req.measurement.0,
    );
    Ok(Approval {
        job: req.job,
        operator: req.operator.clone(),
        enclave: req.enclave,
        evidence_hash: req.evidence_hash,
        measurement: req.measurement,
        verifier: format!("0x{}", key.address()),
        signature: hex::encode(key.sign_digest(&digest)),
    })
}

impl Approval {
    /// The signature, when the approval is for exactly this request.
    pub fn signature_for(&self, req: &ApprovalRequest) -> Result<[u8; 65]> {
        if self.job != req.job
            || !self.operator.eq_ignore_ascii_case(&req.operator)
            || self.enclave != req.enclave
            || self.evidence_hash != req.evidence_hash
            || self.measurement != req.measurement
        {
            bail!("the approval by {} is for another request", self.verifier);
        }
        sig65("approval signature", &self.signature)
    }
}

/// Reads a JSON file of at most [`MAX_APPROVAL_FILE`] bytes.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = read_bounded(path, MAX_APPROVAL_FILE)?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}", path.display()))
}

#[cfg(test)]
mod tests {
    use conclave_attestation::sim::default_sim_measurement;
    use conclave_attestation::{Policy, SimAttester, SimConfig};
    use conclave_protocol::JobTee;
    use conclave_protocol::job::JOB_DOCUMENT_VERSION;

    use super::*;

    const JOB: u64 = 3;
    const NOW: UnixTime = UnixTime(1_800_000_000);
    const CONTRACT: &str = "0x1111111111111111111111111111111111111111";
    const OPERATOR: &str = "0x2222222222222222222222222222222222222222";

    fn document(tee: JobTee, allow_sim: bool) -> Vec<u8> {
        JobDocument {
            version: JOB_DOCUMENT_VERSION,
            tee,
            config: "rounds = 2\n".into(),
            config_hash: Hash32::sha256(b"config"),
            data_root: Hash32::sha256(b"data"),
            initial_model_hash: Hash32::sha256(b"init"),
            operators: 3,
            quorum_bps: 6000,
            policy: Policy {
                allow_sim,
                measurements: vec![default_sim_measurement()],
                ..Policy::default()
            },
            sealing: None,
        }
        .encode()
    }

    fn terms(doc: &[u8]) -> ChainTerms {
        ChainTerms {
            spec_hash: JobDocument::spec_hash(doc),
            dataset_root: Hash32::sha256(b"data"),
        }
    }

    /// A request as an honest node makes it: sim evidence binding a fresh key to the job and
    /// a nonce, and the enclave's consent over the document's spec hash.
    fn request(doc: &[u8], key: &EnclaveKey) -> ApprovalRequest {
        let nonce = Nonce([7; 32]);
        let ctx = BindingContext {
            job_id: JobId(job_word(JOB)),
            nonce,
        };
        let ev = SimAttester::new(SimConfig::default())
            .unwrap()
            .evidence(&key.report_data(&ctx));
        let evidence_hash = Hash32(ev.hash().0);
        let measurement = Hash32(chain_measurement(ev.tee, &default_sim_measurement()));
        let domain = Domain {
            chain_id: 31337,
            contract: addr20("c", CONTRACT).unwrap(),
        };
        let t = JobTerms {
            job_id: job_word(JOB),
            spec_hash: JobDocument::spec_hash(doc).0,
            dataset_root: Hash32::sha256(b"data").0,
        };
        let consent = key.sign_registration(
            &domain,
            &t,
            &addr20("o", OPERATOR).unwrap(),
            &evidence_hash.0,
            &measurement.0,
        );
        ApprovalRequest {
            chain_id: 31337,
            contract: CONTRACT.into(),
            job: JOB,
            operator: OPERATOR.into(),
            enclave: key.address(),
            evidence: Blob(ev.encode()),
            nonce,
            consent: hex::encode(consent),
            evidence_hash,
            measurement,
            spec_hash: JobDocument::spec_hash(doc),
        }
    }

    fn refused(req: &ApprovalRequest, doc: &[u8], chain: ChainTerms) -> String {
        format!("{:#}", check_request(req, doc, chain, NOW).unwrap_err())
    }

    #[test]
    fn an_honest_request_is_approved_with_the_contracts_digest() {
        let doc = document(JobTee::Sim, true);
        let key = EnclaveKey::generate();
        let req = request(&doc, &key);
        let verifier = [9u8; 32];
        let a = approve(&req, &doc, terms(&doc), &verifier, NOW).unwrap();
        let sig = a.signature_for(&req).unwrap();
        let digest = Domain {
            chain_id: 31337,
            contract: addr20("c", CONTRACT).unwrap(),
        }
        .approval_digest(
            &job_word(JOB),
            &addr20("o", OPERATOR).unwrap(),
            &key.address(),
            &req.evidence_hash.0,
            &req.measurement.0,
        );
        let signer = conclave_attestation::eip712::recover(&digest, &sig).unwrap();
        assert_eq!(
            format!("0x{signer}"),
            a.verifier,
            "the approval recovers to the verifier"
        );
        // An approval is for its request only.
        let mut other = req.clone();
        other.enclave = EnclaveAddress([5; 20]);
        assert!(a.signature_for(&other).is_err());
    }

    #[test]
    fn forged_or_foreign_requests_are_refused_by_name() {
        let doc = document(JobTee::Sim, true);
        let key = EnclaveKey::generate();
        let req = request(&doc, &key);

        // A key the operator made itself, claiming the real enclave's evidence: its consent
        // recovers to another key than the request names, or the evidence does not bind it.
        let rogue = EnclaveKey::generate();
        let mut forged = req.clone();
        forged.enclave = rogue.address();
        let consent = rogue.sign_registration(
            &Domain {
                chain_id: 31337,
                contract: addr20("c", CONTRACT).unwrap(),
            },
            &JobTerms {
                job_id: job_word(JOB),
                spec_hash: JobDocument::spec_hash(&doc).0,
                dataset_root: Hash32::sha256(b"data").0,
            },
            &addr20("o", OPERATOR).unwrap(),
            &req.evidence_hash.0,
            &req.measurement.0,
        );
        forged.consent = hex::encode(consent);
        let e = refused(&forged, &doc, terms(&doc));
        assert!(e.contains("does not bind key"), "{e}");
        let mut forged = req.clone();
        forged.enclave = rogue.address();
        let e = refused(&forged, &doc, terms(&doc));
        assert!(e.contains("not the enclave key"), "{e}");

        // Another nonce than the evidence binds (a replayed request).
        let mut replay = req.clone();
        replay.nonce = Nonce([8; 32]);
        let e = refused(&replay, &doc, terms(&doc));
        assert!(e.contains("does not bind key"), "{e}");

        // Another document than the chain's, or another spec than the enclave loaded.
        let other = document(JobTee::Sim, true);
        let mut other_terms = terms(&other);
        other_terms.spec_hash = Hash32::sha256(b"another spec");
        let e = refused(&req, &doc, other_terms);
        assert!(e.contains("the chain's spec hash"), "{e}");
        let mut wrong_spec = req.clone();
        wrong_spec.spec_hash = Hash32::sha256(b"x");
        let e = refused(&wrong_spec, &doc, terms(&doc));
        assert!(e.contains("the enclave loaded spec"), "{e}");

        // A hardware job: its policy refuses sim evidence.
        let hw = document(JobTee::Snp, false);
        let req_hw = request(&hw, &key);
        let e = refused(&req_hw, &hw, terms(&hw));
        assert!(e.contains("rejected by the job's policy"), "{e}");

        // A claimed evidence hash or measurement that is not the evidence's own.
        let mut lie = req.clone();
        lie.measurement = Hash32([1; 32]);
        let e = refused(&lie, &doc, terms(&doc));
        assert!(e.contains("measurement"), "{e}");
        let mut lie = req.clone();
        lie.evidence_hash = Hash32([1; 32]);
        assert!(refused(&lie, &doc, terms(&doc)).contains("evidence hashes to"));
        // Garbage evidence and a malformed consent are named, never a panic.
        let mut junk = req.clone();
        junk.evidence = Blob(vec![0xff; 17]);
        assert!(refused(&junk, &doc, terms(&doc)).contains("evidence"));
        let mut junk = req;
        junk.consent = "zz".into();
        assert!(refused(&junk, &doc, terms(&doc)).contains("consent"));
    }
}
