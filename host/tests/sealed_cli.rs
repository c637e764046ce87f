//! A sealed job end to end with the command line, and the snooping test of its promise.
//!
//! The customer prepares its dataset (`conclave-enclave spec`), seals it (`conclave data
//! seal`) and starts its key broker (`conclave keys serve`, TLS on loopback). The operators'
//! host runs the job (`conclave run`, sim enclave processes) from the sealed dataset and the
//! customer's published facts only: the first enclave gets the key from the broker, the other
//! from the first. The customer opens the final checkpoint (`conclave checkpoint open`) and
//! its hash is the one the enclave signed.
//!
//! Then everything the host saw is searched for plaintext: its folder (records, updates,
//! receipts, checkpoints, the enclaves' scratch and logs), its log, and every channel frame it
//! relayed (captured with `CONCLAVE_CAPTURE_CHANNEL`, base64 fields decoded): no run of 32
//! token ids of any shard, no 64-byte window of the final model's weights, no 64-byte window
//! of a plaintext update. The same search over an unsealed run of the same job finds all
//! three, so the search itself works.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use conclave_attestation::Policy;
use conclave_attestation::sim::default_sim_measurement;

use common::{
    Needles, customer_spec, decoded_capture, enclave_program, files_under, leaks, root,
    sealed_update_needles, shard_tokens, update_bodies,
};

const JOB_TOML: &str = "seed = 5\nreplicas = 2\ndevice = \"cpu\"\nthreads = 1\n\
    [model]\nlayers = 1\nheads = 2\nwidth = 32\ncontext = 32\n\
    [data]\nvocab = 400\nshards = 4\nsteps_per_epoch = 4\n\
    [train]\nsteps = 8\nbatch = 2\nwarmup = 1\neval_batches = 1\n\
    [optimizer]\nkind = \"sparseloco\"\ninner_steps = 2\ntopk = 32\n";

/// What the host saw: its files, its log, and the channel capture with every base64 string
/// decoded.
fn host_view(dirs: &[&Path], log: &Path, capture: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for d in dirs {
        files_under(d, &mut files);
    }
    let mut out: Vec<(String, Vec<u8>)> = files
        .into_iter()
        .filter_map(|p| Some((p.display().to_string(), std::fs::read(&p).ok()?)))
        .collect();
    out.push((log.display().to_string(), std::fs::read(log).unwrap()));
    let (decoded, frames) = decoded_capture(capture);
    assert!(frames > 10, "the capture holds {frames} frames");
    out.push((format!("{} (decoded)", capture.display()), decoded));
    out.push((
        capture.display().to_string(),
        std::fs::read(capture).unwrap(),
    ));
    out
}

struct Run {
    store: PathBuf,
    cache: PathBuf,
    log: PathBuf,
    capture: PathBuf,
}

fn conclave() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conclave"))
}

