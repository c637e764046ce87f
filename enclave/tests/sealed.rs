//! A sealed job in process, with sim attesters: the customer seals a real dataset, the first
//! enclave gets the job secret from the customer (the broker's appraisal, in process), the
//! second from the first (enclave-to-enclave release); both train a round on data only they can
//! read, exchange sealed updates and agree; the sealed checkpoint opens with the customer's
//! key. Every refusal of the key release is played: a made-up secret, a replayed nonce, another
//! measurement, a debug guest, a request that does not bind its key (a host asking for
//! itself); and a sealed update with one flipped byte is refused by the AEAD with nothing
//! aggregated.

mod common;

use std::path::Path;

use conclave_attestation::sim::default_sim_measurement;
use conclave_attestation::{
    BindingContext, EnclaveKey, Endorsements, JobId, Measurement, Nonce, Policy, SimAttester,
    SimConfig, UnixTime,
};
use conclave_enclave::service::{DataPaths, Enclave};
use conclave_enclave::train::config::Method;
use conclave_enclave::train::data::shard_path;
use conclave_enclave::train::{TrainConfig, Trainer};
use conclave_protocol::channel::{Blob, JobSpec, PeerEvidence, Request, Response};
use conclave_protocol::job::JOB_DOCUMENT_VERSION;
use conclave_protocol::keyrelease::{KeyRequest, NonceBook, appraise_key_request, release};
use conclave_protocol::seal::{Header, JobSecret, Kind, Recipient, wrap};
use conclave_protocol::sealed_data::{SealedDataset, dataset_file_names, seal_files};
use conclave_protocol::{
    CheckpointManifest, Hash32, JobDocument, JobTee, Sealing, Signed, Statement, UpdatePayload,
    ValueEncoding, job_domain,
};

const JOB: [u8; 32] = [0x22; 32];

