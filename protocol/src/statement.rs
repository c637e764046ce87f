//! Signed statements, typed by what they carry.
//!
//! An enclave states five things, each as a payload inside a signed [`Envelope`] in the job's
//! domain ([`job_domain`]): it took a job ([`JobAccepted`]), its update for a round
//! ([`UpdatePayload`]), the round it closed ([`RoundReceipt`]), a checkpoint of its weights
//! ([`CheckpointManifest`]) and which network identity speaks for it ([`AnnounceStatement`]). [`StatementKind`] is the closed list of envelope kinds; the
//! [`Statement`] trait ties each payload type to its kind and its one encoder and parser, and
//! [`Signed<T>`] is a statement whose envelope has been verified against its signer's accepted
//! evidence (as Psyche's `SignedMessage<T>` does), so neither side handles a statement as a
//! string or as untyped JSON.
//!
//! Adding a statement kind: a variant of [`StatementKind`] (its tag), a payload type with
//! `impl Statement`, and the enclave code that seals it. Everything that verifies uses
//! [`Signed::verify`].

use conclave_attestation::{
    AcceptedEvidence, BindingContext, EnclaveAddress, EnclaveKey, Envelope, EnvelopeError,
    EvidenceHash, JobId,
};
use serde::{Deserialize, Serialize};

use crate::hash::Hash32;
use crate::model::ModelConfig;
use crate::receipt::RoundReceipt;

/// Largest JSON statement payload accepted (receipts carry proofs; manifests are small).
pub const MAX_JSON_STATEMENT: usize = crate::receipt::MAX_RECEIPT_BYTES;

/// The kinds of signed envelope an enclave produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatementKind {
    /// [`JobAccepted`].
    JobAccepted,
    /// [`UpdatePayload`].
    Update,
    /// [`RoundReceipt`].
    RoundReceipt,
    /// [`CheckpointManifest`].
    CheckpointManifest,
    /// [`AnnounceStatement`].
    Announce,
}

impl StatementKind {
    /// Every kind.
    pub const ALL: [StatementKind; 5] = [
        StatementKind::JobAccepted,
        StatementKind::Update,
        StatementKind::RoundReceipt,
        StatementKind::CheckpointManifest,
        StatementKind::Announce,
    ];

    /// The envelope's `kind` tag (part of what the signature covers).
    pub const fn tag(self) -> &'static str {
        match self {
            StatementKind::JobAccepted => "job-accepted",
            StatementKind::Update => "update",
            StatementKind::RoundReceipt => "round-receipt",
            StatementKind::CheckpointManifest => "checkpoint-manifest",
            StatementKind::Announce => "announce",
        }
    }

    /// The kind of a tag.
    pub fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

impl std::fmt::Display for StatementKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.tag())
    }
}

/// The envelope domain of a job: `conclave/v1/job/<id hex>/spec/<spec hash hex>`. Every
/// envelope statement is signed in it, so each names the job document it was made under
/// ([`crate::job`]): a statement made under another document never verifies as this job's.
pub fn job_domain(job: &JobId, spec_hash: &Hash32) -> String {
    format!(
        "conclave/v1/job/{}/spec/{}",
        hex::encode(job.0),
        hex::encode(spec_hash.0)
    )
}

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// The envelope does not decode or does not verify.
    #[error("{kind}: {source}")]
    Envelope {
        kind: StatementKind,
        source: EnvelopeError,
    },
    /// The payload does not parse as the kind's type.
    #[error("{kind} payload: {why}")]
    Payload { kind: StatementKind, why: String },
    /// The envelope verified but names another signer than expected.
    #[error("{kind} signed by {got}, not by {expected}")]
    OtherSigner {
        kind: StatementKind,
        expected: EnclaveAddress,
        got: EnclaveAddress,
    },
}

/// A payload type of a signed statement: its kind, its one encoder and its one parser.
pub trait Statement: Sized {
    /// The envelope kind it travels as.
    const KIND: StatementKind;
    /// The payload bytes the envelope signs.
    fn to_payload(&self) -> Vec<u8>;
    /// Parses payload bytes (bounded, never panics).
    fn from_payload(bytes: &[u8]) -> Result<Self, StatementError>;
}

