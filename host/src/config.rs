//! The operator's configuration files: `conclave run` and `conclave serve` read an
//! [`OperatorConfig`], `conclave node` a [`NodeConfig`] (the same `[job]`, `[enclave]` and
//! `[storage]` sections plus `[node]` and an optional `[chain]`). Every struct denies unknown
//! keys, defaults live beside the field they fill, and each file is validated once at start
//! with errors that name the key.
//!
//! A TOML file plus `CONCLAVE_<SECTION>__<KEY>` environment overrides (for example
//! `CONCLAVE_JOB__ROUNDS=3`), applied by [`apply_env`] before the file is typed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use conclave_attestation::eip712::job_word;
use conclave_attestation::{JobId, Measurement};
use conclave_protocol::JobTee;
use libp2p::Multiaddr;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::enclave::Launch;

/// The operator configuration of `conclave run` and `conclave serve`.
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Address of the HTTP API, e.g. `127.0.0.1:8080` (port 0: any free port). `conclave run`
    /// serves it only when set.
    #[serde(default)]
    pub listen: Option<String>,
    /// A file holding the bearer token that state-changing requests (`POST /v1/jobs`) must
    /// present (`Authorization: Bearer <token>`; surrounding whitespace ignored). Default:
    /// `<storage.dir>/api-token`, created by `conclave serve` (32 random bytes, hex, mode 0600)
    /// when missing; a relative path is relative to the working directory, like `storage.dir`.
    /// Without a token (`conclave run`'s API) no state-changing request is accepted.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Jobs that may wait in `conclave serve`'s queue; beyond it `POST /v1/jobs` answers 429
    /// with `Retry-After`.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// Open connections the API keeps; at the cap, the connection idle the longest (no request
    /// in progress) is closed to admit a new one, and when none is idle the new one is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests handled at once; more wait for a slot (within `request_timeout_s`).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Seconds a whole request may take, body and handler included (then 408).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: u64,
    /// Seconds a connection may take to send a request's headers, counted from its accept or
    /// its previous response: slow-header and idle keep-alive connections are closed after it.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_s: u64,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: None,
            token_file: None,
            max_queued: default_max_queued(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
            request_timeout_s: default_request_timeout(),
            header_timeout_s: default_header_timeout(),
        }
    }
}

fn default_max_queued() -> usize {
    16
}
fn default_max_connections() -> usize {
    512
}
fn default_max_in_flight() -> usize {
    64
}
fn default_request_timeout() -> u64 {
    30
}
fn default_header_timeout() -> u64 {
    10
}

impl ApiSection {
    /// Checks the section, naming the key.
    pub fn validate(&self) -> Result<()> {
        if let Some(l) = &self.listen {
            l.parse::<std::net::SocketAddr>()
                .map_err(|e| anyhow::anyhow!("api.listen: {l:?}: {e}"))?;
        }
        if !(1..=100_000).contains(&self.max_queued) {
            bail!("api.max_queued must be 1 to 100000");
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            bail!("api.max_connections must be 1 to 1000000");
        }
        if !(1..=100_000).contains(&self.max_in_flight) {
            bail!("api.max_in_flight must be 1 to 100000");
        }
        if !(1..=86_400).contains(&self.request_timeout_s) {
            bail!("api.request_timeout_s must be 1 to 86400");
        }
        if !(1..=3_600).contains(&self.header_timeout_s) {
            bail!("api.header_timeout_s must be 1 to 3600");
        }
        if let Some(f) = &self.token_file
            && f.as_os_str().is_empty()
        {
            bail!("api.token_file: empty path");
        }
        Ok(())
    }
}

/// The enclave launch when a config has no `[enclave]` section: a local sim process.
pub fn default_launch() -> Launch {
    Launch::Sim {
        program: None,
        corpus: PathBuf::from(".data/moby-dick/package"),
        cache: PathBuf::from(".data/cache"),
        threads: 1,
    }
}

