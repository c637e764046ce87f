//! The host's HTTP API (axum), described by an OpenAPI document at `/openapi.json` (utoipa).
//!
//! Local mode: jobs posted here are queued and run one at a time by a worker with
//! [`crate::run::run_local_with`] on a local peer set of enclaves; their signed receipts and
//! checkpoints are served from the job's storage folder exactly as the enclaves signed them.
//! Request bodies are checked before anything is queued, with a 4xx naming what is wrong.
//!
//! Hardening (see [`router`] and the `conn` module): requests other than `GET`/`HEAD` need the
//! API token ([`auth`]); a posted config may not name host paths nor ask for more than
//! [`MAX_MODEL_PARAMS`]; at most `api.max_queued` jobs wait (then 429); bodies are capped at
//! twice [`MAX_BODY`], whole requests at `api.request_timeout_s` (408) and
//! `api.max_in_flight` requests are handled at once; open connections are capped at
//! `api.max_connections` (the idlest closed first) and must send their headers within
//! `api.header_timeout_s`. Every error answer is a JSON [`ApiError`].

use std::path::PathBuf;

use axum::extract::FromRequestParts;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router, middleware};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::config::OperatorConfig;
use crate::store::JobStore;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Conclave host API",
        description = "The operator host proxy: jobs (local mode), enclave evidence, signed round receipts, checkpoints, health and metrics."
    ),
    paths(
        health,
        metrics,
        list_jobs,
        create_job,
        get_job,
        list_receipts,
        get_receipts,
        get_checkpoint,
        list_operators,
        get_evidence
    ),
    components(schemas(
        Health,
        JobRequest,
        Job,
        JobState,
        ApiError,
        SignedReceipt,
        OperatorStatus,
        EvidenceDoc
    )),
    modifiers(&SecurityAddon)
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme that state-changing routes name.
struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The API token: the content of the server's `[api] token_file` \
                         (default `<storage.dir>/api-token`). Needed by every request other \
                         than GET.",
                    ))
                    .build(),
            ),
        );
    }
}

pub mod auth;
mod conn;
mod models;
mod state;
pub use auth::{Token, load_or_create_token};
pub use models::*;
pub use state::{ApiOptions, Inner, Metrics, Shared};
use state::{NetStats, QueueError, unix_now};

/// Seconds a client is told to wait (`Retry-After`) when the job queue is full.
pub const QUEUE_RETRY_AFTER_S: u64 = 30;

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ApiError { error: msg.into() })).into_response()
}

#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
async fn health(State(s): State<Shared>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        jobs: s.lock().jobs.len(),
    })
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(s): State<Shared>) -> Response {
    let g = s.lock();
    let m = &g.metrics;
    let now = unix_now();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, v: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    };
    metric(
        "conclave_rounds_total",
        "counter",
        "Rounds closed.",
        m.rounds_total.to_string(),
    );
    metric(
        "conclave_round_seconds_sum",
        "counter",
        "Seconds spent in closed rounds.",
        m.round_seconds_sum.to_string(),
    );
    metric(
        "conclave_round_seconds_last",
        "gauge",
        "Duration of the last round.",
        m.last_round_seconds.to_string(),
    );
    metric(
        "conclave_loss",
        "gauge",
        "Mean training loss of the last round.",
        m.last_loss.to_string(),
    );
    metric(
        "conclave_update_bytes_total",
        "counter",
        "Bytes of signed updates sent by the enclaves.",
        m.update_bytes_total.to_string(),
    );
    metric(
        "conclave_jobs_failed_total",
        "counter",
        "Jobs that failed.",
        m.jobs_failed_total.to_string(),
    );
    metric(
        "conclave_peers",
        "gauge",
        "Attested enclaves known.",
        g.operators.len().to_string(),
    );
    let oldest = g.operators.iter().map(|o| o.heartbeat).min().unwrap_or(now);
    metric(
        "conclave_heartbeat_age_seconds",
        "gauge",
        "Age of the oldest operator heartbeat.",
        now.saturating_sub(oldest).to_string(),
    );
    drop(g);
    let net = &s.net;
    metric(
        "conclave_api_connections",
        "gauge",
        "API connections open.",
        NetStats::get(&net.open).to_string(),
    );
    metric(
        "conclave_api_connections_evicted_total",
        "counter",
        "Idle API connections closed to admit new ones at api.max_connections.",
        NetStats::get(&net.evicted).to_string(),
    );
    metric(
        "conclave_api_connections_refused_total",
        "counter",
        "API connections closed at once: every open one had a request in progress.",
        NetStats::get(&net.refused).to_string(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[utoipa::path(get, path = "/v1/jobs", responses((status = 200, body = [Job])))]
async fn list_jobs(State(s): State<Shared>) -> Json<Vec<Job>> {
    Json(s.lock().jobs.values().map(|e| e.job.clone()).collect())
}

#[utoipa::path(post, path = "/v1/jobs", request_body = JobRequest,
    security(("bearer" = [])),
    responses((status = 201, body = Job), (status = 400, body = ApiError),
        (status = 401, body = ApiError, description = "no or wrong `Authorization: Bearer <token>`"),
        (status = 408, body = ApiError, description = "the request took longer than api.request_timeout_s"),
        (status = 413, body = ApiError), (status = 415, body = ApiError),
        (status = 422, body = ApiError, description = "the request or its config is refused; the error names the key"),
        (status = 429, body = ApiError, description = "api.max_queued jobs already wait",
            headers(("Retry-After" = u64, description = "seconds to wait before posting again")))))]
