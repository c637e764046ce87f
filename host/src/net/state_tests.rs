//! The validator's verdicts on honest and Byzantine messages, with no network.

use super::*;
use conclave_attestation::Nonce;
use conclave_attestation::sim::default_sim_measurement;
use conclave_attestation::{EnclaveKey, SimAttester, SimConfig};
use conclave_protocol::channel::Blob;
use conclave_protocol::gossip::{Announce, Heartbeat, Update};
use conclave_protocol::job_domain;
use libp2p::identity;

struct Op {
    key: EnclaveKey,
    evidence: Evidence,
    nonce: Nonce,
    peer: PeerId,
}

fn view() -> JobView {
    let job = JobId([0x11; 32]);
    let mut policy = Policy {
        allow_sim: true,
        ..Policy::default()
    };
    policy.measurements = vec![default_sim_measurement()];
    JobView {
        job,
        domain: job_domain(&job, &Hash32::ZERO),
        policy,
        operators: 3,
    }
}

fn op(att: &SimAttester, view: &JobView, i: u8) -> Op {
    let key = EnclaveKey::generate();
    let nonce = Nonce([i; 32]);
    let ctx = BindingContext {
        job_id: view.job,
        nonce,
    };
    Op {
        evidence: att.evidence(&key.report_data(&ctx)),
        key,
        nonce,
        peer: identity::Keypair::generate_ed25519().public().to_peer_id(),
    }
}

/// The enclave's signed word that `peer` speaks for it as `operator`.
fn announce_statement(o: &Op, view: &JobView, operator: u32, peer: &PeerId) -> Blob {
    let stmt = AnnounceStatement {
        job_id: view.job,
        operator,
        peer_id: peer.to_string(),
        account: None,
    };
    Blob(
        Signed::seal(&o.key, &view.domain, stmt, o.evidence.hash())
            .unwrap()
            .bytes,
    )
}

/// `o`'s evidence announced as `operator` from `peer` with `statement`.
fn announce_as(o: &Op, view: &JobView, operator: u32, peer: &PeerId, statement: Blob) -> Vec<u8> {
    Message::Announce(Announce {
        job_id: view.job,
        operator,
        address: o.key.address(),
        evidence: Blob(o.evidence.encode()),
        nonce: o.nonce,
        peer_id: peer.to_string(),
        addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
        statement,
    })
    .encode()
    .unwrap()
}

fn announce(o: &Op, view: &JobView, operator: u32) -> Vec<u8> {
    let st = announce_statement(o, view, operator, &o.peer);
    announce_as(o, view, operator, &o.peer, st)
}

fn update(o: &Op, view: &JobView, round: u64, body: &[u8]) -> Vec<u8> {
    let stmt = UpdatePayload {
        round,
        base_model: Hash32::ZERO,
        body: body.to_vec(),
    };
    let signed = Signed::seal(&o.key, &view.domain, stmt, o.evidence.hash()).unwrap();
    Message::Update(Update {
        round,
        envelope: Blob(signed.bytes),
        blob: None,
    })
    .encode()
    .unwrap()
}

fn now() -> UnixTime {
    crate::operator::now()
}

