//! `conclave demo`: the whole system on one machine.
//!
//! A local anvil with the contract deployed; a customer account creates a job (escrow, the
//! corpus's dataset root, the sim measurement, the training config's hash, N operators, R
//! rounds, a checkpoint every K); N `conclave node` processes (each with its own sim enclave)
//! join on chain, register their enclave keys, start the job, train on their shards, gossip
//! signed updates over loopback libp2p, aggregate, and commit signed checkpoints on chain;
//! once the job completes they leave, the demo moves the dev chain's clock past the commit
//! grace and the unbonding delay, and they withdraw stake and payment. Then the summary, and
//! `conclave audit` on the result.
//!
//! Every process it starts is in a process group of its own and is stopped (with its
//! enclave) when the demo ends, fails or gets Ctrl-C. Logs go to `<out>/logs/`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use alloy::primitives::{B256, U256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result};
use conclave_attestation::eip712::chain_measurement;
use conclave_attestation::{Policy, Tee};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::approve::{ApprovalRequest, ChainTerms, approve, read_json};
use crate::audit::{AuditInput, AuditReport, audit};
use crate::chain::{Anvil, Chain, ChainOptions, DeployParams, JobSpec, JobStatus};
use crate::config::JobSection;
use crate::enclave::Launch;
use crate::node::NodeSummary;
use crate::operator::{PreparedJob, prepare_job};
use crate::store::{JobStore, write_atomic};

mod nodes;
use nodes::{Nodes, follow_nodes, start_node};

const ETH: u128 = 1_000_000_000_000_000_000;

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Everything goes here: node folders, logs, the policy, `demo.json`.
    pub out: PathBuf,
    /// The training config the customer publishes.
    pub job_config: PathBuf,
    pub operators: u32,
    pub rounds: u64,
    pub checkpoint_interval: u64,
    pub corpus: PathBuf,
    pub cache: PathBuf,
    /// Rounds `conclave audit` re-executes at the end.
    pub replay: usize,
    /// The `conclave` program for the nodes (default: this executable).
    pub conclave: PathBuf,
    /// The `conclave-enclave` program (default: beside `conclave`).
    pub enclave: Option<PathBuf>,
    /// Draw progress bars (a terminal); otherwise print lines.
    pub progress: bool,
    /// Seconds a node may take for the whole job before the demo gives up.
    pub timeout_s: u64,
    /// `--enclave vm`: every operator's enclave boots the measured guest image.
    pub vm: Option<DemoVm>,
    /// A sealed job: the customer seals the dataset, runs its key broker on loopback, and
    /// opens the final model; the operators see ciphertext only.
    pub sealed: bool,
}

/// The guests of `conclave demo --enclave vm`.
#[derive(Debug, Clone)]
pub struct DemoVm {
    /// The image folder (`conclave image build --out`).
    pub image: PathBuf,
    /// `kvm` or `tcg`; default: KVM where it works, else TCG.
    pub accel: Option<String>,
    pub memory_mib: u64,
    pub vcpus: u32,
}

/// What the demo produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoOutcome {
    pub rpc: String,
    pub contract: String,
    pub chain_id: u64,
    pub job: u64,
    pub operators: u32,
    pub rounds: u64,
    pub params: u64,
    pub losses: Vec<f64>,
    /// Per operator: bytes of signed updates it published.
    pub update_bytes: Vec<u64>,
    /// What a ring all-reduce of f32 gradients would have sent per operator over the job.
    pub dense_bytes: u64,
    pub checkpoints_on_chain: u64,
    pub final_model: String,
    pub paid_out_wei: String,
    pub escrow_wei: String,
    /// The job's status on chain at the end.
    pub chain_status: crate::chain::JobStatus,
    pub latest_round: u64,
    /// The audit, as a customer would run it.
    pub audit_command: String,
    pub node_dirs: Vec<PathBuf>,
    pub policy: PathBuf,
    pub seconds: f64,
    /// Whether the job was sealed.
    #[serde(default)]
    pub sealed: bool,
    /// A sealed job: the model the customer opened with its key.
    #[serde(default)]
    pub customer_model: Option<PathBuf>,
    /// A sealed job: files and bytes in the operators' folders, and how many of them are
    /// sealed envelopes.
    #[serde(default)]
    pub operator_files: Option<(u64, u64, u64)>,
}

