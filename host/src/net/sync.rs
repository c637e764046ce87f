//! Request-response on the operator network: serving our latest checkpoint and our updates
//! gossiped by reference, and fetching peers' updates by reference in chunks (hash-checked,
//! then judged by the state like an inline update).
//!
//! Fetching is bounded: [`SyncCodec`] refuses an answer longer than what its request asked
//! for can take (a chunk of `len` bytes in base64 and JSON) after reading one byte past that
//! bound, without buffering the rest; each chunk is hashed as it arrives (no second pass),
//! the envelope's head is checked on the first chunk (job domain, `update` kind, the declared
//! size), a fetch never holds more than the size its reference declared (which the state
//! bounds by the job's largest update), and at most [`MAX_FETCHES`] run at once, one per
//! publisher, the rest queued (what the state wants, so at most the peers × 2). So the bytes in flight are at most [`MAX_FETCHES`] × (the largest update + one
//! answer, [`chunk_response_max`] of [`wire::MAX_CHUNK`]).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;

use anyhow::Result;
use conclave_attestation::JobId;
use conclave_attestation::envelope::{ENVELOPE_MAGIC, MAX_TAG};
use conclave_protocol::channel::{Blob, PeerEvidence};
use conclave_protocol::sync::{self as wire, SyncRequest, SyncResponse};
use conclave_protocol::{Hash32, StatementKind, gossip};
use futures::prelude::*;
use libp2p::request_response::{self, OutboundFailure};
use libp2p::{PeerId, StreamProtocol};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{Net, Verdict};

/// Most updates fetched by reference at once (the others wait their turn).
pub const MAX_FETCHES: usize = 4;

/// Bytes of an answer beyond a chunk's base64: the JSON around it, or a refusal's reason.
pub const RESPONSE_OVERHEAD: u64 = 1024;

/// The longest answer to a request for `len` bytes (a chunk of a checkpoint or of an update
/// by reference): the bytes in base64 and [`RESPONSE_OVERHEAD`].
pub fn chunk_response_max(len: u32) -> u64 {
    4 * (len as u64).div_ceil(3) + RESPONSE_OVERHEAD
}

/// The longest answer `req` may get.
pub fn response_max(req: &SyncRequest) -> u64 {
    match req {
        SyncRequest::Latest { .. } => wire::MAX_SYNC_RESPONSE,
        SyncRequest::KeyChallenge { .. } | SyncRequest::KeyRelease { .. } => 64 * 1024,
        SyncRequest::Chunk { len, .. } | SyncRequest::Blob { len, .. } => {
            chunk_response_max(*len).min(wire::MAX_SYNC_RESPONSE)
        }
    }
}

/// The sync protocol's codec: JSON, a request at most [`wire::MAX_SYNC_REQUEST`] bytes and an
/// answer at most [`response_max`] of the request it answers (libp2p clones the codec for each
/// outbound stream and writes the request before it reads the answer, so the bound is that
/// request's). An answer over it is refused after its bound + 1 bytes are read.
#[derive(Debug, Clone)]
pub struct SyncCodec {
    response_max: u64,
}

impl Default for SyncCodec {
    fn default() -> Self {
        SyncCodec {
            response_max: wire::MAX_SYNC_RESPONSE,
        }
    }
}

/// Reads at most `max` bytes of JSON; more is an error (`InvalidData`), found one byte past
/// the bound.
async fn read_json<T, V>(io: &mut T, max: u64, what: &str) -> io::Result<V>
where
    T: AsyncRead + Unpin + Send,
    V: serde::de::DeserializeOwned,
{
    let mut v = Vec::with_capacity(max.min(64 * 1024) as usize);
    io.take(max.saturating_add(1)).read_to_end(&mut v).await?;
    if v.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} longer than {max} bytes, the bound of this request"),
        ));
    }
    // A truncated answer is `UnexpectedEof` (the stream ended early), anything else
    // `InvalidData`.
    Ok(serde_json::from_slice(&v)?)
}

