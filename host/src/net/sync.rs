//! Request-response on the operator network: serving our latest checkpoint and our updates
//! gossiped by reference, and fetching peers' updates by reference in chunks (hash-checked,
//! then judged by the state like an inline update).

use anyhow::Result;
use conclave_attestation::JobId;
use conclave_protocol::Hash32;
use conclave_protocol::channel::{Blob, PeerEvidence};
use conclave_protocol::gossip;
use conclave_protocol::sync::{self as wire, SyncRequest, SyncResponse};
use futures::StreamExt;
use libp2p::PeerId;
use libp2p::request_response;
use std::path::PathBuf;
use tracing::{info, warn};

use super::{Net, Verdict};

/// An update being fetched by reference from its publisher.
pub(super) struct Fetch {
    round: u64,
    blob: gossip::BlobRef,
    from: PeerId,
    buf: Vec<u8>,
}

/// A checkpoint this node serves: the weights file, its description and signed manifest.
#[derive(Debug, Clone)]
pub struct Offer {
    pub round: u64,
    pub step: u64,
    pub model_hash: Hash32,
    pub weights: PathBuf,
    pub size: u64,
    pub manifest: Vec<u8>,
    pub signer: PeerEvidence,
}

impl Offer {
    /// The answer to a request.
    pub fn answer(offer: Option<&Offer>, job: &JobId, req: &SyncRequest) -> SyncResponse {
        let refused = |reason: String| SyncResponse::Refused { reason };
        if let Err(e) = req.check() {
            return refused(e);
        }
        let (SyncRequest::Latest { job_id }
        | SyncRequest::Chunk { job_id, .. }
        | SyncRequest::Blob { job_id, .. }) = req;
        if job_id != job {
            return refused(format!("this node serves job {job}"));
        }
        if let SyncRequest::Blob { sha256, .. } = req {
            return refused(format!("no payload {sha256} held"));
        }
        let Some(o) = offer else {
            return SyncResponse::NoCheckpoint;
        };
        match req {
            SyncRequest::Latest { .. } => SyncResponse::Latest {
                round: o.round,
                step: o.step,
                model_hash: o.model_hash,
                size: o.size,
                manifest: Blob(o.manifest.clone()),
                signer: o.signer.clone(),
            },
            SyncRequest::Chunk {
                step, offset, len, ..
            } => {
                if *step != o.step {
                    return refused(format!("the checkpoint held is of step {}", o.step));
                }
                if *offset >= o.size {
                    return refused(format!("offset {offset} beyond {} bytes", o.size));
                }
                let n = (*len as u64).min(o.size - offset) as usize;
                let read = || -> std::io::Result<Vec<u8>> {
                    use std::io::{Read, Seek, SeekFrom};
                    let mut f = std::fs::File::open(&o.weights)?;
                    f.seek(SeekFrom::Start(*offset))?;
                    let mut b = vec![0u8; n];
                    f.read_exact(&mut b)?;
                    Ok(b)
                };
                match read() {
                    Ok(bytes) => SyncResponse::Chunk {
                        offset: *offset,
                        bytes: Blob(bytes),
                    },
                    Err(e) => refused(format!("reading the checkpoint: {e}")),
                }
            }
            SyncRequest::Blob { .. } => refused("no payload held".into()),
        }
    }
}

