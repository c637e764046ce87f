//! The operator network: a libp2p swarm (TCP with noise and yamux, and QUIC; gossipsub,
//! identify, request-response for checkpoint transfer) on which the operators of a job
//! announce their attested enclaves, exchange their signed updates and report the model each
//! round ended on. One topic per message kind and job:
//! `conclave/<job>/announce`, `conclave/<job>/updates`, `conclave/<job>/heartbeat`.
//!
//! Gossipsub runs in manual-validation mode: nothing is forwarded before [`State::validate`]
//! judged it. A message is
//! - rejected (and counted against the peer that delivered it by gossipsub's peer scoring) when
//!   it is over its topic's size limit, does not decode, names another job, carries evidence
//!   the job policy refuses, is an update whose envelope does not verify against the evidence
//!   its signer announced, or was authored by another libp2p peer than the operator announced;
//! - ignored (dropped, not forwarded, no penalty) when it is a duplicate or a replay of an
//!   older round, or too far ahead of the current round;
//! - accepted otherwise. Two different valid updates from one signer for one round are an
//!   equivocation: both envelopes are kept in the storage folder as evidence, the second one is
//!   accepted (forwarded, so every operator gets the proof) and the signer is excluded from
//!   that round and every later one.
//!
//! Every verdict other than a plain duplicate is logged with its reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use conclave_attestation::{
    AcceptedEvidence, BindingContext, Endorsements, Envelope, Evidence, JobId, Nonce, Policy,
    UnixTime, appraise,
};
use conclave_protocol::channel::PeerEvidence;
use conclave_protocol::gossip::{self, Kind, Message};
use conclave_protocol::receipt::RoundReceipt;
use conclave_protocol::sync::{self, SyncRequest, SyncResponse};
use futures::StreamExt;
use libp2p::gossipsub::{
    self, IdentTopic, MessageAcceptance, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds,
    TopicHash, TopicScoreParams, ValidationMode,
};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identify, identity, kad, noise, tcp, yamux,
};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Magic of an `update` payload (as `conclave-enclave` seals it).
const UPDATE_PAYLOAD_MAGIC: &[u8; 8] = b"CNVUPR01";

/// Rounds ahead of the current one whose updates are kept (a faster peer may be one ahead).
pub const ROUND_WINDOW: u64 = 1;

/// Splits an `update` payload: round and the model hash it was computed from.
pub fn parse_update_payload(p: &[u8]) -> Result<(u64, [u8; 32])> {
    if p.len() < 48 || &p[..8] != UPDATE_PAYLOAD_MAGIC {
        anyhow::bail!("not an update payload (magic or length)");
    }
    let mut r = [0u8; 8];
    r.copy_from_slice(&p[8..16]);
    let mut h = [0u8; 32];
    h.copy_from_slice(&p[16..48]);
    Ok((u64::from_le_bytes(r), h))
}

/// A peer's signed receipt: the envelope and its payload (the receipt JSON).
pub type SignedReceipt = (Vec<u8>, Vec<u8>);

/// The job as the network layer sees it.
#[derive(Clone)]
pub struct JobView {
    pub job_hex: String,
    pub job: JobId,
    pub domain: String,
    pub policy: Policy,
    pub operators: u32,
}

/// An operator whose announce was accepted.
#[derive(Clone)]
pub struct Peer {
    pub operator: u32,
    pub address: String,
    pub evidence: PeerEvidence,
    pub accepted: AcceptedEvidence,
    pub ctx: BindingContext,
    pub peer_id: PeerId,
    pub addrs: Vec<Multiaddr>,
}

/// A validation verdict and its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Ignore(String),
    Reject(String),
}

/// What the node knows about the job's network: accepted announces, the round's updates,
/// equivocators, heartbeats. Pure logic (no I/O but the evidence files), so it can be tested
/// without a network.
pub struct State {
    pub view: JobView,
    /// The round the node is in.
    pub round: u64,
    pub peers: BTreeMap<u32, Peer>,
    by_evidence: HashMap<[u8; 32], u32>,
    /// Per round, per operator: the update envelope (encoded).
    pub updates: BTreeMap<u64, BTreeMap<u32, Vec<u8>>>,
    /// Operators caught equivocating (excluded from then on), with the round.
    pub banned: BTreeMap<u32, u64>,
    /// Per round, per operator: the model hash it reported.
    pub heartbeats: BTreeMap<u64, BTreeMap<u32, String>>,
    /// Per round, per operator: its signed receipt (envelope) and the receipt payload, from
    /// its heartbeat, verified against its announced evidence.
    pub receipts: BTreeMap<u64, BTreeMap<u32, SignedReceipt>>,
    /// Announces accepted for the first time since the driver last looked.
    pub new_peers: Vec<u32>,
    /// Updates gossiped by reference, to fetch from their publisher.
    pub wanted: Vec<(u64, gossip::BlobRef, PeerId)>,
    /// Where equivocation evidence is written.
    pub evidence_dir: PathBuf,
    /// Counters of verdicts, by kind of reason (for logs and tests).
    pub rejected: u64,
    pub ignored: u64,
}