#[test]
fn announces_updates_and_byzantine_messages_get_their_verdicts() {
    let view = view();
    let att = SimAttester::new(SimConfig::default()).unwrap();
    let ops: Vec<Op> = (0..3).map(|i| op(&att, &view, i)).collect();
    let mut s = State::new(view.clone());
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
            Verdict::Reject(r) if r.to_string().contains("authored by")
        ));
    }
    assert!(s.all_announced());
    // Another enclave claiming an announced operator index, or outside the set.
    let intruder = op(&att, &view, 9);
    assert!(matches!(
        s.validate(Kind::Announce, &announce(&intruder, &view, 1), Some(&intruder.peer), now()),
        Verdict::Reject(r) if r.to_string().contains("already announced")
    ));
    assert!(matches!(
        s.validate(Kind::Announce, &announce(&intruder, &view, 3), Some(&intruder.peer), now()),
        Verdict::Reject(r) if r.to_string().contains("outside the active set")
    ));

    // Valid updates, a duplicate, garbage, oversize, unattested signer, wrong topic.
    let u0 = update(&ops[0], &view, 0, b"first");
    assert_eq!(s.validate(Kind::Update, &u0, None, now()), Verdict::Accept);
    assert!(matches!(
        s.validate(Kind::Update, &u0, None, now()),
        Verdict::Ignore(r) if r.to_string().contains("duplicate")
    ));
    assert!(matches!(
        s.validate(Kind::Update, b"\x00garbage", None, now()),
        Verdict::Reject(_)
    ));
    let mut big = b"CNVGS\x01\x03".to_vec();
    big.resize(gossip::MAX_HEARTBEAT + 10, b' ');
    assert!(matches!(
        s.validate(Kind::Heartbeat, &big, None, now()),
        Verdict::Reject(r) if r.to_string().contains("exceeds")
    ));
    assert!(matches!(
        s.validate(Kind::Update, &update(&intruder, &view, 0, b"x"), None, now()),
        Verdict::Reject(r) if r.to_string().contains("unattested")
    ));
    assert!(matches!(
        s.validate(Kind::Announce, &u0, None, now()),
        Verdict::Reject(r) if r.to_string().contains("where a announce")
    ));
    // A tampered envelope (payload changed after signing) does not verify.
    let Message::Update(mut t) = Message::decode(&u0).unwrap() else {
        unreachable!()
    };
    let mut env = conclave_attestation::Envelope::decode(&t.envelope.0).unwrap();
    env.payload.push(1);
    t.envelope = Blob(env.encode());
    let tb = Message::Update(t).encode().unwrap();
    assert!(matches!(
        s.validate(Kind::Update, &tb, None, now()),
        Verdict::Reject(r) if r.to_string().contains("operator 0")
    ));

    // Equivocation: operator 1 signs two different updates for round 0.
    let a = update(&ops[1], &view, 0, b"one");
    let b = update(&ops[1], &view, 0, b"two");
    assert_eq!(s.validate(Kind::Update, &a, None, now()), Verdict::Accept);
    assert_eq!(s.validate(Kind::Update, &b, None, now()), Verdict::Accept);
    assert!(s.banned.contains_key(&1));
    // Both envelopes come out for the driver to keep as evidence.
    assert!(s.outcomes.iter().any(|o| matches!(
        o,
        Outcome::Equivocation { round: 0, operator: 1, first, second, .. }
            if *first != *second
    )));
    assert_eq!(s.active(), BTreeSet::from([0, 2]));
    assert_eq!(
        s.round_updates(0).keys().copied().collect::<Vec<_>>(),
        vec![0]
    );
    // Excluded from later rounds too.
    s.round = 1;
    assert!(matches!(
        s.validate(Kind::Update, &update(&ops[1], &view, 1, b"x"), None, now()),
        Verdict::Ignore(r) if r.to_string().contains("excluded")
    ));
    // Replays of an older round, and rounds beyond the window, are ignored.
    assert!(matches!(
        s.validate(Kind::Update, &update(&ops[2], &view, 0, b"late"), None, now()),
        Verdict::Ignore(r) if r.to_string().contains("replay")
    ));
    assert!(matches!(
        s.validate(Kind::Update, &update(&ops[2], &view, 5, b"x"), None, now()),
        Verdict::Ignore(r) if r.to_string().contains("window")
    ));
    assert_eq!(
        s.validate(Kind::Update, &update(&ops[2], &view, 2, b"x"), None, now()),
        Verdict::Accept
    );

    // Heartbeats must come from the operator's own peer.
    let hb = Message::Heartbeat(Heartbeat {
        operator: 2,
        round: 1,
        model_hash: Hash32([0xaa; 32]),
        receipt: None,
        commitment: None,
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
    let mut v = view();
    v.policy.allow_sim = false;
    let att = SimAttester::new(SimConfig::default()).unwrap();
    let o = op(&att, &v, 1);
    let mut s = State::new(v.clone());
    assert!(matches!(
        s.validate(Kind::Announce, &announce(&o, &v, 0), Some(&o.peer), now()),
        Verdict::Reject(r) if r.to_string().contains("evidence rejected")
    ));
}

/// A state where `ops` announced as operators 0, 1, 2.
fn announced(view: &JobView, ops: &[Op]) -> State {
    let mut s = State::new(view.clone()).with_max_update_bytes(4 << 20);
    for (i, o) in ops.iter().enumerate() {
        let b = announce(o, view, i as u32);
        assert_eq!(
            s.validate(Kind::Announce, &b, Some(&o.peer), now()),
            Verdict::Accept
        );
    }
    s.outcomes.clear();
    s
}

fn blob_ref(round: u64, seed: u64, size: u64) -> Vec<u8> {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&seed.to_le_bytes());
    Message::Update(Update {
        round,
        envelope: Blob(Vec::new()),
        blob: Some(gossip::BlobRef {
            sha256: Hash32(h),
            size,
        }),
    })
    .encode()
    .unwrap()
}

