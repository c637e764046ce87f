//! `conclave-enclave`: the program inside the VM, and the tools that run its parts on files.
//!
//! Exit codes: 0 success, 1 a check failed, 2 unusable input or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use conclave_enclave::codec::{self, Codec, CodecConfig, IndexChoice, TopkRule};
use conclave_enclave::tensors::{self, NamedTensor};
use conclave_enclave::train::{Summary, TrainConfig, Trainer};
use conclave_protocol::update::hash_bytes;
use conclave_protocol::{DecodeLimits, IndexEncoding, SparseUpdate, Transform, ValueEncoding};

#[derive(Parser)]
#[command(
    name = "conclave-enclave",
    version,
    about = "The Conclave enclave program and its file tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the DeMo / SparseLoCo codec on files, to compare it with another implementation.
    #[command(subcommand)]
    Codec(CodecCommand),
    /// Train a GPT on the corpus with AdamW, DeMo or SparseLoCo across in-process replicas.
    Train(TrainArgs),
    /// Print a job's published facts for a training config: its config hash, the dataset's
    /// Merkle root and the hash of the initial weights (JSON).
    Spec {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = ".data/moby-dick/package")]
        corpus: PathBuf,
        #[arg(long, default_value = ".data/cache")]
        cache: PathBuf,
    },
    /// Serve the host over the channel: generate the enclave key in memory, attest it, and
    /// answer job, round, aggregation and checkpoint requests with signed results.
    Serve(ServeArgs),
    /// Re-execute a round outside any VM and check its receipt's TOPLOC proofs and hashes.
    Replay(ReplayArgs),
    /// Count TOPLOC's false positives and negatives over many trials (honest rounds, and
    /// provers with other weights, data, model or precision).
    ToplocTrials {
        /// A TOML training config for the model and data (every key optional).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Trials per scenario.
        #[arg(long, default_value_t = 50)]
        trials: usize,
        /// AdamW steps each trial's model is trained before it is probed.
        #[arg(long, default_value_t = 25)]
        warm_steps: u64,
    },
    /// Tabulate the summaries of several training runs (the convergence benchmark).
    Report {
        /// `summary.json` files (or run folders holding one).
        runs: Vec<PathBuf>,
        /// Write the Markdown table here as well as printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AttesterKind {
    /// Software evidence in the SEV-SNP format (no hardware; appraisal needs `allow_sim`).
    Sim,
    /// SEV-SNP guest: configfs-tsm, or /dev/sev-guest.
    Snp,
    /// TDX guest: configfs-tsm.
    Tdx,
}

#[derive(Args)]
struct ServeArgs {
    /// The Unix socket to listen on (sim enclaves run as local processes).
    #[arg(long, required_unless_present = "device", conflicts_with = "device")]
    socket: Option<PathBuf>,
    /// The virtio-serial port to serve on inside a VM (e.g.
    /// /dev/virtio-ports/org.conclave.channel).
    #[arg(long)]
    device: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "sim")]
    attester: AttesterKind,
    /// The MEASUREMENT sim evidence reports (96 hex digits). In a VM without a TEE the guest's
    /// init gives the launch measurement it computed from what qemu loaded; as a host process
    /// the sim's constant is used. Hardware attesters take theirs from the hardware.
    #[arg(long, value_name = "HEX")]
    measurement: Option<String>,
    /// The corpus folder inside the enclave (the job spec cannot name another).
    #[arg(long, default_value = ".data/moby-dick/package")]
    corpus: PathBuf,
    /// The tokenized-shard cache.
    #[arg(long, default_value = ".data/cache")]
    cache: PathBuf,
    /// Scratch space.
    #[arg(long, default_value = "/tmp/conclave-enclave")]
    scratch: PathBuf,
    /// libtorch threads (0: its default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
}