/// The `[job]` section.
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
    /// Accept sim evidence (development only; on by default for a sim job, and refused for a
    /// hardware job).
    #[serde(default)]
    pub allow_sim: Option<bool>,
    /// The kind of enclave the job runs in: `sim` (development), `snp`, `tdx` or `hardware`
    /// (either). Written into the job document, which every enclave obeys.
    #[serde(default = "default_tee")]
    pub tee: JobTee,
    /// Share of the active operators, in basis points, whose enclaves must sign a round's
    /// certificate before the chain accepts the round (more than 5000).
    #[serde(default = "default_quorum_bps")]
    pub quorum_bps: u16,
    /// Seconds an enclave may take for one request before the run fails.
    #[serde(default = "default_timeout")]
    pub request_timeout_s: u64,
    /// The customer's published facts of the job (the JSON `conclave-enclave spec` prints:
    /// config hash, dataset root, initial model). Default: run `spec` here, on the corpus (which
    /// a sealed job's operators do not have).
    #[serde(default)]
    pub published: Option<PathBuf>,
    /// A sealed job: the sealed dataset folder (`conclave data seal --out`). The enclaves
    /// read it, and the job document names its sealing id, key check and root.
    #[serde(default)]
    pub sealed_data: Option<PathBuf>,
    /// A sealed job: the customer's key broker (`https://host:port`, `conclave keys serve`).
    #[serde(default)]
    pub key_broker: Option<String>,
    /// The key broker's TLS certificate (PEM) that the connection must present.
    #[serde(default)]
    pub key_broker_cert: Option<PathBuf>,
}

fn default_operators() -> u32 {
    3
}
fn default_tee() -> JobTee {
    JobTee::Sim
}
/// Three fifths: 2 of 3, 3 of 4, 3 of 5, 6 of 10.
pub const DEFAULT_QUORUM_BPS: u16 = 6000;
fn default_quorum_bps() -> u16 {
    DEFAULT_QUORUM_BPS
}
fn default_rounds() -> u64 {
    2
}
fn default_timeout() -> u64 {
    600
}

impl JobSection {
    /// A section with every default but the config file.
    pub fn new(config: PathBuf) -> Self {
        JobSection {
            config,
            operators: default_operators(),
            rounds: default_rounds(),
            id: None,
            measurements: Vec::new(),
            allow_sim: None,
            tee: default_tee(),
            quorum_bps: default_quorum_bps(),
            request_timeout_s: default_timeout(),
            published: None,
            sealed_data: None,
            key_broker: None,
            key_broker_cert: None,
        }
    }

    /// Checks the section, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.operators == 0 || self.operators > 64 {
            bail!("job.operators must be 1 to 64");
        }
        if self.rounds == 0 {
            bail!("job.rounds must be at least 1");
        }
        if let Some(id) = &self.id {
            JobId::from_hex(id).map_err(|e| anyhow::anyhow!("job.id: {e}"))?;
        }
        for m in &self.measurements {
            Measurement::from_hex(m).map_err(|e| anyhow::anyhow!("job.measurements: {m}: {e}"))?;
        }
        if self.quorum_bps <= 5000 || self.quorum_bps > 10_000 {
            bail!("job.quorum_bps must be more than 5000 and at most 10000");
        }
        if self.tee != JobTee::Sim {
            if self.allow_sim == Some(true) {
                bail!(
                    "job.allow_sim: a {} job cannot accept sim evidence",
                    self.tee
                );
            }
            if self.measurements.is_empty() {
                bail!(
                    "job.measurements: a {} job must list its allowed measurements",
                    self.tee
                );
            }
        }
        Ok(())
    }
}

/// The `[storage]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// Receipts, checkpoints and enclave logs go here (the job folder, [`crate::store`]).
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

/// Reads a TOML config file, applies the environment's overrides and types it.
fn load_file<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
    apply_env(&mut table, env)?;
    toml::Value::Table(table)
        .try_into()
        .with_context(|| format!("in {} (with CONCLAVE_* overrides)", path.display()))
}

