//! The enclave service, in process with sim attesters: three enclaves take a job, train two
//! rounds on the real corpus and agree on the model; every refusal the service promises is
//! exercised (unattested and forged updates, replays, equivocation, a debug guest, a wrong
//! measurement, a wrong spec or data root, tampered checkpoints), and the enclave keeps
//! serving after each.

mod common;

use std::path::Path;

use conclave_attestation::EnclaveAddress;
use conclave_attestation::sim::default_sim_measurement;
use conclave_attestation::{
    Appraisal, BindingContext, EnclaveKey, Endorsements, Envelope, Evidence, EvidenceHash, JobId,
    Nonce, Policy, SimAttester, SimConfig, UnixTime, appraise,
};
use conclave_enclave::service::{DataPaths, Enclave};
use conclave_enclave::train::config::Method;
use conclave_enclave::train::{TrainConfig, Trainer};
use conclave_protocol::channel::{Blob, JobSpec, PeerEvidence, Request, Response};
use conclave_protocol::job::JOB_DOCUMENT_VERSION;
use conclave_protocol::receipt::RoundReceipt;
use conclave_protocol::{
    AnnounceStatement, CheckpointManifest, Hash32, JobAccepted, JobDocument, JobTee, Signed,
    UpdatePayload, ValueEncoding, job_domain,
};

const JOB: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn config(dir: &Path, operators: usize) -> TrainConfig {
    let mut c = TrainConfig {
        device: "cpu".into(),
        threads: 1,
        replicas: operators,
        ..TrainConfig::default()
    };
    c.model.layers = 1;
    c.model.heads = 2;
    c.model.width = 32;
    c.model.context = 32;
    c.data.corpus = common::corpus();
    c.data.cache = dir.join("cache");
    c.data.vocab = 400;
    c.data.shards = 4;
    c.data.steps_per_epoch = 4;
    c.train.steps = 8;
    c.train.batch = 2;
    c.train.warmup = 1;
    c.train.eval_batches = 1;
    c.optimizer = Method::Sparseloco {
        inner_steps: 2,
        outer_lr: 1.0,
        decay: 0.95,
        topk: 32,
        chunk: 64,
        values: ValueEncoding::TwoBit,
        clip_median_norm: true,
    };
    c
}

fn policy() -> Policy {
    Policy {
        allow_sim: true,
        measurements: vec![default_sim_measurement()],
        ..Policy::default()
    }
}

struct Op {
    enclave: Enclave,
    peer: PeerEvidence,
    address: EnclaveAddress,
}

fn paths(dir: &Path, i: usize) -> DataPaths {
    DataPaths {
        corpus: common::corpus(),
        cache: dir.join("cache"),
        scratch: dir.join(format!("scratch-{i}")),
    }
}

fn start(dir: &Path, i: usize, sim: SimConfig) -> Op {
    let mut enclave = Enclave::new(Box::new(SimAttester::new(sim).unwrap()), paths(dir, i));
    let nonce = Nonce::from_hex(&format!("{:064x}", i + 7)).unwrap();
    let Response::Hello {
        address, evidence, ..
    } = enclave.handle(Request::Hello {
        job_id: JobId::from_hex(JOB).unwrap(),
        nonce,
    })
    else {
        panic!("hello")
    };
    Op {
        enclave,
        peer: PeerEvidence { evidence, nonce },
        address,
    }
}

/// The job's facts a customer publishes: its dataset root and initial model.
fn facts(dir: &Path, cfg: &TrainConfig) -> (Hash32, Hash32) {
    let mut c = cfg.clone();
    c.out = dir.join("probe");
    let t = Trainer::new(c).unwrap();
    (t.dataset.root(), t.model_hash().unwrap())
}