fn payload_error(kind: StatementKind, why: impl std::fmt::Display) -> StatementError {
    StatementError::Payload {
        kind,
        why: why.to_string(),
    }
}

/// JSON payloads: bounded, strict (`deny_unknown_fields` on the types).
fn from_json<T: for<'de> Deserialize<'de>>(
    kind: StatementKind,
    bytes: &[u8],
) -> Result<T, StatementError> {
    if bytes.len() > MAX_JSON_STATEMENT {
        return Err(payload_error(
            kind,
            format!("{} bytes, at most {MAX_JSON_STATEMENT}", bytes.len()),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| payload_error(kind, e))
}

/// A verified statement: the parsed payload, its envelope and the envelope's encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed<T> {
    pub statement: T,
    pub envelope: Envelope,
    /// The encoded envelope, as it travels and is stored.
    pub bytes: Vec<u8>,
}

impl<T: Statement> Signed<T> {
    /// Seals `statement` with the enclave key (the enclave's side).
    pub fn seal(
        key: &EnclaveKey,
        domain: &str,
        statement: T,
        evidence_hash: EvidenceHash,
    ) -> Result<Self, StatementError> {
        let envelope = key
            .seal(domain, T::KIND.tag(), statement.to_payload(), evidence_hash)
            .map_err(|source| StatementError::Envelope {
                kind: T::KIND,
                source,
            })?;
        Ok(Signed {
            bytes: envelope.encode(),
            statement,
            envelope,
        })
    }

    /// Decodes an encoded envelope, verifies it against its signer's accepted evidence for
    /// `ctx`, checks the domain and kind, and parses the payload.
    pub fn verify(
        bytes: &[u8],
        domain: &str,
        signer: &AcceptedEvidence,
        ctx: &BindingContext,
    ) -> Result<Self, StatementError> {
        let envelope = Self::decode_envelope(bytes)?;
        envelope
            .verify_as(domain, T::KIND.tag(), signer, ctx)
            .map_err(|source| StatementError::Envelope {
                kind: T::KIND,
                source,
            })?;
        let statement = T::from_payload(&envelope.payload)?;
        Ok(Signed {
            statement,
            envelope,
            bytes: bytes.to_vec(),
        })
    }

    /// [`Signed::verify`], and the signer must be `expected` (the key a peer announced).
    pub fn verify_from(
        bytes: &[u8],
        domain: &str,
        signer: &AcceptedEvidence,
        ctx: &BindingContext,
        expected: EnclaveAddress,
    ) -> Result<Self, StatementError> {
        let s = Self::verify(bytes, domain, signer, ctx)?;
        if s.envelope.signer != expected {
            return Err(StatementError::OtherSigner {
                kind: T::KIND,
                expected,
                got: s.envelope.signer,
            });
        }
        Ok(s)
    }

    /// Decodes the envelope only (no signature check): for finding the signer's evidence
    /// before verifying.
    pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, StatementError> {
        Envelope::decode(bytes).map_err(|source| StatementError::Envelope {
            kind: T::KIND,
            source,
        })
    }

    /// The signer's address.
    pub fn signer(&self) -> EnclaveAddress {
        self.envelope.signer
    }

    /// The signed payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.envelope.payload
    }

    /// SHA-256 of the signed payload (what the chain names as a receipt hash).
    pub fn payload_hash(&self) -> Hash32 {
        Hash32::sha256(&self.envelope.payload)
    }
}

/// The statement that an enclave took a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobAccepted {
    pub job_id: JobId,
    /// SHA-256 of the job document the enclave loaded and obeys.
    pub spec_hash: Hash32,
    pub config_hash: Hash32,
    pub data_root: Hash32,
    pub operator: u32,
    pub operators: u32,
    /// The model the enclave starts from.
    pub model_hash: Hash32,
    pub params: u64,
}

impl Statement for JobAccepted {
    const KIND: StatementKind = StatementKind::JobAccepted;
    fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn from_payload(bytes: &[u8]) -> Result<Self, StatementError> {
        from_json(Self::KIND, bytes)
    }
}