async fn create_job(
    State(s): State<Shared>,
    body: Result<Json<JobRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(e.status(), e.body_text()),
    };
    if let Err(e) = validate_job(&req) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, e);
    }
    let config = req.config.clone();
    let queued = s.enqueue(req, |seq| {
        hex::encode(Sha256::digest(format!(
            "conclave/v1/local-job/{seq}/{}/{config}",
            unix_now(),
        )))
    });
    match queued {
        Ok(j) => (StatusCode::CREATED, Json(j)).into_response(),
        Err(QueueError::Full(n)) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the job queue is full ({n} jobs wait, api.max_queued); retry later"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(QUEUE_RETRY_AFTER_S));
            r
        }
    }
}

/// Path parameters whose rejection is a JSON [`ApiError`] like every other error.
struct PathArgs<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(PathArgs(t)),
            Err(e) => Err(error(e.status(), e.body_text())),
        }
    }
}

/// The 404 answer for an id that cannot name a job.
fn bad_id(id: &str) -> Option<Response> {
    (id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no job {id:?}: job ids are 64 hex characters"),
        )
    })
}

#[utoipa::path(get, path = "/v1/jobs/{id}", params(("id" = String, Path, description = "job id, 64 hex")),
    responses((status = 200, body = Job), (status = 404, body = ApiError)))]
