//! The gossip validator's state: what the node knows about the job's network (accepted
//! announces, each round's updates, equivocators, heartbeats and receipts) and the verdict on
//! every message. Pure: no IO, no clock (callers pass `now`); what needs IO (storing an
//! equivocation's two envelopes, fetching an update gossiped by reference) comes out as an
//! [`Outcome`] for the driver to perform.
//!
//! Updates by reference are fetched under per-peer limits: one reference per operator and
//! round is wanted (a second, different one is [`Misbehaved::SecondUpdate`]), only for the
//! current round and the next, and only up to [`State::max_update_bytes`] declared bytes
//! ([`Misbehaved::OversizeBlob`]); so what is wanted is at most the announced peers × 2
//! rounds, and a past round's entries are dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use conclave_attestation::Envelope;
use conclave_attestation::envelope::{MAX_PAYLOAD, MAX_TAG};
use conclave_attestation::{
    AcceptedEvidence, BindingContext, EnclaveAddress, Endorsements, Evidence, JobId, Policy,
    UnixTime, appraise,
};
use conclave_protocol::channel::PeerEvidence;
use conclave_protocol::gossip::{self, Kind, Message};
use conclave_protocol::receipt::RoundReceipt;
use conclave_protocol::statement::UpdateHeader;
use conclave_protocol::{
    AnnounceStatement, Hash32, Signed, Statement, StatementError, StatementKind, UpdatePayload,
};
use libp2p::{Multiaddr, PeerId};

/// Rounds ahead of the current one whose updates are kept (a faster peer may be one ahead).
pub const ROUND_WINDOW: u64 = 1;

/// The largest update envelope that decodes, the default bound on an update by reference:
/// the envelope's payload limit ([`MAX_PAYLOAD`], 64 MiB) plus its head (magic, two tags of at
/// most [`MAX_TAG`] bytes with their lengths, the payload length) and trailer (signer,
/// evidence hash, signature). A driver that knows its job's largest update (from the model's
/// parameter count and the codec's settings) sets a tighter one with
/// [`State::with_max_update_bytes`].
pub const MAX_UPDATE_ENVELOPE: u64 =
    (8 + 2 * (2 + MAX_TAG) + 4 + MAX_PAYLOAD + 20 + 32 + 65) as u64;

/// A peer's verified receipt: the envelope and its payload (the receipt JSON).
pub type SignedReceipt = (Vec<u8>, Vec<u8>);

/// The job as the network layer sees it.
#[derive(Clone)]
pub struct JobView {
    pub job: JobId,
    pub domain: String,
    pub policy: Policy,
    pub operators: u32,
}

impl JobView {
    pub fn job_hex(&self) -> String {
        self.job.to_string()
    }
}

/// An operator whose announce was accepted.
#[derive(Clone)]
pub struct Peer {
    pub operator: u32,
    pub address: EnclaveAddress,
    pub evidence: PeerEvidence,
    pub accepted: AcceptedEvidence,
    pub ctx: BindingContext,
    pub peer_id: PeerId,
    pub addrs: Vec<Multiaddr>,
    /// The on-chain operator account its enclave's announce statement names (with a chain).
    pub account: Option<String>,
}

pub use super::verdict::{Ignored, Misbehaved, Verdict};

impl Peer {
    /// Verifies a statement this peer's enclave signed in `domain`.
    pub fn verify<T: Statement>(
        &self,
        bytes: &[u8],
        domain: &str,
    ) -> Result<Signed<T>, StatementError> {
        Signed::verify_from(bytes, domain, &self.accepted, &self.ctx, self.address)
    }

    /// Verifies an update envelope (already decoded) from this peer's enclave and returns its
    /// header, without copying the payload.
    pub fn verify_update(
        &self,
        env: &Envelope,
        domain: &str,
    ) -> Result<UpdateHeader, StatementError> {
        let kind = StatementKind::Update;
        env.verify_as(domain, kind.tag(), &self.accepted, &self.ctx)
            .map_err(|source| StatementError::Envelope { kind, source })?;
        if env.signer != self.address {
            return Err(StatementError::OtherSigner {
                kind,
                expected: self.address,
                got: env.signer,
            });
        }
        Ok(UpdatePayload::split(&env.payload)?.0)
    }
}

