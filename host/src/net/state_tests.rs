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
        domain: job_domain(&job),
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

fn announce(o: &Op, view: &JobView, operator: u32) -> Vec<u8> {
    Message::Announce(Announce {
        job_id: view.job,
        operator,
        address: o.key.address(),
        evidence: Blob(o.evidence.encode()),
        nonce: o.nonce,
        peer_id: o.peer.to_string(),
        addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
    })
    .encode()
    .unwrap()
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
