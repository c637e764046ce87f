//! The operator network: a libp2p swarm (TCP with noise and yamux, and QUIC; gossipsub,
//! identify, Kademlia, request-response for checkpoint and payload transfer) on which the
//! operators of a job announce their attested enclaves, exchange their signed updates and
//! report the model each round ended on. One topic per message kind and job:
//! `conclave/<job>/announce`, `conclave/<job>/updates`, `conclave/<job>/heartbeat`.
//!
//! Gossipsub runs in manual-validation mode: nothing is forwarded before [`State::validate`]
//! judged it ([`state`], pure). A message is
//! - rejected (and counted against the peer that delivered it by gossipsub's peer scoring) when
//!   it is over its topic's size limit, does not decode, names another job, carries evidence
//!   the job policy refuses, is an update whose envelope does not verify against the evidence
//!   its signer announced, or was authored by another libp2p peer than the operator announced;
//! - ignored (dropped, not forwarded, no penalty) when it is a duplicate or a replay of an
//!   older round, or too far ahead of the current round;
//! - accepted otherwise. Two different valid updates from one signer for one round are an
//!   equivocation: the state emits [`Outcome::Equivocation`], [`Net`] keeps both envelopes in
//!   the storage folder as evidence, the second one is accepted (forwarded, so every operator
//!   gets the proof) and the signer is excluded from that round and every later one.
//!
//! An update too large for gossip travels as a reference (hash and size) that receivers fetch
//! from its publisher: one per operator and round, for the current round and the next, of at
//! most the job's largest update ([`State::max_update_bytes`]); a second reference from one
//! operator for one round, or an oversize one, is rejected like any invalid message. The
//! fetch is bounded too ([`sync`]): each answer by what its request asked, the whole by the
//! declared size, hashed as it arrives, at most [`sync::MAX_FETCHES`] at once; a publisher
//! that serves other bytes than it declared loses application score.
//!
//! Every verdict other than a plain duplicate is logged with its reason. [`Net`] is the IO
//! edge: it runs the swarm, feeds the state and performs its outcomes; [`sync`] serves and
//! fetches checkpoints and by-reference payloads.

pub mod state;
pub mod sync;
pub mod verdict;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use conclave_attestation::UnixTime;
use conclave_protocol::gossip::{self, Kind, Message};
use conclave_protocol::sync::{self as wire, SyncResponse};
use conclave_protocol::{Hash32, channel::Blob};
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
use tokio::time::Instant;
use tracing::{info, warn};

pub use state::{
    Ignored, JobView, MAX_UPDATE_ENVELOPE, Misbehaved, Outcome, Peer, ROUND_WINDOW, SignedReceipt,
    State, Verdict,
};
use sync::Fetch;
pub use sync::{FetchStats, MAX_FETCHES, Offer, SyncCodec};

use crate::store::{JobStore, write_atomic};

