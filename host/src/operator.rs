//! One operator as the host sees it, and the one way to bring one up: launch its enclave,
//! say Hello, appraise the evidence, load the job ([`launch_operator`]). `conclave run` (and
//! `conclave serve`, which runs jobs the same way) bring up a local peer set with it, `conclave
//! node` its one enclave. Everything the enclave signs is checked here before the host relays
//! or stores it ([`Operator::verify`]): the host holds no key and signs nothing.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use conclave_attestation::{
    AcceptedEvidence, BindingContext, EnclaveAddress, Endorsements, Evidence, JobId, Measurement,
    Nonce, Policy, UnixTime, appraise,
};
use conclave_protocol::channel::Blob;
use conclave_protocol::channel::{JobSpec, PeerEvidence, Request, Response};
use conclave_protocol::job::JOB_DOCUMENT_VERSION;
use conclave_protocol::{Hash32, JobAccepted, JobDocument, Signed, Statement, job_domain};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::JobSection;
use crate::enclave::{Channel, Launch, Launched, launch_sim};
use crate::store::{JobStore, OperatorRecord};

/// Wall-clock now for appraisals made by the host (verification functions take it as input).
pub fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    )
}

/// A fresh 32-byte value for Hello nonces and throwaway job ids: uniqueness, not secrecy, is
/// what matters (the time in nanoseconds, the process id and what it is for).
pub fn random_nonce(tag: &str) -> Nonce {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Nonce(Sha256::digest(format!("{tag}/{t}/{}", std::process::id())).into())
}

/// Appraises an enclave's evidence under `policy`: the host verifies what it relays. A
/// rejection names every reason.
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
        nonce: peer.nonce,
    };
    Ok((acc, ctx))
}

/// What `conclave-enclave spec` prints for a training config: the job's published facts.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishedSpec {
    pub config_hash: Hash32,
    pub data_root: Hash32,
    pub initial_model_hash: Hash32,
    /// Parameters of the model.
    #[serde(default)]
    pub params: u64,
}

/// What `conclave run`, `conclave node` and the demo derive from a job section before
/// launching: the customer's published facts (`conclave-enclave spec`), the job document every
/// enclave obeys and its hash (the spec hash the chain records), the job id, the appraisal
/// policy (the document's), the envelope domain and the launch with its program resolved.
pub struct PreparedJob {
    pub published: PublishedSpec,
    /// The job document's bytes, as every enclave of the job gets them.
    pub document: Vec<u8>,
    pub doc: JobDocument,
    /// SHA-256 of `document`.
    pub spec_hash: Hash32,
    pub job: JobId,
    pub policy: Policy,
    pub domain: String,
    pub launch: Launch,
    /// The size of the active set.
    pub operators: u32,
    /// Seconds an enclave may take for one request.
    pub request_timeout: Duration,
}

impl PreparedJob {
    /// The job id as hex (topics, folders, records).
    pub fn job_hex(&self) -> String {
        self.job.to_string()
    }

    /// What operator `index`'s enclave is asked to work on.
    pub fn spec(&self, index: u32) -> JobSpec {
        JobSpec {
            job_id: self.job,
            document: Blob(self.document.clone()),
            spec_hash: self.spec_hash,
            operator: index,
        }
    }
}

/// The job document of a job section and its published facts: the config as written, the
/// enclave's config hash, dataset root and initial model, the operator count, the quorum, the
/// kind of enclave and the appraisal policy (sim: the sim measurement unless measurements are
/// listed). Every party that starts from the same section and data gets the same bytes, so the
/// customer's spec hash on chain is each node's.
pub fn job_document(
    jobcfg: &JobSection,
    config_text: &str,
    published: &PublishedSpec,
) -> Result<JobDocument> {
    let sim = jobcfg.tee == conclave_protocol::JobTee::Sim;
    let mut policy = Policy {
        allow_sim: jobcfg.allow_sim.unwrap_or(sim),
        ..Policy::default()
    };
    policy.measurements = if jobcfg.measurements.is_empty() && sim {
        vec![conclave_attestation::sim::default_sim_measurement()]
    } else {
        jobcfg
            .measurements
            .iter()
            .map(|m| Measurement::from_hex(m))
            .collect::<Result<_, _>>()?
    };
    let doc = JobDocument {
        version: JOB_DOCUMENT_VERSION,
        tee: jobcfg.tee,
        config: config_text.to_string(),
        config_hash: published.config_hash,
        data_root: published.data_root,
        initial_model_hash: published.initial_model_hash,
        operators: jobcfg.operators,
        quorum_bps: jobcfg.quorum_bps,
        policy,
    };
    doc.check().context("the job document")?;
    Ok(doc)
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
    let doc = job_document(jobcfg, &config_text, &published)?;
    let document = doc.encode();
    let spec_hash = JobDocument::spec_hash(&document);
    let job = match &jobcfg.id {
        Some(id) => JobId::from_hex(id).map_err(|e| anyhow::anyhow!("job.id: {e}"))?,
        None => JobId(Sha256::digest(spec_hash.to_hex().as_bytes()).into()),
    };
    let policy = doc.policy.clone();
    let launch = Launch::Sim {
        program: Some(program.clone()),
        corpus: corpus.clone(),
        cache: cache.clone(),
        threads: *threads,
    };
    Ok(PreparedJob {
        published,
        document,
        doc,
        domain: job_domain(&job, &spec_hash),
        spec_hash,
        job,
        policy,
        launch,
        operators: jobcfg.operators,
        request_timeout: Duration::from_secs(jobcfg.request_timeout_s),
    })
}

