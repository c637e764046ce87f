//! `conclave serve`: the HTTP API over a live server process. Every route in the OpenAPI
//! document is exercised; bad bodies get 4xx naming the problem; a posted job runs on two sim
//! enclaves and its receipts, evidence and checkpoint come back verifiable.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use conclave_attestation::sim::default_sim_measurement;
use conclave_attestation::{
    BindingContext, Endorsements, Envelope, Evidence, JobId, Nonce, Policy, UnixTime, appraise,
};
use sha2::Digest;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn request(addr: &str, method: &str, path: &str, ctype: Option<&str>, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(c) = ctype {
        head.push_str(&format!("Content-Type: {c}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, None, b"")
}

fn post_json(addr: &str, path: &str, v: &serde_json::Value) -> Reply {
    request(
        addr,
        "POST",
        path,
        Some("application/json"),
        &serde_json::to_vec(v).unwrap(),
    )
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn start(dir: &Path) -> (Server, String) {
    let program = Path::new(env!("CARGO_BIN_EXE_conclave"))
        .parent()
        .unwrap()
        .join("conclave-enclave");
    assert!(program.exists(), "build conclave-enclave first");
    std::fs::write(
        dir.join("operator.toml"),
        format!(
            "[enclave]\nkind = \"sim\"\nprogram = {:?}\ncorpus = {:?}\ncache = {:?}\nthreads = 1\n\
             [storage]\ndir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n",
            program,
            root().join(".data/moby-dick/package"),
            dir.join("cache"),
            dir.join("store")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["serve", "--config"])
        .arg(dir.join("operator.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (Server(child), addr)
}

const TINY: &str = "seed = 5\nreplicas = 2\ndevice = \"cpu\"\nthreads = 1\n\
    [model]\nlayers = 1\nheads = 2\nwidth = 32\ncontext = 32\n\
    [data]\nvocab = 400\nshards = 4\nsteps_per_epoch = 4\n\
    [train]\nsteps = 8\nbatch = 2\nwarmup = 1\neval_batches = 1\n\
    [optimizer]\nkind = \"sparseloco\"\ninner_steps = 2\ntopk = 32\n";

#[test]
fn every_route_answers_and_a_posted_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start(dir.path());
    let a = addr.as_str();
    let mut hit: BTreeSet<&str> = BTreeSet::new();

    let r = get(a, "/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    hit.insert("/health");

    let doc = get(a, "/openapi.json");
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    // Bad bodies: each a 4xx that says what is wrong, none queued.
    let bad = |ctype: Option<&str>, body: &[u8]| request(a, "POST", "/v1/jobs", ctype, body);
    assert_eq!(bad(Some("application/json"), b"{not json").status, 400);
    assert_eq!(bad(Some("text/plain"), b"{}").status, 415);
    assert_eq!(bad(None, b"{}").status, 415);
    let r = bad(
        Some("application/json"),
        br#"{"config":"x","operators":1,"rounds":1,"extra":1}"#,
    );
    assert_eq!(r.status, 422);
    assert!(String::from_utf8_lossy(&r.body).contains("extra"));
    let big = serde_json::json!({"config": "#".repeat(200_000), "operators": 2, "rounds": 1});
    assert_eq!(post_json(a, "/v1/jobs", &big).status, 413);
    for (body, word) in [
        (
            serde_json::json!({"config": TINY, "operators": 0, "rounds": 1}),
            "operators",
        ),
        (
            serde_json::json!({"config": TINY, "operators": 3, "rounds": 1}),
            "replicas",
        ),
        (
            serde_json::json!({"config": TINY, "operators": 2, "rounds": 0}),
            "rounds",
        ),
        (
            serde_json::json!({"config": TINY.replace("sparseloco", "adamw"), "operators": 2, "rounds": 1}),
            "optimizer",
        ),
        (
            serde_json::json!({"config": "= not toml", "operators": 2, "rounds": 1}),
            "config",
        ),
    ] {
        let r = post_json(a, "/v1/jobs", &body);
        assert_eq!(r.status, 422, "{body}");
        assert!(r.json()["error"].as_str().unwrap().contains(word), "{word}");
    }
    assert_eq!(get(a, "/v1/jobs").json().as_array().unwrap().len(), 0);

    // A job that runs.
    let r = post_json(
        a,
        "/v1/jobs",
        &serde_json::json!({"config": TINY, "operators": 2, "rounds": 2}),
    );
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    hit.insert("/v1/jobs");
    let start = Instant::now();
    let job = loop {
        let j = get(a, &format!("/v1/jobs/{id}"));
        assert_eq!(j.status, 200);
        let j = j.json();
        match j["state"].as_str().unwrap() {
            "done" => break j,
            "failed" => panic!("job failed: {j}"),
            _ => {}
        }
        assert!(start.elapsed() < Duration::from_secs(300), "job too slow");
        std::thread::sleep(Duration::from_millis(300));
    };
    hit.insert("/v1/jobs/{id}");
    assert_eq!(job["rounds_done"], 2);
    assert_eq!(get(a, "/v1/jobs/xyz").status, 404);
    assert_eq!(get(a, &format!("/v1/jobs/{}", "ab".repeat(32))).status, 404);
    assert_eq!(get(a, "/v1/jobs").json().as_array().unwrap().len(), 1);

    let all = get(a, &format!("/v1/jobs/{id}/receipts"));
    assert_eq!(all.status, 200);
    assert_eq!(all.json().as_array().unwrap().len(), 4);
    hit.insert("/v1/jobs/{id}/receipts");
    let round1 = get(a, &format!("/v1/jobs/{id}/receipts/1"));
    assert_eq!(round1.status, 200);
    let round1 = round1.json();
    assert_eq!(round1.as_array().unwrap().len(), 2);
    assert_eq!(get(a, &format!("/v1/jobs/{id}/receipts/7")).status, 404);
    assert_eq!(get(a, &format!("/v1/jobs/{id}/receipts/x")).status, 400);
    hit.insert("/v1/jobs/{id}/receipts/{round}");

    let ops = get(a, "/v1/operators");
    assert_eq!(ops.status, 200);
    assert_eq!(ops.json().as_array().unwrap().len(), 2);
    hit.insert("/v1/operators");

    // The receipt verifies against the operator's evidence as served.
    let ev = get(a, &format!("/v1/jobs/{id}/operators/0/evidence"));
    assert_eq!(ev.status, 200);
    hit.insert("/v1/jobs/{id}/operators/{operator}/evidence");
    let ev = ev.json();
    let evidence =
        Evidence::decode(&STANDARD.decode(ev["evidence"].as_str().unwrap()).unwrap()).unwrap();
    let mut policy = Policy {
        allow_sim: true,
        ..Policy::default()
    };
    policy.measurements.push(default_sim_measurement());
    let acc = appraise(
        &evidence,
        &Endorsements::default(),
        &policy,
        UnixTime(1_800_000_000),
    )
    .unwrap()
    .accepted()
    .unwrap();
    let ctx = BindingContext {
        job_id: JobId::from_hex(&id).unwrap(),
        nonce: Nonce::from_hex(ev["nonce"].as_str().unwrap()).unwrap(),
    };
    let r0 = round1
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["operator"] == 0)
        .unwrap();
    let env =
        Envelope::decode(&STANDARD.decode(r0["envelope"].as_str().unwrap()).unwrap()).unwrap();
    env.verify_as(
        &format!("conclave/v1/job/{id}"),
        "round-receipt",
        &acc,
        &ctx,
    )
    .unwrap();
    assert_eq!(
        get(a, &format!("/v1/jobs/{id}/operators/9/evidence")).status,
        404
    );

    let ck = get(a, &format!("/v1/jobs/{id}/checkpoint"));
    assert_eq!(ck.status, 200);
    hit.insert("/v1/jobs/{id}/checkpoint");
    let h = hex::encode(sha2::Sha256::digest(&ck.body));
    assert_eq!(ck.header("x-model-hash"), Some(h.as_str()));
    assert_eq!(job["model_hash"].as_str(), Some(h.as_str()));
    let manifest = Envelope::decode(
        &STANDARD
            .decode(ck.header("x-manifest-envelope").unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest.kind, "checkpoint-manifest");

    let m = get(a, "/metrics");
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body);
    assert!(text.contains("conclave_rounds_total 2"), "{text}");
    assert!(text.contains("conclave_peers 2"), "{text}");
    hit.insert("/metrics");

    assert_eq!(get(a, "/nowhere").status, 404);

    // Every route the document lists was exercised above.
    let listed: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let hit: BTreeSet<String> = hit.into_iter().map(String::from).collect();
    assert_eq!(listed, hit);
}
