//! What the enclave boundary costs: one SparseLoCo round (H = 10 inner steps of 8 × 128
//! tokens on the 2.17 M-parameter GPT, TOPLOC proofs) run by the trainer
//! called directly (`Trainer::prove_round`), against the same round through the channel: the
//! host process asks a `conclave-enclave serve` process (sim attester) over its Unix socket to
//! train and aggregate, and checks every signed answer against the enclave's evidence.
//! Rounds alternate between the two so drift hits both; medians are reported.
//!
//! `source scripts/env.sh && cargo bench -p conclave-enclave --bench round_overhead`

use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conclave_attestation::sim::default_sim_measurement;
use conclave_attestation::{
    BindingContext, Endorsements, Envelope, Evidence, JobId, Nonce, Policy, UnixTime, appraise,
};
use conclave_enclave::train::{TrainConfig, Trainer};
use conclave_protocol::channel::{
    Blob, JobSpec, MAX_FRAME, PeerEvidence, Request, Response, read_frame, write_frame,
};
use conclave_protocol::job::JOB_DOCUMENT_VERSION;
use conclave_protocol::{JobDocument, JobTee, StatementKind, job_domain};

const JOB: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    cfg.out = dir.path().join("direct");
    let rounds = 5;

    let mut direct = Trainer::new(cfg.clone()).expect("trainer (scripts/setup-corpus.sh)");
    let data_root = direct.dataset.root();

    let socket = dir.path().join("enclave.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_conclave-enclave"))
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--corpus")
        .arg(&cfg.data.corpus)
        .arg("--cache")
        .arg(&cfg.data.cache)
        .arg("--scratch")
        .arg(dir.path().join("scratch"))
        .args(["--threads", "1"])
        .stderr(Stdio::null())
        .spawn()
        .expect("conclave-enclave serve");
    let start = Instant::now();
    let stream = loop {
        match UnixStream::connect(&socket) {
            Ok(s) => break s,
            Err(_) if start.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("connecting: {e}"),
        }
    };
    let mut r = BufReader::new(stream.try_clone().expect("clone"));
    let mut w = BufWriter::new(stream);
    let mut call = |req: &Request| -> Response {
        write_frame(&mut w, req).expect("write");
        match read_frame::<Response>(&mut r, MAX_FRAME).expect("read") {
            Response::Error { code, message } => panic!("{code}: {message}"),
            resp => resp,
        }
    };
    let job_id = JobId::from_hex(JOB).expect("job");
    let nonce = Nonce([0x33; 32]);
    let Response::Hello { evidence, .. } = call(&Request::Hello { job_id, nonce }) else {
        panic!("hello")
    };
    let mut policy = Policy {
        allow_sim: true,
        ..Policy::default()
    };
    policy.measurements.push(default_sim_measurement());
    let now = UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    let acc = appraise(
        &Evidence::decode(&evidence.0).expect("evidence"),
        &Endorsements::default(),
        &policy,
        now,
    )
    .expect("appraise")
    .accepted()
    .expect("accepted");
    let ctx = BindingContext { job_id, nonce };
    let document = JobDocument {
        version: JOB_DOCUMENT_VERSION,
        tee: JobTee::Sim,
        config: toml::to_string(&cfg).expect("toml"),
        config_hash: cfg.hash(),
        data_root,
        initial_model_hash: direct.model_hash().expect("model hash"),
        operators: 1,
        quorum_bps: 6000,
        policy: policy.clone(),
        sealing: None,
    }
    .encode();
    let spec_hash = JobDocument::spec_hash(&document);
    let domain = job_domain(&job_id, &spec_hash);
    let check = |resp: Response, kind: StatementKind| -> Vec<u8> {
        let Response::Signed { envelope } = resp else {
            panic!("{kind}: not signed")
        };
        let env = Envelope::decode(&envelope.0).expect("envelope");
        env.verify_as(&domain, kind.tag(), &acc, &ctx)
            .expect("signature");
        envelope.0
    };
    let peers = vec![PeerEvidence {
        evidence: evidence.clone(),
        nonce,
    }];
    check(
        call(&Request::LoadJob {
            spec: JobSpec {
                job_id,
                document: Blob(document.clone()),
                spec_hash,
                operator: 0,
            },
        }),
        StatementKind::JobAccepted,
    );

    let (mut t_direct, mut t_channel) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        let (receipt, _) = direct.prove_round().expect("direct round");
        t_direct.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let update = check(call(&Request::TrainRound { round }), StatementKind::Update);
        let signed = check(
            call(&Request::Aggregate {
                round,
                updates: vec![Blob(update)],
                peers: peers.clone(),
            }),
            StatementKind::RoundReceipt,
        );
        t_channel.push(t.elapsed().as_secs_f64());
        let env = Envelope::decode(&signed).expect("receipt");
        let via = conclave_protocol::receipt::RoundReceipt::from_json(&env.payload).expect("json");
        assert_eq!(
            via.model_hash_after, receipt.model_hash_after,
            "the enclave and the direct trainer disagree"
        );
    }
    let _ = call(&Request::Shutdown);
    let _ = child.wait();
    let (d, c) = (median(t_direct), median(t_channel));
    println!(
        "one SparseLoCo round (10 x 8 x 128 tokens, 2.17 M params, TOPLOC proofs), median of {rounds}:\n  \
         trainer called directly   {:8.1} ms\n  host + channel + enclave  {:8.1} ms\n  overhead                  {:+8.2} %  (same model hash every round)",
        d * 1e3,
        c * 1e3,
        100.0 * (c - d) / d
    );
}
