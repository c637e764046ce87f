//! `conclave`: the operator's program and the user-facing command line. It wires the library
//! crates together; decisions live in them (`conclave-attestation` appraises evidence).
//!
//! Exit codes: 0 ok / accepted, 1 rejected or failed check, 2 unusable input or usage.

mod chain_cmd;
mod image;
mod input;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Conclave: permissionless, confidential, verifiable distributed training.
#[derive(Parser)]
#[command(name = "conclave", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job as the host proxy: launch the enclaves (sim processes here), check their
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
    /// The chain: a local dev node with the ConclaveTraining contract deployed.
    Chain {
        #[command(subcommand)]
        command: chain_cmd::ChainCommand,
    },
}

fn run_job(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    use conclave_host::api::{JobState, Shared, spawn_server};
    let cfg = conclave_host::run::OperatorConfig::load(config, std::env::vars())?;
    let job = cfg
        .job
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("{}: no [job] section", config.display()))?;
    let id = job.id.clone().unwrap_or_default();
    let state = Shared::new(cfg.storage.dir.clone());
    if let Some(listen) = &cfg.api.listen {
        let addr = spawn_server(state.clone(), listen)?;
        eprintln!("conclave API on http://{addr}");
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
    Ok(ExitCode::SUCCESS)
}

fn run_node(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = conclave_host::node::NodeConfig::load(config, std::env::vars())?;
    let s = conclave_host::node::run_node(&cfg)?;
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
    let result = match cli.command {
        Command::Run { config } => run_job(&config),
        Command::Node { config } => run_node(&config),
        Command::Serve { config } => {
            conclave_host::run::OperatorConfig::load(&config, std::env::vars())
                .and_then(conclave_host::api::serve)
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Verify(args) => verify::run(args),
        Command::SimEvidence(args) => verify::sim_evidence(args),
        Command::Image { command } => image::run(command),
        Command::Chain { command } => chain_cmd::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
