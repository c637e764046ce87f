//! One operator as the host sees it, and the one way to bring one up: launch its enclave,
//! say Hello, appraise the evidence, load the job ([`launch_operator`]). `conclave run` (and
//! `conclave serve`, which runs jobs the same way) bring up a local peer set with it, `conclave
//! node` its one enclave. Everything the enclave signs is checked here before the host relays
//! or stores it ([`Operator::verify`]): the host holds no key and signs nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use conclave_attestation::{
    AcceptedEvidence, BindingContext, EnclaveAddress, Endorsements, Evidence, JobId, Measurement,
    Nonce, Policy, UnixTime, appraise,
};
use conclave_protocol::channel::Blob;
use conclave_protocol::channel::{JobSpec, PeerEvidence, Request, Response};
use conclave_protocol::job::JOB_DOCUMENT_VERSION;
use conclave_protocol::{Hash32, JobAccepted, JobDocument, Sealing, Signed, Statement, job_domain};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::JobSection;
use crate::enclave::{
    Channel, GuestBoot, Launch, Launched, VmLaunch, VmTee, launch_qemu, launch_sim, watch_guest,
};
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
    /// The folder of the shards and their manifest in the data cache (what goes onto a VM's
    /// dataset disk).
    #[serde(default)]
    pub dataset_dir: Option<PathBuf>,
}

/// What every guest of a VM job boots, and the measurement it must report.
#[derive(Debug, Clone)]
pub struct VmJob {
    pub launch: VmLaunch,
    pub boot: GuestBoot,
    /// The image's manifest.
    pub manifest: conclave_images::guest::Manifest,
    /// The launch measurement predicted for a guest without a TEE (`None` on SNP/TDX, whose
    /// measurement the job's config lists).
    pub measurement: Option<Measurement>,
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
    /// For `kind = "vm"`: the guests' boot.
    pub vm: Option<VmJob>,
    /// The size of the active set.
    pub operators: u32,
    /// Seconds an enclave may take for one request.
    pub request_timeout: Duration,
    /// A sealed job: the sealed dataset folder the enclaves read.
    pub sealed_data: Option<PathBuf>,
    /// A sealed job: where the customer's key broker is.
    pub key_broker: Option<crate::keys::BrokerTarget>,
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
    image: Option<Measurement>,
    sealed: Option<(Hash32, Sealing)>,
) -> Result<JobDocument> {
    let sim = jobcfg.tee == conclave_protocol::JobTee::Sim;
    let mut policy = Policy {
        allow_sim: jobcfg.allow_sim.unwrap_or(sim),
        ..Policy::default()
    };
    policy.measurements = if let (true, Some(m)) = (jobcfg.measurements.is_empty(), image) {
        // The image's predicted launch measurement, exactly.
        vec![m]
    } else if jobcfg.measurements.is_empty() && sim {
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
        // A sealed job names the sealed dataset's root (over ciphertexts and plaintexts).
        data_root: sealed.map(|(root, _)| root).unwrap_or(published.data_root),
        initial_model_hash: published.initial_model_hash,
        operators: jobcfg.operators,
        quorum_bps: jobcfg.quorum_bps,
        policy,
        sealing: sealed.map(|(_, s)| s),
    };
    doc.check().context("the job document")?;
    Ok(doc)
}

/// What every output that shows a job says about its sealing.
pub fn sealing_line(sealed: bool) -> &'static str {
    if sealed {
        "sealed job: the data, updates and checkpoints are encrypted; only attested enclaves hold the key"
    } else {
        "NOT SEALED: the operators' hosts can read this job's data, updates and model \
         (seal it with `conclave data seal` and `[job] sealed_data`)"
    }
}