/// The swarm's behaviour.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub gossipsub: gossipsub::Behaviour,
    pub identify: identify::Behaviour,
    /// Checkpoint and payload transfer ([`conclave_protocol::sync`]), each answer bounded by
    /// its request ([`SyncCodec`]).
    pub sync: request_response::Behaviour<SyncCodec>,
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
                let sync = request_response::Behaviour::with_codec(
                    SyncCodec::default(),
                    [(
                        StreamProtocol::new(wire::SYNC_PROTOCOL),
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
    /// Key requests for this node's enclave, waiting for the node.
    key_requests: Vec<sync::KeyRequestIn>,
    /// Our payloads gossiped by reference, by SHA-256, with their round.
    pub blobs: HashMap<Hash32, (u64, Vec<u8>)>,
    /// Updates being fetched by reference (at most [`MAX_FETCHES`]), by their outstanding
    /// chunk request, and those waiting their turn.
    fetches: HashMap<OutboundRequestId, Fetch>,
    fetch_queue: VecDeque<Fetch>,
    /// What fetching by reference did.
    pub fetch_stats: FetchStats,
    /// Where equivocation evidence is written.
    pub evidence_dir: PathBuf,
}

impl Net {
    /// A swarm for `state`'s job; equivocation evidence goes to `evidence_dir`.
    pub fn new(keypair: identity::Keypair, state: State, evidence_dir: PathBuf) -> Result<Self> {
        let swarm = build_swarm(keypair, &state.view.job_hex())?;
        let topics = topics(&state.view.job_hex());
        let by_hash = topics.iter().map(|(k, t)| (t.hash(), *k)).collect();
        Ok(Net {
            swarm,
            state,
            topics,
            by_hash,
            own_announce: None,
            listen_addrs: Vec::new(),
            clock: crate::operator::now,
            offer: None,
            answers: HashMap::new(),
            key_requests: Vec::new(),
            blobs: HashMap::new(),
            fetches: HashMap::new(),
            fetch_queue: VecDeque::new(),
            fetch_stats: FetchStats::default(),
            evidence_dir,
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
        self.perform_outcomes();
        self.publish(msg.kind(), bytes)
    }

    /// Dials `addr` (bootstrap or an announced peer).
    pub fn dial(&mut self, addr: Multiaddr) {
        if let Err(e) = self.swarm.dial(addr.clone()) {
            warn!("dialing {addr}: {e}");
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!("listening on {address}/p2p/{}", self.local_peer_id());
                self.listen_addrs.push(address);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let _span = tracing::info_span!("peer", peer = %propagation_source).entered();
                if crate::capture::on(crate::capture::GOSSIP) {
                    let mut rec = (message.data.len() as u32).to_le_bytes().to_vec();
                    rec.extend_from_slice(&message.data);
                    crate::capture::record(crate::capture::GOSSIP, &rec);
                }
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
                        if !why.is_duplicate() {
                            info!("ignored {} from {propagation_source}: {why}", kind.name());
                        }
                        MessageAcceptance::Ignore
                    }
                    Verdict::Reject(_) => MessageAcceptance::Reject,
                };
                let gs = &mut self.swarm.behaviour_mut().gossipsub;
                gs.report_message_validation_result(&message_id, &propagation_source, acceptance);
                if let Verdict::Reject(why) = &verdict {
                    let score = gs.peer_score(&propagation_source).unwrap_or(0.0);
                    warn!(
                        "rejected {} from {propagation_source}: {why} (peer score now {score:.1})",
                        kind.name()
                    );
                }
                self.perform_outcomes();
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
                info!("kademlia: found {peer}");
                if let Some(a) = addresses.iter().next() {
                    self.dial(a.clone());
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                info!("connected to {peer_id}");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                warn!("dialing {peer_id:?} failed: {error}");
            }
            _ => {}
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
            envelope: Blob(envelope),
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
                if envelope.len() as u64 > self.state.max_update_bytes {
                    warn!(
                        "our update of round {round} is {} bytes, over the job's largest update \
                         of {}: peers will refuse it",
                        envelope.len(),
                        self.state.max_update_bytes
                    );
                }
                let sha256 = Hash32::sha256(&envelope);
                let msg = Message::Update(gossip::Update {
                    round,
                    envelope: Blob(Vec::new()),
                    blob: Some(gossip::BlobRef {
                        sha256,
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

    /// Performs what validation asked for: dial new operators and re-announce ourselves for
    /// them, keep an equivocation's two envelopes, fetch updates gossiped by reference.
    fn perform_outcomes(&mut self) {
        for outcome in std::mem::take(&mut self.state.outcomes) {
            match outcome {
                Outcome::NewPeer { operator, replaced } => self.on_new_peer(operator, replaced),
                Outcome::Equivocation {
                    round,
                    operator,
                    address,
                    first,
                    second,
                } => {
                    let dir = self.evidence_dir.clone();
                    let (a, b) = JobStore::equivocation_pair(&dir, round, operator);
                    let written = write_atomic(&a, &first).and_then(|()| write_atomic(&b, &second));
                    if let Err(e) = written {
                        warn!("storing equivocation evidence: {e:#}");
                    }
                    warn!(
                        "EQUIVOCATION: operator {operator} (0x{address}) signed two different \
                         updates for round {round}; evidence in {}; excluded from the round on",
                        dir.display()
                    );
                }
                Outcome::Fetch {
                    round,
                    operator,
                    blob,
                    from,
                } => self.start_fetch(round, operator, blob, from),
            }
        }
    }

    /// A new operator announced: dial it (full mesh) and re-announce ourselves for it.
    fn on_new_peer(&mut self, op: u32, replaced: bool) {
        let me = self.local_peer_id();
        let Some(p) = self.state.peers.get(&op) else {
            return;
        };
        if p.peer_id == me {
            return;
        }
        if replaced {
            info!(
                "operator {op} restarted: enclave 0x{} replaces the one it announced before",
                p.address
            );
        }
        info!(
            "operator {op} announced: enclave 0x{} at peer {}",
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
            warn!("re-announcing: {e:#}");
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
    use super::*;

    /// Kademlia: two peers that only know a third one find and connect to each other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_find_each_other_through_kademlia() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let net = |i: u32| {
            super::Net::new(
                identity::Keypair::generate_ed25519(),
                State::new(view()),
                dir.path().join(format!("eq-{i}")),
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

    fn view() -> JobView {
        let job = conclave_attestation::JobId([0x11; 32]);
        JobView {
            job,
            domain: conclave_protocol::job_domain(&job, &Hash32::ZERO),
            policy: conclave_attestation::Policy::default(),
            operators: 3,
        }
    }
}
