//! What sealing costs a round: the same job (one SparseLoCo round of H = 10 inner steps of
//! 8 × 128 tokens on the 2.17 M-parameter GPT, TOPLOC proofs, and a checkpoint every round) run
//! by two enclaves in this process, one sealed (dataset opened from its sealed files, the update
//! sealed before signing and opened before aggregating, the checkpoint sealed) and one not.
//! Rounds alternate between the two so drift hits both; medians are reported, and both must
//! reach the same model hash every round.
//!
//! `source scripts/env.sh && cargo bench -p conclave-enclave --bench sealed_round`

use std::path::Path;
use std::time::Instant;

use conclave_attestation::sim::default_sim_measurement;
use conclave_attestation::{Endorsements, JobId, Nonce, Policy, SimAttester, SimConfig, UnixTime};
use conclave_enclave::service::{DataPaths, Enclave};
use conclave_enclave::train::{TrainConfig, Trainer};
use conclave_protocol::channel::{Blob, JobSpec, PeerEvidence, Request, Response};
use conclave_protocol::job::JOB_DOCUMENT_VERSION;
use conclave_protocol::keyrelease::{KeyRequest, NonceBook, appraise_key_request, release};
use conclave_protocol::seal::JobSecret;
use conclave_protocol::sealed_data::{SealedDataset, dataset_file_names, seal_files};
use conclave_protocol::{
    CheckpointManifest, Hash32, JobDocument, JobTee, Sealing, Signed, Statement,
};

const JOB: [u8; 32] = [0x33; 32];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn signed(r: Response) -> Vec<u8> {
    match r {
        Response::Signed { envelope } => envelope.0,
        other => panic!("expected a signed answer, got {other:?}"),
    }
}

fn model_hash(r: Response) -> (Hash32, usize) {
    let Response::Checkpoint { weights, manifest } = r else {
        panic!("checkpoint")
    };
    let env = Signed::<CheckpointManifest>::decode_envelope(&manifest.0).expect("manifest");
    let m = CheckpointManifest::from_payload(&env.payload).expect("manifest json");
    (m.model_hash, weights.0.len())
}

