//! `conclave image measure`: the expected measurements of a guest image (SEV-SNP launch
//! digest, TDX RTMRs from a boot event log), printed and optionally written as a policy
//! fragment for `conclave verify --policy`. The computing is `conclave-images`; this reads the
//! files (streaming kernels and initrds) and prints.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args, Subcommand};
use conclave_images::policy::{TdxPins, snp_fragment, tdx_fragment};
use conclave_images::snp::hashes::{ComponentDigest, SevHashes};
use conclave_images::snp::inputs::{MAX_INPUTS_BYTES, from_dstack_json};
use conclave_images::snp::ovmf::MAX_OVMF_BYTES;
use conclave_images::snp::vmsa::{CpuSignature, GuestFeatures, VmmType};
use conclave_images::snp::{Firmware, SnpLaunch};
use conclave_images::tdx::ccel::{self, MAX_CCEL_BYTES};
use conclave_images::tdx::{BOOT_RTMRS, QuoteComparison, compare_with_quote};
use serde_json::json;

use crate::input::{decode_text, read_bounded};

/// The largest kernel or initrd hashed (they are streamed, never held in memory).
const MAX_COMPONENT_BYTES: u64 = 4 << 30;

/// `conclave image` subcommands.
#[derive(Subcommand)]
pub enum ImageCommand {
    /// Compute the expected measurement of a guest launch.
    ///
    /// SEV-SNP: the launch digest (the report's MEASUREMENT) from dstack-style launch inputs
    /// (`--inputs`), or from the OVMF image, kernel, initrd, command line, vCPUs and guest
    /// features QEMU is started with (`--ovmf ...`). TDX: RTMR0..3 replayed from the CCEL boot
    /// event log (`--ccel`), optionally checked against a quote from the same boot.
    /// `--policy-out` writes the values as a policy fragment for `conclave verify --policy`.
    /// Exit 0 computed (and matching, with --quote), 1 the log does not reproduce the quote,
    /// 2 unusable input.
    Measure(Box<MeasureArgs>),
    /// Build the guest image from the pinned inputs, reproducibly.
    ///
    /// Writes `vmlinuz` (Debian's cloud kernel, pinned in images/inputs.toml and fetched by
    /// scripts/setup-image.sh), `initrd.img` (conclave-init, its libraries and the kernel
    /// modules, as a sorted cpio archive with zero times), `rootfs.img` (a read-only squashfs
    /// with conclave-enclave and libtorch, followed by its dm-verity hash tree), `cmdline` (with
    /// the tree's root hash: the measured command line pins the root filesystem) and
    /// `manifest.json` (inputs and outputs with their SHA-256). The same inputs give the same
    /// bytes. Exit 0 built, 2 unusable input.
    Build(BuildArgs),
    /// Boot a built image in qemu without a TEE (KVM if present, else TCG) and check its enclave.
    ///
    /// The enclave runs on the `sim` attester (`conclave.attester=sim` is added to the command
    /// line); the host sends Hello over the virtio-serial channel, appraises the evidence under
    /// a policy allowing sim, checks it binds the enclave's key to the job and nonce sent, asks
    /// the enclave to shut down and waits for the VM to power off. Exit 0 passed, 1 failed.
    Boot(BootArgs),
    /// Build a dataset disk: a read-only squashfs of a folder with its dm-verity hash tree.
    ///
    /// The folder's contents become the disk's root, mounted read-only at /data in the guest
    /// when the measured command line carries the printed `conclave.data=` value (a job's
    /// disk holds `corpus/` and `cache/`; `conclave run` with `kind = "vm"` builds it itself).
    /// The same folder gives the same bytes. Exit 0 built, 2 unusable input.
    DataDisk(DataDiskArgs),
    /// Benchmark the VM enclave against the process enclave on the same job, same run: the
    /// rounds' times (and their ratio), the guests' boot to attestation, and the image's size.
    /// A benchmark, not a test: it prints figures and exits 0 when both runs completed.
    Bench(BenchArgs),
}

