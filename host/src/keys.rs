//! The customer's side of a sealed job: sealing a prepared dataset (`conclave data seal`), the
//! key file, and the key broker (`conclave keys serve`) that releases the job secret to
//! enclaves whose evidence passes the job's policy, over TLS (rustls); and the operator's
//! side: asking a broker for its enclave's key ([`fetch_key`]).
//!
//! The broker's decisions are pure ([`Broker`]: a nonce book and
//! [`conclave_protocol::keyrelease::appraise_key_request`], with `now` passed in); the HTTP and
//! TLS are the edge. API (JSON bodies, [`MAX_KEY_REQUEST`] bytes at most):
//!
//! - `POST /v1/challenge` `{"sealing_id": hex}` → [`Challenge`]
//! - `POST /v1/key` [`KeyRequest`] → [`KeyResponse`], or 403 `{"code", "message"}` naming the
//!   refusal (`wrong_measurement`, `debug_guest`, `stale_nonce`, `not_bound`, `unknown_job`,
//!   ...).
//!
//! The broker's TLS certificate is made fresh (self-signed, for `localhost` and the listening
//! address) unless one is given; operators pin it (`[job] key_broker_cert`). TLS keeps the
//! exchange private and the broker authentic; the secret itself is wrapped end to end to the
//! enclave's single-use key, so a TLS terminator or the operator's host that relays it learns
//! nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use conclave_attestation::{Endorsements, Policy, UnixTime};
use conclave_protocol::Hash32;
use conclave_protocol::keyrelease::{
    Challenge, KeyRefusal, KeyRequest, KeyResponse, MAX_KEY_REQUEST, NONCE_TTL_S, NonceBook,
    appraise_key_request, release,
};
use conclave_protocol::seal::{JobSecret, SECRET_LEN};
use conclave_protocol::sealed_data::{INDEX_FILE, SealedDataset, dataset_file_names, seal_files};
use serde::{Deserialize, Serialize};

use crate::store::write_atomic;

/// The customer's key file: the job secret and what it seals. Keep it private.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub version: u32,
    pub sealing_id: Hash32,
    /// The job secret, hex.
    pub secret: String,
    /// Its public commitment (the job document names it).
    pub key_check: Hash32,
    /// The sealed dataset's root (the job's data root).
    pub data_root: Hash32,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFile")
            .field("sealing_id", &self.sealing_id)
            .field("key_check", &self.key_check)
            .finish_non_exhaustive()
    }
}

impl KeyFile {
    /// Reads a key file (at most 64 KiB) and its secret, checked against its key check.
    pub fn read(path: &Path) -> Result<(Self, JobSecret)> {
        let bytes = crate::store::read_bounded(path, 64 * 1024)
            .with_context(|| format!("reading the key file {}", path.display()))?;
        let kf: KeyFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a Conclave key file", path.display()))?;
        let raw = hex::decode(kf.secret.trim())
            .ok()
            .and_then(|b| <[u8; SECRET_LEN]>::try_from(b).ok())
            .with_context(|| format!("{}: the secret is not 32 bytes of hex", path.display()))?;
        let secret = JobSecret::from_bytes(raw);
        if secret.key_check(&kf.sealing_id.0)? != kf.key_check.0 {
            bail!(
                "{}: the secret does not match its key check (a damaged key file)",
                path.display()
            );
        }
        Ok((kf, secret))
    }

    /// Writes the key file atomically, readable by its owner only.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        write_atomic(path, &bytes)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
}

/// What `conclave data seal` made.
#[derive(Debug, Clone, Serialize)]
pub struct SealedOutput {
    pub out: PathBuf,
    pub key_file: PathBuf,
    pub sealing_id: Hash32,
    pub key_check: Hash32,
    /// The root the job document names as its data root.
    pub data_root: Hash32,
    pub files: usize,
    pub bytes: u64,
}