/// A relative job config path (and the published facts, the sealed dataset and the broker's
/// certificate) is relative to the file that names it.
fn resolve_job_config(job: &mut JobSection, file: &Path) {
    let base = file.parent().unwrap_or(Path::new("."));
    if job.config.is_relative() {
        job.config = base.join(&job.config);
    }
    for p in [
        &mut job.published,
        &mut job.sealed_data,
        &mut job.key_broker_cert,
    ]
    .into_iter()
    .flatten()
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

impl OperatorConfig {
    /// Reads the file, applies the environment's overrides and checks the result.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut cfg: OperatorConfig = load_file(path, "operator config", env)?;
        if let Some(job) = &mut cfg.job {
            resolve_job_config(job, path);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(job) = &self.job {
            job.validate()?;
        }
        self.api.validate()?;
        self.enclave.validate()?;
        Ok(())
    }
}

/// A node's configuration (`conclave node`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub job: JobSection,
    #[serde(default = "default_launch")]
    pub enclave: Launch,
    #[serde(default)]
    pub storage: StorageSection,
    pub node: NodeSection,
    /// The job on chain: join, register the enclave key, commit checkpoints, withdraw.
    #[serde(default)]
    pub chain: Option<ChainSection>,
}

/// The `[chain]` section: the on-chain job this node works for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSection {
    /// JSON-RPC URL of the chain.
    pub rpc: String,
    /// The `ConclaveTraining` contract, `0x` + 40 hex digits.
    pub contract: String,
    /// The job's number on chain (`createJob`'s id). The network job id is this number as
    /// 32 bytes big-endian (the contract's convention); `job.id`, when set, must equal it.
    pub job: u64,
    /// The environment variable holding the operator account's private key (hex).
    #[serde(default = "default_key_env")]
    pub key_env: String,
    /// Blocks on top of a transaction's before it counts as landed.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Seconds to wait for the job to start (enough operators registered).
    #[serde(default = "default_start_timeout")]
    pub start_timeout_s: u64,
    /// After the last round: seconds to wait for the job to settle and the stake to unbond,
    /// then withdraw stake and payment. 0: request leave and exit (withdraw later).
    #[serde(default)]
    pub withdraw_wait_s: u64,
}

fn default_key_env() -> String {
    "CONCLAVE_OPERATOR_KEY".into()
}
fn default_confirmations() -> u64 {
    1
}
fn default_start_timeout() -> u64 {
    300
}

/// The `[node]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This operator's index in the active set (`0..job.operators`).
    pub index: u32,
    /// The libp2p listen address, e.g. `/ip4/127.0.0.1/tcp/4001`.
    pub listen: String,
    /// Multiaddrs to dial at start.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Updates a round needs once its deadline passed (default: all operators).
    #[serde(default)]
    pub quorum: Option<u32>,
    /// Seconds a round's barrier waits for the whole active set before a quorum suffices.
    #[serde(default = "default_round_timeout")]
    pub round_timeout_s: u64,
    /// Milliseconds the barrier keeps listening after it is met, so that an equivocation's
    /// proof reaches every operator before the set is fixed.
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
    /// Seconds to wait for every operator's announce.
    #[serde(default = "default_announce_timeout")]
    pub announce_timeout_s: u64,
    /// Store a checkpoint (weights and the enclave's signed manifest) every this many rounds,
    /// and offer the latest to operators that join or restart (0: only on-chain checkpoint
    /// rounds).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Updates whose gossip message would be larger than this many bytes travel by
    /// request-response (the gossip message names their hash; peers fetch them from us).
    #[serde(default = "default_inline_max")]
    pub update_inline_max: usize,
}

fn default_inline_max() -> usize {
    conclave_protocol::gossip::MAX_UPDATE
}
fn default_checkpoint_every() -> u64 {
    1
}
fn default_round_timeout() -> u64 {
    60
}
fn default_settle() -> u64 {
    500
}
fn default_announce_timeout() -> u64 {
    120
}