async fn write_json<T, V>(io: &mut T, v: &V) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
    V: serde::Serialize,
{
    let data = serde_json::to_vec(v)?;
    io.write_all(&data).await
}

type IoFuture<'a, V> = Pin<Box<dyn Future<Output = io::Result<V>> + Send + 'a>>;

// `request_response::Codec` is an `async_trait`; its methods are written out here.
impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    fn read_request<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        _: &'b StreamProtocol,
        io: &'c mut T,
    ) -> IoFuture<'f, SyncRequest>
    where
        T: AsyncRead + Unpin + Send + 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(read_json(io, wire::MAX_SYNC_REQUEST, "request"))
    }

    fn read_response<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        _: &'b StreamProtocol,
        io: &'c mut T,
    ) -> IoFuture<'f, SyncResponse>
    where
        T: AsyncRead + Unpin + Send + 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(read_json(io, self.response_max, "answer"))
    }

    fn write_request<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        _: &'b StreamProtocol,
        io: &'c mut T,
        req: SyncRequest,
    ) -> IoFuture<'f, ()>
    where
        T: AsyncWrite + Unpin + Send + 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        self.response_max = response_max(&req);
        Box::pin(async move { write_json(io, &req).await })
    }

    fn write_response<'a, 'b, 'c, 'f, T>(
        &'a mut self,
        _: &'b StreamProtocol,
        io: &'c mut T,
        resp: SyncResponse,
    ) -> IoFuture<'f, ()>
    where
        T: AsyncWrite + Unpin + Send + 'f,
        'a: 'f,
        'b: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(async move { write_json(io, &resp).await })
    }
}

/// The longest envelope head: magic, two tags with their lengths, the payload length.
const HEAD_MAX: usize = 8 + 2 * (2 + MAX_TAG) + 4;
/// The envelope's fixed trailer: signer, evidence hash, signature.
const TRAILER: u64 = 20 + 32 + 65;

/// Checks the head of an update envelope of `size` bytes from its first bytes (at least
/// [`HEAD_MAX`] of them, or all): the magic, the job's domain, the `update` kind, and a
/// payload length that makes the envelope `size` bytes. The signature is checked once all of
/// it is here; this only refuses garbage before it is fetched whole.
pub fn check_envelope_head(b: &[u8], domain: &str, size: u64) -> Result<(), String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = b
            .get(at..at + n)
            .ok_or_else(|| format!("the envelope ends within its head ({} bytes)", b.len()))?;
        at += n;
        Ok(s)
    };
    if take(8)? != ENVELOPE_MAGIC {
        return Err("not an envelope (bad magic)".into());
    }
    for (what, want) in [("domain", domain), ("kind", StatementKind::Update.tag())] {
        let l = take(2)?;
        let n = u16::from_le_bytes([l[0], l[1]]) as usize;
        if take(n)? != want.as_bytes() {
            return Err(format!("the envelope's {what} is not {want}"));
        }
    }
    let l = take(4)?;
    let payload = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as u64;
    let total = (8 + 2 + domain.len() + 2 + StatementKind::Update.tag().len() + 4) as u64
        + payload
        + TRAILER;
    if total != size {
        return Err(format!(
            "the envelope is {total} bytes by its head, the reference said {size}"
        ));
    }
    Ok(())
}

/// An update being fetched by reference from its publisher: the bytes so far (at most the
/// declared size) and their running hash.
pub(super) struct Fetch {
    round: u64,
    operator: u32,
    blob: gossip::BlobRef,
    from: PeerId,
    buf: Vec<u8>,
    hasher: Sha256,
    head_checked: bool,
}

/// What fetching by reference did (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Fetches started (each a request per chunk).
    pub started: u64,
    /// Chunk requests sent.
    pub requests: u64,
    /// Fetches that ended with the whole update (judged by the state).
    pub completed: u64,
    /// Fetches ended by the publisher's fault ([`super::Misbehaved::BadBlob`]).
    pub refused: u64,
    /// Fetches ended otherwise (timeouts, refusals, a round gone by).
    pub failed: u64,
    /// Fetched bytes held now, and the most held at once.
    pub bytes_in_flight: u64,
    pub peak_bytes_in_flight: u64,
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
        | SyncRequest::Blob { job_id, .. }
        | SyncRequest::KeyChallenge { job_id }
        | SyncRequest::KeyRelease { job_id, .. }) = req;
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
            SyncRequest::KeyChallenge { .. } | SyncRequest::KeyRelease { .. } => {
                refused("key requests are served by the node's enclave".into())
            }
        }
    }
}