/// What validation asks the driver to do (IO the state does not do itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Operator `operator` signed two different updates for `round`: both envelopes, to keep
    /// as evidence. It is excluded from that round on.
    Equivocation {
        round: u64,
        operator: u32,
        address: EnclaveAddress,
        first: Vec<u8>,
        second: Vec<u8>,
    },
    /// An update gossiped by reference by `operator` (at peer `from`), to fetch from it. At
    /// most one per operator and round (again only after [`State::fetch_failed`] without
    /// blame, when the same reference is gossiped again).
    Fetch {
        round: u64,
        operator: u32,
        blob: gossip::BlobRef,
        from: PeerId,
    },
    /// An announce accepted for the first time (dial it, re-announce ourselves).
    NewPeer { operator: u32, replaced: bool },
}

/// An update by reference wanted from an operator for a round.
struct Want {
    sha256: Hash32,
    /// The last fetch failed without the publisher's fault: fetch again when re-gossiped.
    retry: bool,
}

/// What the node knows about the job's network.
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
    pub heartbeats: BTreeMap<u64, BTreeMap<u32, Hash32>>,
    /// Per round, per operator: its signed receipt (envelope) and the receipt payload, from
    /// its heartbeat, verified against its announced evidence.
    pub receipts: BTreeMap<u64, BTreeMap<u32, SignedReceipt>>,
    /// Per on-chain round, per operator: the checkpoint statement on its heartbeat (its
    /// signature is checked by the node against the chain's domain when it gathers them).
    pub commitments: BTreeMap<u64, BTreeMap<u32, gossip::Commitment>>,
    /// What the driver has to do, in order.
    pub outcomes: Vec<Outcome>,
    /// Per (round, operator): the one update by reference wanted from it. Only the current
    /// round and the next are kept, so at most the announced peers × 2 entries.
    wanted: BTreeMap<(u64, u32), Want>,
    /// The largest update by reference fetched (declared bytes).
    pub max_update_bytes: u64,
    /// Per operator: updates by reference it served wrong ([`Misbehaved::BadBlob`]).
    pub blame: BTreeMap<u32, u64>,
    /// Accepted messages so far (the driver wakes when it changes).
    pub accepted: u64,
    /// Counters of verdicts (for logs and tests).
    pub rejected: u64,
    pub ignored: u64,
}

impl State {
    pub fn new(view: JobView) -> Self {
        State {
            view,
            round: 0,
            peers: BTreeMap::new(),
            by_evidence: HashMap::new(),
            updates: BTreeMap::new(),
            banned: BTreeMap::new(),
            heartbeats: BTreeMap::new(),
            receipts: BTreeMap::new(),
            commitments: BTreeMap::new(),
            outcomes: Vec::new(),
            wanted: BTreeMap::new(),
            max_update_bytes: MAX_UPDATE_ENVELOPE,
            blame: BTreeMap::new(),
            accepted: 0,
            rejected: 0,
            ignored: 0,
        }
    }

    /// Bounds updates by reference to `max` declared bytes (at most [`gossip::MAX_BLOB`]).
    pub fn with_max_update_bytes(mut self, max: u64) -> Self {
        self.max_update_bytes = max.min(gossip::MAX_BLOB);
        self
    }

    /// How many updates by reference are wanted now (at most [`State::wanted_bound`]).
    pub fn wanted_len(&self) -> usize {
        self.wanted.len()
    }

    /// The most updates by reference wanted at once: one per announced peer and round of the
    /// window.
    pub fn wanted_bound(&self) -> usize {
        self.peers.len() * (ROUND_WINDOW as usize + 1)
    }

    /// A fetch that `Outcome::Fetch` asked for ended without an update. With `blame` (the
    /// publisher served bytes other than it declared) the operator's reference for the round
    /// stays spent and the fault is counted against it ([`State::blame`]); the verdict comes
    /// back for the driver to log and score. Without (a timeout, a closed connection, a
    /// refusal), the same reference gossiped again is fetched again.
    pub fn fetch_failed(
        &mut self,
        round: u64,
        operator: u32,
        blame: Option<String>,
    ) -> Option<Misbehaved> {
        match blame {
            Some(why) => {
                *self.blame.entry(operator).or_default() += 1;
                self.rejected += 1;
                Some(Misbehaved::BadBlob {
                    operator,
                    round,
                    why,
                })
            }
            None => {
                if let Some(w) = self.wanted.get_mut(&(round, operator)) {
                    w.retry = true;
                }
                None
            }
        }
    }

