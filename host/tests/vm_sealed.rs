//! A sealed job in the measured guest, under TCG with the real image: the guests' dataset disk
//! holds the sealed dataset only, the first guest's enclave gets the key from the customer's
//! broker (which appraises its evidence under the job's policy: exactly the image's predicted
//! measurement), the second from the first; the customer opens the final model; nothing the
//! host saw (its folder, its log, every channel frame) holds a run of the shards' tokens, the
//! final weights or a plaintext update.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::{Needles, enclave_program, files_under, root, shard_tokens};
use conclave_host::config::JobSection;
use conclave_host::enclave::{Launch, VmLaunch};
use conclave_host::keys::{Broker, KeyFile, spawn_broker};
use conclave_host::operator::prepare_job;
use conclave_protocol::seal::Kind;
use conclave_protocol::{Hash32, Signed, Statement, UpdatePayload};

const JOB: &str = "seed = 3\nreplicas = 2\ndevice = \"cpu\"\nthreads = 1\n\
     [model]\nlayers = 1\nheads = 2\nwidth = 32\ncontext = 32\n\
     [data]\nvocab = 400\nshards = 4\nsteps_per_epoch = 4\n\
     [train]\nsteps = 8\nbatch = 2\nwarmup = 1\neval_batches = 1\n\
     [optimizer]\nkind = \"sparseloco\"\ninner_steps = 2\ntopk = 32\n";

fn conclave() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conclave"))
}

