//! The host's HTTP API (axum), described by an OpenAPI document at `/openapi.json` (utoipa).
//!
//! Local mode: jobs posted here are queued and run one at a time by a worker with
//! [`crate::run::run_local_with`] on a local peer set of enclaves; their signed receipts and
//! checkpoints are served from the job's storage folder exactly as the enclaves signed them.
//! Request bodies are checked before anything is queued, with a 4xx naming what is wrong.

use std::path::PathBuf;

use axum::extract::FromRequestParts;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use utoipa::OpenApi;

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
    ))
)]
pub struct ApiDoc;

mod models;
mod state;
pub use models::*;
use state::unix_now;
pub use state::{Inner, Metrics, Shared};

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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[utoipa::path(get, path = "/v1/jobs", responses((status = 200, body = [Job])))]
async fn list_jobs(State(s): State<Shared>) -> Json<Vec<Job>> {
    Json(s.lock().jobs.values().map(|e| e.job.clone()).collect())
}

#[utoipa::path(post, path = "/v1/jobs", request_body = JobRequest,
    responses((status = 201, body = Job), (status = 400, body = ApiError), (status = 413, body = ApiError), (status = 415, body = ApiError), (status = 422, body = ApiError)))]
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
    let seq = s.lock().jobs.len();
    let id = hex::encode(Sha256::digest(format!(
        "conclave/v1/local-job/{seq}/{}/{}",
        unix_now(),
        req.config
    )));
    let dir = s.root.join("jobs").join(&id);
    s.add_job(&id, req.operators, req.rounds, dir, JobState::Queued);
    let mut g = s.lock();
    g.queue.push_back((id.clone(), req));
    let job = g.jobs.get(&id).map(|e| e.job.clone());
    drop(g);
    match job {
        Some(j) => (StatusCode::CREATED, Json(j)).into_response(),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "job vanished"),
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

/// The router.
pub fn router(state: Shared) -> Router {
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
    let bound = std_listener.local_addr()?;
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
                if let Err(e) = axum::serve(listener, router(state)).await {
                    tracing::error!("the API server: {e}");
                }
            });
        })?;
    Ok(bound)
}

/// `conclave serve`: the API, and a worker that runs posted jobs one at a time on the local
/// peer set (each in `storage.dir/jobs/<id>`). Runs until killed.
/// `ready` is told the address once the API listens.
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
    let state = Shared::new(cfg.storage.dir.clone());
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
                ..cfg.job.clone().unwrap_or(JobSection {
                    config: PathBuf::new(),
                    operators: 1,
                    rounds: 1,
                    id: None,
                    measurements: Vec::new(),
                    allow_sim: None,
                    request_timeout_s: 600,
                })
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
