//! `conclave-enclave serve`: the enclave's side of the host channel.
//!
//! The enclave key is generated in memory at start and never leaves this process: it is not
//! written anywhere, not sent, and no request signs caller-chosen bytes. Every result that
//! states something (the job accepted, an update, a round receipt, a checkpoint manifest) is a
//! signed [`Envelope`] in the job's domain, so the host can relay results but not alter them.
//! Requests are judged on their content: peers' updates must be signed by keys their evidence
//! binds to the job, and that evidence must pass the job's appraisal policy.
//!
//! Payloads (all JSON except the update, whose wire format is binary):
//! - `job-accepted`: [`JobAccepted`].
//! - `update`: `"CNVUPR01" ‖ round (u64 LE) ‖ base model hash (32 bytes) ‖ SparseUpdate`.
//! - `round-receipt`: a [`RoundReceipt`].
//! - `checkpoint-manifest`: a [`CheckpointManifest`] (its `model_hash` names the weights).
//!
//! Aggregation rule: the updates of a round are deduplicated by signer (two different updates
//! from one signer are refused as equivocation), checked against the round and the model they
//! were computed from, and aggregated in ascending order of signer address. Every honest
//! enclave given the same set therefore computes the same weights.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use conclave_attestation::eip712::{Domain, chain_measurement, job_word};
use conclave_attestation::{
    AcceptedEvidence, Attester, BindingContext, EnclaveAddress, EnclaveKey, Endorsements, Envelope,
    Evidence, JobId, Nonce, Policy, UnixTime, appraise,
};
use conclave_protocol::channel::{
    Blob, ChannelError, JobSpec, MAX_FRAME, PeerEvidence, Request, Response, read_frame,
    write_frame,
};
use conclave_protocol::receipt::{Probe, RECEIPT_VERSION, RoundReceipt, ToplocParams};
use conclave_protocol::toploc::Thresholds;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::train::checkpoint::CheckpointManifest;
use crate::train::{Method, TrainConfig, Trainer};

/// Magic of an `update` payload.
pub const UPDATE_PAYLOAD_MAGIC: &[u8; 8] = b"CNVUPR01";

/// Largest request frame the enclave reads (a checkpoint to load, or a round's updates).
pub const MAX_REQUEST: usize = MAX_FRAME;

/// The envelope domain of a job.
pub fn job_domain(job: &JobId) -> String {
    format!("conclave/v1/job/{}", hex::encode(job.0))
}

/// The statement that an enclave took a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobAccepted {
    pub job_id: String,
    pub config_hash: String,
    pub data_root: String,
    pub operator: u32,
    pub operators: u32,
    pub model_hash: String,
    pub params: u64,
}

/// Builds an `update` payload.
pub fn update_payload(round: u64, base_model_hash: &[u8; 32], update: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(48 + update.len());
    p.extend_from_slice(UPDATE_PAYLOAD_MAGIC);
    p.extend_from_slice(&round.to_le_bytes());
    p.extend_from_slice(base_model_hash);
    p.extend_from_slice(update);
    p
}

/// Splits an `update` payload into round, base model hash and the encoded update.
pub fn parse_update_payload(p: &[u8]) -> Result<(u64, [u8; 32], &[u8])> {
    if p.len() < 48 || &p[..8] != UPDATE_PAYLOAD_MAGIC {
        bail!("not an update payload (magic or length)");
    }
    let mut r = [0u8; 8];
    r.copy_from_slice(&p[8..16]);
    let mut h = [0u8; 32];
    h.copy_from_slice(&p[16..48]);
    Ok((u64::from_le_bytes(r), h, &p[48..]))
}