fn start(corpus: &Path, cache: &Path, scratch: &Path) -> (Enclave, PeerEvidence) {
    let mut e = Enclave::new(
        Box::new(SimAttester::new(SimConfig::default()).expect("sim")),
        DataPaths {
            corpus: corpus.to_path_buf(),
            cache: cache.to_path_buf(),
            scratch: scratch.to_path_buf(),
        },
    );
    let nonce = Nonce([4; 32]);
    let Response::Hello { evidence, .. } = e.handle(Request::Hello {
        job_id: JobId(JOB),
        nonce,
    }) else {
        panic!("hello")
    };
    (e, PeerEvidence { evidence, nonce })
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` runs nothing here
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cfg = TrainConfig::load(&root.join("configs/toploc-trials.toml")).expect("config");
    cfg.replicas = 1;
    cfg.device = "cpu".into();
    cfg.threads = 1;
    cfg.data.corpus = root.join(".data/moby-dick/package");
    cfg.data.cache = root.join(".data/cache");
    let dir = tempfile::tempdir().expect("tempdir");
    cfg.out = dir.path().join("probe");
    let rounds = 5;
    let policy = Policy {
        allow_sim: true,
        measurements: vec![default_sim_measurement()],
        ..Policy::default()
    };

    // The customer's side: facts, and the dataset sealed.
    let (ds_dir, initial, plain_root) = {
        let t = Trainer::new(cfg.clone()).expect("trainer (scripts/setup-corpus.sh)");
        (
            t.dataset.dir.clone(),
            t.model_hash().expect("hash"),
            t.dataset.root(),
        )
    };
    let files: Vec<(String, Vec<u8>)> = dataset_file_names(cfg.data.shards as usize)
        .into_iter()
        .map(|n| {
            let p = if n == "tokenizer.json" {
                ds_dir.parent().expect("cache").join(&n)
            } else {
                ds_dir.join(&n)
            };
            (n, std::fs::read(p).expect("dataset file"))
        })
        .collect();
    let secret = JobSecret::generate().expect("secret");
    let sealing_id = Hash32([0x77; 32]);
    let (index, sealed_bytes) = seal_files(&secret, sealing_id, &files).expect("seal");
    let sealed = dir.path().join("sealed");
    std::fs::create_dir_all(&sealed).expect("mkdir");
    std::fs::write(sealed.join("sealed.json"), index.encode()).expect("index");
    for (f, b) in index.files.iter().zip(&sealed_bytes) {
        std::fs::write(sealed.join(SealedDataset::sealed_name(&f.name)), b).expect("file");
    }
    let doc = |sealing: Option<Sealing>, data_root: Hash32| {
        JobDocument {
            version: JOB_DOCUMENT_VERSION,
            tee: JobTee::Sim,
            config: toml::to_string(&cfg).expect("toml"),
            config_hash: cfg.hash(),
            data_root,
            initial_model_hash: initial,
            operators: 1,
            quorum_bps: 6000,
            policy: policy.clone(),
            sealing,
        }
        .encode()
    };
    let spec = |document: Vec<u8>| JobSpec {
        job_id: JobId(JOB),
        spec_hash: JobDocument::spec_hash(&document),
        document: Blob(document),
        operator: 0,
    };

    let (mut plain, plain_peer) = start(
        &cfg.data.corpus,
        &cfg.data.cache,
        &dir.path().join("scratch-plain"),
    );
    signed(plain.handle(Request::LoadJob {
        spec: spec(doc(None, plain_root)),
    }));
    let (mut seal, seal_peer) = start(
        &sealed,
        &dir.path().join("empty-cache"),
        &dir.path().join("scratch-sealed"),
    );
    // The key, as the broker releases it.
    let mut book = NonceBook::default();
    let now = UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    );
    let nonce = book.issue([9; 32], now);
    let Response::KeyRequest { request } = seal.handle(Request::KeyRequest { sealing_id, nonce })
    else {
        panic!("key request")
    };
    let req = KeyRequest::parse(&request.0).expect("request");
    book.spend(&req.nonce, now).expect("nonce");
    let acc = appraise_key_request(&req, &sealing_id, &policy, &Endorsements::default(), now)
        .expect("appraisal");
    let wrapped = release(&secret, &req, &acc).expect("release").wrapped;
    assert!(matches!(
        seal.handle(Request::KeyRelease { wrapped }),
        Response::KeyHeld { .. }
    ));
    signed(seal.handle(Request::LoadJob {
        spec: spec(doc(
            Some(Sealing {
                sealing_id,
                key_check: index.key_check,
            }),
            index.root(),
        )),
    }));

    let round = |e: &mut Enclave, peer: &PeerEvidence, r: u64| -> (f64, Hash32, usize) {
        let t = Instant::now();
        let u = signed(e.handle(Request::TrainRound { round: r }));
        signed(e.handle(Request::Aggregate {
            round: r,
            updates: vec![Blob(u)],
            peers: vec![peer.clone()],
        }));
        let (h, n) = model_hash(e.handle(Request::Checkpoint));
        (t.elapsed().as_secs_f64(), h, n)
    };
    let (mut tp, mut ts) = (Vec::new(), Vec::new());
    let mut sizes = (0, 0);
    for r in 0..rounds {
        let (a, ha, na) = round(&mut plain, &plain_peer, r);
        let (b, hb, nb) = round(&mut seal, &seal_peer, r);
        assert_eq!(ha, hb, "round {r}: the sealed and unsealed jobs disagree");
        tp.push(a);
        ts.push(b);
        sizes = (na, nb);
    }
    let (p, s) = (median(tp), median(ts));
    println!(
        "one SparseLoCo round (10 x 8 x 128 tokens, 2.17 M params, TOPLOC proofs, a checkpoint), median of {rounds}:\n  \
         unsealed job  {:8.1} ms\n  sealed job    {:8.1} ms\n  overhead      {:+8.2} %  (same model hash every round; checkpoint {} B sealed vs {} B)",
        p * 1e3,
        s * 1e3,
        100.0 * (s - p) / p,
        sizes.1,
        sizes.0
    );
}
