//! Key release: how a sealed job's secret reaches an enclave, and only an enclave.
//!
//! The flow is the Trustee KBS one (request → challenge → attestation → response), with one
//! appraisal for both holders of a secret: the customer's key broker (`conclave keys serve`)
//! and any enclave of the job that already holds the secret (enclave-to-enclave release, so the
//! customer need not stay online).
//!
//! 1. The requester asks the holder for a challenge: a fresh 32-byte nonce, valid for
//!    [`NONCE_TTL_S`] seconds and for one request ([`NonceBook`]).
//! 2. Inside the enclave, a single-use X25519 key pair is made ([`crate::seal::Recipient`]) and
//!    evidence is taken whose report data binds its public key, the job's sealing id and the
//!    nonce ([`conclave_attestation::key_request_binding`]). The [`KeyRequest`] carries both.
//! 3. The holder appraises the evidence under the job's policy with the same
//!    `conclave-attestation` code every verifier runs ([`appraise_key_request`]), checks the
//!    binding, spends the nonce, and answers with the secret wrapped to the public key
//!    ([`release`]); the wrap's context is the sealing id and the evidence hash, so the answer
//!    opens only for the request it answers.
//!
//! A refusal names its reason ([`KeyRefusal`]): wrong measurement, debug guest, sim evidence
//! for a hardware job, stale or replayed nonce, evidence that does not bind the key, unknown
//! job. A host, or any process outside an enclave, has no evidence that passes, so it gets
//! nothing; it can relay requests and answers but cannot open them.
//!
//! Wire format: JSON, [`MAX_KEY_REQUEST`] bytes at most, unknown fields refused, binary fields
//! in standard base64 ([`crate::channel::Blob`]), the public key and ids in hex.

use std::collections::BTreeMap;

use conclave_attestation::{
    AcceptedEvidence, Endorsements, Evidence, Nonce, Policy, Reason, UnixTime, appraise,
    binding::ct_eq, key_request_binding,
};
use serde::{Deserialize, Serialize};

use crate::Hash32;
use crate::channel::Blob;
use crate::seal::{JobSecret, SealError, WRAPPED_LEN, wrap};

/// The largest key request accepted (evidence with its certificate chain is a few KiB; a TDX
/// quote with collateral some tens).
pub const MAX_KEY_REQUEST: usize = 256 * 1024;
/// How long a challenge nonce stays valid.
pub const NONCE_TTL_S: u64 = 300;
/// The most challenges outstanding at once (older ones are dropped first).
pub const MAX_OUTSTANDING: usize = 4096;

/// An enclave's request for a sealed job's secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// The job's sealing id (its job document names it).
    pub sealing_id: Hash32,
    /// The holder's challenge.
    pub nonce: Nonce,
    /// The single-use X25519 public key the secret is to be wrapped to.
    pub public_key: Hash32,
    /// A Conclave evidence bundle whose report data binds the three above.
    pub evidence: Blob,
}

/// The holder's answer: the secret wrapped to the request's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyResponse {
    pub wrapped: Blob,
}

/// A challenge, as the broker hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    pub sealing_id: Hash32,
    pub nonce: Nonce,
    /// Seconds the nonce stays valid.
    pub ttl_s: u64,
}

/// Why a secret was not released. [`KeyRefusal::code`] is stable (brokers answer it, enclaves
/// return it); the message says exactly what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// The request does not parse or is too large.
    #[error("the key request is malformed: {0}")]
    Malformed(String),
    /// The holder has no secret for this sealing id.
    #[error("no sealed job with sealing id {0} here")]
    UnknownJob(Hash32),
    /// The nonce was never issued here, was already spent, or has expired.
    #[error("stale nonce: {0}")]
    StaleNonce(&'static str),
    /// The evidence does not decode or cannot be appraised.
    #[error("the evidence cannot be read: {0}")]
    BadEvidence(String),
    /// The evidence is of a guest image the job does not allow.
    #[error("the evidence's measurement {got} is not one the job allows")]
    WrongMeasurement { got: String },
    /// A debuggable guest: its memory is open to the host.
    #[error("the evidence is of a debug guest (its memory is readable by the host)")]
    DebugGuest,
    /// Evidence with no hardware behind it, for a job that does not allow sim.
    #[error("sim evidence, and the job does not allow sim enclaves")]
    SimNotAllowed,
    /// Other policy failures, every reason named.
    #[error("the evidence fails the job's policy: {}", .0.join("; "))]
    EvidenceRejected(Vec<String>),
    /// The report data does not bind this public key, sealing id and nonce.
    #[error("the evidence does not bind the request's key, job and nonce")]
    NotBound,
    /// Wrapping failed.
    #[error("{0}")]
    Seal(SealError),
}

