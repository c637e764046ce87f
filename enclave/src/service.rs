//! `conclave-enclave serve`: the enclave's side of the host channel.
//!
//! The enclave key is generated in memory at start and never leaves this process: it is not
//! written anywhere, not sent, and no request signs caller-chosen bytes. Every result that
//! states something is a [`Signed`] statement of `conclave-protocol` in the job's domain
//! ([`job_domain`]), so the host can relay results but not alter them. Requests are judged on
//! their content: peers' updates must be signed by keys their evidence binds to the job, and
//! that evidence must pass the job's appraisal policy.
//!
//! Statements (see [`conclave_protocol::statement`]):
//! - [`JobAccepted`]: the job taken.
//! - [`UpdatePayload`]: `"CNVUPR01" ‖ round (u64 LE) ‖ base model hash (32 bytes) ‖ SparseUpdate`.
//! - [`RoundReceipt`]: the round closed.
//! - [`CheckpointManifest`]: a checkpoint (its `model_hash` names the weights).
//!
//! Aggregation rule: the updates of a round are deduplicated by signer (two different updates
//! from one signer are refused as equivocation), checked against the round and the model they
//! were computed from, and aggregated in ascending order of signer address. Every honest
//! enclave given the same set therefore computes the same weights.
//!
//! A refused request is answered with a [`Refusal`]'s code and message.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use conclave_attestation::eip712::{
    CheckpointStatement, Domain, JobTerms, chain_measurement, job_word, sorted_members,
    update_set_hash,
};
use conclave_attestation::key_request_binding;
use conclave_attestation::{
    AcceptedEvidence, Attester, BindingContext, EnclaveAddress, EnclaveKey, Endorsements, Evidence,
    EvidenceHash, JobId, Nonce, Policy, Tee, UnixTime, appraise,
};
use conclave_protocol::channel::{
    Blob, ChannelError, JobSpec, MAX_FRAME, PeerEvidence, Request, Response, read_frame,
    write_frame,
};
use conclave_protocol::keyrelease::{
    KeyRefusal, KeyRequest, NonceBook, appraise_key_request, release,
};
use conclave_protocol::receipt::{Probe, RECEIPT_VERSION, RoundReceipt, ToplocParams};
use conclave_protocol::seal::{JobSecret, Kind, Recipient};
use conclave_protocol::toploc::Thresholds;
use conclave_protocol::{
    AnnounceStatement, CheckpointManifest, Hash32, JobAccepted, JobDocument, JobDocumentError,
    JobTee, Signed, Statement, StatementError, UpdatePayload, job_domain,
};

use crate::train::data::Dataset;
use crate::train::{Method, TrainConfig, Trainer};

/// Largest request frame the enclave reads (a checkpoint to load, or a round's updates).
pub const MAX_REQUEST: usize = MAX_FRAME;