fn build_image(scratch: &Path) -> PathBuf {
    let dir = scratch.join("image");
    let o = conclave()
        .args(["image", "build", "--json", "--out"])
        .arg(&dir)
        .arg("--inputs")
        .arg(root().join(".image-inputs"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "image build failed (run scripts/setup-image.sh): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    dir
}

#[test]
fn a_sealed_job_in_guests_shows_the_host_only_ciphertext() {
    let scratch = tempfile::tempdir_in(root().join("target")).unwrap();
    let image = build_image(scratch.path());
    let d = scratch.path();
    std::fs::write(d.join("job.toml"), JOB).unwrap();
    let corpus = root().join(".data/moby-dick/package");

    // The customer: facts, dataset, sealed copy, key.
    let customer = d.join("customer");
    let o = Command::new(enclave_program())
        .args(["spec", "--config"])
        .arg(d.join("job.toml"))
        .arg("--corpus")
        .arg(&corpus)
        .arg("--cache")
        .arg(customer.join("cache"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(customer.join("published.json"), &o.stdout).unwrap();
    let published: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dataset = PathBuf::from(published["dataset_dir"].as_str().unwrap());
    let sealed = d.join("sealed");
    let key = customer.join("key.json");
    conclave_host::keys::seal_dataset(&dataset, &sealed, &key).unwrap();

    // The job as the operators prepare it: its policy allows exactly the image's measurement
    // with the sealed dataset disk; the broker appraises under it.
    let cache = d.join("cache");
    let mut v = VmLaunch::new(image.clone(), sealed.clone(), cache.clone());
    v.accel = Some("tcg".into());
    v.program = Some(enclave_program());
    v.boot_timeout_s = 900;
    let mut jobsec = JobSection::new(d.join("job.toml"));
    jobsec.operators = 2;
    jobsec.rounds = 2;
    jobsec.published = Some(customer.join("published.json"));
    jobsec.sealed_data = Some(sealed.clone());
    let prepared = prepare_job(&jobsec, &Launch::Vm(v)).unwrap();
    assert_eq!(prepared.policy.measurements.len(), 1);
    let (kf, secret) = KeyFile::read(&key).unwrap();
    let mut broker = Broker::new();
    broker.add(
        kf.sealing_id,
        conclave_protocol::seal::JobSecret::from_bytes(*secret.expose()),
        prepared.policy.clone(),
    );
    let handle = spawn_broker("127.0.0.1:0", broker).unwrap();
    std::fs::write(customer.join("broker.pem"), &handle.cert_pem).unwrap();

    let store = d.join("store");
    std::fs::write(
        d.join("vm.toml"),
        format!(
            "[job]\nconfig = \"job.toml\"\noperators = 2\nrounds = 2\npublished = {:?}\n\
             sealed_data = {:?}\nkey_broker = \"https://{}\"\nkey_broker_cert = {:?}\n\
             [enclave]\nkind = \"vm\"\nimage = {image:?}\naccel = \"tcg\"\nprogram = {:?}\n\
             corpus = {sealed:?}\ncache = {cache:?}\nmemory_mib = 2048\nvcpus = 1\n\
             [storage]\ndir = {store:?}\n",
            customer.join("published.json"),
            sealed,
            handle.addr,
            customer.join("broker.pem"),
            enclave_program(),
        ),
    )
    .unwrap();
    let capture = d.join("channel.jsonl");
    let log = d.join("run.log");
    let o = conclave()
        .args(["run", "--config"])
        .arg(d.join("vm.toml"))
        .env("CONCLAVE_CAPTURE_CHANNEL", &capture)
        .stderr(std::fs::File::create(&log).unwrap())
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(o.status.success(), "{text}");
    assert!(text.contains("all 2 operators agree"), "{text}");
    assert!(text.contains("from the customer's broker"), "{text}");
    assert!(text.contains("released by a peer enclave"), "{text}");
    {
        let b = handle.broker.lock().unwrap();
        assert_eq!(b.records.iter().filter(|r| r.evidence.is_some()).count(), 1);
    }
    drop(handle);
    for i in 0..2 {
        let elog = std::fs::read_to_string(store.join(format!("enclave-{i}.log"))).unwrap();
        assert!(elog.contains("dataset verified by dm-verity"), "{elog}");
    }

    // The customer opens the final model.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["sealed"], true);
    let weights = std::fs::read_dir(store.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".safetensors"))
        .unwrap();
    let model = customer.join("model.safetensors");
    let o = conclave()
        .args(["checkpoint", "open", "--key"])
        .arg(&key)
        .arg("--in")
        .arg(&weights)
        .arg("--out")
        .arg(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = std::fs::read(&model).unwrap();
    assert_eq!(
        Hash32::sha256(&model).to_string(),
        summary["model_hash"].as_str().unwrap()
    );

    // Snoop.
    let mut tokens = Needles::default();
    for i in 0..4 {
        let b = std::fs::read(dataset.join(format!("shard-{i:04}.bin"))).unwrap();
        tokens.add(shard_tokens(&b), 2);
    }
    let mut weights_n = Needles::default();
    weights_n.add(&model, 4);
    let mut files = Vec::new();
    files_under(&store, &mut files);
    files_under(&cache, &mut files);
    let mut updates = Needles::default();
    for p in &files {
        let bytes = std::fs::read(p).unwrap();
        if let Ok(env) = Signed::<UpdatePayload>::decode_envelope(&bytes)
            && env.kind == "update"
        {
            let u = UpdatePayload::from_payload(&env.payload).unwrap();
            updates.add(
                &secret
                    .open(&kf.sealing_id.0, Kind::Update, u.round, &u.body)
                    .unwrap(),
                1,
            );
        }
    }
    let mut hay: Vec<(String, Vec<u8>)> = files
        .iter()
        // The dataset disk holds the sealed files (and the guest's verity tree): ciphertext.
        .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
        .collect();
    hay.push(("log".into(), text.into_bytes()));
    let cap = std::fs::read_to_string(&capture).unwrap();
    let mut decoded = Vec::new();
    for line in cap.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::String(s) => {
                    if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(&s) {
                        decoded.extend_from_slice(&b);
                    }
                }
                serde_json::Value::Array(a) => stack.extend(a),
                serde_json::Value::Object(o) => stack.extend(o.into_iter().map(|(_, v)| v)),
                _ => {}
            }
        }
    }
    hay.push(("channel frames".into(), decoded));
    for (what, n) in [
        ("token runs", &tokens),
        ("weights", &weights_n),
        ("updates", &updates),
    ] {
        assert!(n.len() > 50, "{what}: {} needles", n.len());
        let leaks: Vec<&String> = hay
            .iter()
            .filter(|(_, b)| n.found_in(b))
            .map(|(p, _)| p)
            .collect();
        assert!(leaks.is_empty(), "{what} in the clear in {leaks:?}");
    }
}
