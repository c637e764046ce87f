//! `conclave demo` sealed (its default): the customer seals the corpus shards under
//! `<out>/customer/`, serves the key on loopback over TLS; of three `conclave node` processes,
//! the first's enclave gets the key from the broker and the others' from a peer enclave over
//! the operator network; they train two rounds over libp2p and commit on a real anvil; the
//! customer opens the final model; `conclave audit` passes with the key (replaying a round
//! opened in the auditor's process) and without it. Then everything
//! the operators' hosts saw (their folders, the logs, every gossip message they received,
//! captured with `CONCLAVE_CAPTURE_GOSSIP`) is searched for the shards' token runs, the final
//! weights and the plaintext updates: none.

mod common;

use std::path::PathBuf;

use conclave_host::audit::{AuditInput, audit};
use conclave_host::chain::Anvil;
use conclave_host::demo::{DemoOptions, run_demo};
use conclave_protocol::Hash32;

use common::{
    Needles, enclave_program, files_under, leaks, root, sealed_update_needles, shard_tokens,
};

#[test]
fn the_sealed_demo_keeps_data_updates_and_model_from_the_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("gossip.bin");
    // SAFETY: set before this test process starts any thread (no runtime exists yet, and this
    // file holds one test); the nodes inherit it.
    unsafe { std::env::set_var(conclave_host::capture::GOSSIP, &capture) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let out = tmp.path().join("demo");
    let opts = DemoOptions {
        out: out.clone(),
        job_config: root().join("configs/demo/job.toml"),
        operators: 3,
        rounds: 2,
        checkpoint_interval: 1,
        corpus: root().join(".data/moby-dick/package"),
        cache: root().join(".data/cache"),
        replay: 1,
        conclave: PathBuf::from(env!("CARGO_BIN_EXE_conclave")),
        enclave: Some(enclave_program()),
        progress: false,
        timeout_s: 600,
        vm: None,
        sealed: true,
    };
    let (o, report, keyless) = rt.block_on(async {
        let anvil = Anvil::start(0)
            .await
            .expect("anvil (run scripts/setup-foundry.sh)");
        let (o, report) = run_demo(&opts, &anvil).await.unwrap();
        // An auditor without the key: every signature, hash and certificate, no replay.
        let keyless = audit(&AuditInput {
            rpc: o.rpc.clone(),
            contract: o.contract.parse().unwrap(),
            job: o.job,
            dir: o.node_dirs[1].clone(),
            policy: Some(conclave_host::demo::demo_policy()),
            replay: 0,
            data: out.join("sealed"),
            enclave_program: enclave_program(),
            now: conclave_host::operator::now(),
            key: None,
        })
        .await
        .unwrap();
        anvil.stop().await.ok();
        (o, report, keyless)
    });
    // The demo's audit had the customer's key and replayed a round, opened in its process.
    assert!(report.pass, "{}", report.failures().join("\n"));
    assert_eq!(report.checkpoints.len(), 2);
    assert_eq!(report.replays.len(), 1);
    assert!(
        report.replays[0].pass && report.replays[0].detail.contains("customer's key"),
        "{:?}",
        report.replays[0]
    );
    assert!(o.audit_command.contains("--key"), "{}", o.audit_command);
    assert!(keyless.pass, "{}", keyless.failures().join("\n"));
    assert_eq!(keyless.checkpoints.len(), 2);
    assert!(o.sealed);
    let model_path = o.customer_model.clone().unwrap();
    assert!(model_path.starts_with(out.join("customer")));
    let model = std::fs::read(&model_path).unwrap();
    assert_eq!(Hash32::sha256(&model).to_string(), o.final_model);
    // Operator 0's enclave got the key from the customer's broker, the others' from a peer
    // enclave over the operator network.
    let log = |i: u32| std::fs::read_to_string(out.join(format!("logs/node-{i}.log"))).unwrap();
    assert!(log(0).contains("from the customer's broker"), "{}", log(0));
    for i in 1..3 {
        assert!(
            log(i).contains("released by a peer enclave over the network"),
            "{}",
            log(i)
        );
    }
    let (files, _, sealed) = o.operator_files.unwrap();
    assert!(files > 20 && sealed >= 6, "{files} files, {sealed} sealed");

    // The needles: the shards the customer prepared, the model it opened, the updates (opened
    // with its key).
    let published: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("customer/published.json")).unwrap())
            .unwrap();
    let dataset = PathBuf::from(published["dataset_dir"].as_str().unwrap());
    assert!(dataset.starts_with(out.join("customer")));
    let mut tokens = Needles::default();
    for i in 0..3 {
        let b = std::fs::read(dataset.join(format!("shard-{i:04}.bin"))).unwrap();
        tokens.add(shard_tokens(&b), 2);
    }
    let mut weights = Needles::default();
    weights.add(&model, 4);
    let mut seen = Vec::new();
    for d in &o.node_dirs {
        files_under(d, &mut seen);
    }
    files_under(&out.join("logs"), &mut seen);
    let (updates, opened) = sealed_update_needles(&seen, &out.join("customer/key.json"));
    assert!(opened >= 6, "{opened} updates opened");

    let gossip = std::fs::read(&capture).unwrap();
    assert!(
        gossip.len() > 10_000,
        "{} bytes of gossip captured",
        gossip.len()
    );
    let mut hay: Vec<(String, Vec<u8>)> = seen
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
        .collect();
    hay.push(("gossip".into(), gossip));
    for (what, n) in [
        ("token runs", &tokens),
        ("weights", &weights),
        ("updates", &updates),
    ] {
        let leaks = leaks(n, &hay);
        assert!(leaks.is_empty(), "{what} in the clear in {leaks:?}");
    }
}
