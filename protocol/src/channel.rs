//! The channel between the host and its enclave: requests, responses and their framing.
//!
//! The host is untrusted, so the enclave treats every request as hostile input: a frame is
//! `"CNVCH" ‖ version (u8) ‖ body length (u32 LE) ‖ body`, the body is one JSON object, and
//! both the length (before allocating) and the JSON shape (unknown fields refused) are checked.
//! Binary fields travel as standard base64. Whatever the enclave states comes back inside a
//! signed envelope (`conclave-attestation`), so the host can relay but not alter it.
//!
//! The transport is any byte stream: vsock in a VM, virtio-serial as a fallback, a Unix socket
//! for `sim` enclaves. [`write_frame`] and [`read_frame`] work on `std::io` streams.

use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use conclave_attestation::{EnclaveAddress, JobId, Nonce};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::hash::Hash32;

/// Frame magic.
pub const FRAME_MAGIC: &[u8; 5] = b"CNVCH";
/// The channel's version.
pub const CHANNEL_VERSION: u8 = 1;
/// Largest frame body either side accepts: a checkpoint of a few hundred MB of weights, in
/// base64, fits.
pub const MAX_FRAME: usize = 512 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum ChannelError {
    #[error("channel I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the peer closed the channel")]
    Closed,
    #[error("bad frame magic {0:02x?} (not a Conclave channel)")]
    BadMagic([u8; 5]),
    #[error("channel version {0} is not supported (expected {CHANNEL_VERSION})")]
    Version(u8),
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Bytes carried as standard padded base64 in JSON.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(Blob)
            .map_err(|e| serde::de::Error::custom(format!("not standard base64: {e}")))
    }
}

/// A peer's attestation, as every operator announces it: its evidence (a Conclave evidence
/// bundle) and the nonce its report data binds together with its key and the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEvidence {
    pub evidence: Blob,
    pub nonce: Nonce,
}

/// What an enclave is asked to work on: the job document ([`crate::job::JobDocument`]) as
/// published, the spec hash the host says the chain records for it, and this operator's slot.
/// The enclave hashes the document itself and refuses it when the hash differs from
/// `spec_hash`; it takes the config, the dataset root, the initial model, the operator count
/// and the appraisal policy from the document and nowhere else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub job_id: JobId,
    /// The job document's bytes.
    pub document: Blob,
    /// SHA-256 of the document as the chain (or the customer) names it.
    pub spec_hash: Hash32,
    /// This operator's index in the active set (its shard assignment).
    pub operator: u32,
}