/// Appraises evidence under `policy`; a rejection names every reason.
fn appraise_accepted(
    ev: &Evidence,
    policy: &Policy,
    now: UnixTime,
) -> Result<AcceptedEvidence, Refusal> {
    let a = appraise(ev, &Endorsements::default(), policy, now).or_refuse("bad_evidence")?;
    a.accepted().ok_or_else(|| {
        refuse(
            "evidence_rejected",
            a.reasons
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

fn address20(what: &str, text: &str) -> Result<[u8; 20], Refusal> {
    let b = conclave_attestation::types::decode_hex(text)
        .map_err(|e| refuse("bad_request", format!("{what}: {e}")))?;
    b.try_into()
        .map_err(|_| refuse("bad_request", format!("{what}: not 20 bytes")))
}

/// A named refusal: the code tells the host what kind of input was wrong.
#[derive(Debug)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl std::fmt::Display) -> Refusal {
    Refusal {
        code,
        message: message.to_string(),
    }
}

trait OrRefuse<T> {
    fn or_refuse(self, code: &'static str) -> Result<T, Refusal>;
}

impl<T, E: std::fmt::Display> OrRefuse<T> for Result<T, E> {
    fn or_refuse(self, code: &'static str) -> Result<T, Refusal> {
        self.map_err(|e| refuse(code, format!("{e:#}")))
    }
}

/// A round this enclave has trained but not closed.
struct Pending {
    round: u64,
    step_before: u64,
    hash_before: String,
    probe: Probe,
    proofs_before: Vec<String>,
    loss: f64,
}

struct Job {
    spec: JobSpec,
    id: JobId,
    domain: String,
    policy: Policy,
    trainer: Trainer,
    pending: Option<Pending>,
    /// The rounds closed and the SHA-256 of the receipt payload that closed the last of them
    /// (none after a checkpoint load, until a round closes).
    last_receipt: Option<(u64, [u8; 32])>,
    /// Chain checkpoint statements signed, by on-chain round: (model hash, receipt hash).
    committed: BTreeMap<u64, ([u8; 32], [u8; 32])>,
}

/// Where the corpus and cache live inside the enclave, and where scratch output goes. The job
/// spec cannot point the enclave at other files: these override its paths.
#[derive(Debug, Clone)]
pub struct DataPaths {
    pub corpus: std::path::PathBuf,
    pub cache: std::path::PathBuf,
    pub scratch: std::path::PathBuf,
}

/// The enclave's state: its key, its attester and at most one job.
pub struct Enclave {
    key: EnclaveKey,
    attester: Box<dyn Attester>,
    data: DataPaths,
    /// Evidence binding the key to (job, nonce), from the last `Hello`.
    evidence: Option<(Evidence, BindingContext)>,
    job: Option<Job>,
    /// A clock for appraising peers' evidence (the enclave's own; a test can pin it).
    clock: Box<dyn Fn() -> UnixTime + Send>,
}

fn system_now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

impl Enclave {
    pub fn new(attester: Box<dyn Attester>, data: DataPaths) -> Self {
        Enclave {
            key: EnclaveKey::generate(),
            attester,
            data,
            evidence: None,
            job: None,
            clock: Box::new(system_now),
        }
    }

    /// The enclave key's address.
    pub fn address(&self) -> EnclaveAddress {
        self.key.address()
    }

    /// Answers one request. Refusals come back as [`Response::Error`]; the enclave's state is
    /// unchanged by a refused request.
    pub fn handle(&mut self, req: Request) -> Response {
        let r = match req {
            Request::Hello { job_id, nonce } => self.hello(&job_id, &nonce),
            Request::LoadJob { spec } => self.load_job(spec),
            Request::LoadCheckpoint {
                weights,
                manifest,
                signer,
            } => self.load_checkpoint(weights, manifest, signer),
            Request::TrainRound { round } => self.train_round(round),
            Request::Aggregate {
                round,
                updates,
                peers,
            } => self.aggregate(round, updates, peers),
            Request::Checkpoint => self.checkpoint(),
            Request::ChainRegistration {
                chain_id,
                contract,
                job,
                operator,
            } => self.chain_registration(chain_id, &contract, job, &operator),
            Request::ChainCheckpoint {
                chain_id,
                contract,
                job,
                round,
            } => self.chain_checkpoint(chain_id, &contract, job, round),
            Request::Shutdown => Ok(Response::Bye),
        };
        r.unwrap_or_else(|e| Response::Error {
            code: e.code.to_string(),
            message: e.message,
        })
    }

    fn hello(&mut self, job_id: &str, nonce: &str) -> Result<Response, Refusal> {
        let ctx = BindingContext {
            job_id: JobId::from_hex(job_id).or_refuse("bad_request")?,
            nonce: Nonce::from_hex(nonce).or_refuse("bad_request")?,
        };
        if let Some(job) = &self.job
            && job.id != ctx.job_id
        {
            return Err(refuse(
                "wrong_job",
                format!("this enclave serves job {}", job.spec.job_id),
            ));
        }
        let evidence = self
            .attester
            .evidence(&self.key.report_data(&ctx))
            .or_refuse("attestation_failed")?;
        let resp = Response::Hello {
            address: hex::encode(self.key.address().0),
            public_key: hex::encode(self.key.public_xy()),
            evidence: Blob(evidence.encode()),
            tee: self.attester.tee().to_string(),
        };
        self.evidence = Some((evidence, ctx));
        Ok(resp)
    }

    fn seal(&self, domain: &str, kind: &str, payload: Vec<u8>) -> Result<Response, Refusal> {
        let (evidence, _) = self
            .evidence
            .as_ref()
            .ok_or_else(|| refuse("no_evidence", "say hello first"))?;
        let env = self
            .key
            .seal(domain, kind, payload, evidence.hash())
            .or_refuse("internal")?;
        Ok(Response::Signed {
            envelope: Blob(env.encode()),
        })
    }

    fn job_mut(&mut self) -> Result<&mut Job, Refusal> {
        self.job
            .as_mut()
            .ok_or_else(|| refuse("no_job", "load a job first"))
    }

    fn load_job(&mut self, spec: JobSpec) -> Result<Response, Refusal> {
        if self.job.is_some() {
            return Err(refuse("job_loaded", "this enclave already serves a job"));
        }
        let id = JobId::from_hex(&spec.job_id).or_refuse("bad_spec")?;
        match &self.evidence {
            Some((_, ctx)) if ctx.job_id == id => {}
            _ => return Err(refuse("no_evidence", "say hello for this job first")),
        }
        let mut cfg: TrainConfig = toml::from_str(&spec.config).or_refuse("bad_spec")?;
        cfg.data.corpus = self.data.corpus.clone();
        cfg.data.cache = self.data.cache.clone();
        cfg.out = self.data.scratch.clone();
        cfg.receipts = false;
        cfg.init = None;
        if cfg.hash() != spec.config_hash {
            return Err(refuse(
                "spec_hash",
                format!(
                    "the config hashes to {}, the job names {}",
                    cfg.hash(),
                    spec.config_hash
                ),
            ));
        }
        if matches!(cfg.optimizer, Method::Adamw) {
            return Err(refuse(
                "bad_spec",
                "a job needs a compressed method (demo or sparseloco)",
            ));
        }
        if spec.operators == 0 || spec.operator >= spec.operators {
            return Err(refuse(
                "bad_spec",
                format!("operator {} of {}", spec.operator, spec.operators),
            ));
        }
        if cfg.replicas != spec.operators as usize {
            return Err(refuse(
                "bad_spec",
                format!(
                    "the config trains {} replicas, the job has {} operators",
                    cfg.replicas, spec.operators
                ),
            ));
        }
        let policy = Policy::from_toml(&spec.policy).or_refuse("bad_spec")?;
        let trainer = Trainer::new(cfg).or_refuse("bad_spec")?;
        if trainer.dataset.root() != spec.data_root {
            return Err(refuse(
                "data_root",
                format!(
                    "the enclave's data has root {}, the job names {}",
                    trainer.dataset.root(),
                    spec.data_root
                ),
            ));
        }
        let model_hash = trainer.model_hash().or_refuse("internal")?;
        let accepted = JobAccepted {
            job_id: spec.job_id.clone(),
            config_hash: spec.config_hash.clone(),
            data_root: spec.data_root.clone(),
            operator: spec.operator,
            operators: spec.operators,
            model_hash,
            params: trainer.param_count() as u64,
        };
        let domain = job_domain(&id);
        let resp = self.seal(
            &domain,
            "job-accepted",
            serde_json::to_vec(&accepted).or_refuse("internal")?,
        )?;
        self.job = Some(Job {
            spec,
            id,
            domain,
            policy,
            trainer,
            pending: None,
            last_receipt: None,
            committed: BTreeMap::new(),
        });
        Ok(resp)
    }

    /// Appraises a peer's evidence under the job policy; returns the accepted evidence and the
    /// binding context its report data must match.
    fn appraise_peer(
        policy: &Policy,
        job: &JobId,
        peer: &PeerEvidence,
        now: UnixTime,
    ) -> Result<(AcceptedEvidence, BindingContext), Refusal> {
        let ev = Evidence::decode(&peer.evidence.0).or_refuse("bad_evidence")?;
        let acc = appraise_accepted(&ev, policy, now)?;
        let ctx = BindingContext {
            job_id: *job,
            nonce: Nonce::from_hex(&peer.nonce).or_refuse("bad_evidence")?,
        };
        Ok((acc, ctx))
    }

    fn load_checkpoint(
        &mut self,
        weights: Blob,
        manifest: Option<Blob>,
        signer: Option<PeerEvidence>,
    ) -> Result<Response, Refusal> {
        let now = (self.clock)();
        let job = self.job_mut()?;
        let hash = hex::encode(Sha256::digest(&weights.0));
        let step = match (manifest, signer) {
            (Some(m), Some(peer)) => {
                let (acc, ctx) = Self::appraise_peer(&job.policy, &job.id, &peer, now)?;
                let env = Envelope::decode(&m.0).or_refuse("bad_manifest")?;
                env.verify_as(&job.domain, "checkpoint-manifest", &acc, &ctx)
                    .or_refuse("bad_signature")?;
                let m: CheckpointManifest =
                    serde_json::from_slice(&env.payload).or_refuse("bad_manifest")?;
                if m.model_hash != hash {
                    return Err(refuse(
                        "hash_mismatch",
                        format!("weights hash {hash}, the manifest says {}", m.model_hash),
                    ));
                }
                if m.config_hash != job.spec.config_hash || m.data_root != job.spec.data_root {
                    return Err(refuse("bad_manifest", "the manifest is of another job"));
                }
                m.step
            }
            (None, None) => match &job.spec.initial_model_hash {
                Some(h) if *h == hash => 0,
                Some(h) => {
                    return Err(refuse(
                        "hash_mismatch",
                        format!("weights hash {hash}, the job's initial weights are {h}"),
                    ));
                }
                None => {
                    return Err(refuse(
                        "unsigned",
                        "the job names no initial weights: a signed manifest is needed",
                    ));
                }
            },
            _ => {
                return Err(refuse(
                    "bad_request",
                    "a manifest comes with its signer's evidence",
                ));
            }
        };
        job.trainer
            .load_weights(&weights.0, step)
            .or_refuse("bad_weights")?;
        // A resync abandons an open round: its receipt is never signed.
        job.pending = None;
        job.last_receipt = None;
        self.checkpoint()
    }

    fn train_round(&mut self, round: u64) -> Result<Response, Refusal> {
        let job = self.job_mut()?;
        let t = &mut job.trainer;
        if job.pending.is_some() {
            return Err(refuse("round_open", "the open round is not closed yet"));
        }
        if round != t.round() {
            return Err(refuse(
                "wrong_round",
                format!("the model is at round {}, not {round}", t.round()),
            ));
        }
        let me = job.spec.operator as usize;
        let step_before = t.step;
        let hash_before = t.model_hash().or_refuse("internal")?;
        let probe = t.probe(me).or_refuse("data")?;
        let local = t.local_update(me, Some(&probe)).or_refuse("training")?;
        let proofs_before = local
            .proofs_before
            .ok_or_else(|| refuse("internal", "the round made no proofs"))?;
        let mut base = [0u8; 32];
        hex::decode_to_slice(&hash_before, &mut base).or_refuse("internal")?;
        let payload = update_payload(round, &base, &local.bytes);
        job.pending = Some(Pending {
            round,
            step_before,
            hash_before,
            probe,
            proofs_before,
            loss: local.loss,
        });
        let domain = job.domain.clone();
        self.seal(&domain, "update", payload)
    }

    fn aggregate(
        &mut self,
        round: u64,
        updates: Vec<Blob>,
        peers: Vec<PeerEvidence>,
    ) -> Result<Response, Refusal> {
        let now = (self.clock)();
        let job = self.job_mut()?;
        let pending = job
            .pending
            .as_ref()
            .ok_or_else(|| refuse("no_round", "train the round first"))?;
        if pending.round != round {
            return Err(refuse(
                "wrong_round",
                format!("the open round is {}, not {round}", pending.round),
            ));
        }
        // Every peer's evidence, appraised once, by its hash (which envelopes name).
        let mut by_hash = BTreeMap::new();
        for p in &peers {
            let (acc, ctx) = Self::appraise_peer(&job.policy, &job.id, p, now)?;
            by_hash.insert(acc.evidence_hash().0, (acc, ctx));
        }
        let mut base = [0u8; 32];
        hex::decode_to_slice(&pending.hash_before, &mut base).or_refuse("internal")?;
        let mut chosen: BTreeMap<[u8; 20], (Vec<u8>, [u8; 32])> = BTreeMap::new();
        for (i, u) in updates.iter().enumerate() {
            let env = Envelope::decode(&u.0)
                .map_err(|e| refuse("bad_update", format!("update {i}: {e}")))?;
            let (acc, ctx) = by_hash.get(&env.evidence_hash.0).ok_or_else(|| {
                refuse(
                    "unattested",
                    format!(
                        "update {i}: signer 0x{} names evidence no peer presented",
                        hex::encode(env.signer.0)
                    ),
                )
            })?;
            let signer = env
                .verify_as(&job.domain, "update", acc, ctx)
                .map_err(|e| refuse("bad_signature", format!("update {i}: {e}")))?;
            let (r, b, bytes) = parse_update_payload(&env.payload)
                .map_err(|e| refuse("bad_update", format!("update {i}: {e:#}")))?;
            if r != round {
                return Err(refuse(
                    "wrong_round",
                    format!("update {i} is for round {r}, not {round}"),
                ));
            }
            if b != base {
                return Err(refuse(
                    "wrong_base",
                    format!(
                        "update {i} was computed from model {}, not {}",
                        hex::encode(b),
                        pending.hash_before
                    ),
                ));
            }
            let digest: [u8; 32] = Sha256::digest(bytes).into();
            match chosen.get(&signer.0) {
                Some((_, d)) if *d == digest => {}
                Some(_) => {
                    return Err(refuse(
                        "equivocation",
                        format!(
                            "signer 0x{} sent two different updates for round {round}",
                            hex::encode(signer.0)
                        ),
                    ));
                }
                None => {
                    chosen.insert(signer.0, (bytes.to_vec(), digest));
                }
            }
        }
        if !chosen.contains_key(&self.key.address().0) {
            return Err(refuse(
                "own_update_missing",
                "the set lacks this enclave's update",
            ));
        }
        let job = self
            .job
            .as_mut()
            .ok_or_else(|| refuse("no_job", "no job"))?;
        let ordered: Vec<Vec<u8>> = chosen.into_values().map(|(b, _)| b).collect();
        let t = &mut job.trainer;
        let outer = t.apply_updates(ordered.clone()).or_refuse("bad_update")?;
        let pending = job
            .pending
            .take()
            .ok_or_else(|| refuse("no_round", "no round"))?;

        let receipt = RoundReceipt {
            version: RECEIPT_VERSION,
            config_hash: job.spec.config_hash.clone(),
            data_root: job.spec.data_root.clone(),
            seed: t.cfg.seed,
            round,
            step_before: pending.step_before,
            step_after: t.step,
            model_hash_before: pending.hash_before,
            model_hash_after: t.model_hash().or_refuse("internal")?,
            updates: ordered
                .iter()
                .map(|u| hex::encode(Sha256::digest(u)))
                .collect(),
            outer,
            probe: pending.probe,
            toploc: ToplocParams {
                group: crate::prove::GROUP as u32,
                topk: crate::prove::TOPK as u32,
                thresholds: Thresholds::default(),
            },
            proofs_before: pending.proofs_before,
            // The weights after: bound by their hash, proved by the next round.
            proofs_after: Vec::new(),
            loss: pending.loss,
        };
        let payload = receipt.to_json();
        job.last_receipt = Some((round + 1, Sha256::digest(&payload).into()));
        let domain = job.domain.clone();
        self.seal(&domain, "round-receipt", payload)
    }

    /// The loaded job, checked to be on-chain job `job` (its id is the number as 32 bytes
    /// big-endian), and the contract's EIP-712 domain.
    fn chain_job(
        &self,
        chain_id: u64,
        contract: &str,
        job: u64,
    ) -> Result<(&Job, Domain), Refusal> {
        let j = self
            .job
            .as_ref()
            .ok_or_else(|| refuse("no_job", "load a job first"))?;
        if j.id.0 != job_word(job) {
            return Err(refuse(
                "wrong_job",
                format!(
                    "this enclave serves job {}, not on-chain job {job}",
                    j.spec.job_id
                ),
            ));
        }
        let contract = address20("contract", contract)?;
        Ok((j, Domain { chain_id, contract }))
    }

    fn chain_registration(
        &mut self,
        chain_id: u64,
        contract: &str,
        job: u64,
        operator: &str,
    ) -> Result<Response, Refusal> {
        let now = (self.clock)();
        let operator = address20("operator", operator)?;
        let (j, domain) = self.chain_job(chain_id, contract, job)?;
        let (evidence, _) = self
            .evidence
            .as_ref()
            .ok_or_else(|| refuse("no_evidence", "say hello first"))?;
        // Consent only to what the enclave's own evidence states, and only when it passes the
        // job's policy (the measurement must be one the customer allows).
        let acc = appraise_accepted(evidence, &j.policy, now)?;
        let measurement = chain_measurement(acc.tee(), &acc.measurement());
        let evidence_hash = acc.evidence_hash().0;
        let sig = self.key.sign_registration(
            &domain,
            &job_word(job),
            &operator,
            &evidence_hash,
            &measurement,
        );
        Ok(Response::Registration {
            evidence_hash: hex::encode(evidence_hash),
            measurement: hex::encode(measurement),
            signature: hex::encode(sig),
        })
    }

    fn chain_checkpoint(
        &mut self,
        chain_id: u64,
        contract: &str,
        job: u64,
        round: u64,
    ) -> Result<Response, Refusal> {
        let (j, domain) = self.chain_job(chain_id, contract, job)?;
        if j.pending.is_some() {
            return Err(refuse("round_open", "close the open round first"));
        }
        let Some((closed, receipt_hash)) = j.last_receipt else {
            return Err(refuse(
                "no_receipt",
                "no round has closed since the job or checkpoint was loaded",
            ));
        };
        if round != closed {
            return Err(refuse(
                "wrong_round",
                format!("the model is after round {closed}, not {round}"),
            ));
        }
        let mut model_hash = [0u8; 32];
        hex::decode_to_slice(
            j.trainer.model_hash().or_refuse("internal")?,
            &mut model_hash,
        )
        .or_refuse("internal")?;
        if let Some(prev) = j.committed.get(&round)
            && *prev != (model_hash, receipt_hash)
        {
            return Err(refuse(
                "equivocation",
                format!("round {round} was committed with another model or receipt"),
            ));
        }
        let sig =
            self.key
                .sign_checkpoint(&domain, &job_word(job), round, &model_hash, &receipt_hash);
        if let Some(j) = self.job.as_mut() {
            j.committed.insert(round, (model_hash, receipt_hash));
        }
        Ok(Response::Commitment {
            round,
            model_hash: hex::encode(model_hash),
            receipt_hash: hex::encode(receipt_hash),
            signature: hex::encode(sig),
        })
    }

    fn checkpoint(&mut self) -> Result<Response, Refusal> {
        let job = self.job_mut()?;
        let weights = job.trainer.weights().or_refuse("internal")?;
        let mut m = job.trainer.manifest(None);
        m.model_hash = hex::encode(Sha256::digest(&weights));
        m.weights = format!("step-{:06}.safetensors", m.step);
        let domain = job.domain.clone();
        let signed = self.seal(
            &domain,
            "checkpoint-manifest",
            serde_json::to_vec(&m).or_refuse("internal")?,
        )?;
        let Response::Signed { envelope } = signed else {
            return Err(refuse("internal", "sealing the manifest"));
        };
        Ok(Response::Checkpoint {
            weights: Blob(weights),
            manifest: envelope,
        })
    }
}

/// Serves one host connection at a time on a Unix socket until a `Shutdown` request.
pub fn serve_unix(enclave: &mut Enclave, path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    eprintln!(
        "enclave 0x{} listening on {}",
        hex::encode(enclave.address().0),
        path.display()
    );
    for conn in listener.incoming() {
        let conn = conn.context("accepting the host")?;
        let mut r = BufReader::new(conn.try_clone()?);
        let mut w = BufWriter::new(conn);
        if serve_stream(enclave, &mut r, &mut w)? {
            let _ = std::fs::remove_file(path);
            return Ok(());
        }
    }
    Err(anyhow!("the listener closed"))
}

/// Serves the host over a virtio-serial port inside a VM (e.g.
/// `/dev/virtio-ports/org.conclave.channel`; on the host side qemu connects the port to a Unix
/// socket chardev, which [`crate`]'s host dials like a sim enclave's socket). The port is
/// reopened whenever the host side goes away, until a `Shutdown` request.
pub fn serve_device(enclave: &mut Enclave, path: &Path) -> Result<()> {
    eprintln!(
        "enclave 0x{} serving on {}",
        hex::encode(enclave.address().0),
        path.display()
    );
    loop {
        let port = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening the channel device {}", path.display()))?;
        let mut r = BufReader::new(port.try_clone()?);
        let mut w = BufWriter::new(port);
        match serve_stream(enclave, &mut r, &mut w) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => eprintln!("channel: {e:#}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Answers requests on one stream until it closes (false) or a `Shutdown` (true). A malformed
/// frame is answered with an error and the connection is dropped (framing is lost).
pub fn serve_stream(
    enclave: &mut Enclave,
    r: &mut impl std::io::Read,
    w: &mut impl std::io::Write,
) -> Result<bool> {
    loop {
        let req = match read_frame::<Request>(r, MAX_REQUEST) {
            Ok(req) => req,
            Err(ChannelError::Closed) => return Ok(false),
            Err(ChannelError::Malformed(m)) => {
                // The frame was read whole: answer and go on.
                eprintln!("refused a malformed request: {m}");
                write_frame(
                    w,
                    &Response::Error {
                        code: "malformed".into(),
                        message: m,
                    },
                )?;
                continue;
            }
            Err(e) => {
                let code = match e {
                    ChannelError::TooLarge { .. } => "too_large",
                    _ => "bad_frame",
                };
                eprintln!("refused a frame: {e}");
                let _ = write_frame(
                    w,
                    &Response::Error {
                        code: code.into(),
                        message: e.to_string(),
                    },
                );
                return Ok(false);
            }
        };
        let shutdown = matches!(req, Request::Shutdown);
        let resp = enclave.handle(req);
        if let Response::Error { code, message } = &resp {
            eprintln!("refused: {code}: {message}");
        }
        write_frame(w, &resp)?;
        if shutdown {
            return Ok(true);
        }
    }
}
