//! `conclave data seal`, `conclave keys serve` and `conclave checkpoint open`: the customer's
//! commands of a sealed job ([`conclave_host::keys`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use conclave_attestation::Policy;
use conclave_host::keys::{Broker, KeyFile, TlsIdentity, open_checkpoint, seal_dataset, serve_tls};
use conclave_host::store::{read_bounded, write_atomic};
use conclave_protocol::{CheckpointManifest, Hash32, Signed, Statement};

#[derive(Subcommand)]
pub enum DataCommand {
    /// Seal a prepared dataset (its manifest, tokenizer, validation split and shards, as
    /// `conclave-enclave spec` prepares them) for a sealed job: every file encrypted under a
    /// fresh job secret (AES-256-GCM, keys from HKDF-SHA256), an index (`sealed.json`) naming
    /// each file's plaintext and ciphertext hashes, and the dataset root over both. The secret
    /// goes to the key file, readable by its owner only: keep it; without it the data and the
    /// model cannot be read by anyone.
    Seal {
        /// The prepared dataset folder (`manifest.json`, `validation.bin`, `shard-NNNN.bin`;
        /// `tokenizer.json` in it or its parent).
        #[arg(long = "in")]
        input: PathBuf,
        /// Where the sealed dataset goes (what operators get).
        #[arg(long)]
        out: PathBuf,
        /// Where the key file goes (the customer's; never given to an operator).
        #[arg(long)]
        key_out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// The customer's key broker: releases the job secret, over TLS, to enclaves whose
    /// evidence passes the job's policy and binds a fresh key and the broker's challenge
    /// (request → challenge → attestation → wrapped secret). Runs until stopped.
    Serve {
        /// The key file (`conclave data seal --key-out`).
        #[arg(long)]
        key: PathBuf,
        /// The appraisal policy (TOML) enclaves must pass: the job document's.
        #[arg(long)]
        policy: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Where to write the broker's fresh TLS certificate (PEM) for operators to pin.
        #[arg(long)]
        cert_out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum CheckpointCommand {
    /// Open a sealed checkpoint with the customer's key: checks the sealed file against the
    /// enclave-signed manifest beside it, decrypts it, checks the plaintext against the
    /// manifest's model hash (and `--expect`, e.g. the model hash the chain records) and writes
    /// the safetensors.
    Open {
        #[arg(long)]
        key: PathBuf,
        /// The sealed weights (`checkpoints/step-NNNNNN.safetensors` in an operator's folder).
        #[arg(long = "in")]
        input: PathBuf,
        /// The signed manifest envelope (default: `step-NNNNNN.manifest.env` beside it).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// The model hash the plaintext must have (the chain's commitment).
        #[arg(long)]
        expect: Option<Hash32>,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn data(c: DataCommand) -> Result<ExitCode> {
    match c {
        DataCommand::Seal {
            input,
            out,
            key_out,
        } => {
            let o = seal_dataset(&input, &out, &key_out)?;
            println!(
                "sealed {} files ({} bytes) into {}",
                o.files,
                o.bytes,
                o.out.display()
            );
            println!("sealing id   {}", o.sealing_id);
            println!("key check    {}", o.key_check);
            println!("dataset root {} (the job's data root)", o.data_root);
            println!(
                "key file     {} (keep it private: it opens the data and the model)",
                o.key_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn keys(c: KeysCommand) -> Result<ExitCode> {
    match c {
        KeysCommand::Serve {
            key,
            policy,
            listen,
            cert_out,
        } => {
            let (kf, secret) = KeyFile::read(&key)?;
            let text = std::fs::read_to_string(&policy)
                .with_context(|| format!("reading the policy {}", policy.display()))?;
            let policy = Policy::from_toml(&text)
                .with_context(|| format!("the policy {}", policy.display()))?;
            let mut broker = Broker::new();
            broker.add(kf.sealing_id, secret, policy);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(&listen)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                let addr = listener.local_addr()?;
                let identity = TlsIdentity::self_signed(&[addr.ip().to_string()])?;
                write_atomic(&cert_out, identity.cert_pem.as_bytes())?;
                println!(
                    "key broker for sealing id {} on https://{addr} (certificate {})",
                    kf.sealing_id,
                    cert_out.display()
                );
                let broker = std::sync::Arc::new(std::sync::Mutex::new(broker));
                serve_tls(listener, &identity, broker).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `step-NNNNNN.manifest.env` beside `step-NNNNNN.safetensors[.sealed]`.
fn manifest_beside(weights: &Path) -> Result<PathBuf> {
    let name = weights
        .file_name()
        .and_then(|n| n.to_str())
        .context("the checkpoint has no file name")?;
    let stem = name.split('.').next().unwrap_or(name);
    Ok(weights.with_file_name(format!("{stem}.manifest.env")))
}

pub fn checkpoint(c: CheckpointCommand) -> Result<ExitCode> {
    match c {
        CheckpointCommand::Open {
            key,
            input,
            manifest,
            expect,
            out,
        } => {
            let (kf, secret) = KeyFile::read(&key)?;
            let mpath = match manifest {
                Some(m) => m,
                None => manifest_beside(&input)?,
            };
            let m = open_manifest(&mpath)?;
            let sealed =
                std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
            let plain = open_checkpoint(&secret, &kf.sealing_id, &m, &sealed)
                .with_context(|| format!("{} (manifest {})", input.display(), mpath.display()))?;
            let model = m.model_hash;
            if let Some(e) = expect
                && e != model
            {
                bail!("the opened model hashes to {model}, expected {e}");
            }
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            write_atomic(&out, &plain)?;
            println!(
                "opened step {} into {} ({} bytes): model {model}, as the enclave-signed manifest {}",
                m.step,
                out.display(),
                plain.len(),
                if expect.is_some() {
                    "and the expected hash name"
                } else {
                    "names"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The manifest inside a signed envelope (its signature is checked against the signer it
/// names; the audit checks that signer against the registered enclaves).
pub fn open_manifest(path: &Path) -> Result<CheckpointManifest> {
    let bytes = read_bounded(path, 1 << 20)?;
    let env = Signed::<CheckpointManifest>::decode_envelope(&bytes)
        .with_context(|| format!("{} is not a signed manifest", path.display()))?;
    env.recover_signer()
        .ok()
        .filter(|(s, _)| *s == env.signer)
        .with_context(|| format!("{}: the signature is not its signer's", path.display()))?;
    CheckpointManifest::from_payload(&env.payload)
        .with_context(|| format!("{}: the manifest", path.display()))
}