/// Why the enclave refused a request. [`Refusal::code`] is the stable code the host sees in
/// [`Response::Error`] (several variants may share one); the message (`Display`) says what
/// exactly was wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The request is malformed or inconsistent.
    #[error("{0}")]
    BadRequest(String),
    /// A request that needs the enclave's evidence came before `hello`.
    #[error("say hello first")]
    NoEvidence,
    /// `load_job` for a job the last `hello` was not for.
    #[error("say hello for job {0} first")]
    NoEvidenceForJob(JobId),
    /// A `hello` for another job than the one loaded.
    #[error("this enclave serves job {serving}")]
    WrongJob { serving: JobId },
    /// A chain statement for another on-chain job than the one loaded.
    #[error("this enclave serves job {serving}, not on-chain job {asked}")]
    WrongChainJob { serving: JobId, asked: u64 },
    /// The request needs a loaded job.
    #[error("load a job first")]
    NoJob,
    /// `load_job` when a job is loaded.
    #[error("this enclave already serves a job")]
    JobLoaded,
    /// A field of the job spec cannot be used.
    #[error("{field}: {why}")]
    BadSpec { field: &'static str, why: String },
    /// The job document does not hash to the spec hash the host says the chain names.
    #[error("the job document hashes to {computed}, the host names spec {named}")]
    SpecHash { computed: Hash32, named: Hash32 },
    /// The job document's config does not hash to the config hash it names.
    #[error("the config hashes to {computed}, the job document names {named}")]
    ConfigHash { computed: Hash32, named: Hash32 },
    /// A job document that does not parse or breaks a rule every document keeps.
    #[error("the job document: {0}")]
    BadDocument(String),
    /// A hardware job whose policy would admit sim evidence (a host slipping sim peers in).
    #[error("the job runs in {tee} enclaves but its policy allows sim evidence")]
    SimPolicyForHardwareJob { tee: JobTee },
    /// The job runs in another kind of enclave than this one.
    #[error("this is a {backend} enclave; the job runs in {job} enclaves")]
    BackendNotAllowed { backend: Tee, job: JobTee },
    /// The enclave's dataset is not the one the job names.
    #[error("the enclave's data has root {local}, the job names {named}")]
    DataRoot { local: Hash32, named: Hash32 },
    /// `aggregate` before this enclave trained the round.
    #[error("train the round first")]
    NoRound,
    /// A request that needs the open round closed first.
    #[error("round {0} is open: close it first")]
    RoundOpen(u64),
    /// `train_round` for another round than the model's.
    #[error("the model is at round {at}, not {asked}")]
    WrongRound { at: u64, asked: u64 },
    /// `aggregate` for another round than the open one.
    #[error("the open round is {open}, not {asked}")]
    NotOpenRound { open: u64, asked: u64 },
    /// A peer update signed for another round (a replay).
    #[error("update {index} is for round {round}, not {expected}")]
    UpdateRound {
        index: usize,
        round: u64,
        expected: u64,
    },
    /// A checkpoint statement for another round than the one the model is after.
    #[error("the model is after round {closed}, not {asked}")]
    NotClosedRound { closed: u64, asked: u64 },
    /// A peer update computed from another model than this round's.
    #[error("update {index} was computed from model {base}, not {expected}")]
    WrongBase {
        index: usize,
        base: Hash32,
        expected: Hash32,
    },
    /// Peer evidence that does not decode or cannot be appraised.
    #[error("{0}")]
    BadEvidence(String),
    /// Peer (or own) evidence that the job's policy rejects, with every reason.
    #[error("{}", reasons.join("; "))]
    EvidenceRejected { reasons: Vec<String> },
    /// An update whose envelope names evidence that no peer presented.
    #[error("update {index}: signer 0x{signer} names evidence no peer presented")]
    Unattested {
        index: usize,
        signer: EnclaveAddress,
    },
    /// A signed statement whose signature, signer, domain or kind does not verify.
    #[error("{0}")]
    BadSignature(String),
    /// A peer update that does not decode or cannot be applied.
    #[error("{0}")]
    BadUpdate(String),
    /// One signer sent two different updates for a round.
    #[error("signer 0x{signer} sent two different updates for round {round}")]
    Equivocation { signer: EnclaveAddress, round: u64 },
    /// A second, different checkpoint statement for a round.
    #[error("round {round} was committed with another model or receipt")]
    CommitEquivocation { round: u64 },
    /// The round's set of updates lacks this enclave's own.
    #[error("the set lacks this enclave's update")]
    OwnUpdateMissing,
    /// A checkpoint statement with no round closed since the job or checkpoint was loaded.
    #[error("no round has closed since the job or checkpoint was loaded")]
    NoReceipt,
    /// A checkpoint manifest that does not decode, parse or belong to the job.
    #[error("{0}")]
    BadManifest(String),
    /// Checkpoint weights that do not hash to what their manifest names.
    #[error("weights hash {weights}, the manifest says {manifest}")]
    HashMismatch { weights: Hash32, manifest: Hash32 },
    /// Unsigned weights that are not the job's initial weights.
    #[error("weights hash {weights}, the job's initial weights are {initial}")]
    InitialHashMismatch { weights: Hash32, initial: Hash32 },
    /// Weights that do not fit the model.
    #[error("{0}")]
    BadWeights(String),
    /// The round's data could not be read or checked.
    #[error("{0}")]
    Data(String),
    /// Training the round failed.
    #[error("{0}")]
    Training(String),
    /// The attester produced no evidence.
    #[error("{0}")]
    AttestationFailed(String),
    /// A key release refused (see [`KeyRefusal`] for the named reasons).
    #[error("{0}")]
    Key(KeyRefusal),
    /// A sealed job loaded before this enclave holds its secret.
    #[error("the job is sealed under {0}: get its secret first (key_request, then key_release)")]
    NoSecret(Hash32),
    /// A released secret that is not the job's (a host that made one up).
    #[error("the released secret does not match the job's key check (not the job's secret)")]
    WrongSecret,
    /// `key_release` without a `key_request` before it.
    #[error("no key request is pending")]
    NoKeyRequest,
    /// A wrapped secret that does not open for the pending request.
    #[error("the wrapped secret does not open for this enclave's request: {0}")]
    Unwrap(String),
    /// A key operation for a job that is not sealed.
    #[error("the loaded job is not sealed")]
    NotSealed,
    /// Something that should not fail did.
    #[error("{0}")]
    Internal(String),
}

impl Refusal {
    /// The code the host sees (part of the channel protocol).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::NoEvidence | Refusal::NoEvidenceForJob(_) => "no_evidence",
            Refusal::WrongJob { .. } | Refusal::WrongChainJob { .. } => "wrong_job",
            Refusal::NoJob => "no_job",
            Refusal::JobLoaded => "job_loaded",
            Refusal::BadSpec { .. } => "bad_spec",
            Refusal::SpecHash { .. } => "spec_hash",
            Refusal::ConfigHash { .. } => "config_hash",
            Refusal::BadDocument(_) => "bad_document",
            Refusal::SimPolicyForHardwareJob { .. } => "sim_policy_for_hardware_job",
            Refusal::BackendNotAllowed { .. } => "backend_not_allowed",
            Refusal::DataRoot { .. } => "data_root",
            Refusal::NoRound => "no_round",
            Refusal::RoundOpen(_) => "round_open",
            Refusal::WrongRound { .. }
            | Refusal::NotOpenRound { .. }
            | Refusal::UpdateRound { .. }
            | Refusal::NotClosedRound { .. } => "wrong_round",
            Refusal::WrongBase { .. } => "wrong_base",
            Refusal::BadEvidence(_) => "bad_evidence",
            Refusal::EvidenceRejected { .. } => "evidence_rejected",
            Refusal::Unattested { .. } => "unattested",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::BadUpdate(_) => "bad_update",
            Refusal::Equivocation { .. } | Refusal::CommitEquivocation { .. } => "equivocation",
            Refusal::OwnUpdateMissing => "own_update_missing",
            Refusal::NoReceipt => "no_receipt",
            Refusal::BadManifest(_) => "bad_manifest",
            Refusal::HashMismatch { .. } | Refusal::InitialHashMismatch { .. } => "hash_mismatch",
            Refusal::BadWeights(_) => "bad_weights",
            Refusal::Data(_) => "data",
            Refusal::Training(_) => "training",
            Refusal::AttestationFailed(_) => "attestation_failed",
            Refusal::Key(k) => k.code(),
            Refusal::NoSecret(_) => "no_secret",
            Refusal::WrongSecret => "wrong_secret",
            Refusal::NoKeyRequest => "no_key_request",
            Refusal::Unwrap(_) => "unwrap",
            Refusal::NotSealed => "not_sealed",
            Refusal::Internal(_) => "internal",
        }
    }
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Self {
        Response::Error {
            code: r.code().to_string(),
            message: r.to_string(),
        }
    }
}

