//! The API's request and response bodies (with their OpenAPI schemas) and the checks a job
//! request passes before it is queued.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Largest request body: a job's training config is small.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub jobs: usize,
}

/// A job to run on the local peer set.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The training configuration (TOML, at most 64 KiB); its `replicas` must equal `operators`
    /// and its `[optimizer] kind` must be `demo` or `sparseloco`.
    pub config: String,
    /// Enclaves in the peer set (1 to 16).
    #[schema(minimum = 1, maximum = 16)]
    pub operators: u32,
    /// Rounds to run (1 to 10000).
    #[schema(minimum = 1, maximum = 10000)]
    pub rounds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// 32 bytes, hex.
    pub id: String,
    pub state: JobState,
    pub operators: u32,
    pub rounds: u64,
    pub rounds_done: u64,
    /// The model hash after the last closed round.
    pub model_hash: Option<String>,
    pub last_loss: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub error: String,
}

/// One operator's signed round receipt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignedReceipt {
    pub round: u64,
    pub operator: u32,
    /// The encoded envelope (base64): check it against the operator's evidence.
    pub envelope: String,
    /// The receipt it signs (JSON).
    #[schema(value_type = Object)]
    pub receipt: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperatorStatus {
    pub operator: u32,
    pub job: String,
    pub address: String,
    pub tee: String,
    /// Unix seconds of the operator's last sign of life (its last answer).
    pub heartbeat: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvidenceDoc {
    pub operator: u32,
    pub job: String,
    pub address: String,
    /// The nonce the report data binds with the key and job (hex).
    pub nonce: String,
    /// The evidence bundle (base64): `conclave verify` reads it.
    pub evidence: String,
}

/// Checks a job request before it is queued.
pub fn validate_job(req: &JobRequest) -> Result<(), String> {
    if req.config.len() > MAX_BODY {
        return Err(format!(
            "config: {} bytes, at most {MAX_BODY}",
            req.config.len()
        ));
    }
    if !(1..=16).contains(&req.operators) {
        return Err(format!("operators: {} is not in 1..=16", req.operators));
    }
    if !(1..=10_000).contains(&req.rounds) {
        return Err(format!("rounds: {} is not in 1..=10000", req.rounds));
    }
    let t: toml::Table = toml::from_str(&req.config).map_err(|e| format!("config: {e}"))?;
    match t.get("replicas").and_then(|v| v.as_integer()) {
        Some(r) if r == req.operators as i64 => {}
        Some(r) => {
            return Err(format!(
                "config: replicas = {r}, operators = {}",
                req.operators
            ));
        }
        None => return Err("config: replicas must be set to the number of operators".into()),
    }
    let kind = t
        .get("optimizer")
        .and_then(|o| o.get("kind"))
        .and_then(|k| k.as_str());
    match kind {
        Some("demo" | "sparseloco") => Ok(()),
        other => Err(format!(
            "config: [optimizer] kind must be demo or sparseloco, not {other:?}"
        )),
    }
}