/// Prepares a job: the customer's published facts (`conclave-enclave spec` on the host), and
/// for `kind = "vm"` the guests' boot (the image checked against its manifest, the dataset
/// disk, the command line and its predicted measurement, which the job's policy then allows
/// exactly unless the config lists measurements).
pub fn prepare_job(jobcfg: &JobSection, enclave: &Launch) -> Result<PreparedJob> {
    let config_text = std::fs::read_to_string(&jobcfg.config)
        .with_context(|| format!("reading the job config {}", jobcfg.config.display()))?;
    let (program, corpus, cache) = enclave.data_inputs();
    // The customer's published facts of the job: given, or computed here on the corpus.
    let published: PublishedSpec = match &jobcfg.published {
        Some(p) => serde_json::from_slice(
            &crate::store::read_bounded(p, 1 << 20)
                .with_context(|| format!("job.published {}", p.display()))?,
        )
        .with_context(|| {
            format!(
                "job.published {}: not the JSON of `conclave-enclave spec`",
                p.display()
            )
        })?,
        None => {
            // The customer's published facts of the job.
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
            serde_json::from_slice(&out.stdout).context("reading the published spec")?
        }
    };
    // A sealed job: its enclaves read the sealed dataset, and nothing else of the data.
    let sealed = match &jobcfg.sealed_data {
        Some(dir) => {
            let dir = std::path::absolute(dir)
                .with_context(|| format!("job.sealed_data {}", dir.display()))?;
            let index = crate::keys::read_sealed_index(&dir).context("job.sealed_data")?;
            Some((dir, index))
        }
        None => None,
    };
    let key_broker = match (&jobcfg.key_broker, &jobcfg.key_broker_cert) {
        (Some(url), Some(cert)) => Some(crate::keys::BrokerTarget {
            url: url.clone(),
            cert_pem: std::fs::read_to_string(cert)
                .with_context(|| format!("job.key_broker_cert {}", cert.display()))?,
        }),
        (None, None) => None,
        _ => bail!("job.key_broker and job.key_broker_cert go together"),
    };
    let (launch, vm) = match enclave {
        Launch::Sim {
            corpus,
            cache,
            threads,
            ..
        } => (
            Launch::Sim {
                program: Some(program.clone()),
                corpus: sealed
                    .as_ref()
                    .map(|(d, _)| d.clone())
                    .unwrap_or_else(|| corpus.clone()),
                cache: cache.clone(),
                threads: *threads,
            },
            None,
        ),
        Launch::Vm(v) => {
            let mut v = v.clone();
            v.program = Some(program.clone());
            check_vm_tee(jobcfg.tee, v.tee)?;
            let vm = prepare_vm(&v, &published, sealed.as_ref().map(|(d, _)| d.as_path()))?;
            (Launch::Vm(v), Some(vm))
        }
    };
    let doc = job_document(
        jobcfg,
        &config_text,
        &published,
        vm.as_ref().and_then(|v| v.measurement),
        sealed.as_ref().map(|(_, idx)| {
            (
                idx.root(),
                Sealing {
                    sealing_id: idx.sealing_id,
                    key_check: idx.key_check,
                },
            )
        }),
    )?;
    let document = doc.encode();
    let spec_hash = JobDocument::spec_hash(&document);
    let job = match &jobcfg.id {
        Some(id) => JobId::from_hex(id).map_err(|e| anyhow::anyhow!("job.id: {e}"))?,
        None => JobId(Sha256::digest(spec_hash.to_hex().as_bytes()).into()),
    };
    let policy = doc.policy.clone();
    if doc.sealing.is_none() {
        tracing::warn!("{}", sealing_line(false));
    }
    Ok(PreparedJob {
        published,
        document,
        doc,
        domain: job_domain(&job, &spec_hash),
        spec_hash,
        job,
        policy,
        launch,
        vm,
        operators: jobcfg.operators,
        request_timeout: Duration::from_secs(jobcfg.request_timeout_s),
        sealed_data: sealed.map(|(d, _)| d),
        key_broker,
    })
}

/// A VM without a TEE reports sim evidence (a `sim` job); SNP and TDX guests report theirs.
fn check_vm_tee(job: conclave_protocol::JobTee, vm: VmTee) -> Result<()> {
    use conclave_protocol::JobTee;
    let ok = match vm {
        VmTee::None => job == JobTee::Sim,
        VmTee::Snp => matches!(job, JobTee::Snp | JobTee::Hardware),
        VmTee::Tdx => matches!(job, JobTee::Tdx | JobTee::Hardware),
    };
    if !ok {
        bail!(
            "job.tee = {job:?} does not fit enclave.tee = {vm:?} (a VM without a TEE runs sim \
             evidence: job.tee = \"sim\"; SEV-SNP and TDX guests need job.tee = \"snp\", \"tdx\" or \"hardware\")"
        );
    }
    Ok(())
}