/// Arguments of `conclave image bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The image folder (`conclave image build --out`).
    #[arg(long, value_name = "DIR", default_value = "runs/image")]
    image: PathBuf,
    /// A second image to compare sizes with (e.g. one built with --cuda).
    #[arg(long, value_name = "DIR")]
    other_image: Option<PathBuf>,
    /// The training config (its `replicas` must equal --operators); default: a small built-in
    /// job (a 1-layer GPT, SparseLoCo with 2 inner steps).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    operators: u32,
    #[arg(long, default_value_t = 3)]
    rounds: u64,
    #[arg(long, default_value = ".data/moby-dick/package")]
    corpus: PathBuf,
    /// kvm or tcg (default: a probe boot decides).
    #[arg(long, value_name = "ACCEL", value_parser = ["kvm", "tcg"])]
    accel: Option<String>,
    #[arg(long, default_value_t = 2048)]
    memory_mib: u64,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The small job `conclave image bench` runs by default.
const BENCH_JOB: &str = "seed = 3\nreplicas = REPLICAS\ndevice = \"cpu\"\nthreads = 1\n\
     [model]\nlayers = 1\nheads = 2\nwidth = 32\ncontext = 32\n\
     [data]\nvocab = 400\nshards = 4\nsteps_per_epoch = 4\n\
     [train]\nsteps = 100\nbatch = 2\nwarmup = 1\neval_batches = 1\n\
     [optimizer]\nkind = \"sparseloco\"\ninner_steps = 2\ntopk = 32\n";

