//! `conclave image boot`: boots a built image in qemu without a TEE (KVM when there is one,
//! TCG emulation otherwise), with the enclave on the `sim` attester, and checks it answers the
//! host's `Hello` over the virtio-serial channel with evidence that verifies under a policy
//! allowing sim and binds the key it reports to the job and nonce sent. Then asks it to shut
//! down and waits for the VM to power off.
//!
//! The image is the one that runs in a confidential VM: the same kernel, initramfs and
//! verified root filesystem; only `conclave.attester=sim` is added to the command line (so the
//! launch measurement of this boot is not the production one).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conclave_attestation::binding::check_key_binding;
use conclave_images::guest::Manifest;
use conclave_protocol::channel::{PeerEvidence, Request, Response};

use crate::enclave::{Channel, FATAL, QemuConfig, VmTee, console_lines, launch_qemu, watch_guest};
use crate::image_build::load_image;
use crate::operator::{appraise_peer, now, random_nonce};

/// How to boot.
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub image: PathBuf,
    /// Folder for the console log and the channel socket.
    pub workdir: PathBuf,
    pub qemu: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// `kvm` or `tcg`; `None`: KVM where it works, else TCG.
    pub accel: Option<String>,
    /// The longest the boot and the first answer may take.
    pub timeout: Duration,
}

/// What a boot showed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BootReport {
    /// From starting qemu to the enclave's answer to `Hello`.
    pub hello_s: f64,
    /// From the shutdown request to qemu's exit.
    pub shutdown_s: f64,
    pub address: String,
    pub tee: String,
    /// The evidence's measurement, hex.
    pub measurement: String,
    /// The init's lines from the console.
    pub console: Vec<String>,
    pub console_log: PathBuf,
}

fn init_lines(log: &Path) -> Vec<String> {
    console_lines(log)
        .into_iter()
        .filter(|l| l.contains("conclave-init") || FATAL.iter().any(|m| l.contains(m)))
        .collect()
}

/// The qemu launch for an image without a TEE.
pub fn plain_launch(manifest: &Manifest, opts: &BootOptions) -> QemuConfig {
    QemuConfig {
        tee: VmTee::None,
        qemu: opts.qemu.clone(),
        firmware: None,
        kernel: opts.image.join(&manifest.kernel.file),
        initrd: opts.image.join(&manifest.initrd.file),
        cmdline: conclave_images::guest::launch::job_cmdline(&manifest.cmdline, true, None),
        vcpus: opts.vcpus,
        memory_mib: opts.memory_mib,
        vsock_cid: 3,
        snp_policy: 0,
        accel: opts.accel.clone(),
        root_disk: Some(opts.image.join(&manifest.rootfs.file)),
        data_disk: None,
        channel_socket: opts.workdir.join("channel.sock"),
    }
}

/// Boots the image and checks its enclave.
pub fn boot(opts: &BootOptions) -> Result<BootReport> {
    let manifest = load_image(&opts.image)?;
    std::fs::create_dir_all(&opts.workdir)
        .with_context(|| format!("creating {}", opts.workdir.display()))?;
    let q = plain_launch(&manifest, opts);
    let log = opts.workdir.join("console.log");
    let start = Instant::now();
    let mut vm = launch_qemu(&q, &log, Duration::from_secs(30))?;
    let failed = |e: anyhow::Error| {
        let lines = init_lines(&log);
        e.context(format!(
            "the guest's console ({}) ends with:\n  {}",
            log.display(),
            if lines.is_empty() {
                "(no line from conclave-init)".to_string()
            } else {
                lines.join("\n  ")
            }
        ))
    };
    let mut channel =
        Channel::connect(&q.channel_socket, Duration::from_secs(10)).map_err(failed)?;
    channel.set_timeout(Some(opts.timeout))?;
    let watchdog = watch_guest(channel.shutdown_handle()?, vm.child.id(), log.clone());

    let (job_id, nonce) = (
        random_nonce("image-boot/job"),
        random_nonce("image-boot/nonce"),
    );
    let answer = channel
        .call(&Request::Hello {
            job_id: conclave_attestation::JobId(job_id.0),
            nonce,
        })
        .context("no answer to Hello")
        .map_err(failed)?;
    watchdog.store(true, Ordering::Relaxed);
    let hello_s = start.elapsed().as_secs_f64();
    let Response::Hello {
        address,
        public_key,
        evidence,
        tee,
    } = answer
    else {
        bail!("the enclave answered Hello with something else");
    };
    let job = conclave_attestation::JobId(job_id.0);
    let peer = PeerEvidence { evidence, nonce };
    // The measurement the guest must report: the launch digest of what qemu was given.
    let predicted =
        conclave_images::guest::launch::predict_files(&q.kernel, &q.initrd, &q.cmdline)?
            .measurement();
    let policy = conclave_attestation::Policy {
        allow_sim: true,
        measurements: vec![conclave_attestation::Measurement(predicted)],
        ..conclave_attestation::Policy::default()
    };
    let (accepted, ctx) = appraise_peer(&peer, job, &policy, now()).context(
        "appraising the guest's evidence under a policy allowing sim and the image's predicted launch measurement",
    )?;
    let key: [u8; 64] = hex::decode(&public_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .context("the enclave's public key is not 64 bytes of hex")?;
    if !check_key_binding(&accepted.report_data(), &key, &ctx) {
        bail!("the evidence does not bind the enclave's key to the job and nonce sent");
    }

    let stop = Instant::now();
    // The enclave exits on Shutdown; the init then powers the VM off.
    let _ = channel.call(&Request::Shutdown);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if vm.child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the VM did not power off within 60 s of the enclave's shutdown");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let shutdown_s = stop.elapsed().as_secs_f64();
    drop(vm);
    Ok(BootReport {
        hello_s,
        shutdown_s,
        address: format!("0x{address}"),
        tee,
        measurement: accepted.measurement().to_string(),
        console: init_lines(&log),
        console_log: log,
    })
}