/// Seals a prepared dataset folder (`manifest.json`, `validation.bin`, `shard-NNNN.bin`, and
/// `tokenizer.json` in it or its parent, as `conclave-enclave spec` prepares them) into `out`
/// with a fresh job secret and sealing id, and writes the key file. Refuses to overwrite a key
/// file (a lost secret loses the job's data and model).
pub fn seal_dataset(input: &Path, out: &Path, key_out: &Path) -> Result<SealedOutput> {
    if key_out.exists() {
        bail!(
            "{} exists: refusing to replace a key file (move it away first)",
            key_out.display()
        );
    }
    let manifest_path = input.join("manifest.json");
    let manifest: conclave_protocol::dataset::DatasetManifest = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{} is not a dataset manifest", manifest_path.display()))?;
    manifest
        .check_root()
        .with_context(|| format!("{}", manifest_path.display()))?;
    let tokenizer = [
        input.join("tokenizer.json"),
        input.join("../tokenizer.json"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .with_context(|| format!("no tokenizer.json in {} or its parent", input.display()))?;
    let mut files = Vec::new();
    for name in dataset_file_names(manifest.shards.len()) {
        let p = if name == "tokenizer.json" {
            tokenizer.clone()
        } else {
            input.join(&name)
        };
        let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        files.push((name, bytes));
    }
    let secret = JobSecret::generate()?;
    let mut id = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let sealing_id = Hash32(id);
    let (index, sealed) = seal_files(&secret, sealing_id, &files)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut bytes = 0u64;
    for (f, ct) in index.files.iter().zip(&sealed) {
        write_atomic(&out.join(SealedDataset::sealed_name(&f.name)), ct)?;
        bytes += ct.len() as u64;
    }
    write_atomic(&out.join(INDEX_FILE), &index.encode())?;
    let kf = KeyFile {
        version: 1,
        sealing_id,
        secret: hex::encode(secret.expose()),
        key_check: index.key_check,
        data_root: index.root(),
    };
    if let Some(parent) = key_out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    kf.write(key_out)?;
    Ok(SealedOutput {
        out: out.to_path_buf(),
        key_file: key_out.to_path_buf(),
        sealing_id,
        key_check: index.key_check,
        data_root: index.root(),
        files: index.files.len(),
        bytes,
    })
}

/// Opens a sealed checkpoint's weights (`sealed`, as stored) with the job secret, checking
/// them against their manifest: the stored file's hash against its sealed hash, then the AEAD,
/// then the plaintext against its model hash.
pub fn open_checkpoint(
    secret: &JobSecret,
    sealing_id: &Hash32,
    manifest: &conclave_protocol::CheckpointManifest,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let sealed_hash = manifest
        .sealed_hash
        .context("the checkpoint is not sealed (its manifest names no sealed hash)")?;
    let got = Hash32::sha256(sealed);
    if got != sealed_hash {
        bail!("the sealed weights hash to {got}, their signed manifest names {sealed_hash}");
    }
    let plain = secret.open(
        &sealing_id.0,
        conclave_protocol::seal::Kind::Checkpoint,
        manifest.step,
        sealed,
    )?;
    let model = Hash32::sha256(&plain);
    if model != manifest.model_hash {
        bail!(
            "the opened weights hash to {model}, their signed manifest names {}",
            manifest.model_hash
        );
    }
    Ok(plain)
}

/// Reads a sealed dataset's index (for the job document: its sealing id, key check and root).
pub fn read_sealed_index(dir: &Path) -> Result<SealedDataset> {
    let p = dir.join(INDEX_FILE);
    let bytes = crate::store::read_bounded(&p, conclave_protocol::sealed_data::MAX_INDEX as u64)
        .with_context(|| format!("reading the sealed dataset index {}", p.display()))?;
    SealedDataset::parse(&bytes).with_context(|| p.display().to_string())
}

/// Releases and refusals the broker keeps in memory.
pub const MAX_RECORDS: usize = 1024;

/// One release the broker made or refused.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerRecord {
    pub at: u64,
    pub sealing_id: Hash32,
    /// The evidence hash released to, when released.
    pub evidence: Option<String>,
    pub outcome: String,
}

/// The key broker's state: the jobs it holds secrets for, under their policies, and its
/// challenges. Pure: every call takes `now`.
pub struct Broker {
    jobs: BTreeMap<Hash32, (JobSecret, Policy)>,
    book: NonceBook,
    pub records: Vec<BrokerRecord>,
}

impl Broker {
    pub fn new() -> Self {
        Broker {
            jobs: BTreeMap::new(),
            book: NonceBook::default(),
            records: Vec::new(),
        }
    }

    /// Holds `secret` for `sealing_id`, released under `policy`.
    pub fn add(&mut self, sealing_id: Hash32, secret: JobSecret, policy: Policy) {
        self.jobs.insert(sealing_id, (secret, policy));
    }

    /// A challenge for a job this broker holds.
    pub fn challenge(
        &mut self,
        sealing_id: Hash32,
        fresh: [u8; 32],
        now: UnixTime,
    ) -> Result<Challenge, KeyRefusal> {
        if !self.jobs.contains_key(&sealing_id) {
            return Err(KeyRefusal::UnknownJob(sealing_id));
        }
        Ok(Challenge {
            sealing_id,
            nonce: self.book.issue(fresh, now),
            ttl_s: NONCE_TTL_S,
        })
    }

    /// Answers a key request: the nonce spent, the evidence appraised under the job's policy,
    /// the secret wrapped to the request's key.
    pub fn answer(&mut self, body: &[u8], now: UnixTime) -> Result<KeyResponse, KeyRefusal> {
        let req = KeyRequest::parse(body)?;
        let outcome = (|| -> Result<_, KeyRefusal> {
            let (secret, policy) = self
                .jobs
                .get(&req.sealing_id)
                .ok_or(KeyRefusal::UnknownJob(req.sealing_id))?;
            self.book.spend(&req.nonce, now)?;
            let acc =
                appraise_key_request(&req, &req.sealing_id, policy, &Endorsements::default(), now)?;
            let resp = release(secret, &req, &acc)?;
            Ok((resp, acc.evidence_hash()))
        })();
        // The log keeps the last releases and refusals: a client that floods requests does
        // not grow it without bound.
        if self.records.len() >= MAX_RECORDS {
            self.records.remove(0);
        }
        self.records.push(BrokerRecord {
            at: now.0,
            sealing_id: req.sealing_id,
            evidence: outcome.as_ref().ok().map(|(_, h)| h.to_string()),
            outcome: match &outcome {
                Ok(_) => "released".into(),
                Err(e) => format!("refused ({}): {e}", e.code()),
            },
        });
        outcome.map(|(r, _)| r)
    }
}

impl Default for Broker {
    fn default() -> Self {
        Self::new()
    }
}

fn system_now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

#[derive(Serialize)]
struct ErrorBody {
    code: String,
    message: String,
}

fn refusal(status: StatusCode, e: &KeyRefusal) -> Response {
    (
        status,
        Json(ErrorBody {
            code: e.code().into(),
            message: e.to_string(),
        }),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChallengeBody {
    sealing_id: Hash32,
}

type Shared = Arc<Mutex<Broker>>;

async fn challenge_handler(State(b): State<Shared>, body: axum::body::Bytes) -> Response {
    let req: ChallengeBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                &KeyRefusal::Malformed(e.to_string()),
            );
        }
    };
    let mut fresh = [0u8; 32];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut fresh).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut b = match b.lock() {
        Ok(b) => b,
        Err(p) => p.into_inner(),
    };
    match b.challenge(req.sealing_id, fresh, system_now()) {
        Ok(c) => Json(c).into_response(),
        Err(e) => refusal(StatusCode::NOT_FOUND, &e),
    }
}