#[derive(Args)]
struct ReplayArgs {
    /// The checkpoint manifest (.json) of the weights before the round.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The round's updates, in the receipt's order (repeat the flag).
    #[arg(long = "update", required = true)]
    updates: Vec<PathBuf>,
    /// The round receipt (JSON).
    #[arg(long)]
    receipt: PathBuf,
    /// The probe's shard file (from the job's dataset).
    #[arg(long)]
    data: PathBuf,
    /// Machine-readable report.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// A TOML config (every key optional; see `configs/`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the output folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the number of steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Override the device (cpu, cuda, auto).
    #[arg(long)]
    device: Option<String>,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum CodecCommand {
    /// Compress every tensor of a safetensors file into one sparse update.
    Encode(EncodeArgs),
    /// Decode one update, or aggregate several (the mean over the peers that kept each
    /// position), into dense tensors.
    Decode(DecodeArgs),
    /// Print what an update holds.
    Inspect {
        /// The update file.
        update: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum IndexArg {
    /// The fewest bytes (Elias–Fano for sparse blocks).
    Smallest,
    /// The narrowest integer for the block size (u8/u16/u32).
    Narrowest,
    #[value(name = "12bit")]
    Packed12,
    EliasFano,
}

#[derive(Clone, Copy, ValueEnum)]
enum RuleArg {
    Demo,
    Templar,
}

#[derive(Args)]
struct EncodeArgs {
    /// Tensors to compress (F32, F64, F16 or BF16 safetensors).
    #[arg(long = "in")]
    input: PathBuf,
    /// Where to write the update.
    #[arg(long)]
    out: PathBuf,
    /// Positions kept per block.
    #[arg(long, default_value_t = 32)]
    topk: usize,
    /// Target block side (the largest divisor of each dimension at most this).
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// Value encoding: f32, bf16, 2bit or 1bit (as configs spell them).
    #[arg(long, default_value = "f32", value_parser = str::parse::<ValueEncoding>)]
    values: ValueEncoding,
    /// Keep blocks as they are (Templar since mid-2025) instead of the DCT.
    #[arg(long)]
    no_dct: bool,
    /// Index encoding.
    #[arg(long, value_enum, default_value = "smallest")]
    index: IndexArg,
    /// How k is fitted to small blocks: DeMo clamps to [1, block]; Templar keeps it even.
    #[arg(long, value_enum, default_value = "demo")]
    topk_rule: RuleArg,
    /// Also write what was not transmitted (the error-feedback residual).
    #[arg(long)]
    residual: Option<PathBuf>,
    /// Machine-readable summary.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DecodeArgs {
    /// Update files; several are aggregated.
    #[arg(long = "in", required = true)]
    input: Vec<PathBuf>,
    /// Where to write the dense tensors (f32 safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Scale each peer down to the median norm before averaging (Templar).
    #[arg(long)]
    clip_median_norm: bool,
}

fn spec(config: PathBuf, corpus: PathBuf, cache: PathBuf) -> Result<ExitCode> {
    let mut cfg = TrainConfig::load(&config)?;
    cfg.data.corpus = corpus;
    cfg.data.cache = cache;
    cfg.device = "cpu".into();
    let t = Trainer::new(cfg)?;
    println!(
        "{}",
        serde_json::json!({
            "config_hash": t.cfg.hash(),
            "data_root": t.dataset.root().to_string(),
            "initial_model_hash": t.model_hash()?,
            "params": t.param_count(),
            "dataset_dir": &t.dataset.dir,
        })
    );
    Ok(ExitCode::SUCCESS)
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    use conclave_attestation::{Attester, SimAttester, SimConfig, SnpAttester, TdxAttester};
    use conclave_enclave::service::{DataPaths, Enclave, serve_unix};
    if a.threads > 0 {
        tch::set_num_threads(a.threads);
    }
    let attester: Box<dyn Attester> = match a.attester {
        AttesterKind::Sim => {
            let mut config = SimConfig::default();
            if let Some(m) = &a.measurement {
                config.measurement = conclave_attestation::Measurement::from_hex(m)
                    .map_err(|e| anyhow::anyhow!("--measurement: {e}"))?;
            }
            Box::new(SimAttester::new(config)?)
        }
        _ if a.measurement.is_some() => {
            bail!("--measurement is for the sim attester; SEV-SNP and TDX measure in hardware")
        }
        AttesterKind::Snp => Box::new(SnpAttester::new()),
        AttesterKind::Tdx => Box::new(TdxAttester::new()),
    };
    let mut enclave = Enclave::new(
        attester,
        DataPaths {
            corpus: a.corpus,
            cache: a.cache,
            scratch: a.scratch,
        },
    );
    match (&a.socket, &a.device) {
        (Some(socket), _) => serve_unix(&mut enclave, socket)?,
        (None, Some(device)) => conclave_enclave::service::serve_device(&mut enclave, device)?,
        (None, None) => bail!("--socket or --device is required"),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Codec(CodecCommand::Encode(a)) => encode(a),
        Command::Codec(CodecCommand::Decode(a)) => decode(a),
        Command::Codec(CodecCommand::Inspect { update, json }) => inspect(update, json),
        Command::Train(a) => train(a),
        Command::Replay(a) => replay(a),
        Command::Serve(a) => serve(a),
        Command::Spec {
            config,
            corpus,
            cache,
        } => spec(config, corpus, cache),
        Command::ToplocTrials {
            config,
            trials,
            warm_steps,
        } => toploc_trials(config, trials, warm_steps),
        Command::Report { runs, out } => report(runs, out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn train(a: TrainArgs) -> Result<ExitCode> {
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    if let Some(o) = a.out {
        cfg.out = o;
    }
    if let Some(s) = a.steps {
        cfg.train.steps = s;
    }
    if let Some(d) = a.device {
        cfg.device = d;
    }
    cfg.validate()?;
    let mut t = Trainer::new(cfg)?;
    let summary = t.run()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn toploc_trials(config: Option<PathBuf>, trials: usize, warm_steps: u64) -> Result<ExitCode> {
    let cfg = match &config {
        Some(p) => TrainConfig::load(p)?,
        None => TrainConfig::default(),
    };
    let counts = conclave_enclave::prove::detection_trials(&cfg, trials, warm_steps)?;
    println!("| scenario | should | trials | accepted | rejected | errors |");
    println!("|---|---|---|---|---|---|");
    for c in &counts {
        println!(
            "| {} | {} | {} | {} | {} | {} {} |",
            c.scenario,
            if c.honest { "accept" } else { "reject" },
            c.trials,
            c.accepted,
            c.rejected,
            c.errors(),
            if c.honest {
                "false positives"
            } else {
                "false negatives"
            }
        );
    }
    Ok(if counts.iter().all(|c| c.errors() == 0) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn replay(a: ReplayArgs) -> Result<ExitCode> {
    let input = conclave_enclave::replay::ReplayInput {
        checkpoint: a.checkpoint,
        updates: a.updates,
        receipt: a.receipt,
        data: a.data,
        model: None,
    };
    let rep = conclave_enclave::replay::replay(&input)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        println!("{}", if rep.pass { "PASS" } else { "FAIL" });
        for c in &rep.checks {
            println!(
                "  [{}] {}: {}",
                if c.pass { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        for p in &rep.proofs {
            println!(
                "  proof {} #{}: {} exp_mismatches={} mant_err_mean={:.2} mant_err_median={:.0}",
                p.phase,
                p.index,
                if p.pass { "pass" } else { "FAIL" },
                p.exp_mismatches,
                p.mant_err_mean,
                p.mant_err_median
            );
        }
    }
    Ok(if rep.pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn report(runs: Vec<PathBuf>, out: Option<PathBuf>) -> Result<ExitCode> {
    if runs.is_empty() {
        bail!("name at least one summary.json or run folder");
    }
    let mut rows: Vec<Summary> = Vec::new();
    for r in &runs {
        let p = if r.is_dir() {
            r.join("summary.json")
        } else {
            r.clone()
        };
        let s: Summary = serde_json::from_slice(
            &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not a run summary", p.display()))?;
        rows.push(s);
    }
    let base = rows.iter().find(|s| s.method == "adamw").cloned();
    let mut md = String::from(
        "| method | replicas | steps | tokens/replica | final val loss | vs AdamW | bytes sent/replica | fewer bytes than AdamW | tokens/s | device |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in &rows {
        let (dl, ratio) = match &base {
            Some(b) => (
                format!(
                    "{:+.2} %",
                    (s.final_val_loss / b.final_val_loss - 1.0) * 100.0
                ),
                format!(
                    "{:.0}×",
                    b.bytes_sent_per_replica as f64 / s.bytes_sent_per_replica.max(1) as f64
                ),
            ),
            None => ("–".into(), "–".into()),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.4} | {} | {} | {} | {:.0} | {} |\n",
            s.method,
            s.replicas,
            s.steps,
            s.tokens_per_replica,
            s.final_val_loss,
            dl,
            s.bytes_sent_per_replica,
            ratio,
            s.tokens_per_second,
            s.device
        ));
    }
    print!("{md}");
    if let Some(o) = out {
        tensors::write_atomic(&o, md.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn encode(a: EncodeArgs) -> Result<ExitCode> {
    if a.topk == 0 || a.chunk == 0 {
        bail!("--topk and --chunk must be at least 1");
    }
    let config = CodecConfig {
        chunk: a.chunk,
        topk: a.topk,
        transform: if a.no_dct {
            Transform::Identity
        } else {
            Transform::Dct
        },
        values: a.values,
        index: match a.index {
            IndexArg::Smallest => IndexChoice::Smallest,
            IndexArg::Narrowest => IndexChoice::Narrowest,
            IndexArg::Packed12 => IndexChoice::Prefer(IndexEncoding::Packed12),
            IndexArg::EliasFano => IndexChoice::Prefer(IndexEncoding::EliasFano),
        },
        topk_rule: match a.topk_rule {
            RuleArg::Demo => TopkRule::Demo,
            RuleArg::Templar => TopkRule::Templar,
        },
    };
    let codec = Codec::new(config);
    let mut inputs = tensors::read(&a.input)?;
    if inputs.is_empty() {
        bail!("{} holds no tensors", a.input.display());
    }
    let mut update = SparseUpdate {
        transform: config.transform,
        tensors: Vec::with_capacity(inputs.len()),
    };
    let mut params = 0usize;
    for t in &mut inputs {
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            bail!("tensor {:?}: element {i} is not finite", t.name);
        }
        params += t.data.len();
        update
            .tensors
            .push(codec.compress(&t.name, &t.shape, &mut t.data));
    }
    let bytes = update.encode().context("encoding the update")?;
    tensors::write_atomic(&a.out, &bytes)?;
    if let Some(r) = &a.residual {
        tensors::write(r, &inputs)?;
    }
    let per4096 = bytes.len() as f64 * 4096.0 / params as f64;
    if a.json {
        let v = serde_json::json!({
            "tensors": update.tensors.len(),
            "parameters": params,
            "bytes": bytes.len(),
            "bytes_per_4096_parameters": per4096,
            "hash": hash_bytes(&bytes).to_string(),
        });
        println!("{v}");
    } else {
        println!(
            "{} tensors, {params} parameters → {} bytes ({per4096:.2} B per 4096 parameters, {:.1}× smaller than f32)",
            update.tensors.len(),
            bytes.len(),
            params as f64 * 4.0 / bytes.len() as f64
        );
        println!("hash {}", hash_bytes(&bytes));
    }
    Ok(ExitCode::SUCCESS)
}

fn read_update(path: &PathBuf) -> Result<SparseUpdate> {
    let limits = DecodeLimits::default();
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.len() > limits.max_bytes as u64 {
        bail!(
            "{}: {} bytes, over the limit of {}",
            path.display(),
            meta.len(),
            limits.max_bytes
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    SparseUpdate::decode(&bytes, &limits).with_context(|| format!("decoding {}", path.display()))
}

fn decode(a: DecodeArgs) -> Result<ExitCode> {
    let updates = a
        .input
        .iter()
        .map(read_update)
        .collect::<Result<Vec<_>>>()?;
    let transform = updates[0].transform;
    if updates.iter().any(|u| u.transform != transform) {
        bail!("the updates use different transforms (DCT and none): they cannot be aggregated");
    }
    let mut names: Vec<&str> = updates
        .iter()
        .flat_map(|u| u.tensors.iter().map(|t| t.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let peers: Vec<_> = updates
            .iter()
            .filter_map(|u| u.tensors.iter().find(|t| t.name == name))
            .collect();
        let data = codec::aggregate(&peers, transform, a.clip_median_norm)
            .with_context(|| format!("aggregating {name:?}"))?;
        out.push(NamedTensor {
            name: name.to_owned(),
            shape: peers[0].shape.iter().map(|&d| d as usize).collect(),
            data,
        });
    }
    tensors::write(&a.out, &out)?;
    println!(
        "{} tensors from {} update(s) → {}",
        out.len(),
        updates.len(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(path: PathBuf, json: bool) -> Result<ExitCode> {
    let u = read_update(&path)?;
    let bytes = u.encode()?;
    if json {
        let tensors: Vec<_> = u
            .tensors
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "shape": t.shape, "block": [t.block.rows, t.block.cols],
                    "k": t.k, "index": t.index_encoding.to_string(),
                    "values": t.values.encoding().to_string(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "transform": format!("{:?}", u.transform).to_lowercase(),
            "bytes": bytes.len(), "hash": hash_bytes(&bytes).to_string(), "tensors": tensors,
        });
        println!("{v}");
    } else {
        println!(
            "sparse update v1, transform {:?}, {} bytes, hash {}",
            u.transform,
            bytes.len(),
            hash_bytes(&bytes)
        );
        for t in &u.tensors {
            println!(
                "  {:<40} {:?} block {}×{} k {} {} indices, {} values",
                t.name,
                t.shape,
                t.block.rows,
                t.block.cols,
                t.k,
                t.index_encoding,
                t.values.encoding()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