fn document(cfg: &TrainConfig, data_root: Hash32, operators: u32) -> JobDocument {
    let (_, initial) = facts(&cfg.data.cache.with_file_name("facts"), cfg);
    JobDocument {
        version: JOB_DOCUMENT_VERSION,
        tee: JobTee::Sim,
        config: toml::to_string(cfg).unwrap(),
        config_hash: cfg.hash(),
        data_root,
        initial_model_hash: initial,
        operators,
        quorum_bps: 6000,
        policy: policy(),
        sealing: None,
    }
}

/// A spec whose spec hash is the document's own (what an honest host sends).
fn spec_of(doc: &JobDocument, operator: u32) -> JobSpec {
    let bytes = doc.encode();
    JobSpec {
        job_id: JobId::from_hex(JOB).unwrap(),
        spec_hash: JobDocument::spec_hash(&bytes),
        document: Blob(bytes),
        operator,
    }
}

fn spec(cfg: &TrainConfig, data_root: Hash32, operator: u32, operators: u32) -> JobSpec {
    spec_of(&document(cfg, data_root, operators), operator)
}

fn domain_of(spec: &JobSpec) -> String {
    job_domain(&spec.job_id, &spec.spec_hash)
}

fn signed(r: Response) -> Vec<u8> {
    match r {
        Response::Signed { envelope } => envelope.0,
        other => panic!("expected a signed envelope, got {other:?}"),
    }
}