fn fetches(s: &State) -> Vec<(u64, u32, Hash32)> {
    s.outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Fetch {
                round,
                operator,
                blob,
                ..
            } => Some((*round, *operator, blob.sha256)),
            _ => None,
        })
        .collect()
}

#[test]
fn one_update_by_reference_per_operator_and_round_is_fetched() {
    let view = view();
    let att = SimAttester::new(SimConfig::default()).unwrap();
    let ops: Vec<Op> = (0..3).map(|i| op(&att, &view, i)).collect();
    let mut s = announced(&view, &ops);
    let p = Some(&ops[1].peer);
    assert_eq!(
        s.validate(Kind::Update, &blob_ref(0, 1, 1000), p, now()),
        Verdict::Accept
    );
    // The same reference again (re-published) is forwarded, not fetched again.
    assert_eq!(
        s.validate(Kind::Update, &blob_ref(0, 1, 1000), p, now()),
        Verdict::Accept
    );
    // A flood of other references from the same operator for the same round and the next:
    // the first for the next round is fetched, every other one is a second update.
    let before = s.rejected;
    for seed in 2..1002 {
        let v = s.validate(Kind::Update, &blob_ref(seed % 2, seed, 1000), p, now());
        if seed == 3 {
            assert_eq!(v, Verdict::Accept);
        } else {
            assert!(
                matches!(
                    &v,
                    Verdict::Reject(Misbehaved::SecondUpdate { operator: 1, round, .. })
                        if *round == seed % 2
                ),
                "{v:?}"
            );
            assert!(v_text(&v).contains("second update"));
        }
    }
    assert_eq!(s.rejected - before, 999);
    assert_eq!(
        fetches(&s),
        vec![(0, 1, blob_hash(1)), (1, 1, blob_hash(3))]
    );
    // Beyond the window: ignored, nothing wanted.
    assert!(matches!(
        s.validate(Kind::Update, &blob_ref(2, 5000, 1000), p, now()),
        Verdict::Ignore(Ignored::BlobOutsideWindow { round: 2, .. })
    ));
    assert_eq!(s.wanted_len(), 2);
    // Another operator has its own slot.
    assert_eq!(
        s.validate(
            Kind::Update,
            &blob_ref(0, 7, 1000),
            Some(&ops[2].peer),
            now()
        ),
        Verdict::Accept
    );
    assert_eq!(fetches(&s).len(), 3);
    // A stranger's reference is ignored.
    let stranger = identity::Keypair::generate_ed25519().public().to_peer_id();
    assert!(matches!(
        s.validate(Kind::Update, &blob_ref(0, 8, 1000), Some(&stranger), now()),
        Verdict::Ignore(Ignored::BlobFromStranger(_))
    ));
    assert!(s.wanted_len() <= s.wanted_bound());
}

fn blob_hash(seed: u64) -> Hash32 {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&seed.to_le_bytes());
    Hash32(h)
}

fn v_text(v: &Verdict) -> String {
    match v {
        Verdict::Reject(m) => m.to_string(),
        Verdict::Ignore(i) => i.to_string(),
        Verdict::Accept => "accept".into(),
    }
}

#[test]
fn oversize_references_are_refused_unfetched() {
    let view = view();
    let att = SimAttester::new(SimConfig::default()).unwrap();
    let ops: Vec<Op> = (0..3).map(|i| op(&att, &view, i)).collect();
    let mut s = announced(&view, &ops);
    let p = Some(&ops[0].peer);
    for size in [(4 << 20) + 1, gossip::MAX_BLOB] {
        let v = s.validate(Kind::Update, &blob_ref(0, size, size), p, now());
        assert_eq!(
            v,
            Verdict::Reject(Misbehaved::OversizeBlob {
                operator: 0,
                size,
                max: 4 << 20
            })
        );
        assert!(v_text(&v).contains("largest update"));
    }
    assert!(fetches(&s).is_empty());
    assert_eq!(s.wanted_len(), 0);
    // At the limit: fetched. The oversize ones did not spend the operator's slot.
    assert_eq!(
        s.validate(Kind::Update, &blob_ref(0, 1, 4 << 20), p, now()),
        Verdict::Accept
    );
    assert_eq!(fetches(&s).len(), 1);
    // The default bound is the largest envelope that decodes, and no more than MAX_BLOB.
    assert_eq!(
        State::new(view.clone()).max_update_bytes,
        MAX_UPDATE_ENVELOPE
    );
    assert_eq!(
        State::new(view)
            .with_max_update_bytes(u64::MAX)
            .max_update_bytes,
        gossip::MAX_BLOB
    );
}

