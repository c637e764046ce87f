//! Checkpoint transfer between operators (libp2p request-response, protocol
//! [`SYNC_PROTOCOL`]): a joining or restarted operator asks a peer for its latest checkpoint,
//! then fetches the weights in chunks of at most [`MAX_CHUNK`] bytes.
//!
//! Nothing here has to be trusted: the weights must hash to the model hash that the signed
//! `checkpoint-manifest` names, and the joiner's enclave verifies that manifest against the
//! signer's evidence (which must pass the job policy) before it loads the weights.

use conclave_attestation::JobId;
use serde::{Deserialize, Serialize};

use crate::channel::{Blob, PeerEvidence};
use crate::hash::Hash32;

/// The request-response protocol name.
pub const SYNC_PROTOCOL: &str = "/conclave/sync/1";
/// Largest chunk of weights in one response.
pub const MAX_CHUNK: u32 = 1 << 20;
/// Largest checkpoint offered (weights bytes).
pub const MAX_CHECKPOINT: u64 = 16 << 30;
/// Largest encoded request (a key request, with its evidence in base64, is the largest).
pub const MAX_SYNC_REQUEST: u64 = 384 * 1024;
/// Largest encoded response (a chunk in base64 in JSON, or a manifest with evidence).
pub const MAX_SYNC_RESPONSE: u64 = 2 * MAX_CHUNK as u64 + 512 * 1024;

/// Joiner → peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SyncRequest {
    /// The peer's latest checkpoint: its description and signed manifest.
    Latest { job_id: JobId },
    /// `len` bytes of the weights of the checkpoint at `step`, from `offset`.
    Chunk {
        job_id: JobId,
        step: u64,
        offset: u64,
        len: u32,
    },
    /// A challenge for a key request to this peer's enclave: a sealed job's secret, released
    /// enclave to enclave ([`crate::keyrelease`]). Served by a node whose enclave holds it.
    KeyChallenge { job_id: JobId },
    /// A key request ([`crate::keyrelease::KeyRequest`], JSON) for this peer's enclave,
    /// answering its challenge.
    KeyRelease { job_id: JobId, request: Blob },
    /// `len` bytes from `offset` of a payload gossiped by reference
    /// ([`crate::gossip::BlobRef`]), named by its SHA-256 (hex).
    Blob {
        job_id: JobId,
        sha256: Hash32,
        offset: u64,
        len: u32,
    },
}

/// Peer → joiner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum SyncResponse {
    /// The latest checkpoint: the model after `round` closed rounds (optimizer step `step`).
    Latest {
        round: u64,
        step: u64,
        /// SHA-256 of the weights (what the manifest names).
        model_hash: Hash32,
        /// Bytes of the weights.
        size: u64,
        /// The signed `checkpoint-manifest` envelope.
        manifest: Blob,
        /// The manifest signer's evidence.
        signer: PeerEvidence,
    },
    Chunk {
        offset: u64,
        bytes: Blob,
    },
    /// The peer has no checkpoint yet (no round closed).
    NoCheckpoint,
    /// The peer's enclave's challenge for a key request.
    KeyChallenge {
        nonce: conclave_attestation::Nonce,
    },
    /// The job secret wrapped to the requesting enclave's key.
    KeyReleased {
        wrapped: Blob,
    },
    /// The request was refused (another job, a step not held, a range out of bounds).
    Refused {
        reason: String,
    },
}

impl SyncRequest {
    /// Bounds a request before it is served.
    pub fn check(&self) -> Result<(), String> {
        match self {
            SyncRequest::Latest { .. } | SyncRequest::KeyChallenge { .. } => Ok(()),
            SyncRequest::KeyRelease { request, .. } => {
                if request.0.len() > crate::keyrelease::MAX_KEY_REQUEST {
                    return Err(format!(
                        "a key request of {} bytes (at most {})",
                        request.0.len(),
                        crate::keyrelease::MAX_KEY_REQUEST
                    ));
                }
                Ok(())
            }
            SyncRequest::Chunk { len, offset, .. } | SyncRequest::Blob { len, offset, .. } => {
                if *len == 0 || *len > MAX_CHUNK {
                    return Err(format!("chunk length {len} (1 to {MAX_CHUNK})"));
                }
                if *offset >= MAX_CHECKPOINT {
                    return Err(format!("offset {offset} beyond {MAX_CHECKPOINT}"));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_bounded_and_round_trip() {
        let r = SyncRequest::Chunk {
            job_id: JobId([0xab; 32]),
            step: 3,
            offset: 0,
            len: MAX_CHUNK,
        };
        assert!(r.check().is_ok());
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<SyncRequest>(&text).unwrap(), r);
        for bad in [0, MAX_CHUNK + 1] {
            let r = SyncRequest::Chunk {
                job_id: JobId([0; 32]),
                step: 0,
                offset: 0,
                len: bad,
            };
            assert!(r.check().unwrap_err().contains("chunk length"));
        }
        assert!(
            serde_json::from_str::<SyncRequest>(r#"{"op":"latest","job_id":"x","extra":1}"#)
                .is_err()
        );
    }
}