async fn get_job(State(s): State<Shared>, PathArgs(id): PathArgs<String>) -> Response {
    if let Some(r) = bad_id(&id) {
        return r;
    }
    match s.lock().jobs.get(&id) {
        Some(e) => Json(e.job.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

fn read_receipts(dir: &std::path::Path, round: u64) -> Vec<SignedReceipt> {
    let store = JobStore::new(dir);
    let mut out = Vec::new();
    for op in store.receipt_operators(round) {
        let Ok(env) = std::fs::read(store.receipt_envelope(round, op)) else {
            continue;
        };
        let receipt = std::fs::read(store.receipt_json(round, op))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        out.push(SignedReceipt {
            round,
            operator: op,
            envelope: STANDARD.encode(env),
            receipt,
        });
    }
    out
}

#[utoipa::path(get, path = "/v1/jobs/{id}/receipts", params(("id" = String, Path, description = "job id, 64 hex")),
    responses((status = 200, body = [SignedReceipt]), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn list_receipts(State(s): State<Shared>, PathArgs(id): PathArgs<String>) -> Response {
    if let Some(r) = bad_id(&id) {
        return r;
    }
    let Some(dir) = s.job_dir(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no job {id}"));
    };
    let done = s
        .lock()
        .jobs
        .get(&id)
        .map(|e| e.job.rounds_done)
        .unwrap_or(0);
    let all: Vec<SignedReceipt> = (0..done).flat_map(|r| read_receipts(&dir, r)).collect();
    Json(all).into_response()
}

#[utoipa::path(get, path = "/v1/jobs/{id}/receipts/{round}",
    params(("id" = String, Path, description = "job id, 64 hex"), ("round" = u64, Path, description = "round")),
    responses((status = 200, body = [SignedReceipt]), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn get_receipts(
    State(s): State<Shared>,
    PathArgs((id, round)): PathArgs<(String, u64)>,
) -> Response {
    if let Some(r) = bad_id(&id) {
        return r;
    }
    let Some(dir) = s.job_dir(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no job {id}"));
    };
    let r = read_receipts(&dir, round);
    if r.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no receipts for round {round}"),
        );
    }
    Json(r).into_response()
}

#[utoipa::path(get, path = "/v1/jobs/{id}/checkpoint", params(("id" = String, Path, description = "job id, 64 hex")),
    responses((status = 200, description = "the final weights (safetensors); X-Model-Hash names them, X-Manifest-Envelope carries the signed manifest (base64)", content_type = "application/octet-stream"),
        (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn get_checkpoint(State(s): State<Shared>, PathArgs(id): PathArgs<String>) -> Response {
    if let Some(r) = bad_id(&id) {
        return r;
    }
    let Some(dir) = s.job_dir(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no job {id}"));
    };
    let store = JobStore::new(&dir);
    let Some(step) = store.latest_checkpoint() else {
        return error(StatusCode::NOT_FOUND, "no checkpoint yet");
    };
    let files = store.checkpoint(step);
    let (Ok(bytes), Ok(env)) = (
        std::fs::read(&files.weights),
        std::fs::read(&files.envelope),
    ) else {
        return error(StatusCode::NOT_FOUND, "no checkpoint yet");
    };
    let hash = hex::encode(Sha256::digest(&bytes));
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::HeaderName::from_static("x-model-hash"), hash),
            (
                header::HeaderName::from_static("x-manifest-envelope"),
                STANDARD.encode(env),
            ),
        ],
        bytes,
    )
        .into_response()
}

#[utoipa::path(get, path = "/v1/operators", responses((status = 200, body = [OperatorStatus])))]
async fn list_operators(State(s): State<Shared>) -> Json<Vec<OperatorStatus>> {
    Json(s.lock().operators.clone())
}

#[utoipa::path(get, path = "/v1/jobs/{id}/operators/{operator}/evidence",
    params(("id" = String, Path, description = "job id, 64 hex"), ("operator" = u32, Path, description = "operator index")),
    responses((status = 200, body = EvidenceDoc), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn get_evidence(
    State(s): State<Shared>,
    PathArgs((id, operator)): PathArgs<(String, u32)>,
) -> Response {
    if let Some(r) = bad_id(&id) {
        return r;
    }
    let Some(dir) = s.job_dir(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no job {id}"));
    };
    let store = JobStore::new(&dir);
    let rec = store.read_operator(operator).ok();
    let ev = rec.as_ref().map(|r| store.read_evidence(r));
    match (rec, ev) {
        (Some(r), Some(Ok(ev))) => Json(EvidenceDoc {
            operator,
            job: id,
            address: format!("0x{}", r.address),
            nonce: r.nonce.to_string(),
            evidence: STANDARD.encode(ev),
        })
        .into_response(),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no evidence of operator {operator}"),
        ),
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

/// Makes every error answer a JSON [`ApiError`]: those of the layers (408 timeout, 413 body
/// limit) and axum's own (405) come as plain text or empty; their headers (`Allow`,
/// `Retry-After`) are kept.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return res;
    }
    let msg = match status {
        StatusCode::REQUEST_TIMEOUT => "the request took too long (api.request_timeout_s)".into(),
        StatusCode::PAYLOAD_TOO_LARGE => format!("the body is over {} bytes", MAX_BODY * 2),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".into(),
        s => s.canonical_reason().unwrap_or("error").to_string(),
    };
    let (mut parts, _) = res.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = error(status, msg);
    let (bparts, body) = body.into_parts();
    parts.headers.extend(bparts.headers);
    Response::from_parts(parts, body)
}

/// The router, with its layers (outermost first): JSON errors, the whole-request timeout
/// (`api.request_timeout_s`, 408), the concurrency limit (`api.max_in_flight` requests handled
/// at once, more wait), the token check of state-changing requests, and the body limit (twice
/// [`MAX_BODY`], 413).
pub fn router(state: Shared) -> Router {
    let api = state.options().clone();
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(api.max_in_flight));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/jobs", get(list_jobs).post(create_job))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/receipts", get(list_receipts))
        .route("/v1/jobs/{id}/receipts/{round}", get(get_receipts))
        .route("/v1/jobs/{id}/checkpoint", get(get_checkpoint))
        .route("/v1/operators", get(list_operators))
        .route(
            "/v1/jobs/{id}/operators/{operator}/evidence",
            get(get_evidence),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY * 2))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY * 2))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
            in_flight,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            api.request_timeout,
        ))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Starts the API on `listen` in a background thread with its own runtime; returns the bound