fn refused(r: Response) -> String {
    match r {
        Response::Error { code, message } => format!("{code}: {message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn accepted(peer: &PeerEvidence) -> (conclave_attestation::AcceptedEvidence, BindingContext) {
    let ev = Evidence::decode(&peer.evidence.0).unwrap();
    let a: Appraisal = appraise(
        &ev,
        &Endorsements::default(),
        &policy(),
        UnixTime(1_800_000_000),
    )
    .unwrap();
    let ctx = BindingContext {
        job_id: JobId::from_hex(JOB).unwrap(),
        nonce: peer.nonce,
    };
    (a.accepted().expect("sim evidence accepted"), ctx)
}

#[test]
fn three_enclaves_agree_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 3);
    let root = {
        let mut c = cfg.clone();
        c.out = dir.path().join("probe");
        Trainer::new(c).unwrap().dataset.root()
    };
    let domain = domain_of(&spec(&cfg, root, 0, 3));
    let mut ops: Vec<Op> = (0..3)
        .map(|i| start(dir.path(), i, SimConfig::default()))
        .collect();

    // A job whose document's config does not hash to the config hash it names, or whose data
    // root differs, is refused, and the enclave still takes the right one after.
    let mut doc = document(&cfg, root, 3);
    doc.config_hash = Hash32::ZERO;
    let e = refused(ops[0].enclave.handle(Request::LoadJob {
        spec: spec_of(&doc, 0),
    }));
    assert!(e.starts_with("config_hash"), "{e}");
    let bad = spec(&cfg, Hash32([0xab; 32]), 0, 3);
    assert!(
        refused(ops[0].enclave.handle(Request::LoadJob { spec: bad })).starts_with("data_root")
    );
    for (i, op) in ops.iter_mut().enumerate() {
        let bytes = signed(op.enclave.handle(Request::LoadJob {
            spec: spec(&cfg, root, i as u32, 3),
        }));
        let env = Envelope::decode(&bytes).unwrap();
        let (acc, ctx) = accepted(&op.peer);
        env.verify_as(&domain, "job-accepted", &acc, &ctx).unwrap();
        // The typed statement, and its payload as the wire has always carried it.
        let ja = Signed::<JobAccepted>::verify(&bytes, &domain, &acc, &ctx)
            .unwrap()
            .statement;
        let spec_hash = spec(&cfg, root, 0, 3).spec_hash;
        assert_eq!(
            (
                ja.job_id,
                ja.spec_hash,
                ja.config_hash,
                ja.data_root,
                ja.operator
            ),
            (
                JobId::from_hex(JOB).unwrap(),
                spec_hash,
                cfg.hash(),
                root,
                i as u32
            )
        );
        let head = format!(
            r#"{{"job_id":"{JOB}","spec_hash":"{spec_hash}","config_hash":"{}","data_root":"{root}","operator":{i},"operators":3,"model_hash":"{}","#,
            cfg.hash(),
            ja.model_hash
        );
        assert!(env.payload.starts_with(head.as_bytes()), "{head}");
    }
    let peers: Vec<PeerEvidence> = ops.iter().map(|o| o.peer.clone()).collect();

    // Round 0 and round 1: every enclave aggregates the same set and reaches the same model.
    let mut round0_updates: Vec<Vec<u8>> = Vec::new();
    let mut last_hash: Option<Hash32> = None;
    for round in 0..2u64 {
        assert!(
            refused(
                ops[0]
                    .enclave
                    .handle(Request::TrainRound { round: round + 1 })
            )
            .starts_with("wrong_round")
        );
        let updates: Vec<Vec<u8>> = ops
            .iter_mut()
            .map(|o| signed(o.enclave.handle(Request::TrainRound { round })))
            .collect();
        for (o, u) in ops.iter().zip(&updates) {
            let env = Envelope::decode(u).unwrap();
            let (acc, ctx) = accepted(&o.peer);
            let signer = env.verify_as(&domain, "update", &acc, &ctx).unwrap();
            assert_eq!(signer, o.address);
            let (head, _) = UpdatePayload::split(&env.payload).unwrap();
            assert_eq!(head.round, round);
        }
        let blobs: Vec<Blob> = updates.iter().map(|u| Blob(u.clone())).collect();

        if round == 1 {
            // A replayed update from round 0 is refused.
            let mut replay = blobs.clone();
            replay[1] = Blob(round0_updates[1].clone());
            let e = refused(ops[0].enclave.handle(Request::Aggregate {
                round,
                updates: replay,
                peers: peers.clone(),
            }));
            assert!(e.starts_with("wrong_round"), "{e}");
        }
        if round == 0 {
            round0_updates = updates.clone();
            // A tampered update (payload changed after signing) fails its signature.
            let mut env = Envelope::decode(&updates[1]).unwrap();
            let n = env.payload.len();
            env.payload[n - 1] ^= 1;
            let mut tampered = blobs.clone();
            tampered[1] = Blob(env.encode());
            let e = refused(ops[0].enclave.handle(Request::Aggregate {
                round,
                updates: tampered,
                peers: peers.clone(),
            }));
            assert!(e.starts_with("bad_signature"), "{e}");

            // An update signed by a key no evidence binds (naming a peer's evidence) is refused.
            let rogue = EnclaveKey::generate();
            let real = Envelope::decode(&updates[1]).unwrap();
            let forged = rogue
                .seal(&domain, "update", real.payload.clone(), real.evidence_hash)
                .unwrap();
            let mut with_forged = blobs.clone();
            with_forged.push(Blob(forged.encode()));
            let e = refused(ops[0].enclave.handle(Request::Aggregate {
                round,
                updates: with_forged,
                peers: peers.clone(),
            }));
            assert!(e.starts_with("bad_signature"), "{e}");
            // ... or naming evidence nobody presented.
            let forged = rogue
                .seal(
                    &domain,
                    "update",
                    real.payload.clone(),
                    EvidenceHash([9; 32]),
                )
                .unwrap();
            let mut with_forged = blobs.clone();
            with_forged.push(Blob(forged.encode()));
            let e = refused(ops[0].enclave.handle(Request::Aggregate {
                round,
                updates: with_forged,
                peers: peers.clone(),
            }));
            assert!(e.starts_with("unattested"), "{e}");

            // Equivocation: an attested peer (its key bound by its own sim evidence) signs two
            // different updates for the round; both are well formed until compared.
            let key = EnclaveKey::generate();
            let nonce = Nonce([5; 32]);
            let ctx = BindingContext {
                job_id: JobId::from_hex(JOB).unwrap(),
                nonce,
            };
            let sim = SimAttester::new(SimConfig::default()).unwrap();
            let ev = sim.evidence(&key.report_data(&ctx));
            let twin = PeerEvidence {
                evidence: Blob(ev.encode()),
                nonce,
            };
            let (head, bytes) = UpdatePayload::split(&real.payload).unwrap();
            let base = head.base_model;
            let mut other = bytes.to_vec();
            let n = other.len();
            other[n - 1] ^= 1;
            let a = key
                .seal(
                    &domain,
                    "update",
                    UpdatePayload::encode(round, &base, bytes),
                    ev.hash(),
                )
                .unwrap();
            let b = key
                .seal(
                    &domain,
                    "update",
                    UpdatePayload::encode(round, &base, &other),
                    ev.hash(),
                )
                .unwrap();
            let mut set = blobs.clone();
            set.push(Blob(a.encode()));
            set.push(Blob(b.encode()));
            let mut with_twin = peers.clone();
            with_twin.push(twin);
            let e = refused(ops[0].enclave.handle(Request::Aggregate {
                round,
                updates: set,
                peers: with_twin,
            }));
            assert!(e.starts_with("equivocation"), "{e}");
            let e = refused(ops[2].enclave.handle(Request::TrainRound { round }));
            assert!(e.starts_with("round_open"), "{e}");

            // Garbage as an update.
            let mut garbage = blobs.clone();
            garbage.push(Blob(b"not an envelope".to_vec()));
            let e = refused(ops[0].enclave.handle(Request::Aggregate {
                round,
                updates: garbage,
                peers: peers.clone(),
            }));
            assert!(e.starts_with("bad_update"), "{e}");

            // A set missing the enclave's own update.
            let e = refused(ops[0].enclave.handle(Request::Aggregate {
                round,
                updates: blobs[1..].to_vec(),
                peers: peers.clone(),
            }));
            assert!(e.starts_with("own_update_missing"), "{e}");
        }

        // Honest aggregation, with the set in different orders per enclave.
        let mut hashes = Vec::new();
        for (i, o) in ops.iter_mut().enumerate() {
            let mut set = blobs.clone();
            set.rotate_left(i);
            set.push(set[0].clone()); // an exact duplicate is ignored
            let env = signed(o.enclave.handle(Request::Aggregate {
                round,
                updates: set,
                peers: peers.clone(),
            }));
            let env = Envelope::decode(&env).unwrap();
            let (acc, ctx) = accepted(&o.peer);
            env.verify_as(&domain, "round-receipt", &acc, &ctx).unwrap();
            let r = RoundReceipt::from_json(&env.payload).unwrap();
            assert_eq!(r.round, round);
            assert_eq!(r.updates.len(), 3);
            assert!(!r.proofs_before.is_empty() && r.proofs_after.is_empty());
            hashes.push(r.model_hash_after);
            if let Some(last) = last_hash {
                assert_eq!(r.model_hash_before, last);
            }
        }
        assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
        assert_ne!(Some(hashes[0]), last_hash);
        last_hash = Some(hashes[0]);
    }

    // Checkpoint from operator 0, loaded by a newcomer (a fresh enclave on the same job).
    let Response::Checkpoint { weights, manifest } = ops[0].enclave.handle(Request::Checkpoint)
    else {
        panic!("checkpoint")
    };
    let (acc0, ctx0) = accepted(&ops[0].peer);
    let man = Signed::<CheckpointManifest>::verify(&manifest.0, &domain, &acc0, &ctx0)
        .unwrap()
        .statement;
    assert_eq!(man.model_hash, Hash32::sha256(&weights.0));
    assert_eq!((man.config_hash, man.data_root), (cfg.hash(), root));
    let mut newcomer = start(dir.path(), 9, SimConfig::default());
    signed(newcomer.enclave.handle(Request::LoadJob {
        spec: spec(&cfg, root, 1, 3),
    }));
    // Tampered weights are refused; unsigned weights without an initial hash are refused.
    let mut bad = weights.0.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x40;
    let e = refused(newcomer.enclave.handle(Request::LoadCheckpoint {
        weights: Blob(bad),
        manifest: Some(manifest.clone()),
        signer: Some(ops[0].peer.clone()),
    }));
    assert!(e.starts_with("hash_mismatch"), "{e}");
    let e = refused(newcomer.enclave.handle(Request::LoadCheckpoint {
        weights: weights.clone(),
        manifest: None,
        signer: None,
    }));
    assert!(
        e.starts_with("hash_mismatch") && e.contains("initial weights"),
        "{e}"
    );
    // The manifest with the wrong signer's evidence fails.
    let e = refused(newcomer.enclave.handle(Request::LoadCheckpoint {
        weights: weights.clone(),
        manifest: Some(manifest.clone()),
        signer: Some(ops[1].peer.clone()),
    }));
    assert!(e.starts_with("bad_signature"), "{e}");
    let Response::Checkpoint { weights: w2, .. } =
        newcomer.enclave.handle(Request::LoadCheckpoint {
            weights: weights.clone(),
            manifest: Some(manifest),
            signer: Some(ops[0].peer.clone()),
        })
    else {
        panic!("load checkpoint")
    };
    assert_eq!(w2, weights);
}