/// The guests' boot for a VM job: the image (checked against its manifest), the dataset disk
/// (the corpus and the job's shards, with its verity tree, built in the data cache), the
/// command line (the image's, with the attester for a VM without a TEE and the dataset's
/// verity parameters) and, without a TEE, the launch measurement predicted from them.
pub fn prepare_vm(v: &VmLaunch, published: &PublishedSpec, sealed: Option<&Path>) -> Result<VmJob> {
    use conclave_images::guest::launch;
    let manifest = crate::image_build::load_image(&v.image).with_context(|| {
        format!(
            "the guest image {} (build it with `conclave image build --out {}`)",
            v.image.display(),
            v.image.display()
        )
    })?;
    let dataset = published.dataset_dir.as_ref().context(
        "`conclave-enclave spec` named no dataset folder (is it older than this conclave?)",
    )?;
    let disk = match sealed {
        // A sealed job's disk holds the sealed dataset only.
        Some(dir) => job_sealed_disk(dir, &v.cache)?,
        None => job_data_disk(&v.corpus, dataset, &v.cache)?,
    };
    let cmdline = launch::job_cmdline(&manifest.cmdline, v.tee == VmTee::None, Some(&disk.params));
    let boot = GuestBoot {
        kernel: v.image.join(&manifest.kernel.file),
        initrd: v.image.join(&manifest.initrd.file),
        root_disk: v.image.join(&manifest.rootfs.file),
        data_disk: disk.path,
        cmdline,
    };
    let mut launch = v.clone();
    if v.tee == VmTee::None && v.accel.is_none() {
        let kvm = kvm_works(v, &boot);
        tracing::info!(
            accel = if kvm { "kvm" } else { "tcg" },
            "{}",
            if kvm {
                "KVM boots the image: guests run under KVM"
            } else {
                "KVM is missing or cannot run the image here: guests run under TCG emulation"
            }
        );
        launch.accel = Some(if kvm { "kvm" } else { "tcg" }.to_string());
    }
    let measurement = if v.tee == VmTee::None {
        let m = launch::predict_files(&boot.kernel, &boot.initrd, &boot.cmdline)
            .context("predicting the guest's launch measurement")?;
        Some(Measurement(m.measurement()))
    } else {
        None
    };
    Ok(VmJob {
        launch,
        boot,
        manifest,
        measurement,
    })
}

/// Whether KVM runs this image here: `/dev/kvm` must be usable and a probe boot under KVM
/// must get as far as starting the enclave (some hosts have a `/dev/kvm` whose guests stop on
/// their first AVX instruction). Asked once per process; the probe takes seconds.
pub fn kvm_works(v: &VmLaunch, boot: &GuestBoot) -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        let usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        usable
            && probe_kvm(v, boot).unwrap_or_else(|e| {
                tracing::debug!(error = %format!("{e:#}"), "KVM probe failed");
                false
            })
    })
}