async fn key_handler(State(b): State<Shared>, body: axum::body::Bytes) -> Response {
    let mut b = match b.lock() {
        Ok(b) => b,
        Err(p) => p.into_inner(),
    };
    let out = b.answer(&body, system_now());
    if let Some(r) = b.records.last() {
        tracing::info!(sealing_id = %r.sealing_id, evidence = ?r.evidence, "key broker: {}", r.outcome);
    }
    match out {
        Ok(r) => Json(r).into_response(),
        Err(e @ KeyRefusal::Malformed(_)) => refusal(StatusCode::BAD_REQUEST, &e),
        Err(e) => refusal(StatusCode::FORBIDDEN, &e),
    }
}

/// The broker's HTTP routes.
pub fn router(broker: Shared) -> axum::Router {
    axum::Router::new()
        .route("/v1/challenge", post(challenge_handler))
        .route("/v1/key", post(key_handler))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_KEY_REQUEST))
        .with_state(broker)
}

/// A TLS identity: the certificate chain and key (PEM).
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TlsIdentity {
    /// A fresh self-signed certificate for `localhost`, `127.0.0.1`, `::1` and `extra` names.
    pub fn self_signed(extra: &[String]) -> Result<Self> {
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        for n in extra {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let ck = rcgen::generate_simple_self_signed(names)
            .context("making the broker's TLS certificate")?;
        Ok(TlsIdentity {
            cert_pem: ck.cert.pem(),
            key_pem: ck.key_pair.serialize_pem(),
        })
    }

    fn server_config(&self) -> Result<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .context("the broker's certificate PEM")?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .context("the broker's key PEM")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the broker's TLS identity")?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

/// The most connections the broker serves at once.
const MAX_CONNECTIONS: usize = 64;

/// Serves the broker over TLS on `listener` until the runtime stops.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    identity: &TlsIdentity,
    broker: Shared,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(identity.server_config()?));
    let app = router(broker);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("key broker accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "key broker TLS handshake: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    use tower::ServiceExt as _;
                    app.clone().oneshot(req)
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}

/// A running broker on a thread of its own (the demo's, and tests'); stopped when dropped.
pub struct BrokerHandle {
    pub addr: SocketAddr,
    pub cert_pem: String,
    pub broker: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Starts a broker on `listen` (e.g. `127.0.0.1:0`) holding `broker`'s jobs, with a fresh
/// certificate. Callable from inside or outside an async runtime.
pub fn spawn_broker(listen: &str, broker: Broker) -> Result<BrokerHandle> {
    let std_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("the key broker listening on {listen}"))?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let identity = TlsIdentity::self_signed(&[addr.ip().to_string()])?;
    let cert_pem = identity.cert_pem.clone();
    let broker = Arc::new(Mutex::new(broker));
    let b = broker.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("key-broker".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("the key broker's runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("the key broker's listener: {e}");
                        return;
                    }
                };
                tokio::select! {
                    r = serve_tls(listener, &identity, b) => {
                        if let Err(e) = r {
                            tracing::error!("the key broker stopped: {e:#}");
                        }
                    }
                    _ = stopped => {}
                }
            });
        })?;
    Ok(BrokerHandle {
        addr,
        cert_pem,
        broker,
        stop: Some(stop),
    })
}