impl Net {
    pub(super) fn on_sync(&mut self, ev: request_response::Event<SyncRequest, SyncResponse>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                // Only operators of the job may fetch checkpoints.
                let known = self.state.peers.values().any(|p| p.peer_id == peer);
                let resp = if !known {
                    SyncResponse::Refused {
                        reason: "not an announced operator of the job".into(),
                    }
                } else if let SyncRequest::Blob {
                    job_id,
                    sha256,
                    offset,
                    len,
                } = &request
                {
                    match (request.check(), self.blobs.get(sha256)) {
                        (Err(e), _) => SyncResponse::Refused { reason: e },
                        _ if *job_id != self.state.view.job => SyncResponse::Refused {
                            reason: "another job".into(),
                        },
                        (_, None) => SyncResponse::Refused {
                            reason: format!("no payload {sha256} held"),
                        },
                        (_, Some((_, b))) if *offset >= b.len() as u64 => SyncResponse::Refused {
                            reason: format!("offset {offset} beyond {} bytes", b.len()),
                        },
                        (_, Some((_, b))) => {
                            let start = *offset as usize;
                            let end = (start + *len as usize).min(b.len());
                            SyncResponse::Chunk {
                                offset: *offset,
                                bytes: Blob(b[start..end].to_vec()),
                            }
                        }
                    }
                } else if known {
                    Offer::answer(self.offer.as_ref(), &self.state.view.job, &request)
                } else {
                    SyncResponse::Refused {
                        reason: "not an announced operator of the job".into(),
                    }
                };
                let _ = self.swarm.behaviour_mut().sync.send_response(channel, resp);
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(f) = self.fetches.remove(&request_id) {
                    self.on_fetched(f, response);
                } else {
                    self.answers.insert(request_id, Ok(response));
                }
            }
            Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(f) = self.fetches.remove(&request_id) {
                    warn!(
                        "fetching update {} of round {} from {}: {error}",
                        f.blob.sha256, f.round, f.from
                    );
                } else {
                    self.answers.insert(request_id, Err(error.to_string()));
                }
            }
            _ => {}
        }
    }

    /// Starts fetching an update gossiped by reference, as validation asked.
    pub(super) fn start_fetch(&mut self, round: u64, blob: gossip::BlobRef, from: PeerId) {
        let f = Fetch {
            round,
            blob,
            from,
            buf: Vec::new(),
        };
        self.next_chunk(f);
    }

    fn next_chunk(&mut self, f: Fetch) {
        let req = SyncRequest::Blob {
            job_id: self.state.view.job,
            sha256: f.blob.sha256,
            offset: f.buf.len() as u64,
            len: wire::MAX_CHUNK,
        };
        let id = self.swarm.behaviour_mut().sync.send_request(&f.from, req);
        self.fetches.insert(id, f);
    }

    fn on_fetched(&mut self, mut f: Fetch, response: SyncResponse) {
        match response {
            SyncResponse::Chunk { offset, bytes }
                if offset == f.buf.len() as u64
                    && !bytes.0.is_empty()
                    && offset + bytes.0.len() as u64 <= f.blob.size =>
            {
                f.buf.extend_from_slice(&bytes.0);
            }
            other => {
                warn!(
                    "fetching update {} of round {} from {}: answered {other:?}",
                    f.blob.sha256, f.round, f.from
                );
                return;
            }
        }
        if (f.buf.len() as u64) < f.blob.size {
            self.next_chunk(f);
            return;
        }
        if Hash32::sha256(&f.buf) != f.blob.sha256 {
            warn!(
                "update {} of round {} from {}: the bytes hash otherwise; dropped",
                f.blob.sha256, f.round, f.from
            );
            return;
        }
        let size = f.buf.len();
        let u = gossip::Update {
            round: f.round,
            envelope: Blob(f.buf),
            blob: None,
        };
        match self.state.accept_update(u, Some(&f.from)) {
            Verdict::Accept => info!(
                "fetched update of round {} ({size} bytes) from {} by reference",
                f.round, f.from
            ),
            Verdict::Ignore(why) => info!("fetched update from {}: {why}", f.from),
            Verdict::Reject(why) => warn!("fetched update from {}: {why}", f.from),
        }
        self.perform_outcomes();
    }

    /// Sends a sync request to `peer` and runs the swarm until its answer (or a failure).
    pub async fn request(&mut self, peer: PeerId, req: SyncRequest) -> Result<SyncResponse> {
        let addrs = self
            .state
            .peers
            .values()
            .find(|p| p.peer_id == peer)
            .map(|p| p.addrs.clone())
            .unwrap_or_default();
        let id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request_with_addresses(&peer, req, addrs);
        loop {
            if let Some(a) = self.answers.remove(&id) {
                return a.map_err(|e| anyhow::anyhow!("sync request to {peer}: {e}"));
            }
            let ev = self.swarm.select_next_some().await;
            self.on_event(ev);
        }
    }
}