impl State {
    pub fn new(view: JobView, evidence_dir: PathBuf) -> Self {
        State {
            view,
            round: 0,
            peers: BTreeMap::new(),
            by_evidence: HashMap::new(),
            updates: BTreeMap::new(),
            banned: BTreeMap::new(),
            heartbeats: BTreeMap::new(),
            receipts: BTreeMap::new(),
            new_peers: Vec::new(),
            wanted: Vec::new(),
            evidence_dir,
            rejected: 0,
            ignored: 0,
        }
    }

    /// The operators of the active set: announced and not excluded.
    pub fn active(&self) -> BTreeSet<u32> {
        self.peers
            .keys()
            .copied()
            .filter(|o| !self.banned.contains_key(o))
            .collect()
    }

    /// Whether every operator of the job has announced.
    pub fn all_announced(&self) -> bool {
        self.peers.len() as u32 == self.view.operators
    }

    /// The valid updates of `round` from the active set.
    pub fn round_updates(&self, round: u64) -> BTreeMap<u32, Vec<u8>> {
        let active = self.active();
        self.updates
            .get(&round)
            .map(|m| {
                m.iter()
                    .filter(|(o, _)| active.contains(o))
                    .map(|(o, u)| (*o, u.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Judges a message that came on `kind`'s topic, authored by `source`.
    pub fn validate(
        &mut self,
        kind: Kind,
        data: &[u8],
        source: Option<&PeerId>,
        now: UnixTime,
    ) -> Verdict {
        let v = match Message::decode_as(data, kind) {
            Err(e) => Verdict::Reject(e.to_string()),
            Ok(Message::Announce(a)) => self.on_announce(a, source, now),
            Ok(Message::Update(u)) => self.on_update(u, source),
            Ok(Message::Heartbeat(h)) => self.on_heartbeat(h, source),
        };
        match &v {
            Verdict::Reject(_) => self.rejected += 1,
            Verdict::Ignore(_) => self.ignored += 1,
            Verdict::Accept => {}
        }
        v
    }

    fn on_announce(
        &mut self,
        a: gossip::Announce,
        source: Option<&PeerId>,
        now: UnixTime,
    ) -> Verdict {
        if a.job_id != self.view.job_hex {
            return Verdict::Reject(format!("announce for another job {}", a.job_id));
        }
        if a.operator >= self.view.operators {
            return Verdict::Reject(format!(
                "operator {} is outside the active set of {}",
                a.operator, self.view.operators
            ));
        }
        let Ok(peer_id) = a.peer_id.parse::<PeerId>() else {
            return Verdict::Reject(format!("announce names an invalid peer id {}", a.peer_id));
        };
        if source != Some(&peer_id) {
            return Verdict::Reject(format!(
                "announce of peer {peer_id} authored by {}",
                source
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "nobody".into())
            ));
        }
        let ev = match Evidence::decode(&a.evidence.0) {
            Ok(ev) => ev,
            Err(e) => return Verdict::Reject(format!("operator {}: evidence: {e}", a.operator)),
        };
        let hash: [u8; 32] = ev.hash().0;
        let mut replaces = None;
        if let Some(p) = self.peers.get(&a.operator) {
            if p.accepted.evidence_hash().0 == hash && p.peer_id == peer_id {
                // A re-announce (for late joiners): forwarded, nothing new.
                return Verdict::Accept;
            }
            if p.peer_id != peer_id {
                return Verdict::Reject(format!(
                    "operator {} is already announced by enclave {} at another peer",
                    a.operator, p.address
                ));
            }
            // The same node (its persistent peer identity) with a new enclave: a restart.
            // The new evidence must pass like any other; the old key's messages stop counting.
            replaces = Some(p.accepted.evidence_hash().0);
        }
        if let Some(o) = self.by_evidence.get(&hash) {
            return Verdict::Reject(format!("this evidence is already operator {o}'s"));
        }
        let appraisal = match appraise(&ev, &Endorsements::default(), &self.view.policy, now) {
            Ok(x) => x,
            Err(e) => return Verdict::Reject(format!("operator {}: appraisal: {e}", a.operator)),
        };
        let Some(accepted) = appraisal.accepted() else {
            return Verdict::Reject(format!(
                "operator {}: evidence rejected: {}",
                a.operator,
                appraisal
                    .reasons
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        };
        let Ok(nonce) = Nonce::from_hex(&a.nonce) else {
            return Verdict::Reject("bad nonce".into());
        };
        let addrs = a
            .addrs
            .iter()
            .filter_map(|s| s.parse::<Multiaddr>().ok())
            .collect();
        if let Some(old) = replaces {
            self.by_evidence.remove(&old);
            eprintln!(
                "operator {} restarted: enclave {} replaces the one it announced before",
                a.operator, a.address
            );
        }
        self.by_evidence.insert(hash, a.operator);
        self.peers.insert(
            a.operator,
            Peer {
                operator: a.operator,
                address: a.address.to_ascii_lowercase(),
                evidence: PeerEvidence {
                    evidence: a.evidence,
                    nonce: a.nonce,
                },
                accepted,
                ctx: BindingContext {
                    job_id: self.view.job,
                    nonce,
                },
                peer_id,
                addrs,
            },
        );
        self.new_peers.push(a.operator);
        Verdict::Accept
    }

    /// An update whose envelope was fetched by reference (or our own), judged like one that
    /// came inline.
    pub fn accept_update(&mut self, u: gossip::Update, source: Option<&PeerId>) -> Verdict {
        self.on_update(u, source)
    }

    fn on_update(&mut self, u: gossip::Update, source: Option<&PeerId>) -> Verdict {
        if let Some(b) = u.blob {
            // Judged once fetched; only the round window can be checked now.
            if u.round < self.round || u.round > self.round + ROUND_WINDOW {
                return Verdict::Ignore(format!(
                    "update by reference for round {} outside the window (current {})",
                    u.round, self.round
                ));
            }
            let Some(src) = source else {
                return Verdict::Reject("an update by reference without its publisher".into());
            };
            if self.peers.values().all(|p| p.peer_id != *src) {
                return Verdict::Ignore(format!(
                    "update by reference from {src}, not an announced operator"
                ));
            }
            if !self.wanted.iter().any(|(_, w, _)| w.sha256 == b.sha256) {
                self.wanted.push((u.round, b, *src));
            }
            return Verdict::Accept;
        }
        let _ = source; // any peer may relay an update: the enclave's signature is what counts
        let env = match Envelope::decode(&u.envelope.0) {
            Ok(e) => e,
            Err(e) => return Verdict::Reject(format!("update envelope: {e}")),
        };
        let Some(&op) = self.by_evidence.get(&env.evidence_hash.0) else {
            return Verdict::Reject(format!(
                "update signed by 0x{}, whose evidence no operator announced (unattested signer)",
                hex::encode(env.signer.0)
            ));
        };
        let Some(peer) = self.peers.get(&op) else {
            return Verdict::Reject("unknown operator".into());
        };
        let signer = match env.verify_as(&self.view.domain, "update", &peer.accepted, &peer.ctx) {
            Ok(s) => s,
            Err(e) => return Verdict::Reject(format!("update of operator {op}: {e}")),
        };
        if format!("0x{}", hex::encode(signer.0)) != peer.address {
            return Verdict::Reject(format!(
                "update of operator {op} signed by another key than its announce names"
            ));
        }
        let (round, _base) = match parse_update_payload(&env.payload) {
            Ok(x) => x,
            Err(e) => return Verdict::Reject(format!("update of operator {op}: {e:#}")),
        };
        if round != u.round {
            return Verdict::Reject(format!(
                "update of operator {op} says round {} outside, {round} inside",
                u.round
            ));
        }
        if round < self.round {
            return Verdict::Ignore(format!(
                "replay: operator {op}'s update for round {round}, the current round is {}",
                self.round
            ));
        }
        if round > self.round + ROUND_WINDOW {
            return Verdict::Ignore(format!(
                "operator {op}'s update for round {round} is beyond the window (current {})",
                self.round
            ));
        }
        if let Some(r) = self.banned.get(&op) {
            return Verdict::Ignore(format!(
                "operator {op} is excluded (equivocated in round {r})"
            ));
        }
        let slot = self.updates.entry(round).or_default();
        match slot.get(&op) {
            None => {
                slot.insert(op, u.envelope.0);
                Verdict::Accept
            }
            Some(prev) => {
                let prev_payload = Envelope::decode(prev)
                    .map(|e| e.payload)
                    .unwrap_or_default();
                if Sha256::digest(&prev_payload) == Sha256::digest(&env.payload) {
                    return Verdict::Ignore("duplicate update".into());
                }
                // Equivocation: two different signed updates for one round. Keep both.
                let stem = format!("round-{round:06}-operator-{op}");
                let dir = self.evidence_dir.clone();
                let (a, b) = (prev.clone(), u.envelope.0.clone());
                let written = crate::run::write_atomic(&dir.join(format!("{stem}-a.env")), &a)
                    .and_then(|()| {
                        crate::run::write_atomic(&dir.join(format!("{stem}-b.env")), &b)
                    });
                if let Err(e) = written {
                    eprintln!("warning: storing equivocation evidence: {e:#}");
                }
                self.banned.insert(op, round);
                eprintln!(
                    "EQUIVOCATION: operator {op} ({}) signed two different updates for round \
                     {round}; evidence in {}; excluded from the round on",
                    peer.address,
                    dir.display()
                );
                // Forwarded: the pair is the proof every operator needs.
                Verdict::Accept
            }
        }
    }

    fn on_heartbeat(&mut self, h: gossip::Heartbeat, source: Option<&PeerId>) -> Verdict {
        let Some(peer) = self.peers.get(&h.operator) else {
            return Verdict::Ignore(format!(
                "heartbeat of operator {}, not announced",
                h.operator
            ));
        };
        if source != Some(&peer.peer_id) {
            return Verdict::Reject(format!(
                "heartbeat of operator {} authored by another peer",
                h.operator
            ));
        }
        if h.round + 1 < self.round || h.round > self.round + ROUND_WINDOW {
            return Verdict::Ignore(format!(
                "heartbeat of operator {} for round {} outside the window (current {})",
                h.operator, h.round, self.round
            ));
        }
        if self
            .heartbeats
            .get(&h.round)
            .is_some_and(|s| s.contains_key(&h.operator))
        {
            return Verdict::Ignore("duplicate heartbeat".into());
        }
        if let Some(r) = &h.receipt {
            let op = h.operator;
            let env = match Envelope::decode(&r.0) {
                Ok(e) => e,
                Err(e) => return Verdict::Reject(format!("receipt of operator {op}: {e}")),
            };
            let signer = match env.verify_as(
                &self.view.domain,
                "round-receipt",
                &peer.accepted,
                &peer.ctx,
            ) {
                Ok(s) => s,
                Err(e) => return Verdict::Reject(format!("receipt of operator {op}: {e}")),
            };
            if format!("0x{}", hex::encode(signer.0)) != peer.address {
                return Verdict::Reject(format!(
                    "receipt of operator {op} signed by another key than its announce names"
                ));
            }
            match RoundReceipt::from_json(&env.payload) {
                Ok(rc) if rc.round == h.round && rc.model_hash_after == h.model_hash => {}
                Ok(_) => {
                    return Verdict::Reject(format!(
                        "receipt of operator {op} is not of round {} ending on {}",
                        h.round, h.model_hash
                    ));
                }
                Err(e) => return Verdict::Reject(format!("receipt of operator {op}: {e}")),
            }
            self.receipts
                .entry(h.round)
                .or_default()
                .insert(op, (r.0.clone(), env.payload));
        }
        self.heartbeats
            .entry(h.round)
            .or_default()
            .insert(h.operator, h.model_hash);
        Verdict::Accept
    }
}

/// The swarm's behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub gossipsub: gossipsub::Behaviour,
    pub identify: identify::Behaviour,
    /// Checkpoint transfer ([`conclave_protocol::sync`]).
    pub sync: request_response::json::Behaviour<SyncRequest, SyncResponse>,
    /// Peer discovery beyond the bootstrap list.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// The Kademlia protocol of the operator network.
pub const KAD_PROTOCOL: &str = "/conclave/kad/1.0.0";

/// The job's topics, by kind.
pub fn topics(job_hex: &str) -> Vec<(Kind, IdentTopic)> {
    [Kind::Announce, Kind::Update, Kind::Heartbeat]
        .into_iter()
        .map(|k| (k, IdentTopic::new(k.topic(job_hex))))
        .collect()
}

/// Peer scoring: invalid messages (rejected by validation) weigh on the peer that delivered
/// them on every topic of the job; mesh-delivery quotas are off (rounds are seconds apart).
pub fn score_params(job_hex: &str) -> PeerScoreParams {
    let mut p = PeerScoreParams::default();
    for (_, t) in topics(job_hex) {
        p.topics.insert(
            t.hash(),
            TopicScoreParams {
                topic_weight: 1.0,
                time_in_mesh_weight: 0.01,
                time_in_mesh_quantum: Duration::from_secs(1),
                time_in_mesh_cap: 10.0,
                first_message_deliveries_weight: 1.0,
                first_message_deliveries_decay: 0.5,
                first_message_deliveries_cap: 10.0,
                mesh_message_deliveries_weight: 0.0,
                mesh_failure_penalty_weight: 0.0,
                invalid_message_deliveries_weight: -5.0,
                invalid_message_deliveries_decay: 0.9,
                ..TopicScoreParams::default()
            },
        );
    }
    p
}

/// Builds a swarm for `job_hex` with manual validation and peer scoring, subscribed to the
/// job's topics.
pub fn build_swarm(keypair: identity::Keypair, job_hex: &str) -> Result<Swarm<Behaviour>> {
    let job = job_hex.to_string();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_quic()
        .with_behaviour(
            |key| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let config = gossipsub::ConfigBuilder::default()
                    .validation_mode(ValidationMode::Strict)
                    .validate_messages()
                    .max_transmit_size(gossip::MAX_MESSAGE + 64 * 1024)
                    .heartbeat_interval(Duration::from_millis(500))
                    .build()?;
                let mut gs =
                    gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)?;
                gs.with_peer_score(score_params(&job), PeerScoreThresholds::default())?;
                let identify = identify::Behaviour::new(identify::Config::new(
                    "/conclave/1.0.0".into(),
                    key.public(),
                ));
                let codec = request_response::json::codec::Codec::default()
                    .set_request_size_maximum(sync::MAX_SYNC_REQUEST)
                    .set_response_size_maximum(sync::MAX_SYNC_RESPONSE);
                let sync = request_response::Behaviour::with_codec(
                    codec,
                    [(
                        StreamProtocol::new(sync::SYNC_PROTOCOL),
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(30)),
                );
                // Look up our own id again every few seconds: an operator set is small and
                // forms within seconds, and a lookup made before the bootstrap peer learned the
                // others' addresses finds nobody.
                let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
                kad_config.set_periodic_bootstrap_interval(Some(Duration::from_secs(5)));
                let mut kad = kad::Behaviour::with_config(
                    key.public().to_peer_id(),
                    kad::store::MemoryStore::new(key.public().to_peer_id()),
                    kad_config,
                );
                kad.set_mode(Some(kad::Mode::Server));
                Ok(Behaviour {
                    gossipsub: gs,
                    identify,
                    sync,
                    kad,
                })
            },
        )
        .map_err(|e| anyhow::anyhow!("building the swarm: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    for (_, t) in topics(job_hex) {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&t)
            .map_err(|e| anyhow::anyhow!("subscribing to {t}: {e}"))?;
    }
    Ok(swarm)
}

/// The node's network: the swarm and the validation state.
pub struct Net {
    pub swarm: Swarm<Behaviour>,
    pub state: State,
    topics: Vec<(Kind, IdentTopic)>,
    by_hash: HashMap<TopicHash, Kind>,
    /// The node's own announce (re-published when a new operator appears).
    pub own_announce: Option<Vec<u8>>,
    pub listen_addrs: Vec<Multiaddr>,
    /// Wall-clock source for appraisals.
    pub clock: fn() -> UnixTime,
    /// The checkpoint this node offers to joiners.
    pub offer: Option<Offer>,
    /// Answers to our sync requests, by request.
    answers: HashMap<OutboundRequestId, Result<SyncResponse, String>>,
    /// Our payloads gossiped by reference, by SHA-256 (hex), with their round.
    pub blobs: HashMap<String, (u64, Vec<u8>)>,
    /// Updates being fetched by reference.
    fetches: HashMap<OutboundRequestId, Fetch>,
}

/// An update being fetched by reference from its publisher.
struct Fetch {
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
    pub model_hash: String,
    pub weights: PathBuf,
    pub size: u64,
    pub manifest: Vec<u8>,
    pub signer: PeerEvidence,
}

impl Offer {
    /// The answer to a request.
    pub fn answer(offer: Option<&Offer>, job_hex: &str, req: &SyncRequest) -> SyncResponse {
        let refused = |reason: String| SyncResponse::Refused { reason };
        if let Err(e) = req.check() {
            return refused(e);
        }
        let (SyncRequest::Latest { job_id }
        | SyncRequest::Chunk { job_id, .. }
        | SyncRequest::Blob { job_id, .. }) = req;
        if job_id != job_hex {
            return refused(format!("this node serves job {job_hex}"));
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
                model_hash: o.model_hash.clone(),
                size: o.size,
                manifest: conclave_protocol::channel::Blob(o.manifest.clone()),
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
                        bytes: conclave_protocol::channel::Blob(bytes),
                    },
                    Err(e) => refused(format!("reading the checkpoint: {e}")),
                }
            }
            SyncRequest::Blob { .. } => refused("no payload held".into()),
        }
    }
}

impl Net {
    pub fn new(keypair: identity::Keypair, state: State) -> Result<Self> {
        let swarm = build_swarm(keypair, &state.view.job_hex)?;
        let topics = topics(&state.view.job_hex);
        let by_hash = topics.iter().map(|(k, t)| (t.hash(), *k)).collect();
        Ok(Net {
            swarm,
            state,
            topics,
            by_hash,
            own_announce: None,
            listen_addrs: Vec::new(),
            clock: crate::run::now,
            offer: None,
            answers: HashMap::new(),
            blobs: HashMap::new(),
            fetches: HashMap::new(),
        })
    }

    pub fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Publishes on `kind`'s topic. Having no peer yet is not an error (the caller
    /// re-publishes); other failures are.
    pub fn publish(&mut self, kind: Kind, bytes: Vec<u8>) -> Result<()> {
        let Some((_, topic)) = self.topics.iter().find(|(k, _)| *k == kind) else {
            anyhow::bail!("no topic for {}", kind.name());
        };
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.clone(), bytes)
        {
            Ok(_) => Ok(()),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic)
            | Err(gossipsub::PublishError::Duplicate) => Ok(()),
            Err(e) => Err(anyhow::anyhow!("publishing a {}: {e}", kind.name())),
        }
    }

    /// Validates our own message like a peer's (so it enters the state) and publishes it.
    pub fn publish_own(&mut self, msg: &Message) -> Result<()> {
        let bytes = msg.encode()?;
        let me = self.local_peer_id();
        let v = self
            .state
            .validate(msg.kind(), &bytes, Some(&me), (self.clock)());
        match v {
            Verdict::Accept | Verdict::Ignore(_) => {}
            Verdict::Reject(r) => anyhow::bail!("our own {} is invalid: {r}", msg.kind().name()),
        }
        if let Message::Announce(_) = msg {
            self.own_announce = Some(bytes.clone());
        }
        self.publish(msg.kind(), bytes)
    }

    /// Dials `addr` (bootstrap or an announced peer).
    pub fn dial(&mut self, addr: Multiaddr) {
        if let Err(e) = self.swarm.dial(addr.clone()) {
            eprintln!("dialing {addr}: {e}");
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                eprintln!("listening on {address}/p2p/{}", self.local_peer_id());
                self.listen_addrs.push(address);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let Some(&kind) = self.by_hash.get(&message.topic) else {
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Reject,
                        );
                    return;
                };
                let verdict = self.state.validate(
                    kind,
                    &message.data,
                    message.source.as_ref(),
                    (self.clock)(),
                );
                let acceptance = match &verdict {
                    Verdict::Accept => MessageAcceptance::Accept,
                    Verdict::Ignore(why) => {
                        if !why.starts_with("duplicate") {
                            eprintln!("ignored {} from {propagation_source}: {why}", kind.name());
                        }
                        MessageAcceptance::Ignore
                    }
                    Verdict::Reject(_) => MessageAcceptance::Reject,
                };
                let gs = &mut self.swarm.behaviour_mut().gossipsub;
                gs.report_message_validation_result(&message_id, &propagation_source, acceptance);
                if let Verdict::Reject(why) = &verdict {
                    let score = gs.peer_score(&propagation_source).unwrap_or(0.0);
                    eprintln!(
                        "rejected {} from {propagation_source}: {why} (peer score now {score:.1})",
                        kind.name()
                    );
                }
                self.after_announces();
                self.start_fetches();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(ev)) => self.on_sync(ev),
            // Discovery: what a peer says it listens on goes into the Kademlia table, and a
            // lookup of our own id finds the peers our bootstrap peers know.
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let b = self.swarm.behaviour_mut();
                let mut new = false;
                for a in info.listen_addrs {
                    new |= matches!(b.kad.add_address(&peer_id, a), kad::RoutingUpdate::Success);
                }
                if new {
                    let _ = b.kad.bootstrap();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) if peer != self.local_peer_id() && !self.swarm.is_connected(&peer) => {
                eprintln!("kademlia: found {peer}");
                if let Some(a) = addresses.iter().next() {
                    self.dial(a.clone());
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                eprintln!("connected to {peer_id}");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                eprintln!("dialing {peer_id:?} failed: {error}");
            }
            _ => {}
        }
    }