fn probe_kvm(v: &VmLaunch, boot: &GuestBoot) -> Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("conclave-kvm-probe-")
        .tempdir()?;
    let mut probe = v.clone();
    probe.accel = Some("kvm".into());
    let q = probe.qemu(boot, dir.path().join("channel.sock"), 3);
    let log = dir.path().join("console.log");
    let mut vm = launch_qemu(&q, &log, Duration::from_secs(30))?;
    let start = std::time::Instant::now();
    let works = loop {
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
        if text.contains("conclave-init: starting") {
            break true;
        }
        if crate::enclave::FATAL.iter().any(|m| text.contains(m))
            || vm.child.try_wait()?.is_some()
            || start.elapsed() > Duration::from_secs(60)
        {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = vm.child.kill();
    Ok(works)
}

/// The dataset disk of a job: `corpus/` (the corpus as the enclave reads it) and `cache/`
/// (the tokenizer and the job's shards with their manifest, as `conclave-enclave spec` left
/// them), kept as `<cache>/vm-disks/data-<root>.img` (the same data gives the same bytes).
pub fn job_data_disk(
    corpus: &Path,
    dataset: &Path,
    cache: &Path,
) -> Result<crate::image_build::DataDisk> {
    use crate::image_build::{build_data_disk, copy_tree};
    let base = dataset
        .parent()
        .with_context(|| format!("the dataset folder {} has no parent", dataset.display()))?;
    let (Some(base_name), Some(ds_name)) = (base.file_name(), dataset.file_name()) else {
        bail!(
            "the dataset folder {} is not inside a cache folder",
            dataset.display()
        );
    };
    let disks = cache.join("vm-disks");
    std::fs::create_dir_all(&disks).with_context(|| format!("creating {}", disks.display()))?;
    let stage = tempfile::Builder::new()
        .prefix(".stage-")
        .tempdir_in(&disks)
        .with_context(|| format!("making a staging folder in {}", disks.display()))?;
    let root = stage.path().join("root");
    copy_tree(corpus, &root.join("corpus"))
        .with_context(|| format!("the corpus {}", corpus.display()))?;
    let cached = root.join("cache").join(base_name);
    copy_tree(dataset, &cached.join(ds_name))?;
    let tokenizer = base.join("tokenizer.json");
    std::fs::copy(&tokenizer, cached.join("tokenizer.json"))
        .with_context(|| format!("copying {}", tokenizer.display()))?;
    let built = build_data_disk(&root, &stage.path().join("disk.img"))?;
    let path = disks.join(format!("data-{}.img", hex::encode(&built.params.root[..8])));
    std::fs::rename(&built.path, &path)
        .with_context(|| format!("moving the dataset disk to {}", path.display()))?;
    Ok(crate::image_build::DataDisk {
        path,
        params: built.params,
    })
}

/// The dataset disk of a sealed job: the sealed dataset (index and sealed files) as the guest's
/// `/data/corpus`, the folder its enclave opens with the job's key.
pub fn job_sealed_disk(sealed: &Path, cache: &Path) -> Result<crate::image_build::DataDisk> {
    use crate::image_build::{build_data_disk, copy_tree};
    let disks = cache.join("vm-disks");
    std::fs::create_dir_all(&disks).with_context(|| format!("creating {}", disks.display()))?;
    let stage = tempfile::Builder::new()
        .prefix(".stage-")
        .tempdir_in(&disks)
        .with_context(|| format!("making a staging folder in {}", disks.display()))?;
    let root = stage.path().join("root");
    copy_tree(sealed, &root.join("corpus"))
        .with_context(|| format!("the sealed dataset {}", sealed.display()))?;
    std::fs::create_dir_all(root.join("cache"))?;
    let built = build_data_disk(&root, &stage.path().join("disk.img"))?;
    let path = disks.join(format!(
        "sealed-{}.img",
        hex::encode(&built.params.root[..8])
    ));
    std::fs::rename(&built.path, &path)
        .with_context(|| format!("moving the dataset disk to {}", path.display()))?;
    Ok(crate::image_build::DataDisk {
        path,
        params: built.params,
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
    let started = start_enclave(job, index, store, slot)?;
    attest_operator(job, started)
}

/// An enclave started (a process, or a guest booting) with its channel connected, not yet
/// attested.
pub struct Started {
    pub index: u32,
    pub launched: Launched,
    pub channel: Channel,
}

/// Launches operator `index`'s enclave: quick (a guest boots afterwards), so a peer set starts
/// all its enclaves, then attests them in parallel. A guest's qemu dies with this process
/// however it ends ([`crate::enclave::spawn_tied`]).
pub fn start_enclave(
    job: &PreparedJob,
    index: u32,
    store: &JobStore,
    slot: Option<u32>,
) -> Result<Started> {
    let (socket, scratch, log) = store.enclave_files(slot);
    let (launched, channel) = match &job.vm {
        None => {
            let launched = launch_sim(&job.launch, &socket, &scratch, &log)?;
            let channel = Channel::connect(&socket, job.request_timeout)?;
            (launched, channel)
        }
        Some(vm) => {
            // The guest's console and qemu's complaints go to the enclave's log.
            let q = vm.launch.qemu(&vm.boot, socket.clone(), 3 + index);
            let mut launched = launch_qemu(&q, &log, Duration::from_secs(60))
                .with_context(|| format!("operator {index}: starting its guest"))?;
            let channel = Channel::connect(&socket, Duration::from_secs(30))?.with_console(&log);
            launched.watch = Some(watch_guest(
                channel.shutdown_handle()?,
                launched.child.id(),
                log.clone(),
            ));
            tracing::info!(operator = index, log = %log.display(), "guest started");
            (launched, channel)
        }
    };
    Ok(Started {
        index,
        launched,
        channel,
    })
}

/// Says Hello to a started enclave with a fresh nonce (waiting for a guest to boot),
/// appraises its evidence under the job's policy and loads the job.
pub fn attest_operator(job: &PreparedJob, started: Started) -> Result<Operator> {
    let mut op = hello_operator(job, started)?;
    if job.doc.sealing.is_some() {
        let target = job.key_broker.as_ref().with_context(|| {
            format!(
                "operator {}: the job is sealed and no key broker is set ([job] key_broker and \
                 key_broker_cert), so its enclave cannot get the job's key",
                op.index
            )
        })?;
        key_from_broker(job, &mut op, target)?;
    }
    load_job(job, &mut op)?;
    Ok(op)
}

/// The sealed job's sealing id.
pub(crate) fn sealing_id(job: &PreparedJob) -> Result<Hash32> {
    Ok(job
        .doc
        .sealing
        .as_ref()
        .context("the job is not sealed")?
        .sealing_id)
}

/// The enclave's key request for `nonce` (its evidence binds a fresh key to the job's sealing id
/// and the nonce).
pub(crate) fn key_request(op: &mut Operator, sealing_id: Hash32, nonce: Nonce) -> Result<Vec<u8>> {
    match op
        .channel
        .call(&Request::KeyRequest { sealing_id, nonce })?
    {
        Response::KeyRequest { request } => Ok(request.0),
        other => bail!("operator {}: key_request answered {other:?}", op.index),
    }
}

/// Hands a wrapped secret to the enclave that asked for it.
pub(crate) fn key_release(op: &mut Operator, wrapped: Vec<u8>) -> Result<()> {
    match op.channel.call(&Request::KeyRelease {
        wrapped: Blob(wrapped),
    })? {
        Response::KeyHeld { .. } => Ok(()),
        other => bail!("operator {}: key_release answered {other:?}", op.index),
    }
}

/// Gets the sealed job's secret for `op`'s enclave from the customer's key broker: the broker's
/// challenge, the enclave's attested request, the wrapped secret (which only that enclave can
/// open) relayed back.
pub fn key_from_broker(
    job: &PreparedJob,
    op: &mut Operator,
    target: &crate::keys::BrokerTarget,
) -> Result<()> {
    let id = sealing_id(job)?;
    let wrapped = crate::keys::fetch_key(target, id, &mut |nonce| key_request(op, id, nonce))
        .with_context(|| format!("operator {}: the job's key from {}", op.index, target.url))?;
    key_release(op, wrapped)?;
    tracing::info!(operator = op.index, broker = %target.url, "the enclave holds the job's key (from the customer's broker)");
    Ok(())
}

/// Enclave-to-enclave release: `giver`'s enclave (running the sealed job) challenges, appraises
/// `taker`'s enclave's request under the job policy and wraps the secret to it; this host only
/// relays.
pub fn key_from_peer(job: &PreparedJob, giver: &mut Operator, taker: &mut Operator) -> Result<()> {
    let id = sealing_id(job)?;
    let nonce = match giver.channel.call(&Request::KeyChallenge)? {
        Response::Challenge { nonce, .. } => nonce,
        other => bail!("operator {}: key_challenge answered {other:?}", giver.index),
    };
    let request = key_request(taker, id, nonce)?;
    let wrapped = match giver.channel.call(&Request::ReleaseKey {
        request: Blob(request),
    }) {
        Ok(Response::Wrapped { wrapped }) => wrapped.0,
        Ok(other) => bail!("operator {}: release_key answered {other:?}", giver.index),
        Err(e) => {
            return Err(e.context(format!(
                "operator {} refused operator {} the job's key",
                giver.index, taker.index
            )));
        }
    };
    key_release(taker, wrapped)?;
    tracing::info!(
        operator = taker.index,
        from = giver.index,
        "the enclave holds the job's key (released by a peer enclave)"
    );
    Ok(())
}

/// Says Hello to a started enclave with a fresh nonce (waiting for a guest to boot) and
/// appraises its evidence under the job's policy.
pub fn hello_operator(job: &PreparedJob, started: Started) -> Result<Operator> {
    let Started {
        index,
        launched,
        mut channel,
    } = started;
    // Booting (under TCG, tens of seconds) is part of the first answer.
    let boot_timeout = job
        .vm
        .as_ref()
        .map(|v| Duration::from_secs(v.launch.boot_timeout_s))
        .unwrap_or(job.request_timeout);
    channel.set_timeout(Some(boot_timeout.max(job.request_timeout)))?;
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
    channel.set_timeout(Some(job.request_timeout))?;
    let peer = PeerEvidence { evidence, nonce };
    let (accepted, ctx) = appraise_peer(&peer, job.job, &job.policy, now())
        .with_context(|| format!("operator {index}"))?;
    let op = Operator {
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
    Ok(op)
}

/// Loads the job into an attested enclave (a sealed job's enclave holds its key by now) and
/// checks what it accepted.
pub fn load_job(job: &PreparedJob, op: &mut Operator) -> Result<()> {
    let index = op.index;
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
    Ok(())
}