#[test]
fn peers_with_bad_evidence_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2);
    let root = {
        let mut c = cfg.clone();
        c.out = dir.path().join("probe");
        Trainer::new(c).unwrap().dataset.root()
    };
    let mut honest = start(dir.path(), 0, SimConfig::default());
    // A debug guest and a guest with another measurement, otherwise well formed.
    let debug = start(
        dir.path(),
        1,
        SimConfig {
            policy: 0x30000 | (1 << 19),
            ..SimConfig::default()
        },
    );
    let other = start(
        dir.path(),
        2,
        SimConfig {
            measurement: conclave_attestation::Measurement([7; 48]),
            ..SimConfig::default()
        },
    );
    signed(honest.enclave.handle(Request::LoadJob {
        spec: spec(&cfg, root, 0, 2),
    }));
    let own = signed(honest.enclave.handle(Request::TrainRound { round: 0 }));
    for (bad, why) in [(&debug, "debug"), (&other, "measurement")] {
        let e = refused(honest.enclave.handle(Request::Aggregate {
            round: 0,
            updates: vec![Blob(own.clone())],
            peers: vec![honest.peer.clone(), bad.peer.clone()],
        }));
        assert!(
            e.starts_with("evidence_rejected") && e.to_lowercase().contains(why),
            "{e}"
        );
    }
    // The update payload format is checked before use.
    assert!(UpdatePayload::split(b"short").is_err());
    let p = UpdatePayload::encode(3, &Hash32([1; 32]), b"xyz");
    let (h, u) = UpdatePayload::split(&p).unwrap();
    assert_eq!(
        (h.round, h.base_model, u),
        (3, Hash32([1; 32]), &b"xyz"[..])
    );
    // A second job for a loaded enclave, and requests before hello, are refused by name.
    let e = refused(honest.enclave.handle(Request::LoadJob {
        spec: spec(&cfg, root, 0, 2),
    }));
    assert!(e.starts_with("job_loaded"), "{e}");
    let mut fresh = Enclave::new(
        Box::new(SimAttester::new(SimConfig::default()).unwrap()),
        paths(dir.path(), 5),
    );
    let e = refused(fresh.handle(Request::LoadJob {
        spec: spec(&cfg, root, 0, 2),
    }));
    assert!(e.starts_with("no_evidence"), "{e}");
    let e = refused(fresh.handle(Request::TrainRound { round: 0 }));
    assert!(e.starts_with("no_job"), "{e}");
}