/// Turns any error into a refusal of the kind `kind` (a variant that carries a message), with
/// the error's whole chain as the message.
trait OrRefuse<T> {
    fn or_refuse(self, kind: fn(String) -> Refusal) -> Result<T, Refusal>;
}

impl<T, E: std::fmt::Display> OrRefuse<T> for Result<T, E> {
    fn or_refuse(self, kind: fn(String) -> Refusal) -> Result<T, Refusal> {
        self.map_err(|e| kind(format!("{e:#}")))
    }
}

/// What was wrong with a statement, without the kind [`StatementError`] prefixes (the refusal
/// says what the statement was).
fn statement_why(e: &StatementError) -> String {
    match e {
        StatementError::Envelope { source, .. } => source.to_string(),
        StatementError::Payload { why, .. } => why.clone(),
        other => other.to_string(),
    }
}

/// Appraises evidence under `policy`; a rejection names every reason.
fn appraise_accepted(
    ev: &Evidence,
    policy: &Policy,
    now: UnixTime,
) -> Result<AcceptedEvidence, Refusal> {
    let a = appraise(ev, &Endorsements::default(), policy, now).or_refuse(Refusal::BadEvidence)?;
    a.accepted().ok_or_else(|| Refusal::EvidenceRejected {
        reasons: a.reasons.iter().map(|r| r.to_string()).collect(),
    })
}

fn bad_spec(field: &'static str, why: impl std::fmt::Display) -> Refusal {
    Refusal::BadSpec {
        field,
        why: format!("{why:#}"),
    }
}

fn address20(what: &str, text: &str) -> Result<[u8; 20], Refusal> {
    EnclaveAddress::from_hex(text)
        .map(|a| a.0)
        .map_err(|e| Refusal::BadRequest(format!("{what}: {e}")))
}

/// A round this enclave has trained but not closed.
struct Pending {
    round: u64,
    step_before: u64,
    hash_before: Hash32,
    probe: Probe,
    proofs_before: Vec<String>,
    loss: f64,
}

/// The last closed round as the enclave states it on chain.
struct Closed {
    /// Rounds closed so far.
    rounds: u64,
    /// The outcome of the last of them ([`RoundReceipt::outcome_hash`]): what every enclave
    /// that closed it the same way states on chain.
    outcome: Hash32,
    /// The enclaves whose updates that round aggregated, ascending.
    members: Vec<EnclaveAddress>,
}

struct Job {
    /// The job document the enclave obeys, and its hash (the spec hash).
    doc: JobDocument,
    spec_hash: Hash32,
    /// This operator's index in the active set.
    operator: u32,
    id: JobId,
    domain: String,
    /// Derived from the document, never given by the host.
    policy: Policy,
    trainer: Trainer,
    pending: Option<Pending>,
    /// None after a checkpoint load, until a round closes.
    last_closed: Option<Closed>,
    /// Chain checkpoint statements signed, by on-chain round.
    committed: BTreeMap<u64, CheckpointStatement>,
    /// A sealed job's sealing id and secret.
    sealing: Option<(Hash32, Arc<JobSecret>)>,
}

impl Job {
    /// Seals `plain` as the job's `kind` at `index` (a sealed job), or returns it as is.
    fn seal_out(&self, kind: Kind, index: u64, plain: Vec<u8>) -> Result<Vec<u8>, Refusal> {
        match &self.sealing {
            Some((id, secret)) => secret
                .seal(&id.0, kind, index, &plain)
                .or_refuse(Refusal::Internal),
            None => Ok(plain),
        }
    }
}