    fn on_sync(&mut self, ev: request_response::Event<SyncRequest, SyncResponse>) {
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
                        _ if *job_id != self.state.view.job_hex => SyncResponse::Refused {
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
                                bytes: conclave_protocol::channel::Blob(b[start..end].to_vec()),
                            }
                        }
                    }
                } else if known {
                    Offer::answer(self.offer.as_ref(), &self.state.view.job_hex, &request)
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
                    eprintln!(
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

    /// Starts fetching the updates gossiped by reference that validation asked for.
    fn start_fetches(&mut self) {
        for (round, blob, from) in std::mem::take(&mut self.state.wanted) {
            let f = Fetch {
                round,
                blob,
                from,
                buf: Vec::new(),
            };
            self.next_chunk(f);
        }
    }

    fn next_chunk(&mut self, f: Fetch) {
        let req = SyncRequest::Blob {
            job_id: self.state.view.job_hex.clone(),
            sha256: f.blob.sha256.clone(),
            offset: f.buf.len() as u64,
            len: sync::MAX_CHUNK,
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
                eprintln!(
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
        if hex::encode(Sha256::digest(&f.buf)) != f.blob.sha256 {
            eprintln!(
                "update {} of round {} from {}: the bytes hash otherwise; dropped",
                f.blob.sha256, f.round, f.from
            );
            return;
        }
        let size = f.buf.len();
        let u = gossip::Update {
            round: f.round,
            envelope: conclave_protocol::channel::Blob(f.buf),
            blob: None,
        };
        match self.state.accept_update(u, Some(&f.from)) {
            Verdict::Accept => eprintln!(
                "fetched update of round {} ({size} bytes) from {} by reference",
                f.round, f.from
            ),
            Verdict::Ignore(why) | Verdict::Reject(why) => {
                eprintln!("fetched update from {}: {why}", f.from)
            }
        }
    }

    /// Publishes our signed update: inline, or by reference when its message would be larger
    /// than `inline_max` bytes (peers fetch it from us). Returns the message to re-publish.
    pub fn publish_update(
        &mut self,
        round: u64,
        envelope: Vec<u8>,
        inline_max: usize,
    ) -> Result<Vec<u8>> {
        // Our own update enters the state as a peer's would.
        let own = gossip::Update {
            round,
            envelope: conclave_protocol::channel::Blob(envelope),
            blob: None,
        };
        let me = self.local_peer_id();
        if let Verdict::Reject(r) = self.state.accept_update(own.clone(), Some(&me)) {
            anyhow::bail!("our own update is invalid: {r}");
        }
        let inline = Message::Update(own.clone())
            .encode()
            .ok()
            .filter(|b| b.len() <= inline_max);
        let bytes = match inline {
            Some(b) => b,
            None => {
                let envelope = own.envelope.0;
                let sha256 = hex::encode(Sha256::digest(&envelope));
                let msg = Message::Update(gossip::Update {
                    round,
                    envelope: conclave_protocol::channel::Blob(Vec::new()),
                    blob: Some(gossip::BlobRef {
                        sha256: sha256.clone(),
                        size: envelope.len() as u64,
                    }),
                });
                // Keep this round's and the previous round's payloads to serve.
                self.blobs.retain(|_, (r, _)| *r + 1 >= round);
                self.blobs.insert(sha256, (round, envelope));
                msg.encode()?
            }
        };
        self.publish(Kind::Update, bytes.clone())?;
        Ok(bytes)
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

    /// New operators announced: dial them (full mesh) and re-announce ourselves for them.
    fn after_announces(&mut self) {
        if self.state.new_peers.is_empty() {
            return;
        }
        let new: Vec<u32> = std::mem::take(&mut self.state.new_peers);
        let me = self.local_peer_id();
        for op in new {
            let Some(p) = self.state.peers.get(&op) else {
                continue;
            };
            if p.peer_id == me {
                continue;
            }
            eprintln!(
                "operator {op} announced: enclave {} at peer {}",
                p.address, p.peer_id
            );
            if !self.swarm.is_connected(&p.peer_id) {
                let addrs = p.addrs.clone();
                for a in addrs {
                    self.dial(a);
                }
            }
            if let Some(b) = self.own_announce.clone()
                && let Err(e) = self.publish(Kind::Announce, b)
            {
                eprintln!("re-announcing: {e:#}");
            }
        }
    }

    /// Runs the swarm until `fut` completes (for example an enclave call on a blocking thread).
    pub async fn pump_until<F: Future>(&mut self, fut: F) -> F::Output {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return out,
                ev = self.swarm.select_next_some() => self.on_event(ev),
            }
        }
    }

    /// Runs the swarm until `done` holds (true) or `deadline` passes (false).
    pub async fn pump_while(&mut self, deadline: Instant, done: impl Fn(&State) -> bool) -> bool {
        loop {
            if done(&self.state) {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return done(&self.state),
                ev = self.swarm.select_next_some() => self.on_event(ev),
            }
        }
    }

    /// Listens on `addr` and waits until the swarm reports the address.
    pub async fn listen(&mut self, addr: Multiaddr) -> Result<()> {
        self.swarm
            .listen_on(addr.clone())
            .with_context(|| format!("listening on {addr}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.listen_addrs.is_empty() {
            if Instant::now() > deadline {
                anyhow::bail!("no listen address after 10 s on {addr}");
            }
            let until = Instant::now() + Duration::from_millis(100);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                ev = self.swarm.select_next_some() => self.on_event(ev),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Kademlia: two peers that only know a third one find and connect to each other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_find_each_other_through_kademlia() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let net = |i: u32| {
            super::Net::new(
                identity::Keypair::generate_ed25519(),
                State::new(view(), dir.path().join(format!("eq-{i}"))),
            )
            .unwrap()
        };
        let (mut a, mut b, mut c) = (net(0), net(1), net(2));
        a.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        b.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        c.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        let bootstrap = a.listen_addrs[0].clone();
        b.dial(bootstrap.clone());
        c.dial(bootstrap);
        let (bid, cid) = (b.local_peer_id(), c.local_peer_id());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !(b.swarm.is_connected(&cid) && c.swarm.is_connected(&bid)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "b and c did not find each other"
            );
            tokio::select! {
                ev = a.swarm.select_next_some() => a.on_event(ev),
                ev = b.swarm.select_next_some() => b.on_event(ev),
                ev = c.swarm.select_next_some() => c.on_event(ev),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    use super::*;
    use conclave_attestation::sim::default_sim_measurement;
    use conclave_attestation::{EnclaveKey, SimAttester, SimConfig};
    use conclave_protocol::channel::Blob;
    use conclave_protocol::gossip::{Announce, Heartbeat, Update};

    struct Op {
        key: EnclaveKey,
        evidence: Evidence,
        nonce: String,
        peer: PeerId,
    }

    fn view() -> JobView {
        let job_hex = "11".repeat(32);
        let mut policy = Policy {
            allow_sim: true,
            ..Policy::default()
        };
        policy.measurements = vec![default_sim_measurement()];
        JobView {
            job: JobId::from_hex(&job_hex).unwrap(),
            domain: format!("conclave/v1/job/{job_hex}"),
            job_hex,
            policy,
            operators: 3,
        }
    }

    fn op(att: &SimAttester, view: &JobView, i: u8) -> Op {
        let key = EnclaveKey::generate();
        let nonce = hex::encode([i; 32]);
        let ctx = BindingContext {
            job_id: view.job,
            nonce: Nonce::from_hex(&nonce).unwrap(),
        };
        Op {
            evidence: att.evidence(&key.report_data(&ctx)),
            key,
            nonce,
            peer: identity::Keypair::generate_ed25519().public().to_peer_id(),
        }
    }

    fn announce(o: &Op, view: &JobView, operator: u32) -> Vec<u8> {
        Message::Announce(Announce {
            job_id: view.job_hex.clone(),
            operator,
            address: format!("0x{}", hex::encode(o.key.address().0)),
            evidence: Blob(o.evidence.encode()),
            nonce: o.nonce.clone(),
            peer_id: o.peer.to_string(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
        })
        .encode()
        .unwrap()
    }

    fn update(o: &Op, view: &JobView, round: u64, body: &[u8]) -> Vec<u8> {
        let mut payload = UPDATE_PAYLOAD_MAGIC.to_vec();
        payload.extend_from_slice(&round.to_le_bytes());
        payload.extend_from_slice(&[0u8; 32]);
        payload.extend_from_slice(body);
        let env = o
            .key
            .seal(&view.domain, "update", payload, o.evidence.hash())
            .unwrap();
        Message::Update(Update {
            round,
            envelope: Blob(env.encode()),
            blob: None,
        })
        .encode()
        .unwrap()
    }

    fn now() -> UnixTime {
        crate::run::now()
    }

    #[test]
    fn announces_updates_and_byzantine_messages_get_their_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let view = view();
        let att = SimAttester::new(SimConfig::default()).unwrap();
        let ops: Vec<Op> = (0..3).map(|i| op(&att, &view, i)).collect();
        let mut s = State::new(view.clone(), dir.path().to_path_buf());
        for (i, o) in ops.iter().enumerate() {
            let b = announce(o, &view, i as u32);
            assert_eq!(
                s.validate(Kind::Announce, &b, Some(&o.peer), now()),
                Verdict::Accept
            );
            // Re-announces are forwarded; an announce authored by another peer is not.
            assert_eq!(
                s.validate(Kind::Announce, &b, Some(&o.peer), now()),
                Verdict::Accept
            );
            let other = ops[(i + 1) % 3].peer;
            assert!(matches!(
                s.validate(Kind::Announce, &b, Some(&other), now()),
                Verdict::Reject(r) if r.contains("authored by")
            ));
        }
        assert!(s.all_announced());
        // Another enclave claiming an announced operator index, or outside the set.
        let intruder = op(&att, &view, 9);
        assert!(matches!(
            s.validate(Kind::Announce, &announce(&intruder, &view, 1), Some(&intruder.peer), now()),
            Verdict::Reject(r) if r.contains("already announced")
        ));
        assert!(matches!(
            s.validate(Kind::Announce, &announce(&intruder, &view, 3), Some(&intruder.peer), now()),
            Verdict::Reject(r) if r.contains("outside the active set")
        ));

        // Valid updates, a duplicate, garbage, oversize, unattested signer, wrong topic.
        let u0 = update(&ops[0], &view, 0, b"first");
        assert_eq!(s.validate(Kind::Update, &u0, None, now()), Verdict::Accept);
        assert!(matches!(
            s.validate(Kind::Update, &u0, None, now()),
            Verdict::Ignore(r) if r.contains("duplicate")
        ));
        assert!(matches!(
            s.validate(Kind::Update, b"\x00garbage", None, now()),
            Verdict::Reject(_)
        ));
        let mut big = b"CNVGS\x01\x03".to_vec();
        big.resize(gossip::MAX_HEARTBEAT + 10, b' ');
        assert!(matches!(
            s.validate(Kind::Heartbeat, &big, None, now()),
            Verdict::Reject(r) if r.contains("exceeds")
        ));
        assert!(matches!(
            s.validate(Kind::Update, &update(&intruder, &view, 0, b"x"), None, now()),
            Verdict::Reject(r) if r.contains("unattested")
        ));
        assert!(matches!(
            s.validate(Kind::Announce, &u0, None, now()),
            Verdict::Reject(r) if r.contains("where a announce")
        ));
        // A tampered envelope (payload changed after signing) does not verify.
        let Message::Update(mut t) = Message::decode(&u0).unwrap() else {
            unreachable!()
        };
        let mut env = Envelope::decode(&t.envelope.0).unwrap();
        env.payload.push(1);
        t.envelope = Blob(env.encode());
        let tb = Message::Update(t).encode().unwrap();
        assert!(matches!(
            s.validate(Kind::Update, &tb, None, now()),
            Verdict::Reject(r) if r.contains("operator 0")
        ));

        // Equivocation: operator 1 signs two different updates for round 0.
        let a = update(&ops[1], &view, 0, b"one");
        let b = update(&ops[1], &view, 0, b"two");
        assert_eq!(s.validate(Kind::Update, &a, None, now()), Verdict::Accept);
        assert_eq!(s.validate(Kind::Update, &b, None, now()), Verdict::Accept);
        assert!(s.banned.contains_key(&1));
        assert!(dir.path().join("round-000000-operator-1-a.env").exists());
        assert!(dir.path().join("round-000000-operator-1-b.env").exists());
        assert_eq!(s.active(), BTreeSet::from([0, 2]));
        assert_eq!(
            s.round_updates(0).keys().copied().collect::<Vec<_>>(),
            vec![0]
        );
        // Excluded from later rounds too.
        s.round = 1;
        assert!(matches!(
            s.validate(Kind::Update, &update(&ops[1], &view, 1, b"x"), None, now()),
            Verdict::Ignore(r) if r.contains("excluded")
        ));
        // Replays of an older round, and rounds beyond the window, are ignored.
        assert!(matches!(
            s.validate(Kind::Update, &update(&ops[2], &view, 0, b"late"), None, now()),
            Verdict::Ignore(r) if r.contains("replay")
        ));
        assert!(matches!(
            s.validate(Kind::Update, &update(&ops[2], &view, 5, b"x"), None, now()),
            Verdict::Ignore(r) if r.contains("window")
        ));
        assert_eq!(
            s.validate(Kind::Update, &update(&ops[2], &view, 2, b"x"), None, now()),
            Verdict::Accept
        );

        // Heartbeats must come from the operator's own peer.
        let hb = Message::Heartbeat(Heartbeat {
            operator: 2,
            round: 1,
            model_hash: "aa".repeat(32),
            receipt: None,
        })
        .encode()
        .unwrap();
        assert!(matches!(
            s.validate(Kind::Heartbeat, &hb, Some(&ops[0].peer), now()),
            Verdict::Reject(_)
        ));
        assert_eq!(
            s.validate(Kind::Heartbeat, &hb, Some(&ops[2].peer), now()),
            Verdict::Accept
        );
    }

    #[test]
    fn evidence_outside_the_policy_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = view();
        v.policy.allow_sim = false;
        let att = SimAttester::new(SimConfig::default()).unwrap();
        let o = op(&att, &v, 1);
        let mut s = State::new(v.clone(), dir.path().to_path_buf());
        assert!(matches!(
            s.validate(Kind::Announce, &announce(&o, &v, 0), Some(&o.peer), now()),
            Verdict::Reject(r) if r.contains("evidence rejected")
        ));
    }
}
