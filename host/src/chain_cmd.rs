//! `conclave chain up`: a local dev chain with the contract deployed.

use std::path::PathBuf;
use std::process::ExitCode;

use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use conclave_host::chain::{Anvil, Chain, ChainOptions, DeployParams};

#[derive(Subcommand)]
pub enum ChainCommand {
    /// Start a local anvil on loopback, deploy ConclaveTraining, print the addresses, and run
    /// until Ctrl-C (then stop anvil).
    Up(UpArgs),
}

#[derive(Args)]
pub struct UpArgs {
    /// Port for anvil (0: any free port).
    #[arg(long, default_value_t = 8545)]
    port: u16,
    /// Seconds from requestLeave to a withdrawable stake.
    #[arg(long, default_value_t = 3600)]
    unbonding_delay: u64,
    /// Seconds after completion during which matching checkpoints still count.
    #[arg(long, default_value_t = 3600)]
    commit_grace: u64,
    /// Share of a slashed stake paid to the reporter, in basis points.
    #[arg(long, default_value_t = 1000)]
    reporter_reward_bps: u64,
    /// Also write the RPC URL, chain id, contract and deployer key as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Deploy, print and stop instead of running until Ctrl-C.
    #[arg(long)]
    exit: bool,
}

pub fn run(cmd: ChainCommand) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cmd {
        ChainCommand::Up(a) => rt.block_on(up(a)),
    }
}

async fn up(a: UpArgs) -> Result<ExitCode> {
    let anvil = Anvil::start(a.port).await?;
    let deployer = PrivateKeySigner::random();
    anvil
        .fund(
            deployer.address(),
            U256::from(10_000u64) * U256::from(10u64).pow(U256::from(18)),
        )
        .await?;
    let chain = Chain::deploy(
        &anvil.url(),
        &deployer,
        DeployParams {
            unbonding_delay: a.unbonding_delay,
            commit_grace: a.commit_grace,
            reporter_reward_bps: a.reporter_reward_bps,
        },
        ChainOptions::default(),
    )
    .await?;
    let info = serde_json::json!({
        "rpc": anvil.url(),
        "chain_id": chain.chain_id,
        "contract": chain.address().to_string(),
        "deployer": deployer.address().to_string(),
        "deployer_key": format!("0x{}", hex::encode(deployer.to_bytes())),
    });
    println!("rpc       {}", anvil.url());
    println!("chain id  {}", chain.chain_id);
    println!("contract  {}", chain.address());
    println!(
        "deployer  {} (dev key, funded: {})",
        deployer.address(),
        info["deployer_key"].as_str().unwrap_or("")
    );
    if let Some(p) = &a.out {
        std::fs::write(p, serde_json::to_vec_pretty(&info)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if !a.exit {
        println!("running; Ctrl-C stops the chain");
        tokio::signal::ctrl_c().await?;
    }
    anvil.stop().await?;
    Ok(ExitCode::SUCCESS)
}
