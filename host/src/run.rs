//! `conclave run --config operator.toml`: the host proxy in local mode. It launches the
//! operators' enclaves (`sim` processes here; qemu confidential VMs on hardware), gets and
//! appraises their evidence, loads the job, drives the rounds (every enclave trains its share,
//! then every enclave aggregates the same signed set), checks every signed result it relays,
//! and stores receipts and checkpoints with atomic writes.
//!
//! Configuration is a TOML file plus `CONCLAVE_<SECTION>__<KEY>` environment overrides (for
//! example `CONCLAVE_JOB__ROUNDS=3`), checked at start with errors that name the key.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conclave_attestation::{
    AcceptedEvidence, BindingContext, Endorsements, Envelope, Evidence, JobId, Measurement, Nonce,
    Policy, UnixTime, appraise,
};
use conclave_protocol::channel::{Blob, JobSpec, PeerEvidence, Request, Response};
use conclave_protocol::receipt::RoundReceipt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::enclave::{Channel, Launch, Launched, launch_sim};

/// The operator configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// The job `conclave run` runs (`conclave serve` takes jobs from its API instead).
    #[serde(default)]
    pub job: Option<JobSection>,
    #[serde(default = "default_launch")]
    pub enclave: Launch,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub api: ApiSection,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Address of the HTTP API, e.g. `127.0.0.1:8080` (port 0: any free port). `conclave run`
    /// serves it only when set.
    #[serde(default)]
    pub listen: Option<String>,
}

fn default_launch() -> Launch {
    Launch::Sim {
        program: None,
        corpus: PathBuf::from(".data/moby-dick/package"),
        cache: PathBuf::from(".data/cache"),
        threads: 1,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    /// The training configuration (TOML) the job publishes.
    pub config: PathBuf,
    /// Enclaves in the local peer set (the job's active set).
    #[serde(default = "default_operators")]
    pub operators: u32,
    /// Rounds to run.
    #[serde(default = "default_rounds")]
    pub rounds: u64,
    /// 32 bytes, hex; default: SHA-256 of the config hash.
    #[serde(default)]
    pub id: Option<String>,
    /// Allowed measurements (hex). Default: the sim measurement, for sim enclaves.
    #[serde(default)]
    pub measurements: Vec<String>,
    /// Accept sim evidence (development only; on by default with the sim launcher).
    #[serde(default)]
    pub allow_sim: Option<bool>,
    /// Seconds an enclave may take for one request before the run fails.
    #[serde(default = "default_timeout")]
    pub request_timeout_s: u64,
}

fn default_operators() -> u32 {
    3
}
fn default_rounds() -> u64 {
    2
}
fn default_timeout() -> u64 {
    600
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Receipts, checkpoints and enclave logs go here.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection { dir: default_dir() }
    }
}

fn default_dir() -> PathBuf {
    PathBuf::from("runs/operator")
}