/// Key requests queued at most (each costs the enclave an appraisal).
pub const MAX_KEY_REQUESTS: usize = 16;

/// A key request waiting for the node's enclave.
pub type KeyRequestIn = (
    PeerId,
    SyncRequest,
    request_response::ResponseChannel<SyncResponse>,
);

impl Net {
    /// The key requests received since the last call.
    pub fn take_key_requests(&mut self) -> Vec<KeyRequestIn> {
        std::mem::take(&mut self.key_requests)
    }

    /// Answers a queued request.
    pub fn respond(
        &mut self,
        channel: request_response::ResponseChannel<SyncResponse>,
        resp: SyncResponse,
    ) {
        let _ = self.swarm.behaviour_mut().sync.send_response(channel, resp);
    }

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
                // Key requests come from enclaves not yet in the job (they have no key to load
                // it with): queued for the node to put to its enclave, which appraises them.
                if let SyncRequest::KeyChallenge { job_id }
                | SyncRequest::KeyRelease { job_id, .. } = &request
                {
                    let refused = |reason: String| SyncResponse::Refused { reason };
                    let resp = if let Err(e) = request.check() {
                        Some(refused(e))
                    } else if *job_id != self.state.view.job {
                        Some(refused("another job".into()))
                    } else if self.key_requests.len() >= MAX_KEY_REQUESTS {
                        Some(refused("busy: too many key requests queued".into()))
                    } else {
                        None
                    };
                    match resp {
                        Some(r) => {
                            let _ = self.swarm.behaviour_mut().sync.send_response(channel, r);
                        }
                        None => self.key_requests.push((peer, request, channel)),
                    }
                    return;
                }
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
                    self.on_fetch_failure(f, error);
                } else {
                    self.answers.insert(request_id, Err(error.to_string()));
                }
            }
            _ => {}
        }
    }

    /// Starts fetching an update gossiped by reference, as validation asked, or queues it
    /// while [`MAX_FETCHES`] are running.
    pub(super) fn start_fetch(
        &mut self,
        round: u64,
        operator: u32,
        blob: gossip::BlobRef,
        from: PeerId,
    ) {
        let f = Fetch {
            round,
            operator,
            blob,
            from,
            buf: Vec::new(),
            hasher: Sha256::new(),
            head_checked: false,
        };
        self.fetch_stats.started += 1;
        self.fetch_queue.push_back(f);
        self.run_queue();
    }

    /// Starts queued fetches while fewer than [`MAX_FETCHES`] run, one per operator at a
    /// time (so that a few slow publishers cannot hold every slot), in order; those of a
    /// round gone by are dropped.
    fn run_queue(&mut self) {
        let current = self.state.round;
        self.fetch_queue.retain(|q| q.round >= current);
        while self.fetches.len() < MAX_FETCHES {
            let fetches = &self.fetches;
            let free = |q: &Fetch| !fetches.values().any(|f| f.operator == q.operator);
            let Some(next) = self
                .fetch_queue
                .iter()
                .position(free)
                .and_then(|i| self.fetch_queue.remove(i))
            else {
                break;
            };
            self.next_chunk(next);
        }
    }

    /// Asks for the next chunk of `f`, unless its round has gone by.
    fn next_chunk(&mut self, f: Fetch) {
        if f.round < self.state.round {
            info!(
                "update {} of round {} from {}: the round has gone by; not fetched",
                f.blob.sha256, f.round, f.from
            );
            self.end_fetch(f, None);
            return;
        }
        let offset = f.buf.len() as u64;
        let len = f
            .blob
            .size
            .saturating_sub(offset)
            .min(wire::MAX_CHUNK as u64) as u32;
        let req = SyncRequest::Blob {
            job_id: self.state.view.job,
            sha256: f.blob.sha256,
            offset,
            len,
        };
        self.fetch_stats.requests += 1;
        let id = self.swarm.behaviour_mut().sync.send_request(&f.from, req);
        self.fetches.insert(id, f);
    }

    /// A fetch ended without an update: `blame` says how the publisher misbehaved, if it
    /// did. Frees its bytes and starts the next queued fetch.
    fn end_fetch(&mut self, f: Fetch, blame: Option<String>) {
        let blamed = blame.is_some();
        if let Some(why) = self.state.fetch_failed(f.round, f.operator, blame) {
            let n = self.state.blame.get(&f.operator).copied().unwrap_or(0);
            // Application score: −1 (× gossipsub's weight of 10) per update served wrong.
            let gs = &mut self.swarm.behaviour_mut().gossipsub;
            gs.set_application_score(&f.from, -(n as f64));
            let score = gs.peer_score(&f.from).unwrap_or(0.0);
            warn!(
                "fetched update {} from {}: {why} (peer score now {score:.1})",
                f.blob.sha256, f.from
            );
        }
        if blamed {
            self.fetch_stats.refused += 1;
        } else {
            self.fetch_stats.failed += 1;
        }
        self.release(f);
    }

    /// Frees a fetch's bytes and starts queued fetches while there is room.
    fn release(&mut self, f: Fetch) {
        self.fetch_stats.bytes_in_flight = self
            .fetch_stats
            .bytes_in_flight
            .saturating_sub(f.buf.len() as u64);
        drop(f);
        self.run_queue();
    }

    /// A chunk request of `f` failed on the wire. An answer over its bound or that does not
    /// parse is the publisher's fault; a timeout or a closed connection is not.
    fn on_fetch_failure(&mut self, f: Fetch, error: OutboundFailure) {
        let blame = match &error {
            OutboundFailure::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                Some(format!("its answer: {e}"))
            }
            _ => None,
        };
        if blame.is_none() {
            warn!(
                "fetching update {} of round {} from {}: {error}",
                f.blob.sha256, f.round, f.from
            );
        }
        self.end_fetch(f, blame);
    }

    fn on_fetched(&mut self, mut f: Fetch, response: SyncResponse) {
        let bytes = match response {
            SyncResponse::Chunk { offset, bytes } => {
                let have = f.buf.len() as u64;
                if offset != have || bytes.0.is_empty() || bytes.0.len() as u64 > f.blob.size - have
                {
                    let why = format!(
                        "a chunk of {} bytes at {offset}, where {} bytes from {have} were asked",
                        bytes.0.len(),
                        f.blob.size - have
                    );
                    self.end_fetch(f, Some(why));
                    return;
                }
                bytes.0
            }
            SyncResponse::Refused { reason } => {
                warn!(
                    "fetching update {} of round {} from {}: refused: {reason}",
                    f.blob.sha256, f.round, f.from
                );
                self.end_fetch(f, None);
                return;
            }
            other => {
                let why = format!("answered {other:?} to a request for a chunk");
                self.end_fetch(f, Some(why));
                return;
            }
        };
        f.hasher.update(&bytes);
        f.buf.extend_from_slice(&bytes);
        let st = &mut self.fetch_stats;
        st.bytes_in_flight += bytes.len() as u64;
        st.peak_bytes_in_flight = st.peak_bytes_in_flight.max(st.bytes_in_flight);
        drop(bytes);
        let complete = f.buf.len() as u64 == f.blob.size;
        if !f.head_checked && (f.buf.len() >= HEAD_MAX || complete) {
            f.head_checked = true;
            if let Err(why) = check_envelope_head(&f.buf, &self.state.view.domain, f.blob.size) {
                self.end_fetch(f, Some(why));
                return;
            }
        }
        if !complete {
            self.next_chunk(f);
            return;
        }
        let hash = Hash32(std::mem::take(&mut f.hasher).finalize().into());
        if hash != f.blob.sha256 {
            let why = format!("the bytes hash to {hash}, not {}", f.blob.sha256);
            self.end_fetch(f, Some(why));
            return;
        }
        self.fetch_stats.completed += 1;
        self.fetch_stats.bytes_in_flight = self
            .fetch_stats
            .bytes_in_flight
            .saturating_sub(f.buf.len() as u64);
        let (round, from, size) = (f.round, f.from, f.buf.len());
        let u = gossip::Update {
            round,
            envelope: Blob(std::mem::take(&mut f.buf)),
            blob: None,
        };
        self.release(f);
        match self.state.accept_update(u, Some(&from)) {
            Verdict::Accept => {
                info!("fetched update of round {round} ({size} bytes) from {from} by reference")
            }
            Verdict::Ignore(why) => info!("fetched update from {from}: {why}"),
            Verdict::Reject(why) => warn!("fetched update from {from}: {why}"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_attestation::{EnclaveKey, EvidenceHash};
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec as _;

    fn protocol() -> StreamProtocol {
        StreamProtocol::new(wire::SYNC_PROTOCOL)
    }

    fn blob_request(len: u32) -> SyncRequest {
        SyncRequest::Blob {
            job_id: JobId([1; 32]),
            sha256: Hash32([2; 32]),
            offset: 0,
            len,
        }
    }

    fn chunk(n: usize) -> Vec<u8> {
        serde_json::to_vec(&SyncResponse::Chunk {
            offset: 0,
            bytes: Blob(vec![0xab; n]),
        })
        .unwrap()
    }

    /// An answer is bounded by its request: what a chunk of `len` bytes takes passes, more is
    /// refused after one byte past the bound, however long the answer.
    #[test]
    fn answers_are_bounded_by_their_request() {
        for len in [1u32, 100, 4096, wire::MAX_CHUNK] {
            let mut codec = SyncCodec::default();
            let mut sent = Cursor::new(Vec::new());
            block_on(codec.write_request(&protocol(), &mut sent, blob_request(len))).unwrap();
            let max = chunk_response_max(len);
            assert!(max <= wire::MAX_SYNC_RESPONSE);
            // A full chunk passes.
            let mut ok = Cursor::new(chunk(len as usize));
            match block_on(codec.read_response(&protocol(), &mut ok)).unwrap() {
                SyncResponse::Chunk { bytes, .. } => assert_eq!(bytes.0.len(), len as usize),
                other => panic!("{other:?}"),
            }
            // Four times as much is refused, having read one byte past the bound.
            let mut big = Cursor::new(chunk(4 * len as usize + 1024));
            let e = block_on(codec.read_response(&protocol(), &mut big)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("bound of this request"), "{e}");
            assert_eq!(big.position(), max + 1);
        }
        // A request for the latest checkpoint keeps the protocol's bound.
        let mut codec = SyncCodec::default();
        let latest = SyncRequest::Latest {
            job_id: JobId([1; 32]),
        };
        block_on(codec.write_request(&protocol(), &mut Cursor::new(Vec::new()), latest)).unwrap();
        assert_eq!(codec.response_max, wire::MAX_SYNC_RESPONSE);
        // Requests are bounded, garbage is invalid data, a cut answer an early end.
        let mut long = Cursor::new(vec![b' '; wire::MAX_SYNC_REQUEST as usize + 10]);
        let e = block_on(codec.read_request(&protocol(), &mut long)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut junk = Cursor::new(b"\x00not json".to_vec());
        let e = block_on(codec.read_response(&protocol(), &mut junk)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut cut = chunk(100);
        cut.truncate(50);
        let e = block_on(codec.read_response(&protocol(), &mut Cursor::new(cut))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// At most [`MAX_FETCHES`] fetches run, one per operator, the rest wait in order; a
    /// round gone by drops its queued fetches. (No peer is reachable: nothing is polled.)
    #[tokio::test]
    async fn fetches_run_at_most_max_at_once_one_per_operator() {
        use crate::net::state::{JobView, State};
        use std::collections::BTreeSet;
        let dir = tempfile::tempdir().unwrap();
        let job = JobId([0x11; 32]);
        let view = JobView {
            job,
            domain: conclave_protocol::job_domain(&job, &Hash32::ZERO),
            policy: conclave_attestation::Policy::default(),
            operators: 6,
        };
        let mut n = Net::new(
            libp2p::identity::Keypair::generate_ed25519(),
            State::new(view),
            dir.path().join("eq"),
        )
        .unwrap();
        let peers: Vec<PeerId> = (0..6)
            .map(|_| {
                libp2p::identity::Keypair::generate_ed25519()
                    .public()
                    .to_peer_id()
            })
            .collect();
        for round in 0..2u64 {
            for (o, p) in peers.iter().enumerate() {
                let blob = gossip::BlobRef {
                    sha256: Hash32([(o as u8) | ((round as u8) << 4); 32]),
                    size: 100,
                };
                n.start_fetch(round, o as u32, blob, *p);
            }
        }
        let running = |n: &Net| -> Vec<(u64, u32)> {
            let mut v: Vec<_> = n.fetches.values().map(|f| (f.round, f.operator)).collect();
            v.sort();
            v
        };
        assert_eq!(running(&n), vec![(0, 0), (0, 1), (0, 2), (0, 3)]);
        assert_eq!(n.fetch_queue.len(), 8);
        assert_eq!(n.fetch_stats.started, 12);
        // Operator 0's fetch ends: the next in line whose operator is free is operator 4's.
        let id = *n.fetches.iter().find(|(_, f)| f.operator == 0).unwrap().0;
        let f = n.fetches.remove(&id).unwrap();
        n.end_fetch(f, None);
        assert_eq!(running(&n), vec![(0, 1), (0, 2), (0, 3), (0, 4)]);
        let ops: BTreeSet<u32> = n.fetches.values().map(|f| f.operator).collect();
        assert_eq!(ops.len(), MAX_FETCHES);
        // Round 1 begins: round 0's queued fetch (operator 5's) is dropped, round 1's start.
        n.state.round = 1;
        let id = *n.fetches.iter().find(|(_, f)| f.operator == 1).unwrap().0;
        let f = n.fetches.remove(&id).unwrap();
        n.end_fetch(f, None);
        assert_eq!(running(&n), vec![(0, 2), (0, 3), (0, 4), (1, 0)]);
        assert!(n.fetch_queue.iter().all(|q| q.round == 1));
        assert_eq!(n.fetch_queue.len(), 5);
        assert_eq!(n.fetch_stats.bytes_in_flight, 0);
    }

    #[test]
    fn envelope_heads_are_checked_before_the_whole_is_fetched() {
        let domain = "conclave/v1/job/test";
        let key = EnclaveKey::generate();
        let env = key
            .seal(
                domain,
                StatementKind::Update.tag(),
                vec![7; 5000],
                EvidenceHash([3; 32]),
            )
            .unwrap()
            .encode();
        let size = env.len() as u64;
        assert_eq!(check_envelope_head(&env[..HEAD_MAX], domain, size), Ok(()));
        assert_eq!(check_envelope_head(&env, domain, size), Ok(()));
        let refused = |b: &[u8], d: &str, n: u64| check_envelope_head(b, d, n).unwrap_err();
        assert!(refused(&env, domain, size + 1).contains("the reference said"));
        assert!(refused(&env, "conclave/v1/job/other", size).contains("domain"));
        assert!(refused(&[0x55; HEAD_MAX], domain, size).contains("bad magic"));
        assert!(refused(&env[..20], domain, size).contains("ends within its head"));
        let other = key
            .seal(domain, "round-receipt", vec![7; 10], EvidenceHash([3; 32]))
            .unwrap()
            .encode();
        assert!(refused(&other, domain, other.len() as u64).contains("kind"));
        // No input panics.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400 {
            let mut v = env[..len.min(env.len())].to_vec();
            for b in v.iter_mut().skip(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(7) {
                    *b = x as u8;
                }
            }
            let _ = check_envelope_head(&v, domain, size);
        }
    }
}