fn config(dir: &Path) -> TrainConfig {
    let mut c = TrainConfig {
        device: "cpu".into(),
        threads: 1,
        replicas: 2,
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

/// Whether any 64-byte window of `plain` occurs in `haystack`.
fn shares_a_window(haystack: &[u8], plain: &[u8]) -> bool {
    let seen: std::collections::HashSet<&[u8]> = haystack.windows(64).collect();
    plain.windows(64).any(|w| seen.contains(w))
}

fn refused(r: Response) -> String {
    match r {
        Response::Error { code, message } => format!("{code}: {message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn signed(r: Response) -> Vec<u8> {
    match r {
        Response::Signed { envelope } => envelope.0,
        other => panic!("expected a signed envelope, got {other:?}"),
    }
}

fn request_of(r: Response) -> Blob {
    match r {
        Response::KeyRequest { request } => request,
        other => panic!("expected a key request, got {other:?}"),
    }
}

struct Op {
    enclave: Enclave,
    peer: PeerEvidence,
}

fn start(sealed: &Path, dir: &Path, i: usize, sim: SimConfig) -> Op {
    let mut enclave = Enclave::new(
        Box::new(SimAttester::new(sim).unwrap()),
        DataPaths {
            // The enclave sees only the sealed dataset: no corpus, an empty cache.
            corpus: sealed.to_path_buf(),
            cache: dir.join(format!("enclave-cache-{i}")),
            scratch: dir.join(format!("scratch-{i}")),
        },
    );
    let nonce = Nonce([i as u8 + 1; 32]);
    let Response::Hello { evidence, .. } = enclave.handle(Request::Hello {
        job_id: JobId(JOB),
        nonce,
    }) else {
        panic!("hello")
    };
    Op {
        enclave,
        peer: PeerEvidence { evidence, nonce },
    }
}

/// The customer's key broker, in process: the same appraisal `conclave keys serve` runs.
struct Broker {
    secret: JobSecret,
    sealing_id: Hash32,
    book: NonceBook,
}

impl Broker {
    fn challenge(&mut self, n: u8) -> Nonce {
        self.book.issue([n; 32], now())
    }
    fn answer(&mut self, request: &Blob) -> Result<Blob, String> {
        let req = KeyRequest::parse(&request.0).map_err(|e| e.code().to_string())?;
        self.book
            .spend(&req.nonce, now())
            .map_err(|e| e.code().to_string())?;
        let acc = appraise_key_request(
            &req,
            &self.sealing_id,
            &policy(),
            &Endorsements::default(),
            now(),
        )
        .map_err(|e| e.code().to_string())?;
        Ok(release(&self.secret, &req, &acc).unwrap().wrapped)
    }
}

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

/// Asks `giver` (an enclave holding the secret) to release it to `taker`.
fn peer_release(giver: &mut Enclave, taker: &mut Enclave, sealing_id: Hash32) -> Response {
    let Response::Challenge { nonce, .. } = giver.handle(Request::KeyChallenge) else {
        panic!("challenge")
    };
    let req = request_of(taker.handle(Request::KeyRequest { sealing_id, nonce }));
    match giver.handle(Request::ReleaseKey { request: req }) {
        Response::Wrapped { wrapped } => taker.handle(Request::KeyRelease { wrapped }),
        other => other,
    }
}

/// A fresh challenge from `giver`, answered by an enclave made with `sim`.
fn ask_as(giver: &mut Enclave, dir: &Path, sealed: &Path, sim: SimConfig, id: Hash32) -> String {
    let Response::Challenge { nonce, .. } = giver.handle(Request::KeyChallenge) else {
        panic!("challenge")
    };
    let mut other = start(sealed, dir, 9, sim);
    let req = request_of(other.enclave.handle(Request::KeyRequest {
        sealing_id: id,
        nonce,
    }));
    refused(giver.handle(Request::ReleaseKey { request: req }))
}

#[test]
fn a_sealed_job_runs_on_data_only_enclaves_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());

    // The customer prepares the dataset in the clear on its own machine, and seals it.
    let (dataset_dir, initial, plain_shard) = {
        let mut c = cfg.clone();
        c.out = dir.path().join("probe");
        let t = Trainer::new(c).unwrap();
        let shard = std::fs::read(shard_path(&t.dataset.dir, 0)).unwrap();
        (t.dataset.dir.clone(), t.model_hash().unwrap(), shard)
    };
    let tokenizer = dataset_dir.parent().unwrap().join("tokenizer.json");
    let files: Vec<(String, Vec<u8>)> = dataset_file_names(4)
        .into_iter()
        .map(|n| {
            let p = if n == "tokenizer.json" {
                tokenizer.clone()
            } else {
                dataset_dir.join(&n)
            };
            (n, std::fs::read(p).unwrap())
        })
        .collect();
    let secret = JobSecret::generate().unwrap();
    let sealing_id = Hash32([0x5e; 32]);
    let (index, sealed_bytes) = seal_files(&secret, sealing_id, &files).unwrap();
    let sealed = dir.path().join("sealed");
    std::fs::create_dir_all(&sealed).unwrap();
    std::fs::write(sealed.join("sealed.json"), index.encode()).unwrap();
    for (f, b) in index.files.iter().zip(&sealed_bytes) {
        std::fs::write(sealed.join(SealedDataset::sealed_name(&f.name)), b).unwrap();
        // No 64-byte window of a plaintext file survives in its sealed form.
    }
    let sealed_shard = &sealed_bytes[3];
    assert!(!shares_a_window(sealed_shard, &plain_shard));

    let doc = JobDocument {
        version: JOB_DOCUMENT_VERSION,
        tee: JobTee::Sim,
        config: toml::to_string(&cfg).unwrap(),
        config_hash: cfg.hash(),
        data_root: index.root(),
        initial_model_hash: initial,
        operators: 2,
        quorum_bps: 6000,
        policy: policy(),
        sealing: Some(Sealing {
            sealing_id,
            key_check: index.key_check,
        }),
    };
    let bytes = doc.encode();
    let spec = |operator| JobSpec {
        job_id: JobId(JOB),
        spec_hash: JobDocument::spec_hash(&bytes),
        document: Blob(bytes.clone()),
        operator,
    };
    let domain = job_domain(&JobId(JOB), &JobDocument::spec_hash(&bytes));
    let mut ops: Vec<Op> = (0..2)
        .map(|i| start(&sealed, dir.path(), i, SimConfig::default()))
        .collect();

    // No secret, no job.
    let e = refused(ops[0].enclave.handle(Request::LoadJob { spec: spec(0) }));
    assert!(e.starts_with("no_secret"), "{e}");

    // The first enclave gets the secret from the customer's broker.
    let mut broker = Broker {
        secret: JobSecret::from_bytes(*secret.expose()),
        sealing_id,
        book: NonceBook::default(),
    };
    let nonce = broker.challenge(1);
    let req = request_of(
        ops[0]
            .enclave
            .handle(Request::KeyRequest { sealing_id, nonce }),
    );
    let wrapped = broker.answer(&req).unwrap();
    // The same request again is a replay.
    assert_eq!(broker.answer(&req).unwrap_err(), "stale_nonce");
    assert_eq!(
        ops[0].enclave.handle(Request::KeyRelease { wrapped }),
        Response::KeyHeld { sealing_id }
    );
    signed(ops[0].enclave.handle(Request::LoadJob { spec: spec(0) }));

    // A host that makes up a secret and wraps it to its enclave's request key gets the job
    // refused: the secret fails the document's key check.
    let req = request_of(ops[1].enclave.handle(Request::KeyRequest {
        sealing_id,
        nonce: Nonce([3; 32]),
    }));
    let parsed = KeyRequest::parse(&req.0).unwrap();
    let evidence = conclave_attestation::Evidence::decode(&parsed.evidence.0).unwrap();
    let made_up = JobSecret::generate().unwrap();
    let forged = wrap(
        &made_up,
        &parsed.public_key.0,
        &KeyRequest::wrap_context(&sealing_id, &evidence.hash().0),
    )
    .unwrap();
    assert_eq!(
        ops[1].enclave.handle(Request::KeyRelease {
            wrapped: Blob(forged)
        }),
        Response::KeyHeld { sealing_id }
    );
    let e = refused(ops[1].enclave.handle(Request::LoadJob { spec: spec(1) }));
    assert!(e.starts_with("wrong_secret"), "{e}");
    // A release with no request pending.
    let e = refused(ops[1].enclave.handle(Request::KeyRelease {
        wrapped: Blob(vec![0; 84]),
    }));
    assert!(e.starts_with("no_key_request"), "{e}");

    // Enclave-to-enclave: the second enclave gets the secret from the first.
    let (a, b) = ops.split_at_mut(1);
    assert_eq!(
        peer_release(&mut a[0].enclave, &mut b[0].enclave, sealing_id),
        Response::KeyHeld { sealing_id }
    );
    signed(ops[1].enclave.handle(Request::LoadJob { spec: spec(1) }));

    // The first enclave refuses to release to anything that is not an enclave of the job.
    let giver = &mut ops[0].enclave;
    let other = SimConfig {
        measurement: Measurement([9; 48]),
        ..SimConfig::default()
    };
    let e = ask_as(giver, dir.path(), &sealed, other, sealing_id);
    assert!(e.starts_with("wrong_measurement"), "{e}");
    let debug = SimConfig {
        policy: SimConfig::default().policy | (1 << 19),
        ..SimConfig::default()
    };
    let e = ask_as(giver, dir.path(), &sealed, debug, sealing_id);
    assert!(e.starts_with("debug_guest"), "{e}");
    let e = ask_as(
        giver,
        dir.path(),
        &sealed,
        SimConfig::default(),
        Hash32([1; 32]),
    );
    assert!(
        e.starts_with("bad_request") || e.starts_with("unknown_job"),
        "{e}"
    );
    // A host (no enclave) that takes its enclave's request and swaps in its own key: the
    // evidence does not bind that key.
    let Response::Challenge { nonce, .. } = giver.handle(Request::KeyChallenge) else {
        panic!("challenge")
    };
    let mut host = start(&sealed, dir.path(), 8, SimConfig::default());
    let req = request_of(
        host.enclave
            .handle(Request::KeyRequest { sealing_id, nonce }),
    );
    let mut parsed = KeyRequest::parse(&req.0).unwrap();
    parsed.public_key = Hash32(Recipient::generate().unwrap().public_key());
    let e = refused(giver.handle(Request::ReleaseKey {
        request: Blob(parsed.encode()),
    }));
    assert!(e.starts_with("not_bound"), "{e}");
    // ... and a replay of a spent challenge.
    let e = refused(giver.handle(Request::ReleaseKey {
        request: Blob(parsed.encode()),
    }));
    assert!(e.starts_with("stale_nonce"), "{e}");

    // A round on sealed data, with sealed updates.
    let updates: Vec<Vec<u8>> = ops
        .iter_mut()
        .map(|o| signed(o.enclave.handle(Request::TrainRound { round: 0 })))
        .collect();
    let peers: Vec<PeerEvidence> = ops.iter().map(|o| o.peer.clone()).collect();
    let envs: Vec<UpdatePayload> = updates
        .iter()
        .map(|u| {
            let env = Signed::<UpdatePayload>::decode_envelope(u).unwrap();
            UpdatePayload::from_payload(&env.payload).unwrap()
        })
        .collect();
    for e in &envs {
        let h = Header::parse(&e.body).unwrap();
        assert_eq!((h.kind, h.index), (Kind::Update, 0));
    }

    // A sealed update with one flipped byte, signed by an attested key: the AEAD refuses it and
    // the round is not closed from it.
    let key = EnclaveKey::generate();
    let nonce = Nonce([5; 32]);
    let ctx = BindingContext {
        job_id: JobId(JOB),
        nonce,
    };
    let ev = SimAttester::new(SimConfig::default())
        .unwrap()
        .evidence(&key.report_data(&ctx));
    let mut body = envs[1].body.clone();
    let n = body.len();
    body[n / 2] ^= 1;
    let flipped = key
        .seal(
            &domain,
            "update",
            UpdatePayload::encode(0, &envs[1].base_model, &body),
            ev.hash(),
        )
        .unwrap();
    let mut set: Vec<Blob> = updates.iter().map(|u| Blob(u.clone())).collect();
    set.push(Blob(flipped.encode()));
    let mut with_flipper = peers.clone();
    with_flipper.push(PeerEvidence {
        evidence: Blob(ev.encode()),
        nonce,
    });
    let e = refused(ops[0].enclave.handle(Request::Aggregate {
        round: 0,
        updates: set,
        peers: with_flipper,
    }));
    assert!(
        e.starts_with("bad_update") && e.contains("does not open"),
        "{e}"
    );

    // The honest set closes the round the same way in both enclaves.
    let set: Vec<Blob> = updates.iter().map(|u| Blob(u.clone())).collect();
    for o in ops.iter_mut() {
        signed(o.enclave.handle(Request::Aggregate {
            round: 0,
            updates: set.clone(),
            peers: peers.clone(),
        }));
    }

    // Sealed checkpoints: the host holds ciphertext; the customer opens it with its key; a
    // peer enclave loads it; a flipped byte is refused.
    let cps: Vec<(Vec<u8>, Vec<u8>)> = ops
        .iter_mut()
        .map(|o| match o.enclave.handle(Request::Checkpoint) {
            Response::Checkpoint { weights, manifest } => (weights.0, manifest.0),
            other => panic!("checkpoint: {other:?}"),
        })
        .collect();
    let manifest = |b: &[u8]| {
        let env = Signed::<CheckpointManifest>::decode_envelope(b).unwrap();
        CheckpointManifest::from_payload(&env.payload).unwrap()
    };
    let m0 = manifest(&cps[0].1);
    let m1 = manifest(&cps[1].1);
    assert_eq!(m0.model_hash, m1.model_hash, "the enclaves agree");
    assert_eq!(m0.sealed_hash, Some(Hash32::sha256(&cps[0].0)));
    assert_eq!(m0.file_hash(), Hash32::sha256(&cps[0].0));
    assert_eq!(Header::parse(&cps[0].0).unwrap().kind, Kind::Checkpoint);
    let model = secret
        .open(&sealing_id.0, Kind::Checkpoint, m0.step, &cps[0].0)
        .unwrap();
    assert_eq!(Hash32::sha256(&model), m0.model_hash);
    let signer0 = ops[0].peer.clone();
    let mut bad = cps[0].0.clone();
    let n = bad.len();
    bad[n - 40] ^= 1;
    let e = refused(ops[1].enclave.handle(Request::LoadCheckpoint {
        weights: Blob(bad),
        manifest: Some(Blob(cps[0].1.clone())),
        signer: Some(signer0.clone()),
    }));
    assert!(e.starts_with("hash_mismatch"), "{e}");
    let r = ops[1].enclave.handle(Request::LoadCheckpoint {
        weights: Blob(cps[0].0.clone()),
        manifest: Some(Blob(cps[0].1.clone())),
        signer: Some(signer0.clone()),
    });
    assert!(matches!(r, Response::Checkpoint { .. }), "{r:?}");

    // Nothing the enclaves wrote holds the plaintext shard.
    for i in 0..2 {
        let scratch = dir.path().join(format!("scratch-{i}"));
        if let Ok(rd) = std::fs::read_dir(&scratch) {
            for e in rd.flatten() {
                let b = std::fs::read(e.path()).unwrap_or_default();
                assert!(!shares_a_window(&b, &plain_shard));
            }
        }
        assert!(
            !dir.path().join(format!("enclave-cache-{i}")).exists()
                || std::fs::read_dir(dir.path().join(format!("enclave-cache-{i}")))
                    .unwrap()
                    .next()
                    .is_none()
        );
    }
}