impl KeyRefusal {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            KeyRefusal::Malformed(_) => "malformed",
            KeyRefusal::UnknownJob(_) => "unknown_job",
            KeyRefusal::StaleNonce(_) => "stale_nonce",
            KeyRefusal::BadEvidence(_) => "bad_evidence",
            KeyRefusal::WrongMeasurement { .. } => "wrong_measurement",
            KeyRefusal::DebugGuest => "debug_guest",
            KeyRefusal::SimNotAllowed => "sim_not_allowed",
            KeyRefusal::EvidenceRejected(_) => "evidence_rejected",
            KeyRefusal::NotBound => "not_bound",
            KeyRefusal::Seal(_) => "seal",
        }
    }
}

impl KeyRequest {
    /// Parses a request: bounded, exact shape.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyRefusal> {
        if bytes.len() > MAX_KEY_REQUEST {
            return Err(KeyRefusal::Malformed(format!(
                "{} bytes, over the limit of {MAX_KEY_REQUEST}",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| KeyRefusal::Malformed(e.to_string()))
    }

    /// The request's bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The wrap context of the answer: the sealing id and the evidence hash.
    pub fn wrap_context(sealing_id: &Hash32, evidence_hash: &[u8; 32]) -> Vec<u8> {
        let mut c = Vec::with_capacity(64 + 24);
        c.extend_from_slice(b"conclave/v1/key-release");
        c.extend_from_slice(&sealing_id.0);
        c.extend_from_slice(evidence_hash);
        c
    }
}

/// Appraises a key request for the job sealed under `sealing_id`, under the job's `policy`, at
/// `now`. Pure: the nonce is checked by the caller's [`NonceBook`] (the enclave-to-enclave path
/// checks its own). Returns the accepted evidence (its hash names the release).
pub fn appraise_key_request(
    req: &KeyRequest,
    sealing_id: &Hash32,
    policy: &Policy,
    endorsements: &Endorsements,
    now: UnixTime,
) -> Result<AcceptedEvidence, KeyRefusal> {
    if req.sealing_id != *sealing_id {
        return Err(KeyRefusal::UnknownJob(req.sealing_id));
    }
    let ev =
        Evidence::decode(&req.evidence.0).map_err(|e| KeyRefusal::BadEvidence(e.to_string()))?;
    let a = appraise(&ev, endorsements, policy, now)
        .map_err(|e| KeyRefusal::BadEvidence(e.to_string()))?;
    // The named reasons first: the ones a customer asks about.
    for r in &a.reasons {
        match r {
            Reason::MeasurementNotAllowed { got } => {
                return Err(KeyRefusal::WrongMeasurement {
                    got: got.to_string(),
                });
            }
            Reason::DebugGuest => return Err(KeyRefusal::DebugGuest),
            Reason::SimNotAllowed => return Err(KeyRefusal::SimNotAllowed),
            _ => {}
        }
    }
    let accepted = a.accepted().ok_or_else(|| {
        KeyRefusal::EvidenceRejected(a.reasons.iter().map(|r| r.to_string()).collect())
    })?;
    let want = key_request_binding(&req.public_key.0, &sealing_id.0, &req.nonce);
    if !ct_eq(&want, &accepted.report_data()) {
        return Err(KeyRefusal::NotBound);
    }
    Ok(accepted)
}

/// Wraps `secret` to the request's key for the accepted evidence.
pub fn release(
    secret: &JobSecret,
    req: &KeyRequest,
    accepted: &AcceptedEvidence,
) -> Result<KeyResponse, KeyRefusal> {
    let ctx = KeyRequest::wrap_context(&req.sealing_id, &accepted.evidence_hash().0);
    let wrapped = wrap(secret, &req.public_key.0, &ctx).map_err(KeyRefusal::Seal)?;
    debug_assert_eq!(wrapped.len(), WRAPPED_LEN);
    Ok(KeyResponse {
        wrapped: Blob(wrapped),
    })
}

/// The challenges a holder has issued: each valid for [`NONCE_TTL_S`] seconds and one
/// request. Pure: the caller passes `now` and the fresh nonce's bytes.
#[derive(Debug, Default)]
pub struct NonceBook {
    /// Nonce → the time it was issued.
    issued: BTreeMap<[u8; 32], u64>,
}

impl NonceBook {
    /// Records a fresh nonce issued at `now`, dropping expired ones (and the oldest when
    /// [`MAX_OUTSTANDING`] are outstanding).
    pub fn issue(&mut self, nonce: [u8; 32], now: UnixTime) -> Nonce {
        self.issued
            .retain(|_, t| now.0.saturating_sub(*t) <= NONCE_TTL_S);
        while self.issued.len() >= MAX_OUTSTANDING {
            let oldest = self.issued.iter().min_by_key(|(_, t)| **t).map(|(n, _)| *n);
            match oldest {
                Some(n) => {
                    self.issued.remove(&n);
                }
                None => break,
            }
        }
        self.issued.insert(nonce, now.0);
        Nonce(nonce)
    }

    /// Spends `nonce`: refused when never issued here, already spent or expired.
    pub fn spend(&mut self, nonce: &Nonce, now: UnixTime) -> Result<(), KeyRefusal> {
        match self.issued.remove(&nonce.0) {
            None => Err(KeyRefusal::StaleNonce(
                "not issued here, or already used (a replay)",
            )),
            Some(t) if now.0.saturating_sub(t) > NONCE_TTL_S => {
                Err(KeyRefusal::StaleNonce("expired"))
            }
            Some(_) => Ok(()),
        }
    }

    /// Challenges outstanding.
    pub fn outstanding(&self) -> usize {
        self.issued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_attestation::sim::{SimAttester, SimConfig, default_sim_measurement};

    use crate::seal::Recipient;

    const SEALING: Hash32 = Hash32([0x5e; 32]);

    fn sim_policy() -> Policy {
        Policy {
            allow_sim: true,
            measurements: vec![default_sim_measurement()],
            ..Policy::default()
        }
    }

    fn request(att: &SimAttester, r: &Recipient, nonce: Nonce, bind: [u8; 32]) -> KeyRequest {
        let rd = key_request_binding(&bind, &SEALING.0, &nonce);
        KeyRequest {
            sealing_id: SEALING,
            nonce,
            public_key: Hash32(r.public_key()),
            evidence: Blob(att.evidence(&rd).encode()),
        }
    }

    fn now() -> UnixTime {
        UnixTime(1_800_000_000)
    }

    #[test]
    fn an_attested_request_gets_the_secret_and_only_its_key_opens_it() {
        let att = SimAttester::new(SimConfig::default()).unwrap();
        let secret = JobSecret::generate().unwrap();
        let r = Recipient::generate().unwrap();
        let req = request(&att, &r, Nonce([1; 32]), r.public_key());
        let back = KeyRequest::parse(&req.encode()).unwrap();
        assert_eq!(back, req);
        let acc = appraise_key_request(
            &req,
            &SEALING,
            &sim_policy(),
            &Endorsements::default(),
            now(),
        )
        .unwrap();
        let resp = release(&secret, &req, &acc).unwrap();
        // Another recipient cannot open it.
        let other = Recipient::generate().unwrap();
        let ctx = KeyRequest::wrap_context(&SEALING, &acc.evidence_hash().0);
        assert!(other.unwrap(&resp.wrapped.0, &ctx).is_err());
        let got = r.unwrap(&resp.wrapped.0, &ctx).unwrap();
        assert_eq!(got.expose(), secret.expose());
    }

    #[test]
    fn refusals_are_named() {
        let secret_policy = sim_policy();
        let r = Recipient::generate().unwrap();
        let e = Endorsements::default();
        // Another measurement.
        let other = SimAttester::new(SimConfig {
            measurement: conclave_attestation::Measurement([9; 48]),
            ..SimConfig::default()
        })
        .unwrap();
        let req = request(&other, &r, Nonce([1; 32]), r.public_key());
        let err = appraise_key_request(&req, &SEALING, &secret_policy, &e, now()).unwrap_err();
        assert_eq!(err.code(), "wrong_measurement", "{err}");
        // A debug guest (SNP policy bit 19).
        let debug = SimAttester::new(SimConfig {
            policy: SimConfig::default().policy | (1 << 19),
            ..SimConfig::default()
        })
        .unwrap();
        let req = request(&debug, &r, Nonce([1; 32]), r.public_key());
        let err = appraise_key_request(&req, &SEALING, &secret_policy, &e, now()).unwrap_err();
        assert_eq!(err.code(), "debug_guest", "{err}");
        // Evidence that binds another key.
        let att = SimAttester::new(SimConfig::default()).unwrap();
        let req = request(&att, &r, Nonce([1; 32]), [3; 32]);
        let err = appraise_key_request(&req, &SEALING, &secret_policy, &e, now()).unwrap_err();
        assert_eq!(err, KeyRefusal::NotBound);
        // Evidence for another nonce than the request names.
        let mut req = request(&att, &r, Nonce([1; 32]), r.public_key());
        req.nonce = Nonce([2; 32]);
        let err = appraise_key_request(&req, &SEALING, &secret_policy, &e, now()).unwrap_err();
        assert_eq!(err, KeyRefusal::NotBound);
        // Another job.
        let err =
            appraise_key_request(&req, &Hash32([1; 32]), &secret_policy, &e, now()).unwrap_err();
        assert_eq!(err.code(), "unknown_job");
        // Sim evidence for a job that does not allow it.
        let req = request(&att, &r, Nonce([1; 32]), r.public_key());
        let strict = Policy {
            allow_sim: false,
            ..sim_policy()
        };
        let err = appraise_key_request(&req, &SEALING, &strict, &e, now()).unwrap_err();
        assert_eq!(err.code(), "sim_not_allowed");
        // Not evidence at all.
        let mut junk = req.clone();
        junk.evidence = Blob(vec![0; 64]);
        let err = appraise_key_request(&junk, &SEALING, &secret_policy, &e, now()).unwrap_err();
        assert_eq!(err.code(), "bad_evidence");
        // Malformed and oversized requests.
        assert_eq!(KeyRequest::parse(b"{}").unwrap_err().code(), "malformed");
        assert_eq!(
            KeyRequest::parse(&vec![b' '; MAX_KEY_REQUEST + 1])
                .unwrap_err()
                .code(),
            "malformed"
        );
    }

    #[test]
    fn a_nonce_is_good_once_and_not_forever() {
        let mut book = NonceBook::default();
        let n = book.issue([1; 32], UnixTime(100));
        assert!(book.spend(&n, UnixTime(150)).is_ok());
        assert_eq!(
            book.spend(&n, UnixTime(151)).unwrap_err().code(),
            "stale_nonce"
        );
        let n = book.issue([2; 32], UnixTime(100));
        assert_eq!(
            book.spend(&n, UnixTime(100 + NONCE_TTL_S + 1)),
            Err(KeyRefusal::StaleNonce("expired"))
        );
        assert_eq!(
            book.spend(&Nonce([3; 32]), UnixTime(100))
                .unwrap_err()
                .code(),
            "stale_nonce"
        );
        for i in 0..(MAX_OUTSTANDING + 10) {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            book.issue(b, UnixTime(200 + i as u64 / 100));
        }
        assert_eq!(book.outstanding(), MAX_OUTSTANDING);
    }
}