/// Host → enclave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Evidence binding the enclave key to `job_id` and `nonce`.
    Hello { job_id: JobId, nonce: Nonce },
    /// Load a job; answered by a signed `job-accepted` statement.
    LoadJob { spec: JobSpec },
    /// Replace the model with a checkpoint: `weights` (safetensors) and either a signed
    /// `checkpoint-manifest` envelope from an attested peer (with the peer's evidence) or
    /// nothing, when the weights hash to the job's initial model hash. An open round is
    /// abandoned (its receipt is never signed).
    LoadCheckpoint {
        weights: Blob,
        manifest: Option<Blob>,
        signer: Option<PeerEvidence>,
    },
    /// Run this operator's share of `round`; answered by a signed `update`.
    TrainRound { round: u64 },
    /// Close the round with the peers' signed updates (and the peers' evidence); answered by a
    /// signed `round-receipt`.
    Aggregate {
        round: u64,
        updates: Vec<Blob>,
        peers: Vec<PeerEvidence>,
    },
    /// The current weights and a signed `checkpoint-manifest`.
    Checkpoint,
    /// The enclave's consent (EIP-712 `EnclaveRegistration`) that `operator` registers its key
    /// for on-chain job `job` of the `ConclaveTraining` contract at `contract` on `chain_id`.
    /// The enclave refuses unless the loaded job's id is `job` (32 bytes big-endian), and
    /// signs the evidence hash and measurement of its own evidence, appraised under the job's
    /// policy. Answered by [`Response::Registration`].
    ChainRegistration {
        chain_id: u64,
        /// `0x` + 40 hex digits.
        contract: String,
        job: u64,
        /// The operator account, `0x` + 40 hex digits.
        operator: String,
    },
    /// The enclave's checkpoint statement (EIP-712 `Checkpoint`) for on-chain round `round`:
    /// the model after `round` closed rounds and the hash of the receipt that closed the last
    /// of them. The enclave refuses any other round than the one its model is at, so it never
    /// signs two statements for one round. Answered by [`Response::Commitment`].
    ChainCheckpoint {
        chain_id: u64,
        contract: String,
        job: u64,
        round: u64,
    },
    /// The enclave's word that libp2p peer `peer_id` (and, with a chain, operator account
    /// `account`) speaks for it: answered by a signed `announce` statement naming the loaded
    /// job and this operator's slot.
    SignAnnounce {
        peer_id: String,
        #[serde(default)]
        account: Option<String>,
    },
    /// A sealed job's key request: the enclave makes a single-use X25519 key pair and evidence
    /// binding its public key, `sealing_id` and the key holder's `nonce`. Answered by
    /// [`Response::KeyRequest`] (a [`crate::keyrelease::KeyRequest`] to relay to the holder).
    KeyRequest { sealing_id: Hash32, nonce: Nonce },
    /// The holder's answer to the last key request: the job secret wrapped to its key. The
    /// enclave takes it only if it matches the job document's key check. Answered by
    /// [`Response::KeyHeld`].
    KeyRelease { wrapped: Blob },
    /// A challenge for a peer enclave's key request (this enclave holds the loaded sealed job's
    /// secret). Answered by [`Response::Challenge`].
    KeyChallenge,
    /// A peer enclave's key request (a [`crate::keyrelease::KeyRequest`]): released to it only
    /// if its evidence passes the job policy and binds its key and this enclave's challenge.
    /// Answered by [`Response::Wrapped`].
    ReleaseKey { request: Blob },
    /// Stop serving.
    Shutdown,
}

/// Enclave → host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    Hello {
        /// The enclave key's address.
        address: EnclaveAddress,
        /// Uncompressed public key x ‖ y, hex.
        public_key: String,
        /// The evidence bundle.
        evidence: Blob,
        tee: String,
    },
    /// A signed statement (an encoded envelope).
    Signed {
        envelope: Blob,
    },
    Checkpoint {
        weights: Blob,
        manifest: Blob,
    },
    /// A signed registration consent (the signature: 65 bytes r ‖ s ‖ v, hex; the measurement
    /// as the chain records it, 32 bytes).
    Registration {
        evidence_hash: Hash32,
        measurement: Hash32,
        signature: String,
    },
    /// A signed checkpoint statement (EIP-712 `Checkpoint`, which also names the job's spec
    /// hash and dataset root): `receipt_hash` is the round's outcome
    /// ([`crate::receipt::RoundReceipt::outcome_hash`]), `members` the enclaves whose updates
    /// the round aggregated, ascending (their `keccak256(abi.encodePacked(...))` is the
    /// statement's `updateSet`). Enclaves that closed the round the same way sign the same
    /// statement; a quorum of them is the round's certificate.
    Commitment {
        round: u64,
        model_hash: Hash32,
        receipt_hash: Hash32,
        members: Vec<EnclaveAddress>,
        signature: String,
    },
    /// A key request to relay to the key holder (the JSON of a
    /// [`crate::keyrelease::KeyRequest`]).
    KeyRequest {
        request: Blob,
    },
    /// The enclave holds the secret of the sealed job with this sealing id.
    KeyHeld {
        sealing_id: Hash32,
    },
    /// A challenge for a key request to this enclave.
    Challenge {
        sealing_id: Hash32,
        nonce: Nonce,
    },
    /// The job secret wrapped to a peer enclave's key (a [`crate::keyrelease::KeyResponse`]'s
    /// `wrapped`).
    Wrapped {
        wrapped: Blob,
    },
    Bye,
    /// The request was refused; the enclave keeps serving.
    Error {
        code: String,
        message: String,
    },
}