    /// Drops what is wanted outside the round window (past rounds, or ahead of it after the
    /// driver moved the round back).
    fn prune_wanted(&mut self) {
        let (lo, hi) = (self.round, self.round.saturating_add(ROUND_WINDOW));
        self.wanted.retain(|(r, _), _| (lo..=hi).contains(r));
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

    /// The peer at `peer_id`, if it announced.
    pub fn peer_at(&self, peer_id: &PeerId) -> Option<&Peer> {
        self.peers.values().find(|p| p.peer_id == *peer_id)
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
            Err(e) => Verdict::Reject(Misbehaved::Malformed(e.to_string())),
            Ok(Message::Announce(a)) => self.on_announce(a, source, now),
            Ok(Message::Update(u)) => self.on_update(u, source),
            Ok(Message::Heartbeat(h)) => self.on_heartbeat(h, source),
        };
        self.count(&v);
        v
    }

    /// An update whose envelope was fetched by reference (or our own), judged like one that
    /// came inline.
    pub fn accept_update(&mut self, u: gossip::Update, source: Option<&PeerId>) -> Verdict {
        let v = self.on_update(u, source);
        self.count(&v);
        v
    }

    fn count(&mut self, v: &Verdict) {
        match v {
            Verdict::Reject(_) => self.rejected += 1,
            Verdict::Ignore(_) => self.ignored += 1,
            Verdict::Accept => self.accepted += 1,
        }
    }

    fn on_announce(
        &mut self,
        a: gossip::Announce,
        source: Option<&PeerId>,
        now: UnixTime,
    ) -> Verdict {
        use Misbehaved::*;
        if a.job_id != self.view.job {
            return Verdict::Reject(AnnounceForAnotherJob(a.job_id));
        }
        if a.operator >= self.view.operators {
            return Verdict::Reject(OperatorOutsideSet {
                operator: a.operator,
                operators: self.view.operators,
            });
        }
        let Ok(peer_id) = a.peer_id.parse::<PeerId>() else {
            return Verdict::Reject(BadPeerId(a.peer_id));
        };
        if source != Some(&peer_id) {
            return Verdict::Reject(AuthoredByAnother {
                peer: peer_id,
                author: source.copied(),
            });
        }
        let ev = match Evidence::decode(&a.evidence.0) {
            Ok(ev) => ev,
            Err(e) => {
                return Verdict::Reject(BadEvidence {
                    operator: a.operator,
                    why: e.to_string(),
                });
            }
        };
        let hash: [u8; 32] = ev.hash().0;
        let mut replaces = None;
        if let Some(p) = self.peers.get(&a.operator) {
            if p.accepted.evidence_hash().0 == hash && p.peer_id == peer_id {
                // A re-announce (for late joiners): forwarded, nothing new.
                return Verdict::Accept;
            }
            if p.peer_id != peer_id {
                return Verdict::Reject(IndexTaken {
                    operator: a.operator,
                    by: p.address,
                });
            }
            // The same node (its persistent peer identity) with a new enclave: a restart.
            // The new evidence must pass like any other; the old key's messages stop counting.
            replaces = Some(p.accepted.evidence_hash().0);
        }
        if let Some(&o) = self.by_evidence.get(&hash) {
            return Verdict::Reject(EvidenceTaken { operator: o });
        }
        let appraisal = match appraise(&ev, &Endorsements::default(), &self.view.policy, now) {
            Ok(x) => x,
            Err(e) => {
                return Verdict::Reject(Appraisal {
                    operator: a.operator,
                    why: e.to_string(),
                });
            }
        };
        let Some(accepted) = appraisal.accepted() else {
            return Verdict::Reject(EvidenceRejected {
                operator: a.operator,
                reasons: appraisal.reasons.iter().map(|r| r.to_string()).collect(),
            });
        };
        // The enclave's own word that this peer id speaks for it, in this slot of this job: a
        // host announcing another operator's (public) evidence cannot produce it.
        let ctx = BindingContext {
            job_id: self.view.job,
            nonce: a.nonce,
        };
        let statement = match Signed::<AnnounceStatement>::verify_from(
            &a.statement.0,
            &self.view.domain,
            &accepted,
            &ctx,
            a.address,
        ) {
            Ok(s) => s.statement,
            Err(e) => {
                return Verdict::Reject(AnnounceNotBound {
                    operator: a.operator,
                    why: e.to_string(),
                });
            }
        };
        if statement.peer_id != a.peer_id
            || statement.operator != a.operator
            || statement.job_id != self.view.job
        {
            return Verdict::Reject(AnnounceNotBound {
                operator: a.operator,
                why: format!(
                    "the enclave speaks for peer {} as operator {} of job {}",
                    statement.peer_id, statement.operator, statement.job_id
                ),
            });
        }
        let addrs = a
            .addrs
            .iter()
            .filter_map(|s| s.parse::<Multiaddr>().ok())
            .collect();
        if let Some(old) = replaces {
            self.by_evidence.remove(&old);
        }
        self.by_evidence.insert(hash, a.operator);
        self.peers.insert(
            a.operator,
            Peer {
                operator: a.operator,
                address: a.address,
                evidence: PeerEvidence {
                    evidence: a.evidence,
                    nonce: a.nonce,
                },
                accepted,
                ctx: BindingContext {
                    job_id: self.view.job,
                    nonce: a.nonce,
                },
                peer_id,
                addrs,
                account: statement.account,
            },
        );
        self.outcomes.push(Outcome::NewPeer {
            operator: a.operator,
            replaced: replaces.is_some(),
        });
        Verdict::Accept
    }