impl NodeConfig {
    /// Reads the file, applies the environment's overrides and checks the result.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut cfg: NodeConfig = load_file(path, "node config", env)?;
        resolve_job_config(&mut cfg.job, path);
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let j = &self.job;
        j.validate()?;
        self.enclave.validate()?;
        let n = &self.node;
        if n.index >= j.operators {
            bail!("node.index must be below job.operators ({})", j.operators);
        }
        n.listen
            .parse::<Multiaddr>()
            .map_err(|e| anyhow::anyhow!("node.listen: {:?}: {e}", n.listen))?;
        for b in &n.bootstrap {
            b.parse::<Multiaddr>()
                .map_err(|e| anyhow::anyhow!("node.bootstrap: {b:?}: {e}"))?;
        }
        if let Some(q) = n.quorum
            && (q == 0 || q > j.operators)
        {
            bail!("node.quorum must be 1 to job.operators ({})", j.operators);
        }
        if n.round_timeout_s == 0 || n.announce_timeout_s == 0 {
            bail!("node.round_timeout_s and node.announce_timeout_s must be at least 1");
        }
        if let Some(c) = &self.chain {
            c.contract
                .parse::<alloy::primitives::Address>()
                .map_err(|e| anyhow::anyhow!("chain.contract: {:?}: {e}", c.contract))?;
            if c.job == 0 {
                bail!("chain.job must be at least 1 (on-chain job ids start at 1)");
            }
            let want = hex::encode(job_word(c.job));
            if let Some(id) = &j.id
                && id.trim_start_matches("0x").to_ascii_lowercase() != want
            {
                bail!(
                    "job.id must be the on-chain job {} as 32 bytes ({want})",
                    c.job
                );
            }
        }
        Ok(())
    }

    /// The job section as the node runs it: with a chain, the job id is the on-chain job's.
    pub fn effective_job(&self) -> JobSection {
        let mut j = self.job.clone();
        if let Some(c) = &self.chain {
            j.id = Some(hex::encode(job_word(c.job)));
        }
        j
    }
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
    fn a_vm_enclave_takes_defaults_and_its_keys_are_checked_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("op.toml");
        std::fs::write(
            &p,
            "[job]\nconfig = \"a.toml\"\n[enclave]\nkind = \"vm\"\nimage = \"img\"\n",
        )
        .unwrap();
        let cfg = OperatorConfig::load(&p, []).unwrap();
        let Launch::Vm(v) = &cfg.enclave else {
            panic!("not a vm launch: {:?}", cfg.enclave)
        };
        assert_eq!(v.tee, crate::enclave::VmTee::None);
        assert_eq!((v.vcpus, v.memory_mib, v.accel.as_deref()), (1, 2048, None));
        assert!(v.image.ends_with("img"));
        for (key, value, named) in [
            ("MEMORY_MIB", "128", "enclave.memory_mib"),
            ("ACCEL", "\"hvf\"", "enclave.accel"),
            ("VCPUS", "0", "enclave.vcpus"),
            ("TEE", "\"snp\"", "enclave.firmware"),
            ("BOOT_TIMEOUT_S", "0", "enclave.boot_timeout_s"),
        ] {
            let e = format!(
                "{:#}",
                OperatorConfig::load(&p, [(format!("CONCLAVE_ENCLAVE__{key}"), value.into())])
                    .unwrap_err()
            );
            assert!(e.contains(named), "{key}: {e}");
        }
        std::fs::write(
            &p,
            "[job]\nconfig = \"a.toml\"\n[enclave]\nkind = \"qemu\"\n",
        )
        .unwrap();
        let e = format!("{:#}", OperatorConfig::load(&p, []).unwrap_err());
        assert!(e.contains("qemu") && e.contains("vm"), "{e}");
    }

    #[test]
    fn node_config_keys_are_checked_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        let base = "[job]\nconfig = \"j.toml\"\noperators = 4\n[node]\nindex = 1\n\
                    listen = \"/ip4/127.0.0.1/tcp/0\"\n";
        std::fs::write(&p, base).unwrap();
        let cfg = NodeConfig::load(&p, []).unwrap();
        assert_eq!(cfg.node.round_timeout_s, 60);
        assert_eq!(cfg.job.config, dir.path().join("j.toml"));
        let e =
            |env: Vec<(String, String)>| format!("{:#}", NodeConfig::load(&p, env).unwrap_err());
        assert!(e(vec![("CONCLAVE_NODE__INDEX".into(), "4".into())]).contains("node.index"));
        assert!(e(vec![("CONCLAVE_NODE__LISTEN".into(), "nope".into())]).contains("node.listen"));
        assert!(e(vec![("CONCLAVE_NODE__QUORUM".into(), "5".into())]).contains("node.quorum"));
        assert!(
            e(vec![("CONCLAVE_NODE__BOOTSTRAP".into(), "[\"x\"]".into())])
                .contains("node.bootstrap")
        );
        std::fs::write(&p, format!("{base}lisen = 1\n")).unwrap();
        assert!(e(vec![]).contains("lisen"));
    }
}