/// Writes one frame holding `msg` as JSON.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), ChannelError> {
    let body = serde_json::to_vec(msg).map_err(|e| ChannelError::Malformed(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(ChannelError::TooLarge {
            len: body.len(),
            max: MAX_FRAME,
        });
    }
    let mut head = [0u8; 10];
    head[..5].copy_from_slice(FRAME_MAGIC);
    head[5] = CHANNEL_VERSION;
    head[6..].copy_from_slice(&(body.len() as u32).to_le_bytes());
    w.write_all(&head)?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// Checks a frame header; returns the body length.
pub fn parse_header(head: &[u8; 10], max: usize) -> Result<usize, ChannelError> {
    let mut magic = [0u8; 5];
    magic.copy_from_slice(&head[..5]);
    if &magic != FRAME_MAGIC {
        return Err(ChannelError::BadMagic(magic));
    }
    if head[5] != CHANNEL_VERSION {
        return Err(ChannelError::Version(head[5]));
    }
    let len = u32::from_le_bytes([head[6], head[7], head[8], head[9]]) as usize;
    if len > max {
        return Err(ChannelError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ChannelError> {
    serde_json::from_slice(body).map_err(|e| ChannelError::Malformed(e.to_string()))
}

/// Reads one frame of at most `max` body bytes. A clean end of stream before a header is
/// [`ChannelError::Closed`].
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
    max: usize,
) -> Result<T, ChannelError> {
    let mut head = [0u8; 10];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Err(ChannelError::Closed),
            Ok(0) => {
                return Err(ChannelError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = parse_header(&head, max)?;
    // Grow with what actually arrives: a header's claim alone allocates at most 1 MiB.
    let mut body = Vec::with_capacity(len.min(1 << 20));
    r.take(len as u64).read_to_end(&mut body)?;
    if body.len() != len {
        return Err(ChannelError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    parse_body(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_bad_headers() {
        let req = Request::Aggregate {
            round: 3,
            updates: vec![Blob(vec![1, 2, 3])],
            peers: vec![PeerEvidence {
                evidence: Blob(vec![9; 40]),
                nonce: Nonce([0; 32]),
            }],
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).unwrap();
        let back: Request = read_frame(&mut buf.as_slice(), MAX_FRAME).unwrap();
        assert_eq!(back, req);

        let mut bad = buf.clone();
        bad[0] = b'X';
        assert!(matches!(
            read_frame::<Request>(&mut bad.as_slice(), MAX_FRAME),
            Err(ChannelError::BadMagic(_))
        ));
        let mut bad = buf.clone();
        bad[5] = 9;
        assert!(matches!(
            read_frame::<Request>(&mut bad.as_slice(), MAX_FRAME),
            Err(ChannelError::Version(9))
        ));
        assert!(matches!(
            read_frame::<Request>(&mut buf.as_slice(), 10),
            Err(ChannelError::TooLarge { max: 10, .. })
        ));
        assert!(matches!(
            read_frame::<Request>(&mut &buf[..buf.len() - 1], MAX_FRAME),
            Err(ChannelError::Io(_))
        ));
        assert!(matches!(
            read_frame::<Request>(&mut &[][..], MAX_FRAME),
            Err(ChannelError::Closed)
        ));
        // Unknown operations, unknown fields and bad base64 are named, not guessed.
        for body in [
            r#"{"op":"sign_anything","digest":"00"}"#,
            r#"{"op":"train_round","round":1,"extra":true}"#,
            r#"{"op":"load_checkpoint","weights":"@@@","manifest":null,"signer":null}"#,
        ] {
            assert!(matches!(
                parse_body::<Request>(body.as_bytes()),
                Err(ChannelError::Malformed(_))
            ));
        }
    }
}