    fn on_blob_ref(&mut self, round: u64, b: gossip::BlobRef, source: Option<&PeerId>) -> Verdict {
        // The update is judged once fetched; what can be checked now is the round window, the
        // publisher, its one reference a round and the declared size.
        if round < self.round || round > self.round.saturating_add(ROUND_WINDOW) {
            return Verdict::Ignore(Ignored::BlobOutsideWindow {
                round,
                current: self.round,
            });
        }
        let Some(src) = source else {
            return Verdict::Reject(Misbehaved::BlobWithoutPublisher);
        };
        let Some(op) = self.peer_at(src).map(|p| p.operator) else {
            return Verdict::Ignore(Ignored::BlobFromStranger(*src));
        };
        if let Some(&since) = self.banned.get(&op) {
            return Verdict::Ignore(Ignored::Excluded {
                operator: op,
                since,
            });
        }
        if b.size > self.max_update_bytes {
            return Verdict::Reject(Misbehaved::OversizeBlob {
                operator: op,
                size: b.size,
                max: self.max_update_bytes,
            });
        }
        self.prune_wanted();
        if !self.wanted.contains_key(&(round, op))
            && let Some(env) = self.updates.get(&round).and_then(|m| m.get(&op))
        {
            // Its update of the round came inline: that is its one update.
            let w = Want {
                sha256: Hash32::sha256(env),
                retry: false,
            };
            self.wanted.insert((round, op), w);
        }
        match self.wanted.get_mut(&(round, op)) {
            Some(w) if w.sha256 != b.sha256 => Verdict::Reject(Misbehaved::SecondUpdate {
                operator: op,
                round,
                first: w.sha256,
                second: b.sha256,
            }),
            Some(w) => {
                // The same reference again (re-published for late joiners): forwarded, and
                // fetched again only if the last fetch failed without the publisher's fault.
                if std::mem::take(&mut w.retry) {
                    self.outcomes.push(Outcome::Fetch {
                        round,
                        operator: op,
                        blob: b,
                        from: *src,
                    });
                }
                Verdict::Accept
            }
            None => {
                let w = Want {
                    sha256: b.sha256,
                    retry: false,
                };
                self.wanted.insert((round, op), w);
                self.outcomes.push(Outcome::Fetch {
                    round,
                    operator: op,
                    blob: b,
                    from: *src,
                });
                Verdict::Accept
            }
        }
    }