/// A key request this enclave made and awaits the answer to.
struct PendingKey {
    recipient: Recipient,
    sealing_id: Hash32,
    evidence_hash: EvidenceHash,
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
    /// The last key request, until its answer.
    key_request: Option<PendingKey>,
    /// A released job secret not yet used by a loaded job: (sealing id, secret).
    secret: Option<(Hash32, Arc<JobSecret>)>,
    /// Challenges issued to peers' key requests.
    nonces: NonceBook,
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
            key_request: None,
            secret: None,
            nonces: NonceBook::default(),
            clock: Box::new(system_now),
        }
    }

    /// The enclave key's address.
    pub fn address(&self) -> EnclaveAddress {
        self.key.address()
    }

    /// Answers one request. Refusals come back as [`Response::Error`] (see [`Refusal`]); the
    /// enclave's state is unchanged by a refused request.
    pub fn handle(&mut self, req: Request) -> Response {
        self.try_handle(req).unwrap_or_else(Response::from)
    }

    /// [`Enclave::handle`], with a refusal as a typed error.
    pub fn try_handle(&mut self, req: Request) -> Result<Response, Refusal> {
        match req {
            Request::Hello { job_id, nonce } => self.hello(job_id, nonce),
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
            Request::SignAnnounce { peer_id, account } => self.sign_announce(peer_id, account),
            Request::KeyRequest { sealing_id, nonce } => self.key_request(sealing_id, nonce),
            Request::KeyRelease { wrapped } => self.key_release(wrapped),
            Request::KeyChallenge => self.key_challenge(),
            Request::ReleaseKey { request } => self.release_key(request),
            Request::Shutdown => Ok(Response::Bye),
        }
    }

    fn hello(&mut self, job_id: JobId, nonce: Nonce) -> Result<Response, Refusal> {
        let ctx = BindingContext { job_id, nonce };
        if let Some(job) = &self.job
            && job.id != ctx.job_id
        {
            return Err(Refusal::WrongJob { serving: job.id });
        }
        let evidence = self
            .attester
            .evidence(&self.key.report_data(&ctx))
            .or_refuse(Refusal::AttestationFailed)?;
        let resp = Response::Hello {
            address: self.key.address(),
            public_key: hex::encode(self.key.public_xy()),
            evidence: Blob(evidence.encode()),
            tee: self.attester.tee().to_string(),
        };
        self.evidence = Some((evidence, ctx));
        Ok(resp)
    }

    /// Signs `statement` in `domain` with the enclave key, naming the evidence of the last
    /// `hello`.
    fn seal<T: Statement>(&self, domain: &str, statement: T) -> Result<Signed<T>, Refusal> {
        let (evidence, _) = self.evidence.as_ref().ok_or(Refusal::NoEvidence)?;
        Signed::seal(&self.key, domain, statement, evidence.hash()).or_refuse(Refusal::Internal)
    }

    fn job_mut(&mut self) -> Result<&mut Job, Refusal> {
        self.job.as_mut().ok_or(Refusal::NoJob)
    }

    fn load_job(&mut self, spec: JobSpec) -> Result<Response, Refusal> {
        if self.job.is_some() {
            return Err(Refusal::JobLoaded);
        }
        let id = spec.job_id;
        match &self.evidence {
            Some((_, ctx)) if ctx.job_id == id => {}
            _ => return Err(Refusal::NoEvidenceForJob(id)),
        }
        // The enclave hashes the document itself: a host that changes the config, the data
        // root or the policy changes the hash, and the statements the enclave signs name it.
        let computed = JobDocument::spec_hash(&spec.document.0);
        if computed != spec.spec_hash {
            return Err(Refusal::SpecHash {
                computed,
                named: spec.spec_hash,
            });
        }
        let doc = JobDocument::parse(&spec.document.0).map_err(|e| match e {
            JobDocumentError::SimPolicyForHardwareJob { tee } => {
                Refusal::SimPolicyForHardwareJob { tee }
            }
            e => Refusal::BadDocument(e.to_string()),
        })?;
        let backend = self.attester.tee();
        if !doc.tee.admits(backend) {
            return Err(Refusal::BackendNotAllowed {
                backend,
                job: doc.tee,
            });
        }
        let mut cfg: TrainConfig =
            toml::from_str(&doc.config).map_err(|e| bad_spec("config", e))?;
        cfg.data.corpus = self.data.corpus.clone();
        cfg.data.cache = self.data.cache.clone();
        cfg.out = self.data.scratch.clone();
        cfg.receipts = false;
        cfg.init = None;
        let config_hash = cfg.hash();
        if config_hash != doc.config_hash {
            return Err(Refusal::ConfigHash {
                computed: config_hash,
                named: doc.config_hash,
            });
        }
        if matches!(cfg.optimizer, Method::Adamw) {
            return Err(bad_spec(
                "optimizer",
                "a job needs a compressed method (demo or sparseloco)",
            ));
        }
        if spec.operator >= doc.operators {
            return Err(bad_spec(
                "operator",
                format!("operator {} of {}", spec.operator, doc.operators),
            ));
        }
        if cfg.replicas != doc.operators as usize {
            return Err(bad_spec(
                "operators",
                format!(
                    "the config trains {} replicas, the job has {} operators",
                    cfg.replicas, doc.operators
                ),
            ));
        }
        let policy = doc.policy.clone();
        let sealing = match &doc.sealing {
            None => None,
            Some(s) => {
                let (id, secret) = self
                    .secret
                    .as_ref()
                    .filter(|(id, _)| *id == s.sealing_id)
                    .ok_or(Refusal::NoSecret(s.sealing_id))?;
                let check = secret.key_check(&id.0).or_refuse(Refusal::Internal)?;
                if check != s.key_check.0 {
                    return Err(Refusal::WrongSecret);
                }
                Some((*id, secret.clone()))
            }
        };
        let trainer = match &sealing {
            None => Trainer::new(cfg).map_err(|e| bad_spec("config", e))?,
            Some((id, secret)) => {
                let dataset = Dataset::open_sealed(
                    &self.data.corpus,
                    secret.clone(),
                    *id,
                    doc.data_root,
                    &cfg.data,
                    cfg.model.context,
                )
                .or_refuse(Refusal::Data)?;
                Trainer::with_dataset(cfg, dataset).map_err(|e| bad_spec("config", e))?
            }
        };
        let local = trainer.dataset.root();
        if local != doc.data_root {
            return Err(Refusal::DataRoot {
                local,
                named: doc.data_root,
            });
        }
        let accepted = JobAccepted {
            job_id: id,
            spec_hash: computed,
            config_hash: doc.config_hash,
            data_root: doc.data_root,
            operator: spec.operator,
            operators: doc.operators,
            model_hash: trainer.model_hash().or_refuse(Refusal::Internal)?,
            params: trainer.param_count() as u64,
        };
        let domain = job_domain(&id, &computed);
        let signed = self.seal(&domain, accepted)?;
        self.job = Some(Job {
            doc,
            spec_hash: computed,
            operator: spec.operator,
            id,
            domain,
            policy,
            trainer,
            pending: None,
            last_closed: None,
            committed: BTreeMap::new(),
            sealing,
        });
        self.secret = None;
        Ok(Response::Signed {
            envelope: Blob(signed.bytes),
        })
    }

    /// Appraises a peer's evidence under the job policy; returns the accepted evidence and the
    /// binding context its report data must match.
    fn appraise_peer(
        policy: &Policy,
        job: &JobId,
        peer: &PeerEvidence,
        now: UnixTime,
    ) -> Result<(AcceptedEvidence, BindingContext), Refusal> {
        let ev = Evidence::decode(&peer.evidence.0).or_refuse(Refusal::BadEvidence)?;
        let acc = appraise_accepted(&ev, policy, now)?;
        let ctx = BindingContext {
            job_id: *job,
            nonce: peer.nonce,
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
        let mut weights = weights;
        let mut hash = Hash32::sha256(&weights.0);
        let step = match (manifest, signer) {
            (Some(m), Some(peer)) => {
                let (acc, ctx) = Self::appraise_peer(&job.policy, &job.id, &peer, now)?;
                Signed::<CheckpointManifest>::decode_envelope(&m.0)
                    .map_err(|e| Refusal::BadManifest(statement_why(&e)))?;
                let m = Signed::<CheckpointManifest>::verify(&m.0, &job.domain, &acc, &ctx)
                    .map_err(|e| match e {
                        StatementError::Payload { .. } => Refusal::BadManifest(e.to_string()),
                        e => Refusal::BadSignature(statement_why(&e)),
                    })?
                    .statement;
                match (&job.sealing, m.sealed_hash) {
                    (Some((id, secret)), Some(sealed)) => {
                        if sealed != hash {
                            return Err(Refusal::HashMismatch {
                                weights: hash,
                                manifest: sealed,
                            });
                        }
                        let plain = secret
                            .open(&id.0, Kind::Checkpoint, m.step, &weights.0)
                            .or_refuse(Refusal::BadWeights)?;
                        weights = Blob(plain);
                        hash = Hash32::sha256(&weights.0);
                    }
                    (None, None) => {}
                    (Some(_), None) => {
                        return Err(Refusal::BadManifest(
                            "a sealed job's checkpoint must be sealed".into(),
                        ));
                    }
                    (None, Some(_)) => {
                        return Err(Refusal::BadManifest(
                            "a sealed checkpoint for a job that is not sealed".into(),
                        ));
                    }
                }
                if m.model_hash != hash {
                    return Err(Refusal::HashMismatch {
                        weights: hash,
                        manifest: m.model_hash,
                    });
                }
                if m.config_hash != job.doc.config_hash || m.data_root != job.doc.data_root {
                    return Err(Refusal::BadManifest(
                        "the manifest is of another job".into(),
                    ));
                }
                m.step
            }
            (None, None) => {
                let initial = job.doc.initial_model_hash;
                if initial != hash {
                    return Err(Refusal::InitialHashMismatch {
                        weights: hash,
                        initial,
                    });
                }
                0
            }
            _ => {
                return Err(Refusal::BadRequest(
                    "a manifest comes with its signer's evidence".into(),
                ));
            }
        };
        job.trainer
            .load_weights(&weights.0, step)
            .or_refuse(Refusal::BadWeights)?;
        // A resync abandons an open round: its receipt is never signed.
        job.pending = None;
        job.last_closed = None;
        self.checkpoint()
    }

    fn train_round(&mut self, round: u64) -> Result<Response, Refusal> {
        let job = self.job_mut()?;
        let t = &mut job.trainer;
        if let Some(p) = &job.pending {
            return Err(Refusal::RoundOpen(p.round));
        }
        if round != t.round() {
            return Err(Refusal::WrongRound {
                at: t.round(),
                asked: round,
            });
        }
        let me = job.operator as usize;
        let step_before = t.step;
        let hash_before = t.model_hash().or_refuse(Refusal::Internal)?;
        let probe = t.probe(me).or_refuse(Refusal::Data)?;
        let local = t
            .local_update(me, Some(&probe))
            .or_refuse(Refusal::Training)?;
        let proofs_before = local
            .proofs_before
            .ok_or_else(|| Refusal::Internal("the round made no proofs".into()))?;
        job.pending = Some(Pending {
            round,
            step_before,
            hash_before,
            probe,
            proofs_before,
            loss: local.loss,
        });
        // A sealed job's update leaves the enclave encrypted; the signature covers the
        // ciphertext, so peers and relays check it without the key.
        let body = job.seal_out(Kind::Update, round, local.bytes)?;
        let update = UpdatePayload {
            round,
            base_model: hash_before,
            body,
        };
        let domain = job.domain.clone();
        let signed = self.seal(&domain, update)?;
        Ok(Response::Signed {
            envelope: Blob(signed.bytes),
        })
    }

    fn aggregate(
        &mut self,
        round: u64,
        updates: Vec<Blob>,
        peers: Vec<PeerEvidence>,
    ) -> Result<Response, Refusal> {
        let now = (self.clock)();
        let me = self.key.address();
        let job = self.job_mut()?;
        let pending = job.pending.as_ref().ok_or(Refusal::NoRound)?;
        if pending.round != round {
            return Err(Refusal::NotOpenRound {
                open: pending.round,
                asked: round,
            });
        }
        // Every peer's evidence, appraised once, by its hash (which envelopes name).
        let mut by_hash: BTreeMap<EvidenceHash, (AcceptedEvidence, BindingContext)> =
            BTreeMap::new();
        for p in &peers {
            let (acc, ctx) = Self::appraise_peer(&job.policy, &job.id, p, now)?;
            by_hash.insert(acc.evidence_hash(), (acc, ctx));
        }
        let base = pending.hash_before;
        // Each signer's update and its hash, in ascending order of signer address.
        let mut chosen: BTreeMap<EnclaveAddress, (Vec<u8>, Hash32)> = BTreeMap::new();
        for (i, u) in updates.iter().enumerate() {
            let env = Signed::<UpdatePayload>::decode_envelope(&u.0)
                .map_err(|e| Refusal::BadUpdate(format!("update {i}: {}", statement_why(&e))))?;
            let (acc, ctx) = by_hash.get(&env.evidence_hash).ok_or(Refusal::Unattested {
                index: i,
                signer: env.signer,
            })?;
            let signed = Signed::<UpdatePayload>::verify(&u.0, &job.domain, acc, ctx).map_err(
                |e| match e {
                    StatementError::Payload { .. } => {
                        Refusal::BadUpdate(format!("update {i}: {}", statement_why(&e)))
                    }
                    e => Refusal::BadSignature(format!("update {i}: {}", statement_why(&e))),
                },
            )?;
            let signer = signed.signer();
            let UpdatePayload {
                round: r,
                base_model,
                body,
            } = signed.statement;
            if r != round {
                return Err(Refusal::UpdateRound {
                    index: i,
                    round: r,
                    expected: round,
                });
            }
            if base_model != base {
                return Err(Refusal::WrongBase {
                    index: i,
                    base: base_model,
                    expected: base,
                });
            }
            let digest = Hash32::sha256(&body);
            match chosen.get(&signer) {
                Some((_, d)) if *d == digest => {}
                Some(_) => return Err(Refusal::Equivocation { signer, round }),
                None => {
                    chosen.insert(signer, (body, digest));
                }
            }
        }
        if !chosen.contains_key(&me) {
            return Err(Refusal::OwnUpdateMissing);
        }
        let members = sorted_members(chosen.keys().copied());
        let (mut ordered, digests): (Vec<Vec<u8>>, Vec<Hash32>) = chosen.into_values().unzip();
        if let Some((id, secret)) = &job.sealing {
            // Every sealed update is opened before any is applied: one that the AEAD refuses
            // (a flipped byte) fails the round, and nothing is aggregated from it.
            ordered = ordered
                .iter()
                .zip(members.iter())
                .map(|(body, signer)| {
                    secret
                        .open(&id.0, Kind::Update, round, body)
                        .map_err(|e| Refusal::BadUpdate(format!("the update of 0x{signer}: {e}")))
                })
                .collect::<Result<_, _>>()?;
        }
        let t = &mut job.trainer;
        let outer = t.apply_updates(ordered).or_refuse(Refusal::BadUpdate)?;
        let pending = job.pending.take().ok_or(Refusal::NoRound)?;

        let receipt = RoundReceipt {
            version: RECEIPT_VERSION,
            config_hash: job.doc.config_hash,
            data_root: job.doc.data_root,
            seed: t.cfg.seed,
            round,
            step_before: pending.step_before,
            step_after: t.step,
            model_hash_before: pending.hash_before,
            model_hash_after: t.model_hash().or_refuse(Refusal::Internal)?,
            updates: digests,
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
        job.last_closed = Some(Closed {
            rounds: round + 1,
            outcome: receipt.outcome_hash(),
            members,
        });
        let domain = job.domain.clone();
        let signed = self.seal(&domain, receipt)?;
        Ok(Response::Signed {
            envelope: Blob(signed.bytes),
        })
    }

    /// The loaded job, checked to be on-chain job `job` (its id is the number as 32 bytes
    /// big-endian), the contract's EIP-712 domain and the job's terms as the enclave loaded
    /// them (its spec hash and dataset root, which every EIP-712 statement names).
    fn chain_job(
        &self,
        chain_id: u64,
        contract: &str,
        job: u64,
    ) -> Result<(&Job, Domain, JobTerms), Refusal> {
        let j = self.job.as_ref().ok_or(Refusal::NoJob)?;
        if j.id.0 != job_word(job) {
            return Err(Refusal::WrongChainJob {
                serving: j.id,
                asked: job,
            });
        }
        let contract = address20("contract", contract)?;
        let terms = JobTerms {
            job_id: j.id.0,
            spec_hash: j.spec_hash.0,
            dataset_root: j.doc.data_root.0,
        };
        Ok((j, Domain { chain_id, contract }, terms))
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
        let (j, domain, terms) = self.chain_job(chain_id, contract, job)?;
        let (evidence, _) = self.evidence.as_ref().ok_or(Refusal::NoEvidence)?;
        // Consent only to what the enclave's own evidence states, and only when it passes the
        // job's policy (the measurement must be one the customer allows).
        let acc = appraise_accepted(evidence, &j.policy, now)?;
        let measurement = chain_measurement(acc.tee(), &acc.measurement());
        let evidence_hash = acc.evidence_hash().0;
        let sig =
            self.key
                .sign_registration(&domain, &terms, &operator, &evidence_hash, &measurement);
        Ok(Response::Registration {
            evidence_hash: Hash32(evidence_hash),
            measurement: Hash32(measurement),
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
        let (j, domain, terms) = self.chain_job(chain_id, contract, job)?;
        if let Some(p) = &j.pending {
            return Err(Refusal::RoundOpen(p.round));
        }
        let Some(closed) = &j.last_closed else {
            return Err(Refusal::NoReceipt);
        };
        if round != closed.rounds {
            return Err(Refusal::NotClosedRound {
                closed: closed.rounds,
                asked: round,
            });
        }
        let statement = CheckpointStatement {
            round,
            model_hash: j.trainer.model_hash().or_refuse(Refusal::Internal)?.0,
            receipt_hash: closed.outcome.0,
            update_set: update_set_hash(&closed.members),
        };
        if let Some(prev) = j.committed.get(&round)
            && *prev != statement
        {
            return Err(Refusal::CommitEquivocation { round });
        }
        let members = closed.members.clone();
        let sig = self.key.sign_checkpoint(&domain, &terms, &statement);
        if let Some(j) = self.job.as_mut() {
            j.committed.insert(round, statement);
        }
        Ok(Response::Commitment {
            round,
            model_hash: Hash32(statement.model_hash),
            receipt_hash: Hash32(statement.receipt_hash),
            members,
            signature: hex::encode(sig),
        })
    }

    fn sign_announce(
        &mut self,
        peer_id: String,
        account: Option<String>,
    ) -> Result<Response, Refusal> {
        if peer_id.is_empty()
            || peer_id.len() > 128
            || !peer_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(Refusal::BadRequest(
                "peer_id: 1 to 128 base58 characters".into(),
            ));
        }
        if let Some(a) = &account {
            address20("account", a)?;
        }
        let job = self.job.as_ref().ok_or(Refusal::NoJob)?;
        let statement = AnnounceStatement {
            job_id: job.id,
            operator: job.operator,
            peer_id,
            account,
        };
        let domain = job.domain.clone();
        let signed = self.seal(&domain, statement)?;
        Ok(Response::Signed {
            envelope: Blob(signed.bytes),
        })
    }

    fn key_request(&mut self, sealing_id: Hash32, nonce: Nonce) -> Result<Response, Refusal> {
        if let Some(job) = &self.job
            && job.doc.sealing.map(|s| s.sealing_id) != Some(sealing_id)
        {
            return Err(Refusal::BadRequest(format!(
                "the loaded job is not sealed under {sealing_id}"
            )));
        }
        let recipient = Recipient::generate().or_refuse(Refusal::Internal)?;
        let public = recipient.public_key();
        let rd = key_request_binding(&public, &sealing_id.0, &nonce);
        let evidence = self
            .attester
            .evidence(&rd)
            .or_refuse(Refusal::AttestationFailed)?;
        let req = KeyRequest {
            sealing_id,
            nonce,
            public_key: Hash32(public),
            evidence: Blob(evidence.encode()),
        };
        self.key_request = Some(PendingKey {
            recipient,
            sealing_id,
            evidence_hash: evidence.hash(),
        });
        Ok(Response::KeyRequest {
            request: Blob(req.encode()),
        })
    }

    /// Takes the answer to the pending key request (which it spends, whatever the outcome:
    /// its private key is single-use).
    fn key_release(&mut self, wrapped: Blob) -> Result<Response, Refusal> {
        let p = self.key_request.take().ok_or(Refusal::NoKeyRequest)?;
        let ctx = KeyRequest::wrap_context(&p.sealing_id, &p.evidence_hash.0);
        let secret = p
            .recipient
            .unwrap(&wrapped.0, &ctx)
            .or_refuse(Refusal::Unwrap)?;
        if let Some(job) = &self.job {
            // A running job already holds its secret; only a matching one is acknowledged.
            match (&job.doc.sealing, &job.sealing) {
                (Some(s), Some(_))
                    if secret.key_check(&s.sealing_id.0).ok() == Some(s.key_check.0) => {}
                (Some(_), _) => return Err(Refusal::WrongSecret),
                (None, _) => return Err(Refusal::NotSealed),
            }
            return Ok(Response::KeyHeld {
                sealing_id: p.sealing_id,
            });
        }
        self.secret = Some((p.sealing_id, Arc::new(secret)));
        Ok(Response::KeyHeld {
            sealing_id: p.sealing_id,
        })
    }

    /// A challenge for a peer enclave's key request.
    fn key_challenge(&mut self) -> Result<Response, Refusal> {
        let now = (self.clock)();
        let job = self.job.as_ref().ok_or(Refusal::NoJob)?;
        let (id, _) = job.sealing.as_ref().ok_or(Refusal::NotSealed)?;
        let mut nonce = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| Refusal::Internal("the system random generator failed".into()))?;
        let nonce = self.nonces.issue(nonce, now);
        Ok(Response::Challenge {
            sealing_id: *id,
            nonce,
        })
    }

    /// Enclave-to-enclave release: the job secret, wrapped to a peer enclave whose key request
    /// passes the job's policy, binds its key and spends one of this enclave's challenges.
    fn release_key(&mut self, request: Blob) -> Result<Response, Refusal> {
        let now = (self.clock)();
        let job = self.job.as_ref().ok_or(Refusal::NoJob)?;
        let (id, secret) = job.sealing.as_ref().ok_or(Refusal::NotSealed)?;
        let req = KeyRequest::parse(&request.0).map_err(Refusal::Key)?;
        if req.sealing_id != *id {
            return Err(Refusal::Key(KeyRefusal::UnknownJob(req.sealing_id)));
        }
        self.nonces.spend(&req.nonce, now).map_err(Refusal::Key)?;
        let acc = appraise_key_request(&req, id, &job.policy, &Endorsements::default(), now)
            .map_err(Refusal::Key)?;
        let resp = release(secret, &req, &acc).map_err(Refusal::Key)?;
        Ok(Response::Wrapped {
            wrapped: resp.wrapped,
        })
    }

    fn checkpoint(&mut self) -> Result<Response, Refusal> {
        let job = self.job_mut()?;
        let plain = job.trainer.weights().or_refuse(Refusal::Internal)?;
        let mut m = job.trainer.manifest(None);
        m.model_hash = Hash32::sha256(&plain);
        m.weights = format!("step-{:06}.safetensors", m.step);
        let sealed = job.sealing.is_some();
        let weights = job.seal_out(Kind::Checkpoint, m.step, plain)?;
        if sealed {
            m.sealed_hash = Some(Hash32::sha256(&weights));
            m.weights.push_str(".sealed");
        }
        let domain = job.domain.clone();
        let signed = self.seal(&domain, m)?;
        Ok(Response::Checkpoint {
            weights: Blob(weights),
            manifest: Blob(signed.bytes),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are part of the channel protocol: hosts and their tests match on them.
    #[test]
    fn refusals_keep_their_wire_codes_and_say_what_was_wrong() {
        let h = Hash32([0xab; 32]);
        let job = JobId([0x11; 32]);
        let signer = EnclaveAddress([0x22; 20]);
        let cases: Vec<(Refusal, &str, &str)> = vec![
            (
                Refusal::BadRequest("contract: x".into()),
                "bad_request",
                "contract",
            ),
            (Refusal::NoEvidence, "no_evidence", "hello"),
            (Refusal::NoEvidenceForJob(job), "no_evidence", "1111"),
            (Refusal::WrongJob { serving: job }, "wrong_job", "1111"),
            (
                Refusal::WrongChainJob {
                    serving: job,
                    asked: 6,
                },
                "wrong_job",
                "on-chain job 6",
            ),
            (Refusal::NoJob, "no_job", "load a job"),
            (Refusal::JobLoaded, "job_loaded", "already"),
            (
                Refusal::BadSpec {
                    field: "policy",
                    why: "bad toml".into(),
                },
                "bad_spec",
                "policy: bad toml",
            ),
            (
                Refusal::SpecHash {
                    computed: h,
                    named: Hash32::ZERO,
                },
                "spec_hash",
                "abab",
            ),
            (
                Refusal::DataRoot {
                    local: h,
                    named: Hash32::ZERO,
                },
                "data_root",
                "abab",
            ),
            (Refusal::NoRound, "no_round", "train the round"),
            (Refusal::RoundOpen(3), "round_open", "round 3"),
            (
                Refusal::WrongRound { at: 1, asked: 2 },
                "wrong_round",
                "at round 1, not 2",
            ),
            (
                Refusal::NotOpenRound { open: 1, asked: 2 },
                "wrong_round",
                "open round is 1",
            ),
            (
                Refusal::UpdateRound {
                    index: 4,
                    round: 0,
                    expected: 1,
                },
                "wrong_round",
                "update 4 is for round 0",
            ),
            (
                Refusal::NotClosedRound {
                    closed: 1,
                    asked: 2,
                },
                "wrong_round",
                "after round 1",
            ),
            (
                Refusal::WrongBase {
                    index: 1,
                    base: h,
                    expected: Hash32::ZERO,
                },
                "wrong_base",
                "update 1 was computed from model abab",
            ),
            (Refusal::BadEvidence("x".into()), "bad_evidence", "x"),
            (
                Refusal::EvidenceRejected {
                    reasons: vec!["debug guest".into(), "measurement".into()],
                },
                "evidence_rejected",
                "debug guest; measurement",
            ),
            (
                Refusal::Unattested { index: 2, signer },
                "unattested",
                "update 2: signer 0x2222",
            ),
            (Refusal::BadSignature("s".into()), "bad_signature", "s"),
            (Refusal::BadUpdate("u".into()), "bad_update", "u"),
            (
                Refusal::Equivocation { signer, round: 5 },
                "equivocation",
                "two different updates for round 5",
            ),
            (
                Refusal::CommitEquivocation { round: 5 },
                "equivocation",
                "round 5 was committed",
            ),
            (Refusal::OwnUpdateMissing, "own_update_missing", "lacks"),
            (Refusal::NoReceipt, "no_receipt", "no round has closed"),
            (Refusal::BadManifest("m".into()), "bad_manifest", "m"),
            (
                Refusal::HashMismatch {
                    weights: h,
                    manifest: Hash32::ZERO,
                },
                "hash_mismatch",
                "the manifest says 0000",
            ),
            (
                Refusal::InitialHashMismatch {
                    weights: h,
                    initial: Hash32::ZERO,
                },
                "hash_mismatch",
                "initial weights are 0000",
            ),
            (
                Refusal::ConfigHash {
                    computed: h,
                    named: Hash32::ZERO,
                },
                "config_hash",
                "abab",
            ),
            (
                Refusal::SimPolicyForHardwareJob { tee: JobTee::Snp },
                "sim_policy_for_hardware_job",
                "allows sim",
            ),
            (
                Refusal::BackendNotAllowed {
                    backend: Tee::Sim,
                    job: JobTee::Tdx,
                },
                "backend_not_allowed",
                "sim enclave",
            ),
            (
                Refusal::BadDocument("version 9".into()),
                "bad_document",
                "version 9",
            ),
            (Refusal::BadWeights("w".into()), "bad_weights", "w"),
            (Refusal::Data("d".into()), "data", "d"),
            (Refusal::Training("t".into()), "training", "t"),
            (
                Refusal::AttestationFailed("a".into()),
                "attestation_failed",
                "a",
            ),
            (Refusal::Internal("i".into()), "internal", "i"),
        ];
        for (r, code, says) in cases {
            assert_eq!(r.code(), code, "{r:?}");
            assert!(r.to_string().contains(says), "{r:?}: {r}");
            let Response::Error { code: c, message } = Response::from(r.clone()) else {
                unreachable!()
            };
            assert_eq!((c.as_str(), message), (code, r.to_string()));
        }
    }

    #[test]
    fn statement_errors_are_told_without_their_kind_prefix() {
        let e = Signed::<UpdatePayload>::decode_envelope(b"not an envelope").unwrap_err();
        let why = statement_why(&e);
        assert!(!why.starts_with("update"), "{why}");
        assert!(e.to_string().ends_with(&why), "{e} / {why}");
        let e = UpdatePayload::from_payload(b"short").unwrap_err();
        assert!(statement_why(&e).contains("shorter"), "{e}");
    }
}