fn bench(args: BenchArgs) -> Result<ExitCode> {
    use conclave_host::config::{OperatorConfig, StorageSection};
    use conclave_host::enclave::{Launch, VmLaunch};
    use conclave_host::run::{Event, run_local_with};
    let work = tempfile::Builder::new()
        .prefix("conclave-bench-")
        .tempdir()?;
    let config = match &args.config {
        Some(c) => c.clone(),
        None => {
            let p = work.path().join("job.toml");
            std::fs::write(
                &p,
                BENCH_JOB.replace("REPLICAS", &args.operators.to_string()),
            )?;
            p
        }
    };
    let cache = work.path().join("cache");
    let mut job = conclave_host::config::JobSection::new(config);
    job.operators = args.operators;
    job.rounds = args.rounds;
    let run = |name: &str, enclave: Launch| -> Result<(conclave_host::run::RunSummary, f64)> {
        let cfg = OperatorConfig {
            job: Some(job.clone()),
            enclave,
            storage: StorageSection {
                dir: work.path().join(name),
            },
            api: Default::default(),
        };
        let start = std::time::Instant::now();
        let mut attested = 0.0;
        let summary = run_local_with(&cfg, &mut |e| {
            if let Event::Attested { .. } = e {
                attested = start.elapsed().as_secs_f64();
            }
        })
        .with_context(|| format!("the {name} run"))?;
        Ok((summary, attested))
    };
    let (process, process_up) = run(
        "process",
        Launch::Sim {
            program: None,
            corpus: args.corpus.clone(),
            cache: cache.clone(),
            threads: 1,
        },
    )?;
    let mut v = VmLaunch::new(args.image.clone(), args.corpus.clone(), cache.clone());
    v.accel = args.accel.clone();
    v.memory_mib = args.memory_mib;
    v.vcpus = args.vcpus;
    let (vm, vm_up) = run("vm", Launch::Vm(v))?;
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    // The first round also warms up (tokenizer load, allocations): the rest are the steady
    // state, when there is a rest.
    let steady = |s: &[f64]| if s.len() > 1 { mean(&s[1..]) } else { mean(s) };
    let (pr, vr) = (steady(&process.round_seconds), steady(&vm.round_seconds));
    let size = |dir: &Path| -> Result<u64> {
        let m = conclave_host::image_build::load_image(dir)?;
        Ok(m.kernel.size + m.initrd.size + m.rootfs.size)
    };
    let image_bytes = size(&args.image)?;
    let other_bytes = args.other_image.as_deref().map(size).transpose()?;
    let report = json!({
        "operators": args.operators,
        "rounds": args.rounds,
        "process_round_s": process.round_seconds,
        "vm_round_s": vm.round_seconds,
        "vm_over_process_round": vr / pr,
        "process_attested_s": process_up,
        "vm_attested_s": vm_up,
        "image_bytes": image_bytes,
        "other_image_bytes": other_bytes,
        "same_model": process.model_hash == vm.model_hash,
        "process_losses": process.losses,
        "vm_losses": vm.losses,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} operators × {} rounds of the same job, same machine:",
            args.operators, args.rounds
        );
        println!(
            "  round (steady state): vm {vr:.2} s, process {pr:.3} s: vm/process = {:.1}×",
            vr / pr
        );
        println!(
            "  start to every enclave attested: vm {vm_up:.1} s (boot), process {process_up:.1} s"
        );
        println!(
            "  image (kernel + initrd + root filesystem): {:.1} MB{}",
            image_bytes as f64 / 1e6,
            other_bytes
                .map(|b| format!(", other image {:.1} MB", b as f64 / 1e6))
                .unwrap_or_default()
        );
        println!(
            "  final model: {}",
            if process.model_hash == vm.model_hash {
                "the same".to_string()
            } else {
                format!(
                    "differs in the last bits (losses vm {:?}, process {:?}: other CPU code paths in the guest)",
                    vm.losses, process.losses
                )
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `conclave image data-disk`.
#[derive(Args)]
pub struct DataDiskArgs {
    /// The folder to put on the disk.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The disk file to write (replaced atomically).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments of `conclave image build`.
#[derive(Args)]
pub struct BuildArgs {
    /// Where to write the image (an earlier image there is replaced once the new one is done).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The folder with the pinned packages (scripts/setup-image.sh fills it).
    #[arg(long, value_name = "DIR", default_value = ".image-inputs")]
    inputs: PathBuf,
    /// The `conclave-enclave` program to put in the root filesystem (default: beside this one).
    #[arg(long, value_name = "FILE")]
    enclave: Option<PathBuf>,
    /// The `conclave-init` program for the initramfs (default: beside this one).
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// zstd compression level of the root filesystem (1-22; higher is smaller and slower).
    #[arg(long, value_name = "N", default_value_t = 3)]
    compression_level: u32,
    /// Keep the CUDA libraries of the PyTorch wheel (an image for GPU hosts, about 1.8 GB
    /// more). Default: a CPU image, whose enclave links only what it uses.
    #[arg(long)]
    cuda: bool,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `conclave image boot`.
#[derive(Args)]
pub struct BootArgs {
    /// The image folder (`conclave image build --out`).
    #[arg(long, value_name = "DIR")]
    image: PathBuf,
    /// Folder for the console log and channel socket.
    #[arg(long, value_name = "DIR", default_value = "runs/image-boot")]
    workdir: PathBuf,
    /// The qemu program.
    #[arg(long, value_name = "FILE", default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    #[arg(long, default_value_t = 2)]
    vcpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory_mib: u64,
    /// The accelerator: kvm or tcg (default: KVM where it works, else TCG emulation).
    #[arg(long, value_name = "ACCEL", value_parser = ["kvm", "tcg"])]
    accel: Option<String>,
    /// The longest the boot and the enclave's first answer may take, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// Arguments of `conclave image measure`.
#[derive(Args)]
#[command(group(ArgGroup::new("source").required(true).args(["inputs", "ovmf", "ccel", "vm"])))]
pub struct MeasureArgs {
    /// SEV-SNP launch inputs as dstack records them (`launch_inputs.json`; its
    /// `sev_snp_measurement` document holds the OVMF hash and sections, kernel/initrd hashes,
    /// command line, vCPUs, vCPU type and guest features). The VMM is QEMU.
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// SEV-SNP: the OVMF firmware image QEMU boots (`-bios`). To measure a kernel it must be an
    /// OvmfPkg/AmdSev build (it has the SNP_KERNEL_HASHES page); distribution OVMFs are not.
    #[arg(long, value_name = "FILE")]
    ovmf: Option<PathBuf>,
    /// An image folder from `conclave image build`: its kernel, initrd and command line
    /// (checked against its manifest) instead of --kernel, --initrd and --append.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["kernel", "initrd", "append"])]
    image: Option<PathBuf>,
    /// A VM without a TEE: the launch measurement its `sim` evidence reports (the digest of
    /// the kernel, initrd and command line the guest reads back through fw_cfg), for the
    /// image booted with `conclave.attester=sim` and, with --data-disk, that dataset.
    #[arg(long, requires = "image", conflicts_with_all = ["inputs", "ovmf", "ccel"])]
    vm: bool,
    /// With --image: the dataset disk the guest boots with (`conclave image data-disk`, or the
    /// `vm-disks/data-*.img` a VM job built in its data cache); its verity parameters join the
    /// measured command line as a job's guests boot it.
    #[arg(long, value_name = "FILE", requires = "image")]
    data_disk: Option<PathBuf>,
    /// The kernel QEMU is given with `-kernel` (with `kernel-hashes=on`).
    #[arg(long, value_name = "FILE", requires = "ovmf")]
    kernel: Option<PathBuf>,
    /// The initrd QEMU is given with `-initrd`.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line QEMU is given with `-append`, exactly.
    #[arg(
        long,
        value_name = "STR",
        requires = "kernel",
        allow_hyphen_values = true
    )]
    append: Option<String>,
    /// Number of vCPUs (`-smp`).
    #[arg(long, value_name = "N", requires = "ovmf")]
    vcpus: Option<u32>,
    /// QEMU vCPU model (`-cpu`), e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa.
    #[arg(
        long,
        value_name = "MODEL",
        requires = "ovmf",
        conflicts_with = "vcpu_sig"
    )]
    vcpu_type: Option<String>,
    /// The vCPU's CPUID signature instead of a model name, hex (e.g. 0x800f12).
    #[arg(long, value_name = "HEX", requires = "ovmf")]
    vcpu_sig: Option<String>,
    /// VMSA SEV_FEATURES the host KVM enables, hex: 0x1 (default; SNPActive) or 0x21 on hosts
    /// that enable DebugSwap. A wrong value is the usual cause of a mismatch.
    #[arg(long, value_name = "HEX", requires = "ovmf")]
    guest_features: Option<String>,
    /// The hypervisor: qemu (default), ec2 or gce.
    #[arg(long, value_name = "VMM", requires = "ovmf")]
    vmm_type: Option<String>,
    /// Use this precomputed OVMF hash (hex, 48 bytes) instead of hashing the image's pages.
    #[arg(long, value_name = "HEX", requires = "ovmf")]
    ovmf_hash: Option<String>,
    /// TDX: the CCEL event log (`/sys/firmware/acpi/tables/data/CCEL` in the guest).
    #[arg(long, value_name = "FILE")]
    ccel: Option<PathBuf>,
    /// A TDX quote from the same boot (raw, hex or base64) to check the replay against.
    /// With it, the policy fragment also pins the quote's MRTD.
    #[arg(long, value_name = "FILE", requires = "ccel")]
    quote: Option<PathBuf>,
    /// Write the expected values as a policy fragment (TOML) here.
    #[arg(long, value_name = "FILE")]
    policy_out: Option<PathBuf>,
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    json: bool,
}

/// Runs a `conclave image` subcommand.
pub fn run(command: ImageCommand) -> Result<ExitCode> {
    match command {
        ImageCommand::Measure(args) => measure(*args),
        ImageCommand::Build(args) => build(args),
        ImageCommand::Boot(args) => boot(args),
        ImageCommand::DataDisk(args) => data_disk(args),
        ImageCommand::Bench(args) => bench(args),
    }
}

fn data_disk(args: DataDiskArgs) -> Result<ExitCode> {
    use conclave_images::guest::DATA_KEY;
    let start = std::time::Instant::now();
    let disk = match conclave_host::image_build::build_data_disk(&args.data, &args.out) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let size = std::fs::metadata(&disk.path)?.len();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "disk": disk.path,
                "bytes": size,
                "verity": disk.params.to_string(),
                "root_hash": hex::encode(disk.params.root),
                "cmdline": format!("{DATA_KEY}={}", disk.params),
            }))?
        );
    } else {
        println!(
            "dataset disk {} ({size} bytes, {:.1} s)",
            disk.path.display(),
            start.elapsed().as_secs_f64()
        );
        println!("  dm-verity root hash {}", hex::encode(disk.params.root));
        println!("  command line        {DATA_KEY}={}", disk.params);
    }
    Ok(ExitCode::SUCCESS)
}