/// One enclave as the host sees it: its channel and its appraised evidence.
pub struct Operator {
    pub index: u32,
    /// The enclave process (killed on drop).
    pub launched: Option<Launched>,
    pub channel: Channel,
    pub address: EnclaveAddress,
    pub peer: PeerEvidence,
    pub accepted: AcceptedEvidence,
    pub ctx: BindingContext,
    /// `snp`, `tdx` or `sim`.
    pub tee: String,
}

impl Operator {
    /// Verifies a statement this operator's enclave signed in `domain`.
    pub fn verify<T: Statement>(&self, bytes: &[u8], domain: &str) -> Result<Signed<T>> {
        Signed::verify_from(bytes, domain, &self.accepted, &self.ctx, self.address)
            .with_context(|| format!("{} from operator {}", T::KIND, self.index))
    }

    /// Sends a request answered by a signed statement, and verifies the statement.
    pub fn signed<T: Statement>(&mut self, req: &Request, domain: &str) -> Result<Signed<T>> {
        let env = self.channel.signed(req)?;
        self.verify(&env, domain)
    }

    /// The record an auditor needs to check this operator's results later.
    pub fn record(&self, job: JobId, peer_id: Option<String>) -> OperatorRecord {
        OperatorRecord {
            operator: self.index,
            address: self.address,
            job_id: job,
            nonce: self.peer.nonce,
            peer_id,
            evidence: JobStore::evidence_name(self.index),
        }
    }
}

/// Launches operator `index`'s enclave (its files in `store`: `enclave-N.*` for a slot of a
/// local peer set, `enclave.*` for a node's one), says Hello with a fresh nonce, appraises the
/// evidence under the job's policy and loads the job. The enclave must start from the job's
/// initial model.
pub fn launch_operator(
    job: &PreparedJob,
    index: u32,
    store: &JobStore,
    slot: Option<u32>,
) -> Result<Operator> {
    let (socket, scratch, log) = store.enclave_files(slot);
    let launched = launch_sim(&job.launch, &socket, &scratch, &log)?;
    let mut channel = Channel::connect(&socket, job.request_timeout)?;
    let nonce = random_nonce("operator");
    let Response::Hello {
        address,
        evidence,
        tee,
        ..
    } = channel.call(&Request::Hello {
        job_id: job.job,
        nonce,
    })?
    else {
        bail!("operator {index}: hello answered with something else");
    };
    let peer = PeerEvidence { evidence, nonce };
    let (accepted, ctx) = appraise_peer(&peer, job.job, &job.policy, now())
        .with_context(|| format!("operator {index}"))?;
    let mut op = Operator {
        index,
        launched: Some(launched),
        channel,
        address,
        peer,
        accepted,
        ctx,
        tee,
    };
    tracing::info!(operator = index, enclave = %format!("0x{address}"), tee = %op.tee, "enclave attested");
    let accepted: Signed<JobAccepted> = op.signed(
        &Request::LoadJob {
            spec: job.spec(index),
        },
        &job.domain,
    )?;
    if accepted.statement.spec_hash != job.spec_hash {
        bail!(
            "operator {index}: the enclave loaded spec {}, not the job's {}",
            accepted.statement.spec_hash,
            job.spec_hash
        );
    }
    if accepted.statement.model_hash != job.published.initial_model_hash {
        bail!(
            "operator {index}: the enclave starts from model {}, not the job's initial {}",
            accepted.statement.model_hash,
            job.published.initial_model_hash
        );
    }
    Ok(op)
}