/// The chain statements: a registration consent over the enclave's own evidence and
/// measurement, and a checkpoint statement only for the round its model is at, never two
/// different ones for a round; both only for the on-chain job the loaded job is.
#[test]
fn chain_statements_bind_the_enclaves_own_state() {
    use conclave_attestation::Tee;
    use conclave_attestation::eip712::{
        CheckpointStatement, Domain, JobTerms, chain_measurement, job_word, recover,
        update_set_hash,
    };

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1);
    let root = {
        let mut c = cfg.clone();
        c.out = dir.path().join("probe");
        Trainer::new(c).unwrap().dataset.root()
    };
    let job_id = JobId(job_word(5));
    let mut enclave = Enclave::new(
        Box::new(SimAttester::new(SimConfig::default()).unwrap()),
        paths(dir.path(), 0),
    );
    let nonce = Nonce::from_hex(&format!("{:064x}", 99)).unwrap();
    let Response::Hello {
        address, evidence, ..
    } = enclave.handle(Request::Hello { job_id, nonce })
    else {
        panic!("hello")
    };
    let contract = format!("0x{}", "22".repeat(20));
    let domain = Domain {
        chain_id: 31337,
        contract: [0x22; 20],
    };
    let operator = format!("0x{}", "33".repeat(20));
    let registration = |e: &mut Enclave, job: u64| {
        e.handle(Request::ChainRegistration {
            chain_id: 31337,
            contract: contract.clone(),
            job,
            operator: operator.clone(),
        })
    };
    let commit = |e: &mut Enclave, job: u64, round: u64| {
        e.handle(Request::ChainCheckpoint {
            chain_id: 31337,
            contract: contract.clone(),
            job,
            round,
        })
    };
    assert!(refused(registration(&mut enclave, 5)).starts_with("no_job"));

    let mut s = spec(&cfg, root, 0, 1);
    s.job_id = job_id;
    let terms = JobTerms {
        job_id: job_id.0,
        spec_hash: s.spec_hash.0,
        dataset_root: root.0,
    };
    signed(enclave.handle(Request::LoadJob { spec: s }));

    // Another on-chain job, or a malformed address: refused.
    assert!(refused(registration(&mut enclave, 6)).starts_with("wrong_job"));
    let e = refused(enclave.handle(Request::ChainRegistration {
        chain_id: 31337,
        contract: "0x1234".into(),
        job: 5,
        operator: operator.clone(),
    }));
    assert!(
        e.starts_with("bad_request") && e.contains("contract"),
        "{e}"
    );

    // The consent names the evidence's hash and measurement and recovers to the enclave key.
    let Response::Registration {
        evidence_hash,
        measurement,
        signature,
    } = registration(&mut enclave, 5)
    else {
        panic!("registration")
    };
    let ev = Evidence::decode(&evidence.0).unwrap();
    assert_eq!(evidence_hash, Hash32(ev.hash().0));
    let m = chain_measurement(Tee::Sim, &default_sim_measurement());
    assert_eq!(measurement, Hash32(m));
    let sig: [u8; 65] = hex::decode(&signature).unwrap().try_into().unwrap();
    let digest = domain.registration_digest(&terms, &[0x33; 20], &ev.hash().0, &m);
    assert_eq!(recover(&digest, &sig).unwrap(), address);
    // Signed for another operator, or read as consent to other terms, it does not recover to
    // the key.
    let other = domain.registration_digest(&terms, &[0x44; 20], &ev.hash().0, &m);
    assert_ne!(recover(&other, &sig).unwrap(), address);
    let other_spec = JobTerms {
        spec_hash: [0x55; 32],
        ..terms
    };
    let other = domain.registration_digest(&other_spec, &[0x33; 20], &ev.hash().0, &m);
    assert_ne!(recover(&other, &sig).unwrap(), address);

    // No checkpoint statement before a round closed, or while one is open.
    assert!(refused(commit(&mut enclave, 5, 1)).starts_with("no_receipt"));
    let first = enclave.handle(Request::Checkpoint);
    let update = signed(enclave.handle(Request::TrainRound { round: 0 }));
    assert!(refused(commit(&mut enclave, 5, 1)).starts_with("round_open"));
    let receipt = signed(enclave.handle(Request::Aggregate {
        round: 0,
        updates: vec![Blob(update)],
        peers: vec![PeerEvidence {
            evidence: evidence.clone(),
            nonce,
        }],
    }));
    let payload = Envelope::decode(&receipt).unwrap().payload;
    let rc = RoundReceipt::from_json(&payload).unwrap();

    // After round 0 closed the model is at on-chain round 1; any other round is refused.
    assert!(refused(commit(&mut enclave, 5, 2)).starts_with("wrong_round"));
    assert!(refused(commit(&mut enclave, 6, 1)).starts_with("wrong_job"));
    let Response::Commitment {
        round,
        model_hash,
        receipt_hash,
        members,
        signature,
    } = commit(&mut enclave, 5, 1)
    else {
        panic!("commitment")
    };
    assert_eq!(round, 1);
    assert_eq!(model_hash, rc.model_hash_after);
    // The statement names the round's outcome, which every enclave that closed the round the
    // same way agrees on (not this enclave's own receipt bytes).
    assert_eq!(receipt_hash, rc.outcome_hash());
    // The update set is the enclaves whose updates the round aggregated: here its own.
    assert_eq!(members, vec![address]);
    let sig: [u8; 65] = hex::decode(&signature).unwrap().try_into().unwrap();
    let statement = CheckpointStatement {
        round: 1,
        model_hash: model_hash.0,
        receipt_hash: receipt_hash.0,
        update_set: update_set_hash(&members),
    };
    let digest = domain.checkpoint_digest(&terms, &statement);
    assert_eq!(recover(&digest, &sig).unwrap(), address);
    // The statement names the job's spec hash and dataset root: under other terms it is not
    // this enclave's.
    for other in [
        JobTerms {
            spec_hash: [0x55; 32],
            ..terms
        },
        JobTerms {
            dataset_root: [0x55; 32],
            ..terms
        },
    ] {
        let d = domain.checkpoint_digest(&other, &statement);
        assert_ne!(recover(&d, &sig).unwrap(), address);
    }
    // Asking again gives the same statement (a resend is not an equivocation).
    let Response::Commitment {
        model_hash: again, ..
    } = commit(&mut enclave, 5, 1)
    else {
        panic!("commitment")
    };
    assert_eq!(again, model_hash);

    // Rewound to its first weights (a signed checkpoint load), the enclave has no receipt to
    // commit until a round closes again.
    let me = PeerEvidence {
        evidence: evidence.clone(),
        nonce,
    };
    let Response::Checkpoint { weights, manifest } = first else {
        panic!("checkpoint")
    };
    let r = enclave.handle(Request::LoadCheckpoint {
        weights,
        manifest: Some(manifest),
        signer: Some(me),
    });
    assert!(matches!(r, Response::Checkpoint { .. }), "{r:?}");
    assert!(refused(commit(&mut enclave, 5, 1)).starts_with("no_receipt"));
}

