//! `conclave serve`: the HTTP API over a live server process. Every route in the OpenAPI
//! document is exercised; bad bodies get 4xx naming the problem; a posted job runs on two sim
//! enclaves and its receipts, evidence and checkpoint come back verifiable. And the hardening:
//! state-changing requests need the API token, posted configs cannot name host paths or huge
//! models, the job queue is bounded, and idle or slow-header connections by the thousand leave
//! the API answering.

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
    request_h(addr, method, path, ctype, body, &[])
}

fn request_h(
    addr: &str,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(c) = ctype {
        head.push_str(&format!("Content-Type: {c}\r\n"));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
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

/// A POST with the API token.
fn post_json(live: &Live, path: &str, v: &serde_json::Value) -> Reply {
    let auth = format!("Bearer {}", live.token);
    request_h(
        &live.addr,
        "POST",
        path,
        Some("application/json"),
        &serde_json::to_vec(v).unwrap(),
        &[("Authorization", &auth)],
    )
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A running `conclave serve`, its address and API token.
struct Live {
    _server: Server,
    addr: String,
    token: String,
}

fn start(dir: &Path) -> Live {
    start_with(dir, "")
}

/// Starts `conclave serve` with `api` appended to its `[api]` section; the token is read from
/// `token_file` when `api` sets it, else from the default `store/api-token`.
fn start_with(dir: &Path, api: &str) -> Live {
    let program = Path::new(env!("CARGO_BIN_EXE_conclave"))
        .parent()
        .unwrap()
        .join("conclave-enclave");
    assert!(program.exists(), "build conclave-enclave first");
    std::fs::write(
        dir.join("operator.toml"),
        format!(
            "[enclave]\nkind = \"sim\"\nprogram = {:?}\ncorpus = {:?}\ncache = {:?}\nthreads = 1\n\
             [storage]\ndir = {:?}\n[api]\nlisten = \"127.0.0.1:0\"\n{api}",
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
    let token_file = api
        .lines()
        .find_map(|l| l.strip_prefix("token_file = "))
        .map(|f| PathBuf::from(f.trim_matches('"')))
        .unwrap_or_else(|| dir.join("store/api-token"));
    let token = std::fs::read_to_string(&token_file)
        .unwrap_or_else(|e| panic!("{}: {e}", token_file.display()))
        .trim()
        .to_string();
    Live {
        _server: Server(child),
        addr,
        token,
    }
}

const TINY: &str = "seed = 5\nreplicas = 2\ndevice = \"cpu\"\nthreads = 1\n\
    [model]\nlayers = 1\nheads = 2\nwidth = 32\ncontext = 32\n\
    [data]\nvocab = 400\nshards = 4\nsteps_per_epoch = 4\n\
    [train]\nsteps = 8\nbatch = 2\nwarmup = 1\neval_batches = 1\n\
    [optimizer]\nkind = \"sparseloco\"\ninner_steps = 2\ntopk = 32\n";

#[test]
fn every_route_answers_and_a_posted_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let live = start(dir.path());
    let a = live.addr.as_str();
    let auth = format!("Bearer {}", live.token);
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
    let bad = |ctype: Option<&str>, body: &[u8]| {
        request_h(
            a,
            "POST",
            "/v1/jobs",
            ctype,
            body,
            &[("Authorization", &auth)],
        )
    };
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
    assert_eq!(post_json(&live, "/v1/jobs", &big).status, 413);
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
        let r = post_json(&live, "/v1/jobs", &body);
        assert_eq!(r.status, 422, "{body}");
        assert!(r.json()["error"].as_str().unwrap().contains(word), "{word}");
    }
    assert_eq!(get(a, "/v1/jobs").json().as_array().unwrap().len(), 0);

    // A job that runs.
    let r = post_json(
        &live,
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
    // A job in the clear says so.
    assert_eq!(job["sealed"], false);
    assert!(
        job["sealing"]
            .as_str()
            .is_some_and(|s| s.starts_with("NOT SEALED")),
        "{job}"
    );
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
    // Signed in the job's domain, which names the hash of the job document the run kept.
    let spec = conclave_protocol::Hash32::sha256(
        &std::fs::read(
            dir.path()
                .join("store/jobs")
                .join(&id)
                .join("job-document.json"),
        )
        .unwrap(),
    );
    env.verify_as(
        &format!("conclave/v1/job/{id}/spec/{spec}"),
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

#[test]
fn state_changing_requests_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let live = start(dir.path());
    let a = live.addr.as_str();
    // The default token: 32 random bytes as hex, private to the operator.
    assert_eq!(live.token.len(), 64);
    assert!(live.token.bytes().all(|b| b.is_ascii_hexdigit()));
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("store/api-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let body =
        serde_json::to_vec(&serde_json::json!({"config": TINY, "operators": 2, "rounds": 1}))
            .unwrap();
    let post = |extra: &[(&str, &str)]| {
        request_h(
            a,
            "POST",
            "/v1/jobs",
            Some("application/json"),
            &body,
            extra,
        )
    };
    let wrong = format!("Bearer {}", "0".repeat(64));
    let almost = format!("Bearer {}", &live.token[..63]);
    let basic = format!("Basic {}", live.token);
    for extra in [
        vec![],
        vec![("Authorization", wrong.as_str())],
        vec![("Authorization", almost.as_str())],
        vec![("Authorization", basic.as_str())],
        vec![("Authorization", "Bearer ")],
    ] {
        let r = post(&extra);
        assert_eq!(r.status, 401, "{extra:?}");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer"))
        );
        assert!(!r.json()["error"].as_str().unwrap().is_empty());
    }
    // Any other state-changing method too, known route or not.
    for (m, p) in [
        ("DELETE", "/v1/jobs"),
        ("PUT", "/v1/jobs"),
        ("POST", "/nowhere"),
    ] {
        let r = request(a, m, p, None, b"");
        assert_eq!(r.status, 401, "{m} {p}");
        r.json();
    }
    // Nothing was queued; GET routes stay open.
    let jobs = get(a, "/v1/jobs");
    assert_eq!(jobs.status, 200);
    assert_eq!(jobs.json().as_array().unwrap().len(), 0);
    // With the token the request passes the check (a bad body is then judged on its own).
    let auth = format!("Bearer {}", live.token);
    let r = request_h(
        a,
        "POST",
        "/v1/jobs",
        Some("application/json"),
        b"{no json",
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 400);
    let r = request_h(
        a,
        "DELETE",
        "/v1/jobs",
        None,
        b"",
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 405);
    assert!(r.json()["error"].is_string());
    // The document names the scheme and the route that needs it.
    let doc = get(a, "/openapi.json").json();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/v1/jobs"]["post"]["security"][0]["bearer"],
        serde_json::json!([])
    );
    assert!(doc["paths"]["/v1/jobs"]["get"]["security"].is_null());
    assert!(doc["paths"]["/v1/jobs"]["post"]["responses"]["401"].is_object());
    assert!(doc["paths"]["/v1/jobs"]["post"]["responses"]["429"].is_object());
}

#[test]
fn posted_configs_cannot_name_host_paths_or_huge_models() {
    let dir = tempfile::tempdir().unwrap();
    let live = start(dir.path());
    let with_data = |line: &str| TINY.replace("[data]\n", &format!("[data]\n{line}\n"));
    for (config, word) in [
        (format!("init = \"/etc/passwd\"\n{TINY}"), "init"),
        (format!("init = \"/dev/zero\"\n{TINY}"), "init"),
        (format!("out = \"/tmp/elsewhere\"\n{TINY}"), "out"),
        (with_data("corpus = \"/\""), "data.corpus"),
        (with_data("cache = \"/etc\""), "data.cache"),
        (format!("threads = 100000\n{TINY}"), "threads"),
        (
            TINY.replace("width = 32", "width = 8192"),
            "MAX_MODEL_PARAMS",
        ),
        (
            TINY.replace("layers = 1", "layers = 100000"),
            "MAX_MODEL_PARAMS",
        ),
        (
            TINY.replace("context = 32", "context = 65536"),
            "MAX_STEP_ACTIVATIONS",
        ),
        (TINY.replace("[model]\n", "[model]\nlayerz = 2\n"), "layerz"),
    ] {
        let r = post_json(
            &live,
            "/v1/jobs",
            &serde_json::json!({"config": config, "operators": 2, "rounds": 1}),
        );
        assert_eq!(r.status, 422, "{config}");
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(word), "{word}: {e}");
        assert!(!e.contains("root:"), "{e}");
    }
    assert_eq!(
        get(&live.addr, "/v1/jobs").json().as_array().unwrap().len(),
        0
    );
}

#[test]
fn the_job_queue_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "an-operator-chosen-token-42\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let live = start_with(
        dir.path(),
        &format!("max_queued = 2\ntoken_file = {token_file:?}\n"),
    );
    assert_eq!(live.token, "an-operator-chosen-token-42");
    // Jobs that fail at once (train.steps is not a multiple of inner_steps: the spec step
    // refuses it), so that the queue drains afterwards.
    let failing = TINY.replace("steps = 8", "steps = 7");
    let body = serde_json::json!({"config": failing, "operators": 2, "rounds": 1});
    let mut statuses = Vec::new();
    let full = loop {
        let r = post_json(&live, "/v1/jobs", &body);
        statuses.push(r.status);
        if r.status != 201 {
            break r;
        }
        assert!(statuses.len() <= 3, "{statuses:?}");
    };
    // Two wait; a third may have been taken by the worker meanwhile.
    assert!(statuses.len() >= 3, "{statuses:?}");
    assert_eq!(full.status, 429, "{statuses:?}");
    let wait: u64 = full.header("retry-after").unwrap().parse().unwrap();
    assert!(wait >= 1);
    assert!(
        full.json()["error"]
            .as_str()
            .unwrap()
            .contains("max_queued")
    );
    // Once the worker has drained the queue, posts are taken again.
    let start = Instant::now();
    loop {
        let r = post_json(&live, "/v1/jobs", &body);
        if r.status == 201 {
            break;
        }
        assert_eq!(r.status, 429);
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the queue never drained"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Raises this process's open-file limit to its hard limit (the server inherits it); returns
/// the soft limit now in force.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max.min(1 << 20);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// The time `/health` takes to answer on a fresh connection.
fn health_latency(addr: &str) -> Duration {
    let t = Instant::now();
    let r = get(addr, "/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    t.elapsed()
}

fn metric(addr: &str, name: &str) -> u64 {
    let m = get(addr, "/metrics");
    let text = String::from_utf8_lossy(&m.body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn idle_and_slow_header_connections_leave_health_answering() {
    let fds = raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let header_timeout = 5;
    let live = start_with(
        dir.path(),
        &format!("max_connections = 512\nheader_timeout_s = {header_timeout}\n"),
    );
    let addr = live.addr.clone();
    let target = 10_000usize.min(fds.saturating_sub(300) as usize);

    // /health is asked every 100 ms while the flood arrives.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let (addr, stop) = (addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                worst = worst.max(health_latency(&addr));
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (worst, n)
        })
    };

    // The flood: connections that never send a byte.
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let t = Instant::now();
    let mut idle = Vec::with_capacity(target);
    let mut failed = 0;
    for _ in 0..target {
        match TcpStream::connect_timeout(&sock, Duration::from_secs(5)) {
            Ok(s) => idle.push(s),
            Err(_) => failed += 1,
        }
    }
    let flood_time = t.elapsed();

    // A few slowloris clients: one header byte a second.
    let slow: Vec<_> = (0..5)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let head = format!(
                    "GET /health HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}\r\n\r\n",
                    "a".repeat(60)
                );
                let t = Instant::now();
                let mut buf = [0u8; 256];
                for b in head.bytes() {
                    if s.write_all(&[b]).is_err() {
                        return (t.elapsed(), false);
                    }
                    match s.read(&mut buf) {
                        Ok(0) => return (t.elapsed(), false),
                        Ok(_) => return (t.elapsed(), true),
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => return (t.elapsed(), false),
                    }
                }
                (t.elapsed(), true)
            })
        })
        .collect();

    // With the flood open and the slow clients dribbling: /health answers at once.
    std::thread::sleep(Duration::from_millis(500));
    let mut worst_after = Duration::ZERO;
    for _ in 0..10 {
        worst_after = worst_after.max(health_latency(&addr));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst_during, probes) = prober.join().unwrap();
    let open = metric(&addr, "conclave_api_connections");
    let evicted = metric(&addr, "conclave_api_connections_evicted_total");

    // The slow clients are cut off by the header timeout, never served.
    let slow: Vec<(Duration, bool)> = slow.into_iter().map(|h| h.join().unwrap()).collect();
    // Idle connections too: after the header timeout the server holds (almost) none.
    std::thread::sleep(Duration::from_secs(1));
    let open_later = metric(&addr, "conclave_api_connections");
    eprintln!(
        "fd limit {fds}; {} idle connections opened ({failed} failed) in {flood_time:?}; \
         /health worst {worst_during:?} during the flood ({probes} probes), {worst_after:?} after; \
         server open connections {open} (cap 512), evicted {evicted}, {open_later} later; \
         slow clients closed after {:?}",
        idle.len(),
        slow.iter().map(|(d, _)| *d).collect::<Vec<_>>()
    );
    assert!(
        idle.len() >= target * 99 / 100,
        "{} of {target}",
        idle.len()
    );
    assert!(worst_during < Duration::from_secs(2), "{worst_during:?}");
    assert!(worst_after < Duration::from_secs(2), "{worst_after:?}");
    assert!(open <= 512 + 2, "{open}");
    assert!(evicted > 0);
    for (d, served) in &slow {
        assert!(!served, "a slow-header client was served");
        assert!(
            *d >= Duration::from_secs(header_timeout - 1)
                && *d <= Duration::from_secs(header_timeout + 3),
            "closed after {d:?}"
        );
    }
    assert!(open_later <= 2, "{open_later}");
    drop(idle);
}