/// Where an operator's host reaches the customer's key broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerTarget {
    /// `https://host:port`.
    pub url: String,
    /// The broker's certificate (PEM) the connection must present.
    pub cert_pem: String,
}

fn client_config(cert_pem: &str) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots
            .add(c.context("the key broker's certificate PEM")?)
            .context("the key broker's certificate")?;
    }
    if roots.is_empty() {
        bail!("no certificate in the key broker's certificate PEM");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// One HTTPS POST of JSON to the broker; the status and the body (at most 1 MiB).
async fn post_json(target: &BrokerTarget, path: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>)> {
    use http_body_util::{BodyExt, Full, Limited};
    let rest = target
        .url
        .strip_prefix("https://")
        .with_context(|| format!("the key broker URL {} is not https://", target.url))?
        .trim_end_matches('/');
    let host = rest
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(rest)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let authority = if rest.contains(':') {
        rest.to_string()
    } else {
        format!("{rest}:443")
    };
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .with_context(|| format!("connecting to the key broker at {authority}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .with_context(|| format!("{host} is not a server name"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&target.cert_pem)?));
    let tls = connector.connect(name, tcp).await.with_context(|| {
        format!("TLS with the key broker at {authority} (is its certificate the pinned one?)")
    })?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", &authority)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the key broker's answer: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}

/// A named refusal from the broker, or the broker's answer.
fn broker_answer<T: for<'de> Deserialize<'de>>(status: u16, body: &[u8]) -> Result<T> {
    if status == 200 {
        return serde_json::from_slice(body).context("the key broker's answer");
    }
    #[derive(Deserialize)]
    struct E {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<E>(body) {
        Ok(e) => bail!("the key broker refused ({}): {}", e.code, e.message),
        Err(_) => bail!("the key broker answered HTTP {status}"),
    }
}

/// The operator's side: a challenge for `sealing_id`, the enclave's request (made by
/// `request`, given the nonce), and the broker's wrapped answer.
pub fn fetch_key(
    target: &BrokerTarget,
    sealing_id: Hash32,
    request: &mut dyn FnMut(conclave_attestation::Nonce) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(&serde_json::json!({ "sealing_id": sealing_id }))?;
    let (status, b) = blocking(post_json(target, "/v1/challenge", body))?;
    let ch: Challenge = broker_answer(status, &b)?;
    let req = request(ch.nonce)?;
    let (status, b) = blocking(post_json(target, "/v1/key", req))?;
    let resp: KeyResponse = broker_answer(status, &b)?;
    Ok(resp.wrapped.0)
}

/// Runs `fut` to completion on a runtime of its own, on a thread of its own: callable from
/// synchronous code and from inside an async runtime (whose thread it blocks meanwhile).
fn blocking<T: Send>(fut: impl std::future::Future<Output = Result<T>> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(fut)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the key broker client panicked"))?
    })
}