    fn on_update(&mut self, u: gossip::Update, source: Option<&PeerId>) -> Verdict {
        use Misbehaved::*;
        if let Some(b) = u.blob {
            return self.on_blob_ref(u.round, b, source);
        }
        // Any peer may relay an update: the enclave's signature is what counts.
        let env = match Signed::<UpdatePayload>::decode_envelope(&u.envelope.0) {
            Ok(e) => e,
            Err(StatementError::Envelope { source, .. }) => {
                return Verdict::Reject(BadEnvelope(source.to_string()));
            }
            Err(e) => return Verdict::Reject(BadEnvelope(e.to_string())),
        };
        let Some(&op) = self.by_evidence.get(&env.evidence_hash.0) else {
            return Verdict::Reject(UnattestedSigner(env.signer));
        };
        let Some(peer) = self.peers.get(&op) else {
            return Verdict::Reject(UnattestedSigner(env.signer));
        };
        // The envelope decoded above is verified in place: an update is up to 16 MiB, and
        // gossip validation is the hot path, so no copy of it is made here.
        let header = match peer.verify_update(&env, &self.view.domain) {
            Ok(s) => s,
            Err(e) => {
                return Verdict::Reject(BadStatement {
                    what: "update",
                    operator: op,
                    why: e.to_string(),
                });
            }
        };
        let round = header.round;
        if round != u.round {
            return Verdict::Reject(RoundMismatch {
                operator: op,
                outside: u.round,
                inside: round,
            });
        }
        if round < self.round {
            return Verdict::Ignore(Ignored::Replay {
                operator: op,
                round,
                current: self.round,
            });
        }
        if round > self.round.saturating_add(ROUND_WINDOW) {
            return Verdict::Ignore(Ignored::BeyondWindow {
                operator: op,
                round,
                current: self.round,
            });
        }
        if let Some(&since) = self.banned.get(&op) {
            return Verdict::Ignore(Ignored::Excluded {
                operator: op,
                since,
            });
        }
        let address = peer.address;
        let slot = self.updates.entry(round).or_default();
        match slot.get(&op) {
            None => {
                slot.insert(op, u.envelope.0);
                Verdict::Accept
            }
            Some(prev) => {
                let prev_payload = Signed::<UpdatePayload>::decode_envelope(prev)
                    .map(|e| e.payload)
                    .unwrap_or_default();
                if Hash32::sha256(&prev_payload) == Hash32::sha256(&env.payload) {
                    return Verdict::Ignore(Ignored::DuplicateUpdate);
                }
                // Equivocation: two different signed updates for one round. Both are kept by
                // the driver as evidence; the second is accepted (forwarded, so every operator
                // gets the proof) and the signer is excluded from then on.
                self.outcomes.push(Outcome::Equivocation {
                    round,
                    operator: op,
                    address,
                    first: prev.clone(),
                    second: u.envelope.0,
                });
                self.banned.insert(op, round);
                Verdict::Accept
            }
        }
    }

    fn on_heartbeat(&mut self, h: gossip::Heartbeat, source: Option<&PeerId>) -> Verdict {
        let op = h.operator;
        let Some(peer) = self.peers.get(&op) else {
            return Verdict::Ignore(Ignored::HeartbeatOfUnknown(op));
        };
        if source != Some(&peer.peer_id) {
            return Verdict::Reject(Misbehaved::HeartbeatByAnother { operator: op });
        }
        if h.round.saturating_add(1) < self.round
            || h.round > self.round.saturating_add(ROUND_WINDOW)
        {
            return Verdict::Ignore(Ignored::HeartbeatOutsideWindow {
                operator: op,
                round: h.round,
                current: self.round,
            });
        }
        if self
            .heartbeats
            .get(&h.round)
            .is_some_and(|s| s.contains_key(&op))
        {
            return Verdict::Ignore(Ignored::DuplicateHeartbeat);
        }
        if let Some(r) = &h.receipt {
            let receipt = match peer.verify::<RoundReceipt>(&r.0, &self.view.domain) {
                Ok(s) => s,
                Err(e) => {
                    return Verdict::Reject(Misbehaved::BadStatement {
                        what: "receipt",
                        operator: op,
                        why: e.to_string(),
                    });
                }
            };
            let rc = &receipt.statement;
            if rc.round != h.round || rc.model_hash_after != h.model_hash {
                return Verdict::Reject(Misbehaved::ReceiptMismatch {
                    operator: op,
                    round: h.round,
                    model: h.model_hash,
                });
            }
            self.receipts
                .entry(h.round)
                .or_default()
                .insert(op, (receipt.bytes, receipt.envelope.payload));
        }
        if let Some(c) = h.commitment {
            // The statement is about the model the heartbeat reports, after its round.
            if c.round != h.round.saturating_add(1) || c.model_hash != h.model_hash {
                return Verdict::Reject(Misbehaved::ReceiptMismatch {
                    operator: op,
                    round: h.round,
                    model: h.model_hash,
                });
            }
            self.commitments.entry(c.round).or_default().insert(op, c);
        }
        self.heartbeats
            .entry(h.round)
            .or_default()
            .insert(op, h.model_hash);
        Verdict::Accept
    }

    /// The checkpoint statements peers sent for on-chain round `round`, by operator.
    pub fn commitments(&self, round: u64) -> Vec<(u32, gossip::Commitment)> {
        self.commitments
            .get(&round)
            .map(|m| m.iter().map(|(o, c)| (*o, c.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
