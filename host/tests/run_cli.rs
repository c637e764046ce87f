//! `conclave run`: the host proxy launches three `sim` enclave processes, checks their
//! evidence, trains two rounds on the real corpus, and stores signed receipts and a checkpoint
//! that verify against the enclaves' evidence; altered bytes do not.

mod common;

use std::process::Command;

use conclave_attestation::sim::default_sim_measurement;
use conclave_attestation::{
    BindingContext, Endorsements, Envelope, Evidence, JobId, Nonce, Policy, UnixTime, appraise,
};
use conclave_protocol::Hash32;
use conclave_protocol::receipt::RoundReceipt;

use common::{enclave_program, root};

#[test]
fn run_trains_rounds_on_sim_enclaves_and_stores_verifiable_results() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("job.toml"),
        "seed = 3\nreplicas = 3\ndevice = \"cpu\"\nthreads = 1\n\
         [model]\nlayers = 1\nheads = 2\nwidth = 32\ncontext = 32\n\
         [data]\nvocab = 400\nshards = 4\nsteps_per_epoch = 4\n\
         [train]\nsteps = 8\nbatch = 2\nwarmup = 1\neval_batches = 1\n\
         [optimizer]\nkind = \"sparseloco\"\ninner_steps = 2\ntopk = 32\n",
    )
    .unwrap();
    let corpus = root().join(".data/moby-dick/package");
    std::fs::write(
        d.join("operator.toml"),
        format!(
            "[job]\nconfig = \"job.toml\"\noperators = 3\nrounds = 5\n\
             [enclave]\nkind = \"sim\"\nprogram = {:?}\ncorpus = {:?}\ncache = {:?}\nthreads = 1\n\
             [storage]\ndir = {:?}\n",
            enclave_program(),
            corpus,
            d.join("cache"),
            d.join("store")
        ),
    )
    .unwrap();
    // An environment override takes the rounds from 5 to 2; CONCLAVE_PYTHON is no config key.
    let o = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["run", "--config"])
        .arg(d.join("operator.toml"))
        .env("CONCLAVE_JOB__ROUNDS", "2")
        .env("CONCLAVE_PYTHON", "/nonexistent")
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("2 rounds on 3 operators"), "{out}");
    assert!(err.contains("all 3 operators agree"), "{err}");

    // Every stored receipt verifies against its operator's evidence and names the same model.
    let store = d.join("store");
    let mut policy = Policy {
        allow_sim: true,
        ..Policy::default()
    };
    policy.measurements.push(default_sim_measurement());
    let now = UnixTime(1_800_000_000);
    let mut after = Vec::new();
    for i in 0..3 {
        let info: serde_json::Value = serde_json::from_slice(
            &std::fs::read(store.join(format!("operator-{i}.json"))).unwrap(),
        )
        .unwrap();
        let job = info["job_id"].as_str().unwrap();
        let ev = Evidence::decode(&std::fs::read(store.join(format!("evidence-{i}.bin"))).unwrap())
            .unwrap();
        let acc = appraise(&ev, &Endorsements::default(), &policy, now)
            .unwrap()
            .accepted()
            .expect("accepted");
        let ctx = BindingContext {
            job_id: JobId::from_hex(job).unwrap(),
            nonce: Nonce::from_hex(info["nonce"].as_str().unwrap()).unwrap(),
        };
        // Statements are signed in the job's domain, which names the job document's hash.
        let spec = Hash32::sha256(&std::fs::read(store.join("job-document.json")).unwrap());
        let domain = format!("conclave/v1/job/{job}/spec/{spec}");
        for round in 0..2 {
            let bytes =
                std::fs::read(store.join(format!("rounds/{round:06}/receipt-{i}.env"))).unwrap();
            let env = Envelope::decode(&bytes).unwrap();
            let signer = env.verify_as(&domain, "round-receipt", &acc, &ctx).unwrap();
            assert_eq!(format!("0x{}", hex::encode(signer.0)), info["address"]);
            let r = RoundReceipt::from_json(&env.payload).unwrap();
            assert_eq!(r.round, round);
            if round == 1 {
                after.push(r.model_hash_after);
            }
            // The host altering a result (here: the loss it reports) breaks the signature.
            let mut forged = env.clone();
            let mut v: serde_json::Value = serde_json::from_slice(&forged.payload).unwrap();
            v["loss"] = serde_json::json!(0.5);
            forged.payload = serde_json::to_vec_pretty(&v).unwrap();
            assert!(RoundReceipt::from_json(&forged.payload).is_ok());
            assert!(
                forged
                    .verify_as(&domain, "round-receipt", &acc, &ctx)
                    .is_err()
            );
            let mut flipped = bytes.clone();
            let n = flipped.len();
            flipped[n / 2] ^= 1;
            assert!(
                Envelope::decode(&flipped)
                    .map(|e| e.verify_as(&domain, "round-receipt", &acc, &ctx).is_err())
                    .unwrap_or(true)
            );
        }
    }
    assert!(after.iter().all(|h| *h == after[0]));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["model_hash"], after[0].to_hex().as_str());
    let weights = std::fs::read(store.join("checkpoints/step-000004.safetensors")).unwrap();
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&weights)),
        after[0].to_hex()
    );
}

#[test]
fn run_refuses_bad_config_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("op.toml"),
        "[job]\nconfig = \"j.toml\"\noperators = 0\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["run", "--config"])
        .arg(dir.path().join("op.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("job.operators"), "{err}");
}