/// The enclave obeys the job document and nothing else its host says: a document that does not
/// hash to the spec hash the host names (another config, another policy) is refused, a
/// hardware job whose policy would admit sim peers is refused, and a sim enclave refuses a
/// hardware job. Every refusal is by name, and the enclave takes the honest job after.
#[test]
fn the_host_cannot_substitute_the_config_or_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1);
    let (root, _) = facts(dir.path(), &cfg);
    let honest = document(&cfg, root, 1);
    let named = spec_of(&honest, 0).spec_hash;
    let mut op = start(dir.path(), 0, SimConfig::default());
    let load = |op: &mut Op, doc: &JobDocument| {
        let mut s = spec_of(doc, 0);
        // The host names the chain's spec hash, whatever document it sends.
        s.spec_hash = named;
        op.enclave.handle(Request::LoadJob { spec: s })
    };

    // Another config (more steps), with its own correct config hash.
    let mut other_cfg = cfg.clone();
    other_cfg.train.steps = 16;
    let mut doc = honest.clone();
    doc.config = toml::to_string(&other_cfg).unwrap();
    doc.config_hash = other_cfg.hash();
    let e = refused(load(&mut op, &doc));
    assert!(e.starts_with("spec_hash"), "{e}");
    assert!(e.contains(&named.to_string()), "{e}");

    // Another policy: one that also accepts debug guests, or other measurements.
    let mut doc = honest.clone();
    doc.policy.allow_debug = true;
    assert!(refused(load(&mut op, &doc)).starts_with("spec_hash"));
    let mut doc = honest.clone();
    doc.policy
        .measurements
        .push(conclave_attestation::Measurement([7; 48]));
    assert!(refused(load(&mut op, &doc)).starts_with("spec_hash"));

    // A hardware job whose policy admits sim evidence, even under its own hash.
    let mut doc = honest.clone();
    doc.tee = JobTee::Snp;
    let e = refused(op.enclave.handle(Request::LoadJob {
        spec: spec_of(&doc, 0),
    }));
    assert!(e.starts_with("sim_policy_for_hardware_job"), "{e}");
    // A proper hardware job is refused by a sim enclave.
    doc.policy.allow_sim = false;
    let e = refused(op.enclave.handle(Request::LoadJob {
        spec: spec_of(&doc, 0),
    }));
    assert!(
        e.starts_with("backend_not_allowed") && e.contains("snp"),
        "{e}"
    );
    // A re-encoded document (same content, other bytes) is another document.
    let pretty = serde_json::to_vec_pretty(&honest).unwrap();
    let e = refused(op.enclave.handle(Request::LoadJob {
        spec: JobSpec {
            job_id: JobId::from_hex(JOB).unwrap(),
            spec_hash: JobDocument::spec_hash(&pretty),
            document: Blob(pretty),
            operator: 0,
        },
    }));
    assert!(
        e.starts_with("bad_document") && e.contains("canonical"),
        "{e}"
    );

    // The honest document is taken, and the statement names its spec hash.
    let bytes = signed(load(&mut op, &honest));
    let (acc, ctx) = accepted(&op.peer);
    let ja = Signed::<JobAccepted>::verify(&bytes, &job_domain(&ctx.job_id, &named), &acc, &ctx)
        .unwrap()
        .statement;
    assert_eq!((ja.spec_hash, ja.data_root), (named, root));

    // The enclave's word for its network identity names the peer id and the account, in the
    // job's domain; malformed ones are refused.
    let domain = job_domain(&ctx.job_id, &named);
    let account = format!("0x{}", "ab".repeat(20));
    let bytes = signed(op.enclave.handle(Request::SignAnnounce {
        peer_id: "12D3KooWPeer".into(),
        account: Some(account.clone()),
    }));
    let a = Signed::<AnnounceStatement>::verify(&bytes, &domain, &acc, &ctx)
        .unwrap()
        .statement;
    assert_eq!(
        (a.job_id, a.operator, a.peer_id.as_str(), a.account),
        (ctx.job_id, 0, "12D3KooWPeer", Some(account))
    );
    for (peer_id, account) in [
        ("", None),
        ("12D3/../x", None),
        ("12D3KooWPeer", Some("0x1234".to_string())),
    ] {
        let e = refused(op.enclave.handle(Request::SignAnnounce {
            peer_id: peer_id.into(),
            account,
        }));
        assert!(e.starts_with("bad_request"), "{e}");
    }
}