/// address once it accepts connections.
pub fn spawn_server(state: Shared, listen: &str) -> anyhow::Result<std::net::SocketAddr> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| anyhow::anyhow!("api.listen: {listen:?}: {e}"))?;
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("binding the API on {addr}: {e}"))?;
    std_listener.set_nonblocking(true)?;
    {
        // A longer accept queue than std's, for bursts of connections (Linux takes a second
        // listen() as a new backlog).
        use std::os::fd::AsRawFd as _;
        // SAFETY: listen on a socket we own; a failure leaves the old backlog.
        unsafe { libc::listen(std_listener.as_raw_fd(), 1024) };
    }
    let bound = std_listener.local_addr()?;
    let opts = conn::ConnOptions {
        max_connections: conn::fit_fd_limit(state.options().max_connections),
        header_timeout: state.options().header_timeout,
    };
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("the API runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("the API listener: {e}");
                        return;
                    }
                };
                let net = state.net.clone();
                conn::accept_loop(listener, router(state), opts, net).await;
            });
        })?;
    Ok(bound)
}

/// `conclave serve`: the API, and a worker that runs posted jobs one at a time on the local
/// peer set (each in `storage.dir/jobs/<id>`). Runs until killed.
/// `ready` is told the address once the API listens. The API token is read from
/// `[api] token_file`, or from `<storage.dir>/api-token`, created when missing
/// ([`load_or_create_token`]; its path is logged).
pub fn serve(
    cfg: OperatorConfig,
    ready: &mut dyn FnMut(std::net::SocketAddr),
) -> anyhow::Result<()> {
    use crate::config::{JobSection, StorageSection};
    use crate::run::run_local_with;
    use crate::store::write_atomic;
    let listen = cfg
        .api
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let (token, token_file) = load_or_create_token(&cfg.api, &cfg.storage.dir)?;
    tracing::info!(
        "API token in {}: POST /v1/jobs needs Authorization: Bearer <its content>",
        token_file.display()
    );
    let state = Shared::with_options(
        cfg.storage.dir.clone(),
        ApiOptions::new(&cfg.api, Some(&token)),
    );
    drop(token);
    let addr = spawn_server(state.clone(), &listen)?;
    ready(addr);
    loop {
        let Some((id, req, dir)) = state.next_job() else {
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        };
        let result = (|| -> anyhow::Result<()> {
            let path = dir.join("job.toml");
            write_atomic(&path, req.config.as_bytes())?;
            let job = JobSection {
                config: path,
                operators: req.operators,
                rounds: req.rounds,
                id: Some(id.clone()),
                ..cfg
                    .job
                    .clone()
                    .unwrap_or_else(|| JobSection::new(PathBuf::new()))
            };
            let run = OperatorConfig {
                job: Some(job),
                enclave: cfg.enclave.clone(),
                storage: StorageSection { dir: dir.clone() },
                api: Default::default(),
            };
            run_local_with(&run, &mut |ev| state.event(&id, ev))?;
            Ok(())
        })();
        match result {
            Ok(()) => state.set_state(&id, JobState::Done, None),
            Err(e) => {
                tracing::warn!("job {id} failed: {e:#}");
                state.set_state(&id, JobState::Failed, Some(format!("{e:#}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    const TINY: &str = "replicas = 2\n[model]\nlayers = 1\nheads = 2\nwidth = 32\n\
        [optimizer]\nkind = \"sparseloco\"\ninner_steps = 2\n[train]\nsteps = 8\n";
    const SECRET: &str = "a-test-token-0123456789";

    fn state(max_queued: usize, token: Option<&str>) -> Shared {
        let api = crate::config::ApiSection {
            max_queued,
            ..Default::default()
        };
        Shared::with_options(PathBuf::from("/nonexistent"), ApiOptions::new(&api, token))
    }

    async fn call(
        s: &Shared,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let res = router(s.clone())
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (parts.status, parts.headers, v)
    }

    fn job() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"config": TINY, "operators": 2, "rounds": 1}))
            .unwrap()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn posts_need_the_token_and_the_queue_is_bounded() {
        rt().block_on(async {
            let s = state(1, Some(SECRET));
            let bearer = format!("Bearer {SECRET}");
            let (st, h, v) = call(&s, "POST", "/v1/jobs", None, job()).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED);
            assert!(h.contains_key(header::WWW_AUTHENTICATE));
            assert!(v["error"].is_string());
            let (st, _, _) = call(&s, "POST", "/v1/jobs", Some("Bearer nope"), job()).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED);
            let (st, _, v) = call(&s, "POST", "/v1/jobs", Some(&bearer), job()).await;
            assert_eq!(st, StatusCode::CREATED, "{v}");
            let (st, h, v) = call(&s, "POST", "/v1/jobs", Some(&bearer), job()).await;
            assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
            assert_eq!(h[header::RETRY_AFTER], QUEUE_RETRY_AFTER_S.to_string());
            assert!(v["error"].as_str().unwrap().contains("max_queued"));
            // The worker takes one: room again.
            assert!(s.next_job().is_some());
            let (st, _, _) = call(&s, "POST", "/v1/jobs", Some(&bearer), job()).await;
            assert_eq!(st, StatusCode::CREATED);
            // GET stays open.
            let (st, _, v) = call(&s, "GET", "/v1/jobs", None, vec![]).await;
            assert_eq!(st, StatusCode::OK);
            assert_eq!(v.as_array().unwrap().len(), 2);
        });
    }

    #[test]
    fn without_a_token_nothing_changes_state() {
        rt().block_on(async {
            let s = Shared::new(PathBuf::from("/nonexistent"));
            let (st, _, v) = call(&s, "POST", "/v1/jobs", Some("Bearer x"), job()).await;
            assert_eq!(st, StatusCode::UNAUTHORIZED);
            assert!(v["error"].as_str().unwrap().contains("no API token"));
            let (st, _, v) = call(&s, "GET", "/health", None, vec![]).await;
            assert_eq!(st, StatusCode::OK);
            assert_eq!(v["jobs"], 0);
        });
    }

    #[test]
    fn layer_errors_are_json() {
        rt().block_on(async {
            let s = state(16, Some(SECRET));
            let bearer = format!("Bearer {SECRET}");
            let (st, h, v) = call(&s, "DELETE", "/v1/jobs", Some(&bearer), vec![]).await;
            assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
            assert!(h.contains_key(header::ALLOW));
            assert!(v["error"].is_string());
            let big = vec![b' '; MAX_BODY * 2 + 1];
            let req = Request::builder()
                .method("POST")
                .uri("/v1/jobs")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, big.len())
                .header(header::AUTHORIZATION, &bearer)
                .body(Body::from(big))
                .unwrap();
            let res = router(s.clone()).oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
            assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        });
    }

    #[test]
    fn the_document_names_the_bearer_scheme() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let post = &doc["paths"]["/v1/jobs"]["post"];
        assert_eq!(post["security"][0]["bearer"], serde_json::json!([]));
        for code in ["401", "429"] {
            assert!(post["responses"][code].is_object(), "{code}");
        }
        assert!(
            post["responses"]["429"]["headers"]["Retry-After"].is_object(),
            "{post}"
        );
    }
}