/// The enclave's word that a network identity speaks for it: the libp2p peer id its host
/// announces it from, its operator slot and, with a chain, the operator account that
/// registered its key. Gossip announces carry it, so a host cannot announce another
/// operator's evidence as its own (the victim's enclave never signs the thief's peer id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceStatement {
    pub job_id: JobId,
    pub operator: u32,
    /// The libp2p peer id (base58 text).
    pub peer_id: String,
    /// The on-chain operator account (`0x` + 40 hex digits), when the job is on chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl Statement for AnnounceStatement {
    const KIND: StatementKind = StatementKind::Announce;
    fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn from_payload(bytes: &[u8]) -> Result<Self, StatementError> {
        from_json(Self::KIND, bytes)
    }
}

/// An update statement: `"CNVUPR01" ‖ round (u64 LE) ‖ base model hash (32 bytes) ‖ body`,
/// where the body is an encoded [`crate::SparseUpdate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePayload {
    pub round: u64,
    /// The model the update was computed from.
    pub base_model: Hash32,
    /// The encoded sparse update.
    pub body: Vec<u8>,
}

/// The fixed part of an update payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateHeader {
    pub round: u64,
    pub base_model: Hash32,
}

impl UpdatePayload {
    /// Magic of an update payload.
    pub const MAGIC: &'static [u8; 8] = b"CNVUPR01";
    /// Bytes before the body.
    pub const HEADER_LEN: usize = 48;

    /// Encodes without building the struct (the enclave's side).
    pub fn encode(round: u64, base_model: &Hash32, body: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(Self::HEADER_LEN + body.len());
        p.extend_from_slice(Self::MAGIC);
        p.extend_from_slice(&round.to_le_bytes());
        p.extend_from_slice(&base_model.0);
        p.extend_from_slice(body);
        p
    }

    /// Splits a payload into its header and body without copying the body.
    pub fn split(p: &[u8]) -> Result<(UpdateHeader, &[u8]), StatementError> {
        let kind = StatementKind::Update;
        if p.len() < Self::HEADER_LEN {
            return Err(payload_error(
                kind,
                format!(
                    "{} bytes, shorter than the {}-byte header",
                    p.len(),
                    Self::HEADER_LEN
                ),
            ));
        }
        let (head, body) = p.split_at(Self::HEADER_LEN);
        if &head[..8] != Self::MAGIC {
            return Err(payload_error(kind, "not an update payload (bad magic)"));
        }
        let mut r = [0u8; 8];
        r.copy_from_slice(&head[8..16]);
        let mut h = [0u8; 32];
        h.copy_from_slice(&head[16..48]);
        Ok((
            UpdateHeader {
                round: u64::from_le_bytes(r),
                base_model: Hash32(h),
            },
            body,
        ))
    }
}

impl Statement for UpdatePayload {
    const KIND: StatementKind = StatementKind::Update;
    fn to_payload(&self) -> Vec<u8> {
        Self::encode(self.round, &self.base_model, &self.body)
    }
    fn from_payload(bytes: &[u8]) -> Result<Self, StatementError> {
        let (h, body) = Self::split(bytes)?;
        Ok(UpdatePayload {
            round: h.round,
            base_model: h.base_model,
            body: body.to_vec(),
        })
    }
}

impl Statement for RoundReceipt {
    const KIND: StatementKind = StatementKind::RoundReceipt;
    fn to_payload(&self) -> Vec<u8> {
        self.to_json()
    }
    fn from_payload(bytes: &[u8]) -> Result<Self, StatementError> {
        RoundReceipt::from_json(bytes).map_err(|e| payload_error(Self::KIND, e))
    }
}

/// The JSON beside a checkpoint's weights, and the payload of its signed manifest: the model
/// hash (SHA-256 of the canonical safetensors bytes), the step, the job's config hash and
/// dataset root, and the architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointManifest {
    pub version: u32,
    /// SHA-256 of the safetensors file.
    pub model_hash: Hash32,
    pub step: u64,
    pub config_hash: Hash32,
    pub data_root: Hash32,
    pub tokenizer_sha256: Hash32,
    pub method: String,
    pub params: u64,
    pub val_loss: Option<f64>,
    /// The weights file, relative to the manifest.
    pub weights: String,
    /// The architecture the weights belong to.
    pub model: ModelConfig,
    pub vocab: u32,
    /// A sealed job's checkpoint: SHA-256 of the sealed weights file (the envelope the hosts
    /// store and move); `model_hash` then names the plaintext inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_hash: Option<Hash32>,
}

