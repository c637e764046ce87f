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
    /// Whether the job is sealed (its data, updates and model readable only inside attested
    /// enclaves); known once the job is prepared.
    pub sealed: bool,
    /// What sealing means for this job, in words (`NOT SEALED: ...` for a job in the clear).
    pub sealing: String,
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

/// Keys of the training config (`TrainConfig` and `DataConfig` in `conclave-enclave`) whose
/// values are paths on the host. A posted config may set none of them: the host reads the
/// config (`conclave-enclave spec` loads `init`, prepares `data`) before any enclave does, so a
/// path there would let a client read host files (or `/dev/zero`) or choose where jobs write.
/// Keep in step with `enclave/src/train/config.rs`.
pub const HOST_PATH_KEYS: [&str; 4] = ["out", "init", "data.corpus", "data.cache"];

/// Most parameters a posted config's model may have (2^24 ≈ 16.8 M: 64 MiB of f32 weights per
/// copy; the host's spec step holds one copy per replica plus the optimiser state).
/// Estimated as `layers · (4 + 2·mlp_ratio) · width² + vocab · width · (1 or 2, tied or not)
/// + context · width` (learned positions).
pub const MAX_MODEL_PARAMS: u128 = 1 << 24;

/// Most activations one training step of a posted config may need (2^28 f32 ≈ 1 GiB),
/// estimated as `batch · context · layers · width · (10 + 2·mlp_ratio) + batch · layers · heads
/// · context²` (the attention matrices).
pub const MAX_STEP_ACTIVATIONS: u128 = 1 << 28;

/// Most libtorch threads a posted config may ask for.
pub const MAX_THREADS: i64 = 64;

fn int_key(t: &toml::Table, key: &str, default: i64) -> Result<i64, String> {
    match t.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_integer()
            .ok_or_else(|| format!("config: {key} must be an integer")),
    }
}

