//! A sealed job in the measured guest, under TCG with the real image: the guests' dataset disk
//! holds the sealed dataset only, the first guest's enclave gets the key from the customer's
//! broker (which appraises its evidence under the job's policy: exactly the image's predicted
//! measurement), the second from the first; the customer opens the final model; nothing the
//! host saw (its folder, its log, every channel frame) holds a run of the shards' tokens, the
//! final weights or a plaintext update.

mod common;

use std::process::Command;

use common::{
    Needles, build_image, customer_spec, decoded_capture, enclave_program, files_under, leaks,
    root, sealed_update_needles, shard_tokens,
};
use conclave_host::config::JobSection;
use conclave_host::enclave::{Launch, VmLaunch};
use conclave_host::keys::{Broker, KeyFile, spawn_broker};
use conclave_host::operator::prepare_job;
use conclave_protocol::Hash32;

const JOB: &str = "seed = 3\nreplicas = 2\ndevice = \"cpu\"\nthreads = 1\n\
     [model]\nlayers = 1\nheads = 2\nwidth = 32\ncontext = 32\n\
     [data]\nvocab = 400\nshards = 4\nsteps_per_epoch = 4\n\
     [train]\nsteps = 8\nbatch = 2\nwarmup = 1\neval_batches = 1\n\
     [optimizer]\nkind = \"sparseloco\"\ninner_steps = 2\ntopk = 32\n";

fn conclave() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conclave"))
}

#[test]
fn a_sealed_job_in_guests_shows_the_host_only_ciphertext() {
    let scratch = tempfile::tempdir_in(root().join("target")).unwrap();
    let image = build_image(scratch.path());
    let d = scratch.path();
    std::fs::write(d.join("job.toml"), JOB).unwrap();

    // The customer: facts, dataset, sealed copy, key.
    let customer = d.join("customer");
    let (_, dataset) = customer_spec(&d.join("job.toml"), &customer);
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
    broker.add(kf.sealing_id, secret, prepared.policy.clone());
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
    let (updates, _) = sealed_update_needles(&files, &key);
    let mut hay: Vec<(String, Vec<u8>)> = files
        .iter()
        // The dataset disk holds the sealed files (and the guest's verity tree): ciphertext.
        .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
        .collect();
    hay.push(("log".into(), text.into_bytes()));
    hay.push(("channel frames".into(), decoded_capture(&capture).0));
    for (what, n) in [
        ("token runs", &tokens),
        ("weights", &weights_n),
        ("updates", &updates),
    ] {
        assert!(n.len() > 50, "{what}: {} needles", n.len());
        let leaks = leaks(n, &hay);
        assert!(leaks.is_empty(), "{what} in the clear in {leaks:?}");
    }
}