/// `conclave image measure --vm`: the launch measurement of the image in a VM without a TEE.
fn measure_vm(args: &MeasureArgs, dir: &Path) -> Result<ExitCode> {
    use conclave_images::guest::launch;
    let m = conclave_host::image_build::load_image(dir)?;
    let data = match &args.data_disk {
        Some(d) => Some(conclave_host::image_build::squashfs_verity_params(d)?),
        None => None,
    };
    let cmdline = launch::job_cmdline(&m.cmdline, true, data.as_ref());
    let parts = launch::predict_files(
        &dir.join(&m.kernel.file),
        &dir.join(&m.initrd.file),
        &cmdline,
    )?;
    let hex = hex::encode(parts.measurement());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "tee": "none",
                "measurement": hex,
                "cmdline": cmdline,
                "components": parts.to_string(),
                "data_disk": args.data_disk,
            }))?
        );
    } else {
        println!("measurement   {hex}");
        println!(
            "tee           none (a plain VM; the guest's sim evidence reports this launch digest)"
        );
        println!("cmdline       {cmdline}");
        println!("sha256        {parts} (first 8 bytes)");
    }
    if let Some(out) = &args.policy_out {
        let text = format!(
            "# The launch measurement of {} in a VM without a TEE (conclave image measure --vm).\n\
             allow_sim = true\nmeasurements = [\"{hex}\"]\n",
            dir.display()
        );
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn build(args: BuildArgs) -> Result<ExitCode> {
    use conclave_host::enclave::program_beside_this as beside_this;
    use conclave_host::image_build::{BuildOptions, build};
    let opts = BuildOptions {
        inputs: args.inputs,
        init: args.init.unwrap_or_else(|| beside_this("conclave-init")),
        enclave: args
            .enclave
            .unwrap_or_else(|| beside_this("conclave-enclave")),
        out: args.out,
        compression_level: args.compression_level,
        cuda: args.cuda,
    };
    let start = std::time::Instant::now();
    let quiet = args.json;
    let built = match build(&opts, &mut |step| {
        if !quiet {
            eprintln!("image build: {step}");
        }
    }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let m = &built.manifest;
    if args.json {
        println!("{}", serde_json::to_string_pretty(m)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "image built in {} ({:.0} s)",
        built.dir.display(),
        start.elapsed().as_secs_f64()
    );
    for o in [&m.kernel, &m.initrd, &m.rootfs] {
        println!("  {:<11} {:>11} bytes  sha256 {}", o.file, o.size, o.sha256);
    }
    println!("  cmdline     {}", m.cmdline);
    println!(
        "  kernel      {} (modules: {})",
        m.kernel_release,
        m.modules.join(", ")
    );
    println!(
        "expected SEV-SNP measurement: conclave image measure --image {} --ovmf <OvmfPkg/AmdSev OVMF.fd> --vcpus N --vcpu-type EPYC-v4",
        built.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn boot(args: BootArgs) -> Result<ExitCode> {
    use conclave_host::image_boot::{BootOptions, boot};
    let opts = BootOptions {
        image: args.image,
        workdir: args.workdir,
        qemu: args.qemu,
        vcpus: args.vcpus,
        memory_mib: args.memory_mib,
        accel: args.accel,
        timeout: std::time::Duration::from_secs(args.timeout_s),
    };
    match boot(&opts) {
        Ok(r) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "PASSED: the image booted and its enclave {} answered Hello after {:.1} s \
                     ({} evidence, measurement {}, key bound to the job and nonce); powered off \
                     {:.1} s after Shutdown",
                    r.address, r.hello_s, r.tee, r.measurement, r.shutdown_s
                );
                for l in &r.console {
                    println!("  {l}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("FAILED: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

fn measure(mut args: MeasureArgs) -> Result<ExitCode> {
    if args.vm {
        let dir = args.image.clone().context("--vm needs --image")?;
        return measure_vm(&args, &dir);
    }
    if args.image.is_some() && args.ovmf.is_none() {
        bail!("--image measures an SEV-SNP launch with --ovmf, or a VM without a TEE with --vm");
    }
    if let Some(dir) = &args.image {
        let m = conclave_host::image_build::load_image(dir)?;
        args.kernel = Some(dir.join(&m.kernel.file));
        args.initrd = Some(dir.join(&m.initrd.file));
        let data = match &args.data_disk {
            Some(d) => Some(conclave_host::image_build::squashfs_verity_params(d)?),
            None => None,
        };
        args.append = Some(conclave_images::guest::launch::job_cmdline(
            &m.cmdline,
            false,
            data.as_ref(),
        ));
    }
    if let Some(path) = &args.ccel {
        return measure_tdx(&args, path);
    }
    let (launch, source) = if let Some(path) = &args.inputs {
        let bytes = read_bounded(path, MAX_INPUTS_BYTES)?;
        let launch =
            from_dstack_json(&bytes).with_context(|| format!("reading {}", path.display()))?;
        (launch, format!("launch inputs {}", path.display()))
    } else if let Some(path) = &args.ovmf {
        (launch_from_files(&args, path)?, describe_files(&args, path))
    } else {
        bail!("give --inputs, --ovmf or --ccel");
    };
    let digest = launch
        .launch_digest()
        .context("computing the SEV-SNP launch digest")?;
    let k = launch.kernel.as_ref();
    let hex32 = |h: Option<[u8; 32]>| h.map(hex::encode);
    if args.json {
        let out = json!({
            "tee": "snp",
            "measurement": digest,
            "ovmf_hash": launch.firmware.ovmf_hash,
            "metadata_sections": launch.firmware.sections.len(),
            "kernel_sha256": hex32(k.map(|k| k.kernel)),
            "initrd_sha256": hex32(k.map(|k| k.initrd)),
            "cmdline_sha256": hex32(k.map(|k| k.cmdline)),
            "vcpus": launch.vcpus,
            "vcpu_signature": launch.vcpu_sig.to_string(),
            "guest_features": launch.guest_features.to_string(),
            "vmm": launch.vmm.to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("measurement   {digest}");
        println!("tee           AMD SEV-SNP (launch digest)");
        println!("from          {source}");
        println!(
            "firmware      OVMF hash {}, {} metadata sections",
            launch.firmware.ovmf_hash,
            launch.firmware.sections.len()
        );
        match k {
            Some(k) => {
                println!("kernel        sha256:{}", hex::encode(k.kernel));
                println!("initrd        sha256:{}", hex::encode(k.initrd));
                println!(
                    "cmdline       sha256:{} (with its NUL)",
                    hex::encode(k.cmdline)
                );
            }
            None => println!("kernel        none (hashes page measured as zero pages)"),
        }
        println!(
            "vcpus         {} (signature {}), guest features {}, VMM {}",
            launch.vcpus, launch.vcpu_sig, launch.guest_features, launch.vmm
        );
    }
    if let Some(out) = &args.policy_out {
        let notes = vec![
            "Expected SEV-SNP launch measurement, computed by `conclave image measure`.".into(),
            format!("From {source}."),
            format!(
                "{} vCPUs (signature {}), guest features {}, VMM {}.",
                launch.vcpus, launch.vcpu_sig, launch.guest_features, launch.vmm
            ),
        ];
        write_fragment(out, &snp_fragment(&digest, &notes))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_hex_u64(flag: &str, text: &str) -> Result<u64> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(digits, 16).with_context(|| format!("{flag} {text}: not a hex number"))
}

fn launch_from_files(args: &MeasureArgs, ovmf_path: &Path) -> Result<SnpLaunch> {
    let vcpus = args.vcpus.context("--ovmf needs --vcpus N")?;
    let vmm: VmmType = match &args.vmm_type {
        Some(v) => v.parse().with_context(|| format!("--vmm-type {v}"))?,
        None => VmmType::Qemu,
    };
    let vcpu_sig = match (&args.vcpu_type, &args.vcpu_sig) {
        (Some(name), _) => {
            CpuSignature::from_qemu_model(name).with_context(|| format!("--vcpu-type {name}"))?
        }
        (None, Some(sig)) => {
            let v = parse_hex_u64("--vcpu-sig", sig)?;
            CpuSignature(
                u32::try_from(v).with_context(|| format!("--vcpu-sig {sig}: over 32 bits"))?,
            )
        }
        // EC2 and GCE put a fixed value in RDX; only QEMU needs the model.
        (None, None) if vmm != VmmType::Qemu => CpuSignature(0),
        (None, None) => {
            bail!("--ovmf with QEMU needs --vcpu-type MODEL (e.g. EPYC-v4) or --vcpu-sig")
        }
    };
    let guest_features = match &args.guest_features {
        Some(g) => GuestFeatures(parse_hex_u64("--guest-features", g)?),
        None => GuestFeatures::default(),
    };
    let ovmf = read_bounded(ovmf_path, MAX_OVMF_BYTES)?;
    let mut firmware =
        Firmware::from_ovmf(&ovmf).with_context(|| format!("reading {}", ovmf_path.display()))?;
    if let Some(h) = &args.ovmf_hash {
        firmware.ovmf_hash = conclave_attestation::Measurement::from_hex(h)
            .with_context(|| format!("--ovmf-hash {h}"))?;
    }
    let kernel = match &args.kernel {
        Some(k) => {
            let initrd = match &args.initrd {
                Some(i) => sha256_file(i)?,
                None => ComponentDigest::new().finish(),
            };
            Some(SevHashes::new(
                sha256_file(k)?,
                initrd,
                args.append.as_deref().unwrap_or(""),
            ))
        }
        None => None,
    };
    Ok(SnpLaunch {
        firmware,
        kernel,
        vcpus,
        vcpu_sig,
        guest_features,
        vmm,
    })
}

fn describe_files(args: &MeasureArgs, ovmf: &Path) -> String {
    let mut s = format!("OVMF {}", ovmf.display());
    if let Some(k) = &args.kernel {
        s.push_str(&format!(", kernel {}", k.display()));
    }
    if let Some(i) = &args.initrd {
        s.push_str(&format!(", initrd {}", i.display()));
    }
    if let Some(a) = &args.append {
        s.push_str(&format!(", cmdline {a:?}"));
    }
    s
}

/// SHA-256 of a file, streamed in 1 MiB pieces.
fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = file.take(MAX_COMPONENT_BYTES + 1);
    let mut digest = ComponentDigest::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_COMPONENT_BYTES {
            bail!(
                "{} is larger than {MAX_COMPONENT_BYTES} bytes",
                path.display()
            );
        }
        digest.update(&buf[..n]);
    }
    Ok(digest.finish())
}

fn measure_tdx(args: &MeasureArgs, path: &Path) -> Result<ExitCode> {
    let bytes = read_bounded(path, MAX_CCEL_BYTES)?;
    let log = ccel::parse(&bytes).with_context(|| format!("reading {}", path.display()))?;
    let replay = log
        .replay()
        .with_context(|| format!("replaying {}", path.display()))?;
    let comparison: Option<QuoteComparison> = match &args.quote {
        Some(q) => {
            let raw = read_bounded(q, 1 << 20)?;
            let cmp = compare_with_quote(&replay, &raw)
                .or_else(|_| compare_with_quote(&replay, &decode_text(&raw)))
                .with_context(|| format!("reading quote {}", q.display()))?;
            Some(cmp)
        }
        None => None,
    };
    let matches = comparison.as_ref().map(QuoteComparison::boot_rtmrs_match);

    if args.json {
        let rtmrs: Vec<_> = (0..4)
            .map(|i| {
                let mut v = json!({
                    "index": i,
                    "replayed": replay.rtmrs[i],
                    "events": replay.extends[i],
                });
                if let Some(c) = &comparison {
                    v["quoted"] = json!(c.rtmrs[i].quoted);
                    v["matches"] = json!(c.rtmrs[i].matches());
                }
                v
            })
            .collect();
        let out = json!({
            "tee": "tdx",
            "events": log.events.len(),
            "rtmrs": rtmrs,
            "mr_td": comparison.as_ref().map(|c| c.mr_td),
            "boot_rtmrs_match": matches,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match matches {
            Some(true) => println!("verdict       MATCH: the log reproduces RTMR0..2 of the quote"),
            Some(false) => println!("verdict       MISMATCH: the log does not reproduce the quote"),
            None => {}
        }
        println!(
            "tee           Intel TDX (RTMRs replayed from {})",
            path.display()
        );
        println!("events        {} in the log", log.events.len());
        for i in 0..4 {
            let runtime = if i >= BOOT_RTMRS { ", runtime" } else { "" };
            println!(
                "rtmr{i}         {} ({} events{runtime})",
                replay.rtmrs[i], replay.extends[i]
            );
            if let Some(c) = &comparison {
                let check = &c.rtmrs[i];
                let state = match (check.matches(), i < BOOT_RTMRS) {
                    (true, _) => "equal",
                    (false, true) => "DIFFERS",
                    (false, false) => "differs (runtime, not compared)",
                };
                println!("  quote       {} {state}", check.quoted);
            }
        }
        if let Some(c) = &comparison {
            println!("mrtd          {} (from the quote)", c.mr_td);
        }
    }
    if matches == Some(false) {
        if args.policy_out.is_some() {
            eprintln!("not writing the policy fragment: the log does not reproduce the quote");
        }
        return Ok(ExitCode::from(1));
    }
    if let Some(out) = &args.policy_out {
        let mut notes = vec![
            format!(
                "TDX RTMR0..2 replayed from the CCEL event log {} by `conclave image measure`.",
                path.display()
            ),
            "RTMR3 is extended by the running guest and is not pinned.".to_string(),
        ];
        if let Some(q) = &args.quote {
            notes.push(format!(
                "MRTD copied from the reference quote {}, whose RTMR0..2 the log reproduces.",
                q.display()
            ));
        }
        let pins = TdxPins {
            mr_td: comparison.as_ref().map(|c| c.mr_td),
            rtmrs: [
                Some(replay.rtmrs[0]),
                Some(replay.rtmrs[1]),
                Some(replay.rtmrs[2]),
                None,
            ],
        };
        write_fragment(out, &tdx_fragment(&pins, &notes))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_fragment(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote policy fragment to {}", path.display());
    Ok(())
}