#[test]
fn wanted_references_are_bounded_and_past_rounds_dropped() {
    let view = view();
    let att = SimAttester::new(SimConfig::default()).unwrap();
    let ops: Vec<Op> = (0..3).map(|i| op(&att, &view, i)).collect();
    let mut s = announced(&view, &ops);
    assert_eq!(s.wanted_bound(), 6);
    let mut seed = 0;
    for round in 0..20u64 {
        s.round = round;
        for o in &ops {
            for r in [round, round + 1, round + 2] {
                for _ in 0..5 {
                    seed += 1;
                    let _ = s.validate(Kind::Update, &blob_ref(r, seed, 100), Some(&o.peer), now());
                    assert!(s.wanted_len() <= s.wanted_bound(), "{}", s.wanted_len());
                }
            }
        }
        assert_eq!(s.wanted_len(), 6);
    }
    // Each operator got exactly one fetch per round: round 0 and 1 at first, then one more
    // round each time the window moved.
    let f = fetches(&s);
    assert_eq!(f.len(), 3 * 21);
    let distinct: BTreeSet<(u64, u32)> = f.iter().map(|(r, o, _)| (*r, *o)).collect();
    assert_eq!(distinct.len(), f.len());
    // A reference for a round that has gone by is ignored.
    assert!(matches!(
        s.validate(
            Kind::Update,
            &blob_ref(3, 99_999, 100),
            Some(&ops[0].peer),
            now()
        ),
        Verdict::Ignore(Ignored::BlobOutsideWindow { .. })
    ));
    // The driver moving the round back does not let the set grow either.
    s.round = 0;
    let _ = s.validate(
        Kind::Update,
        &blob_ref(0, 100_000, 100),
        Some(&ops[0].peer),
        now(),
    );
    assert!(s.wanted_len() <= s.wanted_bound());
}

#[test]
fn failed_fetches_retry_only_without_blame() {
    let view = view();
    let att = SimAttester::new(SimConfig::default()).unwrap();
    let ops: Vec<Op> = (0..3).map(|i| op(&att, &view, i)).collect();
    let mut s = announced(&view, &ops);
    let (p0, p1) = (Some(&ops[0].peer), Some(&ops[1].peer));
    let r0 = blob_ref(0, 1, 100);
    let r1 = blob_ref(0, 2, 100);
    assert_eq!(s.validate(Kind::Update, &r0, p0, now()), Verdict::Accept);
    assert_eq!(s.validate(Kind::Update, &r1, p1, now()), Verdict::Accept);
    assert_eq!(fetches(&s).len(), 2);
    s.outcomes.clear();
    // Operator 0's fetch timed out: the same reference again is fetched again, once.
    assert_eq!(s.fetch_failed(0, 0, None), None);
    assert_eq!(s.validate(Kind::Update, &r0, p0, now()), Verdict::Accept);
    assert_eq!(s.validate(Kind::Update, &r0, p0, now()), Verdict::Accept);
    assert_eq!(fetches(&s), vec![(0, 0, blob_hash(1))]);
    // ... but not another reference.
    assert!(matches!(
        s.validate(Kind::Update, &blob_ref(0, 3, 100), p0, now()),
        Verdict::Reject(Misbehaved::SecondUpdate { .. })
    ));
    s.outcomes.clear();
    // Operator 1 served garbage: blamed, its slot stays spent.
    let m = s.fetch_failed(0, 1, Some("bytes hash otherwise".into()));
    assert!(matches!(
        m,
        Some(Misbehaved::BadBlob {
            operator: 1,
            round: 0,
            ..
        })
    ));
    assert_eq!(s.blame.get(&1), Some(&1));
    assert_eq!(s.validate(Kind::Update, &r1, p1, now()), Verdict::Accept);
    assert!(fetches(&s).is_empty());
}