/// The customer's side of a sealed demo, under `<out>/customer/`.
struct SealedDemo {
    dir: PathBuf,
    published: PathBuf,
    sealed: PathBuf,
    key: PathBuf,
}

/// The customer prepares its dataset in its own folder, publishes the job's facts and seals
/// the dataset (a fresh key each run).
fn customer_seals(opts: &DemoOptions, out: &Path) -> Result<SealedDemo> {
    let dir = out.join("customer");
    std::fs::create_dir_all(&dir)?;
    let program = match &opts.enclave {
        Some(p) => abs(p)?,
        None => crate::enclave::default_enclave_program(),
    };
    let o = std::process::Command::new(&program)
        .arg("spec")
        .arg("--config")
        .arg(abs(&opts.job_config)?)
        .arg("--corpus")
        .arg(abs(&opts.corpus)?)
        .arg("--cache")
        .arg(dir.join("cache"))
        .output()
        .with_context(|| format!("running {} spec", program.display()))?;
    if !o.status.success() {
        anyhow::bail!(
            "{} spec: {}",
            program.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let published = dir.join("published.json");
    write_atomic(&published, &o.stdout)?;
    let spec: crate::operator::PublishedSpec = serde_json::from_slice(&o.stdout)?;
    let dataset = spec
        .dataset_dir
        .context("`conclave-enclave spec` named no dataset folder")?;
    let sealed = out.join("sealed");
    let key = dir.join("key.json");
    for p in [&sealed, &key] {
        if p.is_dir() {
            std::fs::remove_dir_all(p)?;
        } else if p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    crate::keys::seal_dataset(&dataset, &sealed, &key)?;
    Ok(SealedDemo {
        dir,
        published,
        sealed,
        key,
    })
}

/// Files and bytes under `dir`, and how many are sealed envelopes (`CSE1`).
fn folder_census(dir: &Path, acc: &mut (u64, u64, u64)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            folder_census(&p, acc);
        } else if let Ok(m) = e.metadata() {
            acc.0 += 1;
            acc.1 += m.len();
            let mut head = [0u8; 4];
            if std::fs::File::open(&p)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .is_ok()
                && &head == b"CSE1"
            {
                acc.2 += 1;
            }
        }
    }
}

/// The customer opens the latest checkpoint of `node_dir` with its key into `out`, checking
/// it against the enclave-signed manifest and the model the rounds (and the chain) reached.
fn customer_opens(key: &Path, node_dir: &Path, expect: &str, out: &Path) -> Result<()> {
    let (kf, secret) = crate::keys::KeyFile::read(key)?;
    let store = JobStore::new(node_dir);
    let mut latest: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(store.checkpoints_dir())?.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if let Some(step) = n
            .strip_prefix("step-")
            .and_then(|r| r.strip_suffix(".manifest.env"))
            .and_then(|r| r.parse::<u64>().ok())
            && latest.as_ref().is_none_or(|(s, _)| step > *s)
        {
            latest = Some((step, e.path()));
        }
    }
    let (step, env_path) = latest.context("no checkpoint in the operator's folder")?;
    let env = conclave_protocol::Signed::<conclave_protocol::CheckpointManifest>::decode_envelope(
        &std::fs::read(&env_path)?,
    )?;
    let m = <conclave_protocol::CheckpointManifest as conclave_protocol::Statement>::from_payload(
        &env.payload,
    )?;
    let files = store.checkpoint(step);
    let sealed = std::fs::read(&files.weights)?;
    let plain = crate::keys::open_checkpoint(&secret, &kf.sealing_id, &m, &sealed)
        .with_context(|| format!("{}", files.weights.display()))?;
    if m.model_hash.to_string() != expect {
        anyhow::bail!(
            "the opened model is {}, the rounds reached {expect}",
            m.model_hash
        );
    }
    write_atomic(out, &plain)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn abs(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

/// The policy the customer appraises with: sim evidence of the sim measurement.
pub fn demo_policy() -> Policy {
    Policy {
        allow_sim: true,
        measurements: vec![conclave_attestation::sim::default_sim_measurement()],
        ..Policy::default()
    }
}

/// Runs the demo against a running anvil (the CLI starts one; tests keep theirs for more
/// audits afterwards).
pub async fn run_demo(opts: &DemoOptions, anvil: &Anvil) -> Result<(DemoOutcome, AuditReport)> {
    let t0 = Instant::now();
    let out = abs(&opts.out)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // A fresh run: the node folders and logs of an earlier one go.
    for e in std::fs::read_dir(&out)?.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with("node-") || n == "logs" {
            let p = e.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let say = |s: &str| tracing::info!("demo: {s}");

    // A sealed job: the customer prepares and seals the dataset in its own folder.
    let sealed = if opts.sealed {
        let s = customer_seals(opts, &out)?;
        say(&format!(
            "the customer sealed its dataset into {} (key {}; the operators get the sealed files \
             and the published facts, never the corpus or the key)",
            s.sealed.display(),
            s.key.display()
        ));
        Some(s)
    } else {
        None
    };
    // The customer's published facts.
    let jobsec = JobSection {
        operators: opts.operators,
        rounds: opts.rounds,
        allow_sim: Some(true),
        published: sealed.as_ref().map(|s| s.published.clone()),
        sealed_data: sealed.as_ref().map(|s| s.sealed.clone()),
        ..JobSection::new(abs(&opts.job_config)?)
    };
    let launch = match &opts.vm {
        None => Launch::Sim {
            program: opts.enclave.clone(),
            corpus: abs(&opts.corpus)?,
            cache: abs(&opts.cache)?,
            threads: 1,
        },
        Some(vm) => Launch::Vm(demo_vm_launch(opts, vm)?),
    };
    let prepared = prepare_job(&jobsec, &launch)?;
    let published = prepared.published.clone();
    if let Some(vm) = &prepared.vm {
        say(&format!(
            "guest image {} (kernel {}); each operator's enclave boots it with the dataset disk {}; \
             launch measurement {} (predicted from the kernel, initrd and command line: the only \
             one the job allows)",
            vm.launch.image.display(),
            vm.manifest.kernel_release,
            vm.boot.data_disk.display(),
            prepared
                .policy
                .measurements
                .first()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ));
    }
    say(&format!(
        "job config {} (hash {}), dataset root {}, {} parameters",
        jobsec.config.display(),
        &published.config_hash.to_hex()[..16],
        &prepared.doc.data_root.to_hex()[..16],
        published.params
    ));

    let (customer, customer_key, job, params) = create_job(opts, anvil, &prepared).await?;
    // The customer is the job's one appointed verifier: it appraises each operator's evidence
    // under the job document's policy before approving its enclave key.
    let approver = Approver {
        document: prepared.document.clone(),
        terms: ChainTerms {
            spec_hash: prepared.spec_hash,
            dataset_root: prepared.doc.data_root,
        },
        secret: customer_key.to_bytes().into(),
    };
    let url = anvil.url();
    let policy_path = out.join("policy.toml");
    // The customer appraises with the job document's policy: sim evidence of exactly the
    // measurement the job allows (the sim constant for processes, the image's for guests).
    write_atomic(&policy_path, prepared.policy.to_toml().as_bytes())?;
    say(crate::operator::sealing_line(sealed.is_some()));
    // A sealed job: the customer's key broker on loopback, under the job's policy.
    let broker = match &sealed {
        Some(s) => {
            let (kf, secret) = crate::keys::KeyFile::read(&s.key)?;
            let mut b = crate::keys::Broker::new();
            b.add(kf.sealing_id, secret, prepared.policy.clone());
            let h = crate::keys::spawn_broker("127.0.0.1:0", b)?;
            let cert = s.dir.join("broker.pem");
            write_atomic(&cert, h.cert_pem.as_bytes())?;
            say(&format!(
                "the customer's key broker on https://{} (TLS certificate {}): it releases the \
                 job's key only to enclaves whose evidence passes the job's policy",
                h.addr,
                cert.display()
            ));
            Some((h, cert))
        }
        None => None,
    };
    // Operator 0 gets the key from the customer's broker; every other operator's enclave from
    // a peer enclave over the operator network (so the customer need not stay online).
    let job_extra = |i: u32| match (&sealed, &broker) {
        (Some(s), Some((h, cert))) => {
            let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
            let mut t = format!(
                "published = {}\nsealed_data = {}\n",
                q(&s.published),
                q(&s.sealed)
            );
            if i == 0 {
                t.push_str(&format!(
                    "key_broker = \"https://{}\"\nkey_broker_cert = {}\n",
                    h.addr,
                    q(cert)
                ));
            }
            t
        }
        _ => String::new(),
    };

    // The operators.
    let mut keys = Vec::new();
    for _ in 0..opts.operators {
        let k = PrivateKeySigner::random();
        anvil.fund(k.address(), U256::from(100 * ETH)).await?;
        keys.push(k);
    }
    let ports: Vec<u16> = (0..opts.operators)
        .map(|_| free_port())
        .collect::<Result<_>>()?;
    let mut node_dirs = Vec::new();
    let mut nodes = Nodes {
        children: Vec::new(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    for i in 0..opts.operators {
        let dir = out.join(format!("node-{i}"));
        let text = node_config(
            opts,
            i,
            job,
            &jobsec,
            &dir,
            &ports,
            &url,
            customer.address(),
            &job_extra(i),
        )?;
        let cfg_path = out.join(format!("node-{i}.toml"));
        write_atomic(&cfg_path, text.as_bytes())?;
        let child = start_node(opts, i, &cfg_path, &keys[i as usize], &logs, tx.clone())?;
        nodes.children.push(child);
        node_dirs.push(dir);
    }
    drop(tx);
    say(&format!(
        "{} operators started (configs {}/node-N.toml, logs {}/)",
        opts.operators,
        out.display(),
        logs.display()
    ));

    follow_nodes(
        opts, &mut nodes, rx, &customer, job, &keys, anvil, &params, &logs, &approver,
    )
    .await?;
    drop(nodes);
    if let Some((h, _)) = &broker
        && let Ok(b) = h.broker.lock()
    {
        let released = b.records.iter().filter(|r| r.evidence.is_some()).count();
        say(&format!(
            "the key broker released the job's key {released} time(s) ({} request(s)); the other \
             operators' enclaves got it from a peer enclave over the operator network",
            b.records.len()
        ));
    }

    // The summary, from the nodes' own summaries.
    let summaries = node_dirs
        .iter()
        .map(|d| {
            let path = JobStore::new(d).summary();
            let bytes = std::fs::read(&path).with_context(|| format!("{}", path.display()))?;
            serde_json::from_slice::<NodeSummary>(&bytes)
                .with_context(|| format!("{}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let update_bytes: Vec<u64> = summaries
        .iter()
        .map(|s| s.update_bytes.iter().sum())
        .collect();
    let losses = summaries[0].losses.clone();
    let final_model = summaries[0]
        .model_hashes
        .last()
        .cloned()
        .unwrap_or_default();
    let steps_per_round = summaries[0].steps_per_round;
    let n = opts.operators as u64;
    // A ring all-reduce sends 2(n-1)/n of the f32 gradient per step.
    let dense_per_round = 4 * published.params * 2 * (n - 1) / n.max(1);
    let dense_bytes = dense_per_round * opts.rounds * steps_per_round;
    let j = customer.job(job).await?;
    let mut outcome = DemoOutcome {
        rpc: url.clone(),
        contract: customer.address().to_string(),
        chain_id: customer.chain_id,
        job,
        operators: opts.operators,
        rounds: opts.rounds,
        params: published.params,
        losses,
        update_bytes,
        dense_bytes,
        checkpoints_on_chain: customer.certified_rounds(job).await?,
        final_model,
        paid_out_wei: j.paidOut.to_string(),
        escrow_wei: j.escrow.to_string(),
        chain_status: j.state(),
        latest_round: j.latestRound,
        audit_command: String::new(),
        node_dirs: node_dirs.clone(),
        policy: policy_path.clone(),
        seconds: t0.elapsed().as_secs_f64(),
        sealed: sealed.is_some(),
        customer_model: None,
        operator_files: None,
    };
    if let Some(s) = &sealed {
        let model = s.dir.join("model.safetensors");
        customer_opens(&s.key, &node_dirs[0], &outcome.final_model, &model)?;
        outcome.customer_model = Some(model);
        let mut census = (0, 0, 0);
        for d in &node_dirs {
            folder_census(d, &mut census);
        }
        outcome.operator_files = Some(census);
    }
    // The audit of the result, as a customer would run it.
    let input = AuditInput {
        rpc: url,
        contract: customer.address(),
        job,
        dir: node_dirs[0].clone(),
        policy: Some(prepared.policy.clone()),
        replay: opts.replay,
        // A sealed job's replays open the round with the customer's key, from the sealed
        // dataset.
        data: match &sealed {
            Some(s) => s.sealed.clone(),
            None => abs(&opts.cache)?,
        },
        enclave_program: opts
            .enclave
            .clone()
            .unwrap_or_else(crate::enclave::default_enclave_program),
        now: crate::operator::now(),
        key: sealed.as_ref().map(|s| s.key.clone()),
    };
    outcome.audit_command = format!(
        "conclave audit --rpc {} --contract {} --job {job} --checkpoints {} --policy {} --replay {}{}",
        input.rpc,
        input.contract,
        input.dir.display(),
        policy_path.display(),
        opts.replay,
        match &input.key {
            Some(k) => format!(" --key {} --data {}", k.display(), input.data.display()),
            None => String::new(),
        }
    );
    write_atomic(
        &out.join("demo.json"),
        &serde_json::to_vec_pretty(&outcome)?,
    )?;
    let report = audit(&input).await?;
    Ok((outcome, report))
}

/// The least time the demo's job allows per round on chain (a certificate for round r lands no
/// earlier than the start plus r times this): a job cannot complete before its rounds ran.
const DEMO_MIN_ROUND_SECONDS: u64 = 1;

/// The demo's customer as the job's verifier: the job document and the chain's terms it
/// appraises requests under, and its key.
pub(crate) struct Approver {
    pub document: Vec<u8>,
    pub terms: ChainTerms,
    pub secret: [u8; 32],
}

impl Approver {
    /// Appraises the request at `path` and writes the approval into the folder next to it
    /// (`approvals/customer.json`), as a verifier running `conclave approve` would.
    pub(crate) fn approve_file(&self, path: &Path) -> Result<()> {
        let req: ApprovalRequest = read_json(path)?;
        let approval = approve(
            &req,
            &self.document,
            self.terms,
            &self.secret,
            crate::operator::now(),
        )
        .with_context(|| format!("approving {}", path.display()))?;
        let dir = path
            .parent()
            .context("the request has no folder")?
            .join("approvals");
        write_atomic(
            &dir.join("customer.json"),
            &serde_json::to_vec_pretty(&approval)?,
        )
    }
}

/// Deploys the contract and has a customer create the job on chain.
async fn create_job(
    opts: &DemoOptions,
    anvil: &Anvil,
    prepared: &PreparedJob,
) -> Result<(Chain, PrivateKeySigner, u64, DeployParams)> {
    let say = |s: &str| tracing::info!("demo: {s}");
    let url = anvil.url();
    let customer_key = PrivateKeySigner::random();
    anvil
        .fund(customer_key.address(), U256::from(1000 * ETH))
        .await?;
    let params = DeployParams {
        unbonding_delay: 3600,
        commit_grace: 3600,
        reporter_reward_bps: 1000,
    };
    let customer = Chain::deploy(&url, &customer_key, params, ChainOptions::default()).await?;
    let allowed: Vec<B256> = prepared
        .policy
        .measurements
        .iter()
        .map(|m| B256::from(chain_measurement(Tee::Sim, m)))
        .collect();
    let now = anvil.now().await?;
    let escrow = U256::from(opts.operators as u128 * ETH);
    let job = customer
        .create_job(&JobSpec {
            token: None,
            escrow,
            stake: U256::from(ETH),
            spec_hash: B256::from(prepared.spec_hash.0),
            dataset_root: B256::from(prepared.doc.data_root.0),
            measurements: allowed,
            min_operators: opts.operators,
            total_rounds: opts.rounds,
            checkpoint_interval: opts.checkpoint_interval,
            deadline: now + 6 * 3600,
            verifiers: vec![customer.account],
            verifier_threshold: 1,
            quorum_bps: prepared.doc.quorum_bps,
            min_round_seconds: DEMO_MIN_ROUND_SECONDS,
        })
        .await?;
    say(&format!(
        "anvil {url}: contract {} deployed; customer {} created job {job} ({} ETH escrow, \
         {} operators, {} rounds, a checkpoint every {})",
        customer.address(),
        customer.account,
        opts.operators,
        opts.operators,
        opts.rounds,
        opts.checkpoint_interval
    ));
    Ok((customer, customer_key, job, params))
}

/// The launch of the demo's guests.
fn demo_vm_launch(opts: &DemoOptions, vm: &DemoVm) -> Result<crate::enclave::VmLaunch> {
    let mut v =
        crate::enclave::VmLaunch::new(abs(&vm.image)?, abs(&opts.corpus)?, abs(&opts.cache)?);
    v.program = opts.enclave.as_deref().map(abs).transpose()?;
    v.accel = vm.accel.clone();
    v.memory_mib = vm.memory_mib;
    v.vcpus = vm.vcpus;
    Ok(v)
}

/// The generated config of operator `i`'s node.
#[allow(clippy::too_many_arguments)]
fn node_config(
    opts: &DemoOptions,
    i: u32,
    job: u64,
    jobsec: &JobSection,
    dir: &Path,
    ports: &[u16],
    url: &str,
    contract: alloy::primitives::Address,
    job_extra: &str,
) -> Result<String> {
    let bootstrap: Vec<String> = if i == 0 {
        Vec::new()
    } else {
        vec![format!("/ip4/127.0.0.1/tcp/{}", ports[0])]
    };
    let q = |s: String| toml::Value::String(s).to_string();
    let mut text = format!(
        "# Generated by conclave demo: operator {i} of job {job}.\n\
         [job]\nconfig = {}\noperators = {}\nrounds = {}\n{job_extra}\n\
         [enclave]\n",
        q(jobsec.config.display().to_string()),
        opts.operators,
        opts.rounds,
    );
    match &opts.vm {
        None => text.push_str("kind = \"sim\"\nthreads = 1\n"),
        Some(vm) => {
            text.push_str(&format!(
                "kind = \"vm\"\nimage = {}\nmemory_mib = {}\nvcpus = {}\n",
                q(abs(&vm.image)?.display().to_string()),
                vm.memory_mib,
                vm.vcpus
            ));
            if let Some(a) = &vm.accel {
                text.push_str(&format!("accel = {}\n", q(a.clone())));
            }
        }
    }
    // A sealed job's enclaves read the sealed dataset only.
    let corpus = match &jobsec.sealed_data {
        Some(s) => abs(s)?,
        None => abs(&opts.corpus)?,
    };
    text.push_str(&format!(
        "corpus = {}\ncache = {}\n",
        q(corpus.display().to_string()),
        q(abs(&opts.cache)?.display().to_string()),
    ));
    if let Some(p) = &opts.enclave {
        text.push_str(&format!("program = {}\n", q(abs(p)?.display().to_string())));
    }
    text.push_str(&format!(
        "\n[storage]\ndir = {}\n\n\
         [node]\nindex = {i}\nlisten = {}\nbootstrap = [{}]\nround_timeout_s = 300\n\n\
         [chain]\nrpc = {}\ncontract = {}\njob = {job}\nwithdraw_wait_s = {}\n",
        q(dir.display().to_string()),
        q(format!("/ip4/127.0.0.1/tcp/{}", ports[i as usize])),
        bootstrap
            .iter()
            .map(|b| q(b.clone()))
            .collect::<Vec<_>>()
            .join(", "),
        q(url.to_string()),
        q(contract.to_string()),
        opts.timeout_s,
    ));
    Ok(text)
}

/// The demo's summary as `conclave demo` prints it.
pub fn render_summary(o: &DemoOutcome) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "\nloss per round (mean over the operators' receipts):");
    for (r, l) in o.losses.iter().enumerate() {
        let _ = writeln!(out, "  round {:>3}: {l:.4}", r + 1);
    }
    if let (Some(a), Some(b)) = (o.losses.first(), o.losses.last()) {
        let _ = writeln!(
            out,
            "  {} from {a:.4} to {b:.4}",
            if b < a { "falling" } else { "NOT falling" }
        );
    }
    let _ = writeln!(out, "\n{}", crate::operator::sealing_line(o.sealed));
    if let Some((files, bytes, sealed)) = o.operator_files {
        let _ = writeln!(
            out,
            "  the operators' folders hold {files} files ({bytes} B): {sealed} sealed checkpoints, \
             updates sealed inside their signed envelopes, signed statements, evidence and logs; \
             no plaintext data, update or weights"
        );
    }
    if let Some(m) = &o.customer_model {
        let _ = writeln!(
            out,
            "  the customer opened the final model with its key: {} (model {}, as the enclaves \
             signed and the chain certified)",
            m.display(),
            o.final_model
        );
    }
    let _ = writeln!(
        out,
        "\nbytes sent per operator (signed compressed updates):"
    );
    for (i, b) in o.update_bytes.iter().enumerate() {
        let _ = writeln!(
            out,
            "  operator {i}: {b} B ({:.0}x fewer than the {} B a full-precision ring all-reduce \
             of {} parameters would have sent)",
            o.dense_bytes as f64 / (*b).max(1) as f64,
            o.dense_bytes,
            o.params
        );
    }
    let _ = writeln!(
        out,
        "\non chain (contract {}, job {}): status {}, {} of {} rounds certified, {} checkpoints \
         certified, {} wei paid out of {} escrow",
        o.contract,
        o.job,
        if o.chain_status == JobStatus::Completed {
            "completed"
        } else {
            "NOT completed"
        },
        o.latest_round,
        o.rounds,
        o.checkpoints_on_chain,
        o.paid_out_wei,
        o.escrow_wei
    );
    let _ = writeln!(out, "final model {}", o.final_model);
    for d in &o.node_dirs {
        let _ = writeln!(out, "checkpoints: {}/checkpoints", d.display());
    }
    let _ = writeln!(out, "took {:.0} s", o.seconds);
    out
}