/// Applies `CONCLAVE_A__B=value` overrides to a TOML table: nested keys split on `__`,
/// lower-cased; the value is read as a TOML literal when it is one (numbers, booleans, arrays),
/// else as a string. Variables without `__` (such as `CONCLAVE_PYTHON`) are not config keys.
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<()> {
    for (k, v) in vars {
        let Some(rest) = k.strip_prefix("CONCLAVE_") else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            bail!("{k}: empty key segment");
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(v));
        let mut t = &mut *table;
        for seg in &path[..path.len() - 1] {
            let entry = t
                .entry(seg.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry
                .as_table_mut()
                .with_context(|| format!("{k}: {seg} is not a section"))?;
        }
        t.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

impl OperatorConfig {
    /// Reads the file, applies the environment's overrides and checks the result.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the operator config {}", path.display()))?;
        let mut table: toml::Table =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        apply_env(&mut table, env)?;
        let mut cfg: OperatorConfig = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("in {} (with CONCLAVE_* overrides)", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(job) = &mut cfg.job
            && job.config.is_relative()
        {
            job.config = base.join(&job.config);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(job) = &self.job {
            if job.operators == 0 || job.operators > 64 {
                bail!("job.operators must be 1 to 64");
            }
            if job.rounds == 0 {
                bail!("job.rounds must be at least 1");
            }
            if let Some(id) = &job.id {
                JobId::from_hex(id).map_err(|e| anyhow::anyhow!("job.id: {e}"))?;
            }
            for m in &job.measurements {
                Measurement::from_hex(m)
                    .map_err(|e| anyhow::anyhow!("job.measurements: {m}: {e}"))?;
            }
        }
        if let Some(l) = &self.api.listen {
            l.parse::<std::net::SocketAddr>()
                .map_err(|e| anyhow::anyhow!("api.listen: {l:?}: {e}"))?;
        }
        if let Launch::Qemu(q) = &self.enclave {
            q.validate()?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename, fsync of
/// the folder. A reader sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("renaming onto {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What `conclave-enclave spec` prints for a training config: the job's published facts.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishedSpec {
    pub config_hash: String,
    pub data_root: String,
    pub initial_model_hash: String,
    /// Parameters of the model.
    #[serde(default)]
    pub params: u64,
}

/// One enclave as the host sees it.
pub struct Operator {
    pub index: u32,
    pub launched: Option<Launched>,
    pub channel: Channel,
    pub address: String,
    pub peer: PeerEvidence,
    pub accepted: AcceptedEvidence,
    pub ctx: BindingContext,
}

/// Wall-clock now for appraisals made by the host (verification functions take it as input).
pub fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// Appraises an enclave's evidence under `policy`: the host verifies what it relays.
pub fn appraise_peer(
    peer: &PeerEvidence,
    job: JobId,
    policy: &Policy,
    at: UnixTime,
) -> Result<(AcceptedEvidence, BindingContext)> {
    let ev = Evidence::decode(&peer.evidence.0).context("the enclave's evidence")?;
    let a = appraise(&ev, &Endorsements::default(), policy, at)?;
    let acc = a.accepted().with_context(|| {
        format!(
            "the enclave's evidence is rejected: {}",
            a.reasons
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let ctx = BindingContext {
        job_id: job,
        nonce: Nonce::from_hex(&peer.nonce)?,
    };
    Ok((acc, ctx))
}

/// Checks a signed result against its signer's accepted evidence; returns the payload.
pub fn check_signed(envelope: &[u8], domain: &str, kind: &str, op: &Operator) -> Result<Vec<u8>> {
    let env = Envelope::decode(envelope).with_context(|| format!("{kind} envelope"))?;
    let signer = env
        .verify_as(domain, kind, &op.accepted, &op.ctx)
        .with_context(|| format!("{kind} from operator {}", op.index))?;
    if format!("0x{}", hex::encode(signer.0)) != op.address {
        bail!("{kind} signed by another key than operator {}'s", op.index);
    }
    Ok(env.payload)
}

/// The result of a local run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub job_id: String,
    pub operators: u32,
    pub rounds: u64,
    pub model_hash: String,
    pub round_seconds: Vec<f64>,
    pub losses: Vec<f64>,
    pub checkpoint: PathBuf,
}

/// A fresh 32-byte value, hex, for Hello nonces and throwaway job ids: uniqueness, not secrecy,
/// is what matters (the time in nanoseconds, the process id and what it is for).
pub fn random_nonce(tag: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    hex::encode(Sha256::digest(format!("{tag}/{t}/{}", std::process::id())))
}

/// What a run reports as it goes (the API and metrics follow it).
#[derive(Debug, Clone)]
pub enum Event {
    Attested {
        operator: u32,
        address: String,
        tee: String,
    },
    Round {
        round: u64,
        loss: f64,
        seconds: f64,
        model_hash: String,
        /// Bytes of signed updates relayed this round (sent by the enclaves).
        update_bytes: u64,
    },
}

/// What both `conclave run` and `conclave node` derive from a job section before launching:
/// the config text, the customer's published facts (`conclave-enclave spec`), the job id, the
/// appraisal policy, the envelope domain and the sim launch with its program resolved.
pub struct PreparedJob {
    pub config_text: String,
    pub published: PublishedSpec,
    pub job_hex: String,
    pub job: JobId,
    pub policy: Policy,
    pub domain: String,
    pub launch: Launch,
}

/// Prepares a job for sim enclaves (qemu needs SEV-SNP or TDX hardware with KVM).
pub fn prepare_job(jobcfg: &JobSection, enclave: &Launch) -> Result<PreparedJob> {
    let config_text = std::fs::read_to_string(&jobcfg.config)
        .with_context(|| format!("reading the job config {}", jobcfg.config.display()))?;
    let Launch::Sim {
        program,
        corpus,
        cache,
        threads,
    } = enclave
    else {
        bail!(
            "enclave.kind = \"qemu\" needs SEV-SNP or TDX hardware with KVM; this host runs sim enclaves"
        );
    };
    // The customer's published facts of the job.
    let program = program
        .clone()
        .unwrap_or_else(crate::enclave::default_enclave_program);
    let out = std::process::Command::new(&program)
        .arg("spec")
        .arg("--config")
        .arg(&jobcfg.config)
        .arg("--corpus")
        .arg(corpus)
        .arg("--cache")
        .arg(cache)
        .output()
        .with_context(|| format!("running {} spec", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} spec failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let published: PublishedSpec =
        serde_json::from_slice(&out.stdout).context("reading the published spec")?;
    let job_hex = match &jobcfg.id {
        Some(id) => id.to_ascii_lowercase(),
        None => hex::encode(Sha256::digest(published.config_hash.as_bytes())),
    };
    let job = JobId::from_hex(&job_hex)?;
    let mut policy = Policy {
        allow_sim: jobcfg.allow_sim.unwrap_or(true),
        ..Policy::default()
    };
    policy.measurements = if jobcfg.measurements.is_empty() {
        vec![conclave_attestation::sim::default_sim_measurement()]
    } else {
        jobcfg
            .measurements
            .iter()
            .map(|m| Measurement::from_hex(m))
            .collect::<Result<_, _>>()?
    };
    let domain = format!("conclave/v1/job/{job_hex}");
    let launch = Launch::Sim {
        program: Some(program.clone()),
        corpus: corpus.clone(),
        cache: cache.clone(),
        threads: *threads,
    };

    Ok(PreparedJob {
        config_text,
        published,
        job_hex,
        job,
        policy,
        domain,
        launch,
    })
}

/// Runs the job of `cfg` on a local peer set of sim enclaves.
pub fn run_local(cfg: &OperatorConfig) -> Result<RunSummary> {
    run_local_with(cfg, &mut |_| {})
}

/// [`run_local`], reporting progress to `events`.
pub fn run_local_with(cfg: &OperatorConfig, events: &mut dyn FnMut(Event)) -> Result<RunSummary> {
    let jobcfg = cfg
        .job
        .as_ref()
        .context("the operator config has no [job] section")?;
    let dir = cfg.storage.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let PreparedJob {
        config_text,
        published,
        job_hex,
        job,
        policy,
        domain,
        launch,
    } = prepare_job(jobcfg, &cfg.enclave)?;

    // Launch, hello, appraise.
    let mut ops: Vec<Operator> = Vec::new();
    for i in 0..jobcfg.operators {
        let socket = dir.join(format!("enclave-{i}.sock"));
        let scratch = dir.join(format!("enclave-{i}"));
        let launched = launch_sim(
            &launch,
            &socket,
            &scratch,
            &dir.join(format!("enclave-{i}.log")),
        )?;
        let mut channel = Channel::connect(&socket, Duration::from_secs(jobcfg.request_timeout_s))?;
        let nonce = random_nonce("run");
        let Response::Hello {
            address,
            evidence,
            tee,
            ..
        } = channel.call(&Request::Hello {
            job_id: job_hex.clone(),
            nonce: nonce.clone(),
        })?
        else {
            bail!("operator {i}: hello answered with something else");
        };
        let peer = PeerEvidence { evidence, nonce };
        let (accepted, ctx) =
            appraise_peer(&peer, job, &policy, now()).with_context(|| format!("operator {i}"))?;
        // What an auditor needs to check this operator's signed results later.
        write_atomic(&dir.join(format!("evidence-{i}.bin")), &peer.evidence.0)?;
        write_atomic(
            &dir.join(format!("operator-{i}.json")),
            &serde_json::to_vec_pretty(&serde_json::json!({
                "operator": i,
                "address": format!("0x{address}"),
                "job_id": job_hex,
                "nonce": peer.nonce,
                "evidence": format!("evidence-{i}.bin"),
            }))?,
        )?;
        ops.push(Operator {
            index: i,
            launched: Some(launched),
            channel,
            address: format!("0x{address}"),
            peer,
            accepted,
            ctx,
        });
        eprintln!("operator {i}: enclave 0x{address} attested ({tee})");
        events(Event::Attested {
            operator: i,
            address: format!("0x{address}"),
            tee,
        });
    }

    // Load the job everywhere; every enclave must start from the same model.
    let mut start_hashes = BTreeMap::new();
    for op in &mut ops {
        let spec = JobSpec {
            job_id: job_hex.clone(),
            config: config_text.clone(),
            config_hash: published.config_hash.clone(),
            data_root: published.data_root.clone(),
            operator: op.index,
            operators: jobcfg.operators,
            policy: policy.to_toml(),
            initial_model_hash: Some(published.initial_model_hash.clone()),
        };
        let env = op.channel.signed(&Request::LoadJob { spec })?;
        let payload = check_signed(&env, &domain, "job-accepted", op)?;
        let v: serde_json::Value = serde_json::from_slice(&payload)?;
        start_hashes.insert(op.index, v["model_hash"].as_str().unwrap_or("").to_string());
    }
    let first = start_hashes.values().next().cloned().unwrap_or_default();
    if start_hashes.values().any(|h| *h != first) || first != published.initial_model_hash {
        bail!("enclaves start from different models: {start_hashes:?}");
    }

    let peers: Vec<PeerEvidence> = ops.iter().map(|o| o.peer.clone()).collect();
    let mut round_seconds = Vec::new();
    let mut losses = Vec::new();
    let mut model_hash = first;
    for round in 0..jobcfg.rounds {
        let t = Instant::now();
        // Every enclave trains its share, in parallel (they are separate processes).
        let updates: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = ops
                .iter_mut()
                .map(|op| s.spawn(move || op.channel.signed(&Request::TrainRound { round })))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a round thread panicked"))?
                })
                .collect::<Result<Vec<_>>>()
        })?;
        for (op, u) in ops.iter().zip(&updates) {
            check_signed(u, &domain, "update", op)?;
        }
        let blobs: Vec<Blob> = updates.iter().map(|u| Blob(u.clone())).collect();
        let receipts: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = ops
                .iter_mut()
                .map(|op| {
                    let req = Request::Aggregate {
                        round,
                        updates: blobs.clone(),
                        peers: peers.clone(),
                    };
                    s.spawn(move || op.channel.signed(&req))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a round thread panicked"))?
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let rdir = dir.join("rounds").join(format!("{round:06}"));
        let mut after = BTreeMap::new();
        let mut loss = 0.0;
        for (op, r) in ops.iter().zip(&receipts) {
            let payload = check_signed(r, &domain, "round-receipt", op)?;
            let receipt = RoundReceipt::from_json(&payload)
                .with_context(|| format!("operator {}'s receipt", op.index))?;
            if receipt.round != round || receipt.model_hash_before != model_hash {
                bail!(
                    "operator {}'s receipt is for round {} from {}",
                    op.index,
                    receipt.round,
                    receipt.model_hash_before
                );
            }
            loss += receipt.loss / ops.len() as f64;
            after.insert(op.index, receipt.model_hash_after.clone());
            write_atomic(&rdir.join(format!("receipt-{}.env", op.index)), r)?;
            write_atomic(&rdir.join(format!("receipt-{}.json", op.index)), &payload)?;
        }
        for (op, u) in ops.iter().zip(&updates) {
            write_atomic(&rdir.join(format!("update-{}.env", op.index)), u)?;
        }
        let h = after.values().next().cloned().unwrap_or_default();
        if after.values().any(|x| *x != h) {
            bail!("round {round}: operators disagree on the model: {after:?}");
        }
        model_hash = h;
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "round {round}: loss {loss:.4}, model {model_hash} (all {} operators agree), {secs:.1} s",
            ops.len()
        );
        round_seconds.push(secs);
        losses.push(loss);
        events(Event::Round {
            round,
            loss,
            seconds: secs,
            model_hash: model_hash.clone(),
            update_bytes: updates.iter().map(|u| u.len() as u64).sum(),
        });
    }

    // The final checkpoint from operator 0, checked before it is stored.
    let op = &mut ops[0];
    let Response::Checkpoint { weights, manifest } = op.channel.call(&Request::Checkpoint)? else {
        bail!("checkpoint answered with something else");
    };
    let payload = check_signed(&manifest.0, &domain, "checkpoint-manifest", op)?;
    let m: serde_json::Value = serde_json::from_slice(&payload)?;
    let wh = hex::encode(Sha256::digest(&weights.0));
    if m["model_hash"].as_str() != Some(wh.as_str()) || wh != model_hash {
        bail!("the checkpoint's weights hash {wh}, the manifest and rounds say otherwise");
    }
    let cdir = dir.join("checkpoints");
    let stem = format!("step-{:06}", m["step"].as_u64().unwrap_or(0));
    write_atomic(&cdir.join(format!("{stem}.safetensors")), &weights.0)?;
    write_atomic(&cdir.join(format!("{stem}.json")), &payload)?;
    write_atomic(&cdir.join(format!("{stem}.manifest.env")), &manifest.0)?;
    for op in &mut ops {
        let _ = op.channel.call(&Request::Shutdown);
    }
    let summary = RunSummary {
        job_id: job_hex,
        operators: jobcfg.operators,
        rounds: jobcfg.rounds,
        model_hash,
        round_seconds,
        losses,
        checkpoint: cdir.join(format!("{stem}.json")),
    };
    write_atomic(
        &dir.join("summary.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_nest_and_type_their_values() {
        let mut t: toml::Table =
            toml::from_str("[job]\nconfig = \"a.toml\"\nrounds = 2\n").unwrap();
        apply_env(
            &mut t,
            [
                ("CONCLAVE_JOB__ROUNDS".to_string(), "5".to_string()),
                ("CONCLAVE_STORAGE__DIR".to_string(), "/tmp/x".to_string()),
                ("CONCLAVE_PYTHON".to_string(), "/usr/bin/python".to_string()),
                ("OTHER__X".to_string(), "1".to_string()),
            ],
        )
        .unwrap();
        let cfg: OperatorConfig = toml::Value::Table(t).try_into().unwrap();
        assert_eq!(cfg.job.unwrap().rounds, 5);
        assert_eq!(cfg.storage.dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn unknown_and_invalid_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("op.toml");
        std::fs::write(&p, "[job]\nconfig = \"a.toml\"\nrund = 2\n").unwrap();
        let e = format!("{:#}", OperatorConfig::load(&p, []).unwrap_err());
        assert!(e.contains("rund"), "{e}");
        std::fs::write(&p, "[job]\nconfig = \"a.toml\"\n").unwrap();
        let e = format!(
            "{:#}",
            OperatorConfig::load(&p, [("CONCLAVE_JOB__OPERATORS".into(), "0".into())]).unwrap_err()
        );
        assert!(e.contains("job.operators"), "{e}");
        let e = format!(
            "{:#}",
            OperatorConfig::load(&p, [("CONCLAVE_JOB__ID".into(), "\"xyz\"".into())]).unwrap_err()
        );
        assert!(e.contains("job.id"), "{e}");
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
    }
}
