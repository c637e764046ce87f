//! `conclave`: the operator's program and the user-facing command line. It wires the library
//! crates together; decisions live in them (`conclave-attestation` appraises evidence).
//!
//! Exit codes: 0 ok / accepted, 1 rejected or failed check, 2 unusable input or usage.

mod approve_cmd;
mod chain_cmd;
mod image;
mod input;
mod sealed_cmd;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Conclave: permissionless, confidential, verifiable distributed training.
#[derive(Parser)]
#[command(name = "conclave", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as text or as JSON objects (one per line). `RUST_LOG` filters
    /// them (default: `info` for Conclave, `warn` for the libraries).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr (stdout carries each command's results).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,conclave=info,conclave_host=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[derive(Subcommand)]
enum Command {
    /// Run a job as the host proxy: launch the enclaves (sim processes, or guests of the
    /// measured image with `[enclave] kind = "vm"`), check their
    /// evidence, drive the rounds and store the signed receipts and checkpoints.
    Run {
        /// The operator config (TOML); `CONCLAVE_<SECTION>__<KEY>` variables override it.
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Run one operator of a job on the operator network (libp2p gossip): launch its enclave,
    /// announce its evidence, and train, exchange updates and aggregate round by round with
    /// the other operators' nodes.
    Node {
        /// The node config (TOML): `[job]`, `[enclave]`, `[storage]` and `[node]`;
        /// `CONCLAVE_<SECTION>__<KEY>` variables override it.
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Serve the HTTP API (jobs, evidence, receipts, checkpoints, health, /metrics,
    /// /openapi.json) and run posted jobs on the local peer set, one at a time.
    Serve {
        /// The operator config (TOML); `[api] listen` sets the address.
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Verify attestation evidence (SEV-SNP report, TDX quote, or sim bundle) offline.
    ///
    /// Checks the signature chain to the vendor root (AMD ARK built in; Intel SGX root pinned),
    /// certificate and collateral validity at the given time, and the appraisal policy. Prints
    /// the verdict first, then the key fields and every reason for rejection.
    /// Exit 0 accepted, 1 rejected, 2 unusable input.
    Verify(verify::VerifyArgs),
    /// Produce sim evidence (SEV-SNP report format, signed by a fresh local test root) for
    /// trying `conclave verify` without TEE hardware. Sim evidence proves nothing.
    SimEvidence(verify::SimEvidenceArgs),
    /// Guest images: the expected measurements (SEV-SNP launch digest, TDX RTMRs) that
    /// customers pin in their policy.
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// The whole system on this machine: a local chain with the contract, a customer's job,
    /// operators (each a `conclave node` with a sim enclave) that join on chain, train,
    /// gossip signed updates, commit signed checkpoints and get paid; then the summary and
    /// `conclave audit` of the result. Ctrl-C stops every process it started.
    Demo(DemoArgs),
    /// Audit a job: every checkpoint committed on chain against the files of an operator's
    /// folder (hashes, signed manifests, registered enclave keys, evidence under the policy,
    /// the receipts' chain), and replay sampled rounds with `conclave-enclave replay`.
    /// Exit 0 all good, 1 something failed (named), 2 unusable input.
    Audit(AuditArgs),
    /// As one of a job's appointed verifiers: appraise an operator's approval request (its
    /// enclave's evidence under the job document's policy, the key binding, the consent) and
    /// sign the EIP-712 approval the contract needs to register the key. Exit 0 approved,
    /// 1 refused (the reason is printed), 2 unusable input.
    Approve(approve_cmd::ApproveArgs),
    /// Datasets for sealed jobs.
    Data {
        #[command(subcommand)]
        command: sealed_cmd::DataCommand,
    },
    /// The customer's key broker of sealed jobs.
    Keys {
        #[command(subcommand)]
        command: sealed_cmd::KeysCommand,
    },
    /// Checkpoints: open a sealed one with the customer's key.
    Checkpoint {
        #[command(subcommand)]
        command: sealed_cmd::CheckpointCommand,
    },
    /// The chain: a local dev node with the ConclaveTraining contract deployed.
    Chain {
        #[command(subcommand)]
        command: chain_cmd::ChainCommand,
    },
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Output folder (node folders, logs, policy, demo.json); earlier node folders in it go.
    #[arg(long, default_value = "runs/demo")]
    out: std::path::PathBuf,
    /// The training config the customer publishes.
    #[arg(long, default_value = "configs/demo/job.toml")]
    job: std::path::PathBuf,
    /// Operators (the config's `replicas` must equal it).
    #[arg(long, default_value_t = 3)]
    operators: u32,
    /// Rounds (one DeMo step each with the default config).
    #[arg(long, default_value_t = 12)]
    rounds: u64,
    /// A checkpoint is committed on chain every this many rounds.
    #[arg(long, default_value_t = 2)]
    checkpoint_every: u64,
    #[arg(long, default_value = ".data/moby-dick/package")]
    corpus: std::path::PathBuf,
    #[arg(long, default_value = ".data/cache")]
    cache: std::path::PathBuf,
    /// Rounds the audit re-executes at the end.
    #[arg(long, default_value_t = 1)]
    replay: usize,
    /// Seconds the whole job may take.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Print lines instead of progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Where each operator's enclave runs: `process` (a local sim process) or `vm` (the
    /// measured guest image under qemu: KVM when it works, else TCG; built into --image first
    /// if it is not there).
    #[arg(long, value_name = "KIND", default_value = "process", value_parser = ["process", "vm"])]
    enclave: String,
    /// With --enclave vm: the guest image folder.
    #[arg(long, value_name = "DIR", default_value = "runs/image")]
    image: std::path::PathBuf,
    /// With --enclave vm: kvm or tcg (default: KVM where it works, else TCG).
    #[arg(long, value_name = "ACCEL", value_parser = ["kvm", "tcg"])]
    accel: Option<String>,
    /// With --enclave vm: memory of each guest, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    vm_memory_mib: u64,
    /// With --enclave vm: vCPUs of each guest.
    #[arg(long, value_name = "N", default_value_t = 1)]
    vm_vcpus: u32,
    /// Run the job unsealed: the operators' hosts can read the data, updates and model. By
    /// default the demo's job is sealed: the customer seals the dataset under
    /// `<out>/customer/`, serves its key to attested enclaves over TLS, and opens the model.
    #[arg(long)]
    unsealed: bool,
}

#[derive(clap::Args)]
struct AuditArgs {
    /// The chain's JSON-RPC URL.
    #[arg(long)]
    rpc: String,
    /// The ConclaveTraining contract.
    #[arg(long)]
    contract: String,
    /// The job's number on chain.
    #[arg(long)]
    job: u64,
    /// An operator's storage folder (`conclave node` writes its checkpoints, receipts and
    /// the operators' evidence there).
    #[arg(long)]
    checkpoints: std::path::PathBuf,
    /// The appraisal policy (TOML); default: hardware evidence only, no sim.
    #[arg(long)]
    policy: Option<std::path::PathBuf>,
    /// Rounds to re-execute (sampled from the job id).
    #[arg(long, default_value_t = 0)]
    replay: usize,
    /// Where the job's tokenized dataset lies (probes' shards are found by hash); for a
    /// sealed job with `--key`, the sealed dataset folder.
    #[arg(long, default_value = ".data/cache")]
    data: std::path::PathBuf,
    /// A sealed job: the customer's key file. Replays open the round's sealed checkpoint,
    /// updates and probe shard inside this process (and say so). Without it a sealed job's
    /// audit checks every signature, hash and certificate, and replays nothing.
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn run_demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let vm = if a.enclave == "vm" {
        if !a.image.join("manifest.json").exists() {
            use conclave_host::enclave::program_beside_this as beside_this;
            eprintln!(
                "demo: building the guest image into {} (pinned inputs from .image-inputs/)",
                a.image.display()
            );
            conclave_host::image_build::build(
                &conclave_host::image_build::BuildOptions {
                    inputs: ".image-inputs".into(),
                    init: beside_this("conclave-init"),
                    enclave: beside_this("conclave-enclave"),
                    out: a.image.clone(),
                    compression_level: 3,
                    cuda: false,
                },
                &mut |step| eprintln!("image build: {step}"),
            )?;
        }
        Some(conclave_host::demo::DemoVm {
            image: a.image.clone(),
            accel: a.accel.clone(),
            memory_mib: a.vm_memory_mib,
            vcpus: a.vm_vcpus,
        })
    } else {
        None
    };
    let opts = conclave_host::demo::DemoOptions {
        out: a.out,
        job_config: a.job,
        operators: a.operators,
        rounds: a.rounds,
        checkpoint_interval: a.checkpoint_every,
        corpus: a.corpus,
        cache: a.cache,
        replay: a.replay,
        conclave: std::env::current_exe()?,
        enclave: None,
        progress: !a.no_progress && std::io::stderr().is_terminal(),
        timeout_s: a.timeout,
        vm,
        sealed: !a.unsealed,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let anvil = conclave_host::chain::Anvil::start(0).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let result = tokio::select! {
            r = conclave_host::demo::run_demo(&opts, &anvil) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted: every process the demo started is stopped")),
            _ = term.recv() => Err(anyhow::anyhow!("terminated: every process the demo started is stopped")),
        };
        anvil.stop().await.ok();
        let (outcome, report) = result?;
        print!("{}", conclave_host::demo::render_summary(&outcome));
        println!("\n$ {}", outcome.audit_command);
        print!("{}", conclave_host::audit::render(&report));
        Ok(if report.pass { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

fn run_audit(a: AuditArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let policy = match &a.policy {
        Some(p) => Some(
            conclave_attestation::Policy::from_toml(
                &std::fs::read_to_string(p)
                    .with_context(|| format!("reading the policy {}", p.display()))?,
            )
            .with_context(|| format!("in {}", p.display()))?,
        ),
        None => None,
    };
    let input = conclave_host::audit::AuditInput {
        rpc: a.rpc,
        contract: a
            .contract
            .parse()
            .with_context(|| format!("--contract {:?}", a.contract))?,
        job: a.job,
        dir: a.checkpoints,
        policy,
        replay: a.replay,
        data: a.data,
        enclave_program: conclave_host::enclave::default_enclave_program(),
        now: conclave_host::operator::now(),
        key: a.key,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(conclave_host::audit::audit(&input))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", conclave_host::audit::render(&report));
    }
    Ok(if report.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_job(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    use conclave_host::api::{JobState, Shared, spawn_server};
    let cfg = conclave_host::config::OperatorConfig::load(config, std::env::vars())?;
    let job = cfg
        .job
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{}: no [job] section", config.display()))?;
    let id = job.id.clone().unwrap_or_default();
    let state = Shared::new(cfg.storage.dir.clone());
    if let Some(listen) = &cfg.api.listen {
        let addr = spawn_server(state.clone(), listen)?;
        tracing::info!("conclave API on http://{addr}");
    }
    state.add_job(
        &id,
        job.operators,
        job.rounds,
        cfg.storage.dir.clone(),
        JobState::Running,
    );
    let s = conclave_host::run::run_local_with(&cfg, &mut |ev| state.event(&id, ev))?;
    state.set_state(&id, JobState::Done, None);
    println!(
        "{} rounds on {} operators: model {}; checkpoint {}",
        s.rounds,
        s.operators,
        s.model_hash,
        s.checkpoint.display()
    );
    println!("{}", conclave_host::operator::sealing_line(s.sealed));
    Ok(ExitCode::SUCCESS)
}

fn run_node(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = conclave_host::config::NodeConfig::load(config, std::env::vars())?;
    let s = conclave_host::node::run_node(&cfg, &mut |ev| println!("{ev}"))?;
    println!(
        "operator {}: {} rounds: model {}; excluded {:?}",
        s.operator,
        s.rounds,
        s.model_hashes.last().map(String::as_str).unwrap_or(""),
        s.excluded
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run { config } => run_job(&config),
        Command::Node { config } => run_node(&config),
        Command::Serve { config } => {
            conclave_host::config::OperatorConfig::load(&config, std::env::vars())
                .and_then(|cfg| {
                    conclave_host::api::serve(cfg, &mut |addr| {
                        use std::io::Write as _;
                        println!("conclave API on http://{addr} (OpenAPI at /openapi.json)");
                        let _ = std::io::stdout().flush();
                    })
                })
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Verify(args) => verify::run(args),
        Command::SimEvidence(args) => verify::sim_evidence(args),
        Command::Image { command } => image::run(command),
        Command::Chain { command } => chain_cmd::run(command),
        Command::Demo(a) => run_demo(a),
        Command::Audit(a) => run_audit(a),
        Command::Approve(a) => approve_cmd::run(a),
        Command::Data { command } => sealed_cmd::data(command),
        Command::Keys { command } => sealed_cmd::keys(command),
        Command::Checkpoint { command } => sealed_cmd::checkpoint(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