impl CheckpointManifest {
    /// SHA-256 of the weights file as stored: the sealed envelope for a sealed job, the
    /// safetensors otherwise.
    pub fn file_hash(&self) -> Hash32 {
        self.sealed_hash.unwrap_or(self.model_hash)
    }
}

impl Statement for CheckpointManifest {
    const KIND: StatementKind = StatementKind::CheckpointManifest;
    fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    fn from_payload(bytes: &[u8]) -> Result<Self, StatementError> {
        from_json(Self::KIND, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_attestation::sim::default_sim_measurement;
    use conclave_attestation::{
        Endorsements, Nonce, Policy, SimAttester, SimConfig, UnixTime, appraise,
    };

    #[test]
    fn kinds_round_trip_their_tags() {
        for k in StatementKind::ALL {
            assert_eq!(StatementKind::from_tag(k.tag()), Some(k));
        }
        assert_eq!(StatementKind::from_tag("nope"), None);
    }

    #[test]
    fn update_payload_splits_and_refuses_short_or_foreign_bytes() {
        let base = Hash32::sha256(b"model");
        let p = UpdatePayload::encode(7, &base, b"body");
        let (h, body) = UpdatePayload::split(&p).unwrap();
        assert_eq!((h.round, h.base_model, body), (7, base, &b"body"[..]));
        let u = UpdatePayload::from_payload(&p).unwrap();
        assert_eq!(u.to_payload(), p);
        assert!(
            UpdatePayload::split(&p[..47])
                .unwrap_err()
                .to_string()
                .contains("shorter")
        );
        let mut bad = p.clone();
        bad[0] = b'X';
        assert!(
            UpdatePayload::split(&bad)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
    }

    #[test]
    fn signed_statements_verify_only_as_their_kind_domain_and_signer() {
        let job = JobId([0x11; 32]);
        let domain = job_domain(&job, &Hash32::sha256(b"spec"));
        let ctx = BindingContext {
            job_id: job,
            nonce: Nonce([3; 32]),
        };
        let key = EnclaveKey::generate();
        let att = SimAttester::new(SimConfig::default()).unwrap();
        let ev = att.evidence(&key.report_data(&ctx));
        let mut policy = Policy {
            allow_sim: true,
            ..Policy::default()
        };
        policy.measurements = vec![default_sim_measurement()];
        let acc = appraise(
            &ev,
            &Endorsements::default(),
            &policy,
            UnixTime(1_800_000_000),
        )
        .unwrap()
        .accepted()
        .unwrap();
        let stmt = JobAccepted {
            job_id: job,
            spec_hash: Hash32::sha256(b"spec"),
            config_hash: Hash32::sha256(b"c"),
            data_root: Hash32::sha256(b"d"),
            operator: 0,
            operators: 1,
            model_hash: Hash32::sha256(b"m"),
            params: 5,
        };
        let s = Signed::seal(&key, &domain, stmt.clone(), ev.hash()).unwrap();
        let v = Signed::<JobAccepted>::verify(&s.bytes, &domain, &acc, &ctx).unwrap();
        assert_eq!(v.statement, stmt);
        assert_eq!(v.signer(), key.address());
        // Another kind, another domain, another signer: refused by name.
        assert!(Signed::<UpdatePayload>::verify(&s.bytes, &domain, &acc, &ctx).is_err());
        assert!(Signed::<JobAccepted>::verify(&s.bytes, "conclave/v1/job/00", &acc, &ctx).is_err());
        let other = EnclaveKey::generate().address();
        let e =
            Signed::<JobAccepted>::verify_from(&s.bytes, &domain, &acc, &ctx, other).unwrap_err();
        assert!(matches!(e, StatementError::OtherSigner { .. }), "{e}");
        // A payload changed after signing.
        let mut env = s.envelope.clone();
        env.payload.push(b' ');
        assert!(Signed::<JobAccepted>::verify(&env.encode(), &domain, &acc, &ctx).is_err());
    }
}
