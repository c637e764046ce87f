//! `conclave demo` end to end (a short variant: 3 operators, 4 rounds, a checkpoint every 2)
//! on a real anvil, then `conclave audit` on its result and on tampered copies of it: a
//! flipped byte in a checkpoint, a checkpoint swapped in from another round, an edited
//! receipt, evidence the policy rejects, and unusable input. Last, Ctrl-C during a demo stops
//! every process it started.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use conclave_host::audit::{AuditInput, AuditReport, audit};
use conclave_host::chain::Anvil;
use conclave_host::demo::{DemoOptions, demo_policy, run_demo};

use common::{enclave_program, root};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let t = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &t);
        } else if !e.file_name().to_string_lossy().ends_with(".sock") {
            std::fs::copy(&p, &t).unwrap();
        }
    }
}

fn failures(r: &AuditReport) -> String {
    r.failures().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_end_to_end_and_audit_catches_tampering() {
    let anvil = Anvil::start(0)
        .await
        .expect("anvil (run scripts/setup-foundry.sh)");
    let tmp = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        out: tmp.path().join("demo"),
        job_config: root().join("configs/demo/job.toml"),
        operators: 3,
        rounds: 4,
        checkpoint_interval: 2,
        corpus: root().join(".data/moby-dick/package"),
        cache: root().join(".data/cache"),
        replay: 1,
        conclave: PathBuf::from(env!("CARGO_BIN_EXE_conclave")),
        enclave: Some(enclave_program()),
        progress: false,
        timeout_s: 600,
        vm: None,
        sealed: false,
    };
    let (o, report) = run_demo(&opts, &anvil).await.unwrap();
    assert!(report.pass, "{}", failures(&report));
    assert_eq!(report.checkpoints.len(), 2);
    assert_eq!(report.replays.len(), 1);
    assert_eq!(o.checkpoints_on_chain, 2);
    assert_eq!(
        o.paid_out_wei,
        (3u128 * 1_000_000_000_000_000_000).to_string()
    );
    assert_eq!(o.losses.len(), 4);
    assert!(
        o.losses[3] < o.losses[0],
        "loss did not fall: {:?}",
        o.losses
    );
    for b in &o.update_bytes {
        assert!(
            *b * 50 < o.dense_bytes,
            "{b} bytes vs dense {}",
            o.dense_bytes
        );
    }
    // Every operator withdrew its stake and its share.
    for d in &o.node_dirs {
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("summary.json")).unwrap()).unwrap();
        assert_eq!(
            s["withdrawn"].as_str(),
            Some("2000000000000000000"),
            "{}",
            d.display()
        );
        assert_eq!(s["model_hashes"][3].as_str(), Some(o.final_model.as_str()));
    }
    let contract = o.contract.parse().unwrap();
    let input = |dir: PathBuf| AuditInput {
        rpc: o.rpc.clone(),
        contract,
        job: o.job,
        dir,
        policy: Some(demo_policy()),
        replay: 0,
        data: root().join(".data/cache"),
        enclave_program: enclave_program(),
        now: conclave_host::operator::now(),
        key: None,
    };
    let tampered = |name: &str| {
        let d = tmp.path().join(name);
        copy_dir(&o.node_dirs[1], &d);
        d
    };

    // Another operator's folder audits as well (it holds every receipt, from the heartbeats).
    let r = audit(&input(o.node_dirs[2].clone())).await.unwrap();
    assert!(r.pass, "{}", failures(&r));

    // One byte of a checkpoint altered.
    let d = tampered("flipped");
    let w = d.join("checkpoints/step-000004.safetensors");
    let mut b = std::fs::read(&w).unwrap();
    let n = b.len() / 2;
    b[n] ^= 1;
    std::fs::write(&w, b).unwrap();
    let r = audit(&input(d)).await.unwrap();
    assert!(!r.pass);
    let f = failures(&r);
    assert!(
        f.contains("checkpoint 4: weights hash to the certified model"),
        "{f}"
    );
    assert!(!f.contains("checkpoint 2:"), "{f}");

    // The checkpoint of round 2 swapped in for round 4's.
    let d = tampered("swapped");
    for ext in ["safetensors", "json", "manifest.env"] {
        std::fs::copy(
            d.join(format!("checkpoints/step-000002.{ext}")),
            d.join(format!("checkpoints/step-000004.{ext}")),
        )
        .unwrap();
    }
    let r = audit(&input(d)).await.unwrap();
    let f = failures(&r);
    assert!(
        f.contains("checkpoint 4: weights hash to the certified model"),
        "{f}"
    );
    assert!(
        f.contains("checkpoint 4: signed manifest names the certified model"),
        "{f}"
    );

    // A receipt edited: its JSON, then its signed envelope.
    let d = tampered("receipt-json");
    let p = d.join("rounds/000001/receipt-0.json");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replacen("\"loss\":", "\"loss\": ", 1)).unwrap();
    let f = failures(&audit(&input(d)).await.unwrap());
    assert!(
        f.contains("round 1 receipt-0.env: JSON is the signed payload"),
        "{f}"
    );
    let d = tampered("receipt-env");
    for i in 0..3 {
        let p = d.join(format!("rounds/000001/receipt-{i}.env"));
        let mut b = std::fs::read(&p).unwrap();
        let at = b
            .windows(7)
            .position(|w| w == b"\"loss\":")
            .expect("the payload is in the envelope")
            + 8;
        b[at] = if b[at] == b'1' { b'2' } else { b'1' };
        std::fs::write(&p, b).unwrap();
    }
    let f = failures(&audit(&input(d)).await.unwrap());
    assert!(
        f.contains("round 1 receipt-0.env: signed by an attested enclave"),
        "{f}"
    );
    assert!(f.contains("checkpoint 2: receipt named on chain"), "{f}");

    // The customer's policy does not allow sim evidence: every enclave fails it.
    let mut strict = input(o.node_dirs[0].clone());
    strict.policy = None;
    let f = failures(&audit(&strict).await.unwrap());
    assert!(f.contains("evidence passes the policy"), "{f}");

    // The command line: 0 all good, 1 a failed check, 2 unusable input.
    let policy = tmp.path().join("demo/policy.toml");
    let cli = |dir: &Path, job: u64| {
        Command::new(env!("CARGO_BIN_EXE_conclave"))
            .args(["audit", "--rpc", &o.rpc, "--contract", &o.contract])
            .args(["--job", &job.to_string()])
            .arg("--checkpoints")
            .arg(dir)
            .arg("--policy")
            .arg(&policy)
            .arg("--data")
            .arg(root().join(".data/cache"))
            .output()
            .unwrap()
    };
    let ok = cli(&o.node_dirs[0], o.job);
    let text = String::from_utf8_lossy(&ok.stdout).to_string();
    assert_eq!(ok.status.code(), Some(0), "{text}");
    assert!(text.contains("audit passed"), "{text}");
    let bad = cli(&tmp.path().join("flipped"), o.job);
    let text = String::from_utf8_lossy(&bad.stdout).to_string();
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(
        text.contains("weights hash to the certified model"),
        "{text}"
    );
    assert_eq!(cli(&o.node_dirs[0], 99).status.code(), Some(2));
    assert_eq!(
        cli(&tmp.path().join("nowhere"), o.job).status.code(),
        Some(2)
    );
}

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[test]
fn ctrl_c_stops_every_process_the_demo_started() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let log = tmp.path().join("demo.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .current_dir(root())
        .args(["demo", "--rounds", "200", "--no-progress", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Wait until the operators (and their enclaves) are up and training.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("operator 0: round 1:") {
            break;
        }
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "the demo ended early:\n{text}"
        );
        assert!(Instant::now() < deadline, "no round after 300 s:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let needle = out.display().to_string();
    let port = std::fs::read_to_string(&log)
        .unwrap()
        .split("anvil http://127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .map(str::to_string)
        .expect("the anvil port in the log");
    assert!(
        processes_with(&needle).len() >= 6,
        "{:?}",
        processes_with(&needle)
    );
    // SAFETY: sends SIGINT to the child we started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("interrupted"), "{text}");
    // Nodes, enclaves and anvil are gone.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        processes_with(&needle).is_empty(),
        "{:?}",
        processes_with(&needle)
    );
    let anvils: Vec<String> = processes_with(&format!("--port {port}"))
        .into_iter()
        .filter(|c| c.contains("anvil"))
        .collect();
    assert!(anvils.is_empty(), "{anvils:?}");
}