/// The parameter and activation estimates of a config's model, checked against
/// [`MAX_MODEL_PARAMS`] and [`MAX_STEP_ACTIVATIONS`].
fn check_model_size(t: &toml::Table) -> Result<(), String> {
    use conclave_protocol::model::{ModelConfig, Positions};
    let model: ModelConfig = match t.get("model") {
        None => ModelConfig::default(),
        Some(v) => v
            .clone()
            .try_into()
            .map_err(|e| format!("config: [model]: {e}"))?,
    };
    let empty = toml::Table::new();
    let section = |name: &str| -> Result<&toml::Table, String> {
        match t.get(name) {
            None => Ok(&empty),
            Some(v) => v
                .as_table()
                .ok_or_else(|| format!("config: {name} must be a table")),
        }
    };
    let vocab = int_key(section("data")?, "vocab", 2048)?;
    let batch = int_key(section("train")?, "batch", 8)?;
    if !(0..=1 << 20).contains(&vocab) {
        return Err(format!("config: data.vocab = {vocab} is out of range"));
    }
    if !(0..=1 << 20).contains(&batch) {
        return Err(format!("config: train.batch = {batch} is out of range"));
    }
    let u = |x: usize| x as u128;
    let (l, w, c, h, r) = (
        u(model.layers),
        u(model.width),
        u(model.context),
        u(model.heads),
        u(model.mlp_ratio),
    );
    let sat = |a: u128, b: u128| a.saturating_mul(b);
    let embed = sat(
        sat(vocab as u128, w),
        if model.tie_embeddings { 1 } else { 2 },
    );
    let positions = if model.positions == Positions::Learned {
        sat(c, w)
    } else {
        0
    };
    let params = sat(sat(l, 4 + 2 * r.min(1 << 20)), sat(w, w))
        .saturating_add(embed)
        .saturating_add(positions);
    if params > MAX_MODEL_PARAMS {
        return Err(format!(
            "config: [model] layers = {}, width = {}, mlp_ratio = {}, data.vocab = {vocab}: about \
             {params} parameters, over MAX_MODEL_PARAMS = {MAX_MODEL_PARAMS}",
            model.layers, model.width, model.mlp_ratio
        ));
    }
    let b = batch as u128;
    let acts = sat(sat(sat(b, c), sat(l, w)), 10 + 2 * r.min(1 << 20))
        .saturating_add(sat(sat(b, sat(l, h)), sat(c, c)));
    if acts > MAX_STEP_ACTIVATIONS {
        return Err(format!(
            "config: [model] context = {}, layers = {}, width = {}, heads = {}, train.batch = \
             {batch}: about {acts} activations a step, over MAX_STEP_ACTIVATIONS = \
             {MAX_STEP_ACTIVATIONS}",
            model.context, model.layers, model.width, model.heads
        ));
    }
    Ok(())
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
    for key in HOST_PATH_KEYS {
        let set = match key.split_once('.') {
            None => t.contains_key(key),
            Some((section, name)) => match t.get(section) {
                None => false,
                Some(toml::Value::Table(s)) => s.contains_key(name),
                Some(_) => return Err(format!("config: {section} must be a table")),
            },
        };
        if set {
            return Err(format!(
                "config: {key} names a host path; a posted job may not set it (the host \
                 chooses where jobs read and write)"
            ));
        }
    }
    let threads = int_key(&t, "threads", 0)?;
    if !(0..=MAX_THREADS).contains(&threads) {
        return Err(format!(
            "config: threads = {threads} is not in 0..={MAX_THREADS}"
        ));
    }
    check_model_size(&t)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = "replicas = 2\n[model]\nlayers = 1\nheads = 2\nwidth = 32\n\
        [data]\nvocab = 400\n[train]\nsteps = 8\nbatch = 2\n\
        [optimizer]\nkind = \"sparseloco\"\ninner_steps = 2\n";

    fn check(config: &str) -> Result<(), String> {
        validate_job(&JobRequest {
            config: config.into(),
            operators: 2,
            rounds: 1,
        })
    }

    #[test]
    fn host_paths_are_refused_by_key() {
        check(TINY).unwrap();
        for (config, key) in [
            (format!("init = \"/etc/passwd\"\n{TINY}"), "init"),
            (format!("out = \"x\"\n{TINY}"), "out"),
            (
                TINY.replace("[data]\n", "[data]\ncorpus = \"/\"\n"),
                "data.corpus",
            ),
            (
                TINY.replace("[data]\n", "[data]\ncache = \"/\"\n"),
                "data.cache",
            ),
        ] {
            let e = check(&config).unwrap_err();
            assert!(e.contains(key), "{key}: {e}");
        }
        // A section that is not a table is refused by name.
        let e = check(&format!(
            "data = \"/\"\n{}",
            TINY.replace("[data]\nvocab = 400\n", "")
        ))
        .unwrap_err();
        assert!(e.contains("data must be a table"), "{e}");
    }

    #[test]
    fn model_size_is_bounded() {
        // The trainer's default model (no [model] section) is well inside.
        check("replicas = 2\n[optimizer]\nkind = \"demo\"\n").unwrap();
        let e = check(&TINY.replace("width = 32", "width = 4096")).unwrap_err();
        assert!(e.contains("MAX_MODEL_PARAMS"), "{e}");
        let e = check(&TINY.replace("vocab = 400", "vocab = 1000000")).unwrap_err();
        assert!(e.contains("MAX_MODEL_PARAMS"), "{e}");
        let e = check(&TINY.replace("layers = 1", "layers = 9223372036854775807")).unwrap_err();
        assert!(e.contains("MAX_MODEL_PARAMS"), "{e}");
        let e = check(&TINY.replace("batch = 2", "batch = 100000")).unwrap_err();
        assert!(e.contains("MAX_STEP_ACTIVATIONS"), "{e}");
        let e = check(&TINY.replace("[model]\n", "[model]\ncontext = 100000\n")).unwrap_err();
        assert!(e.contains("MAX_STEP_ACTIVATIONS"), "{e}");
        let e = check(&format!("threads = 1000\n{TINY}")).unwrap_err();
        assert!(e.contains("threads"), "{e}");
        let e = check(&TINY.replace("batch = 2", "batch = \"x\"")).unwrap_err();
        assert!(e.contains("batch"), "{e}");
    }
}
