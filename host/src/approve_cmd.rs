//! `conclave approve`: a job's verifier appraises an operator's approval request and signs the
//! approval of its enclave key ([`conclave_host::approve`]).

use std::path::PathBuf;
use std::process::ExitCode;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use clap::Args;
use conclave_host::approve::{ApprovalRequest, ChainTerms, approve, read_json};
use conclave_host::chain::{Chain, ChainOptions};
use conclave_host::store::{read_bounded, write_atomic};
use conclave_protocol::Hash32;
use conclave_protocol::job::MAX_JOB_DOCUMENT;

#[derive(Args)]
pub struct ApproveArgs {
    /// The node's request (`approval-request.json` in its job folder).
    #[arg(long)]
    request: PathBuf,
    /// The job document (default: `job-document.json` beside the request). Its hash must be
    /// the spec hash the chain records for the job.
    #[arg(long)]
    document: Option<PathBuf>,
    /// The chain's JSON-RPC URL (the job's terms and verifiers are read from it).
    #[arg(long)]
    rpc: String,
    /// The environment variable holding the verifier account's private key (hex).
    #[arg(long, default_value = "CONCLAVE_VERIFIER_KEY")]
    key_env: String,
    /// Where the approval goes (default: `approvals/<verifier>.json` beside the request).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: ApproveArgs) -> Result<ExitCode> {
    let req: ApprovalRequest = read_json(&a.request)?;
    let folder = a
        .request
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let doc_path = a
        .document
        .clone()
        .unwrap_or_else(|| folder.join("job-document.json"));
    let document = read_bounded(&doc_path, MAX_JOB_DOCUMENT as u64)?;
    let key_hex = std::env::var(&a.key_env).with_context(|| {
        format!(
            "${} is not set (the verifier's private key, hex)",
            a.key_env
        )
    })?;
    let signer: PrivateKeySigner = key_hex
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("${}: not a private key: {e}", a.key_env))?;
    let contract: Address = req
        .contract
        .parse()
        .with_context(|| format!("the request's contract {:?}", req.contract))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (terms, verifiers) = rt.block_on(async {
        let chain = Chain::connect(&a.rpc, &signer, contract, ChainOptions::default()).await?;
        if chain.chain_id != req.chain_id {
            bail!(
                "the request is for chain {}, {} is chain {}",
                req.chain_id,
                a.rpc,
                chain.chain_id
            );
        }
        let job = chain.job(req.job).await?;
        let verifiers = chain.verifiers(req.job).await?;
        anyhow::Ok((
            ChainTerms {
                spec_hash: Hash32(job.specHash.0),
                dataset_root: Hash32(job.datasetRoot.0),
            },
            verifiers,
        ))
    })?;
    if !verifiers.contains(&signer.address()) {
        bail!(
            "{} is not one of job {}'s verifiers ({verifiers:?})",
            signer.address(),
            req.job
        );
    }
    let secret: [u8; 32] = signer.to_bytes().into();
    match approve(
        &req,
        &document,
        terms,
        &secret,
        conclave_host::operator::now(),
    ) {
        Ok(approval) => {
            let out = a.out.clone().unwrap_or_else(|| {
                folder
                    .join("approvals")
                    .join(format!("{}.json", signer.address()))
            });
            write_atomic(&out, &serde_json::to_vec_pretty(&approval)?)?;
            println!(
                "approved: enclave 0x{} of operator {} for job {} ({})",
                req.enclave,
                req.operator,
                req.job,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("refused: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}