#[test]
fn a_reference_after_an_inline_update_of_the_round_is_a_second_update() {
    let view = view();
    let att = SimAttester::new(SimConfig::default()).unwrap();
    let ops: Vec<Op> = (0..3).map(|i| op(&att, &view, i)).collect();
    let mut s = announced(&view, &ops);
    let u = update(&ops[2], &view, 0, b"inline");
    assert_eq!(s.validate(Kind::Update, &u, None, now()), Verdict::Accept);
    assert!(matches!(
        s.validate(
            Kind::Update,
            &blob_ref(0, 1, 100),
            Some(&ops[2].peer),
            now()
        ),
        Verdict::Reject(Misbehaved::SecondUpdate {
            operator: 2,
            round: 0,
            ..
        })
    ));
    assert!(fetches(&s).is_empty());
    // Its own envelope by reference is the same update: nothing to fetch.
    let Message::Update(inline) = Message::decode(&u).unwrap() else {
        unreachable!()
    };
    let same = Message::Update(Update {
        round: 0,
        envelope: Blob(Vec::new()),
        blob: Some(gossip::BlobRef {
            sha256: Hash32::sha256(&inline.envelope.0),
            size: inline.envelope.0.len() as u64,
        }),
    })
    .encode()
    .unwrap();
    assert_eq!(
        s.validate(Kind::Update, &same, Some(&ops[2].peer), now()),
        Verdict::Accept
    );
    assert!(fetches(&s).is_empty());
    // A heartbeat with an absurd round does not overflow.
    let hb = Message::Heartbeat(Heartbeat {
        operator: 2,
        round: u64::MAX,
        model_hash: Hash32([0; 32]),
        receipt: None,
        commitment: None,
    })
    .encode()
    .unwrap();
    assert!(matches!(
        s.validate(Kind::Heartbeat, &hb, Some(&ops[2].peer), now()),
        Verdict::Ignore(_)
    ));
}

/// A thief re-announces a victim's public evidence from its own peer id first (with the
/// victim's statement, one naming the thief's peer id that the victim's enclave never signed,
/// or one the thief's own enclave signed): every variant is refused, and the victim's announce
/// is still accepted afterwards.
#[test]
fn a_re_announce_of_another_operators_evidence_is_refused_and_the_victim_still_joins() {
    let view = view();
    let att = SimAttester::new(SimConfig::default()).unwrap();
    let victim = op(&att, &view, 1);
    let thief = op(&att, &view, 2);
    let mut s = State::new(view.clone());

    // The victim's own statement (naming the victim's peer id), replayed from the thief's.
    let st = announce_statement(&victim, &view, 0, &victim.peer);
    let b = announce_as(&victim, &view, 0, &thief.peer, st);
    assert!(matches!(
        s.validate(Kind::Announce, &b, Some(&thief.peer), now()),
        Verdict::Reject(Misbehaved::AnnounceNotBound { operator: 0, .. })
    ));
    // A statement naming the thief's peer id, signed by the thief's own enclave key.
    let forged = Signed::seal(
        &thief.key,
        &view.domain,
        AnnounceStatement {
            job_id: view.job,
            operator: 0,
            peer_id: thief.peer.to_string(),
            account: None,
        },
        thief.evidence.hash(),
    )
    .unwrap();
    let b = announce_as(&victim, &view, 0, &thief.peer, Blob(forged.bytes));
    assert!(matches!(
        s.validate(Kind::Announce, &b, Some(&thief.peer), now()),
        Verdict::Reject(Misbehaved::AnnounceNotBound { .. })
    ));
    // Another slot than the statement names, or no statement at all.
    let st = announce_statement(&victim, &view, 0, &victim.peer);
    let b = announce_as(&victim, &view, 2, &victim.peer, st);
    assert!(matches!(
        s.validate(Kind::Announce, &b, Some(&victim.peer), now()),
        Verdict::Reject(Misbehaved::AnnounceNotBound { operator: 2, .. })
    ));
    let b = announce_as(&victim, &view, 0, &thief.peer, Blob(vec![1; 10]));
    assert!(matches!(
        s.validate(Kind::Announce, &b, Some(&thief.peer), now()),
        Verdict::Reject(_)
    ));
    assert!(s.peers.is_empty(), "nothing was admitted");

    // The victim announces: accepted, and its evidence is its own.
    assert_eq!(
        s.validate(
            Kind::Announce,
            &announce(&victim, &view, 0),
            Some(&victim.peer),
            now()
        ),
        Verdict::Accept
    );
    assert_eq!(s.peers[&0].peer_id, victim.peer);
    assert_eq!(s.peers[&0].address, victim.key.address());
    // The thief announcing the victim's evidence now: still refused.
    let st = announce_statement(&victim, &view, 1, &victim.peer);
    let b = announce_as(&victim, &view, 1, &thief.peer, st);
    assert!(matches!(
        s.validate(Kind::Announce, &b, Some(&thief.peer), now()),
        Verdict::Reject(_)
    ));
    assert_eq!(s.peers.len(), 1);
}