/// `conclave run` with `job_extra` in its `[job]` section, enclaves reading `corpus`.
fn run_job(d: &Path, name: &str, corpus: &Path, job_extra: &str) -> Run {
    let base = d.join(name);
    std::fs::create_dir_all(&base).unwrap();
    let run = Run {
        store: base.join("store"),
        cache: base.join("enclave-cache"),
        log: base.join("run.log"),
        capture: base.join("channel.jsonl"),
    };
    let cfg = base.join("operator.toml");
    std::fs::write(
        &cfg,
        format!(
            "[job]\nconfig = {:?}\noperators = 2\nrounds = 2\n{job_extra}\
             [enclave]\nkind = \"sim\"\nprogram = {:?}\ncorpus = {:?}\ncache = {:?}\nthreads = 1\n\
             [storage]\ndir = {:?}\n",
            d.join("job.toml"),
            enclave_program(),
            corpus,
            run.cache,
            run.store
        ),
    )
    .unwrap();
    let o = conclave()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("CONCLAVE_CAPTURE_CHANNEL", &run.capture)
        .stderr(std::fs::File::create(&run.log).unwrap())
        .output()
        .unwrap();
    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(
        o.status.success(),
        "{}\n{log}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(log.contains("all 2 operators agree"), "{log}");
    run
}

#[test]
fn a_sealed_run_leaks_no_plaintext_to_the_host_and_the_customer_opens_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("job.toml"), JOB_TOML).unwrap();
    let corpus = root().join(".data/moby-dick/package");

    // The customer: published facts and the prepared dataset, in its own folder.
    let customer = d.join("customer");
    std::fs::create_dir_all(&customer).unwrap();
    let (_, dataset) = customer_spec(&d.join("job.toml"), &customer);

    let sealed = d.join("sealed");
    let key = customer.join("key.json");
    let o = conclave()
        .args(["data", "seal", "--in"])
        .arg(&dataset)
        .arg("--out")
        .arg(&sealed)
        .arg("--key-out")
        .arg(&key)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("sealed 7 files"), "{out}");
    // A second seal would replace the key: refused.
    let o = conclave()
        .args(["data", "seal", "--in"])
        .arg(&dataset)
        .arg("--out")
        .arg(d.join("again"))
        .arg("--key-out")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing to replace"));

    // The customer's broker, on loopback, under the job's policy.
    let policy = Policy {
        allow_sim: true,
        measurements: vec![default_sim_measurement()],
        ..Policy::default()
    };
    std::fs::write(customer.join("policy.toml"), policy.to_toml()).unwrap();
    let mut broker = conclave()
        .args(["keys", "serve", "--key"])
        .arg(&key)
        .arg("--policy")
        .arg(customer.join("policy.toml"))
        .args(["--listen", "127.0.0.1:0", "--cert-out"])
        .arg(customer.join("broker.pem"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(customer.join("broker.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(broker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();

    // The operators' host: the sealed dataset, the published facts, the broker.
    let run = run_job(
        d,
        "sealed-run",
        &sealed,
        &format!(
            "published = {:?}\nsealed_data = {:?}\nkey_broker = {url:?}\nkey_broker_cert = {:?}\n",
            customer.join("published.json"),
            sealed,
            customer.join("broker.pem")
        ),
    );
    let _ = broker.kill();
    let _ = broker.wait();
    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(log.contains("from the customer's broker"), "{log}");
    assert!(log.contains("released by a peer enclave"), "{log}");
    let blog = std::fs::read_to_string(customer.join("broker.log")).unwrap();
    assert_eq!(blog.matches("released").count(), 1, "{blog}");

    // The customer opens the final checkpoint; its hash is the enclave-signed one.
    let cps = run.store.join("checkpoints");
    let weights = std::fs::read_dir(&cps)
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
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.store.join("summary.json")).unwrap()).unwrap();
    let final_hash = summary["model_hash"].as_str().unwrap().to_string();
    assert!(out.contains(&final_hash), "{out} vs {final_hash}");
    let plain_model = std::fs::read(&model).unwrap();
    // A flipped byte of the sealed checkpoint does not open.
    let mut bad = std::fs::read(&weights).unwrap();
    let n = bad.len() / 2;
    bad[n] ^= 1;
    let flipped = d.join("flipped.safetensors");
    std::fs::write(&flipped, bad).unwrap();
    let o = conclave()
        .args(["checkpoint", "open", "--key"])
        .arg(&key)
        .arg("--in")
        .arg(&flipped)
        .arg("--manifest")
        .arg(
            weights.with_file_name(
                weights
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .replace(".safetensors", ".manifest.env"),
            ),
        )
        .arg("--out")
        .arg(d.join("nope.safetensors"))
        .output()
        .unwrap();
    assert!(!o.status.success());

    // The plaintexts to look for: the shards' token runs, the final model, the round-0 updates
    // (opened here with the customer's key).
    let mut tokens = Needles::default();
    for i in 0..4 {
        let b = std::fs::read(dataset.join(format!("shard-{i:04}.bin"))).unwrap();
        tokens.add(shard_tokens(&b), 2);
    }
    let mut weights_n = Needles::default();
    weights_n.add(&plain_model, 4);
    let mut update_files = Vec::new();
    files_under(&run.store, &mut update_files);
    let (updates, opened) = sealed_update_needles(&update_files, &key);
    assert!(opened >= 2, "{opened} sealed updates opened");
    assert!(tokens.len() > 1000 && weights_n.len() > 1000 && updates.len() > 100);

    let view = host_view(&[&run.store, &run.cache, &sealed], &run.log, &run.capture);
    assert_eq!(
        leaks(&tokens, &view),
        Vec::<String>::new(),
        "token runs leaked"
    );
    assert_eq!(
        leaks(&weights_n, &view),
        Vec::<String>::new(),
        "weights leaked"
    );
    assert_eq!(
        leaks(&updates, &view),
        Vec::<String>::new(),
        "updates leaked"
    );

    // The same job unsealed, and the same search: it finds all three.
    let plain = run_job(d, "plain-run", &corpus, "");
    let view = host_view(&[&plain.store, &plain.cache], &plain.log, &plain.capture);
    let mut plain_updates = Needles::default();
    let mut files = Vec::new();
    files_under(&plain.store, &mut files);
    for (_, body) in update_bodies(&files) {
        plain_updates.add(&body, 1);
    }
    let mut plain_weights = Needles::default();
    let mut cps = Vec::new();
    files_under(&plain.store.join("checkpoints"), &mut cps);
    for p in cps
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".safetensors"))
    {
        plain_weights.add(&std::fs::read(p).unwrap(), 4);
    }
    assert!(
        !leaks(&tokens, &view).is_empty(),
        "the token search finds nothing"
    );
    // The unsealed run's own model and updates are in the clear in the channel capture.
    let cap = view
        .iter()
        .filter(|(n, _)| n.ends_with("(decoded)"))
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        !leaks(&plain_weights, &cap).is_empty(),
        "the weights search finds nothing"
    );
    assert!(
        !leaks(&plain_updates, &cap).is_empty(),
        "the update search finds nothing"
    );
}
