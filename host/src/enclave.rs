//! The host's side of the enclave channel: launching the enclave (a local process for `sim`,
//! or a guest of the measured image under qemu: plain, or `sev-snp-guest` / `tdx-guest` on
//! hardware), guests' watchdogs and console reports, the framed request/response client,
//! and the checks the host makes on what comes back. The host holds no enclave key and has no
//! code path that signs results: it relays the enclave's signed envelopes.

use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conclave_protocol::channel::{MAX_FRAME, Request, Response, read_frame, write_frame};
use serde::{Deserialize, Serialize};

/// The enclave refused a request (it keeps serving).
#[derive(Debug, thiserror::Error)]
#[error("the enclave refused: {code}: {message}")]
pub struct Refused {
    pub code: String,
    pub message: String,
}

/// A connection to one enclave.
pub struct Channel {
    r: BufReader<UnixStream>,
    w: BufWriter<UnixStream>,
    /// A guest's console log: a broken channel is reported with its last lines.
    console: Option<PathBuf>,
}

impl Channel {
    /// Connects to an enclave's Unix socket, waiting up to `timeout` for it to appear.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < timeout => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("connecting to {}", path.display()));
                }
            }
        };
        Ok(Channel {
            r: BufReader::new(stream.try_clone()?),
            w: BufWriter::new(stream),
            console: None,
        })
    }

    /// Names the guest console log whose last lines explain a broken channel.
    pub fn with_console(mut self, log: &Path) -> Self {
        self.console = Some(log.to_path_buf());
        self
    }

    fn broken(&self, e: anyhow::Error) -> anyhow::Error {
        match &self.console {
            Some(log) => e.context(console_report(log)),
            None => e,
        }
    }

    /// A second handle on the connection: shutting it down ends a call waiting for an answer
    /// (a watchdog's way to stop waiting on a guest that died).
    pub fn shutdown_handle(&self) -> Result<UnixStream> {
        Ok(self.r.get_ref().try_clone()?)
    }

    /// Bounds how long one answer may take (`None`: wait as long as it takes).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.r.get_ref().set_read_timeout(timeout)?;
        Ok(())
    }

    /// Sends `req` and returns the answer; a refusal is an error of type [`Refused`].
    pub fn call(&mut self, req: &Request) -> Result<Response> {
        if let Err(e) = write_frame(&mut self.w, req) {
            return Err(self.broken(anyhow::Error::new(e).context("writing to the enclave")));
        }
        let resp: Response = match read_frame(&mut self.r, MAX_FRAME) {
            Ok(r) => r,
            Err(e) => return Err(self.broken(anyhow::Error::new(e).context("reading the enclave"))),
        };
        capture_frames(req, &resp);
        if let Response::Error { code, message } = resp {
            return Err(Refused { code, message }.into());
        }
        Ok(resp)
    }

    /// A request answered by a signed envelope: returns its bytes.
    pub fn signed(&mut self, req: &Request) -> Result<Vec<u8>> {
        match self.call(req)? {
            Response::Signed { envelope } => Ok(envelope.0),
            other => bail!("expected a signed envelope, got {other:?}"),
        }
    }
}

/// The channel capture test hook ([`crate::capture`]).
fn capture_frames(req: &Request, resp: &Response) {
    if !crate::capture::on(crate::capture::CHANNEL) {
        return;
    }
    let mut rec = Vec::new();
    for line in [serde_json::to_vec(req), serde_json::to_vec(resp)]
        .into_iter()
        .flatten()
    {
        rec.extend_from_slice(&line);
        rec.push(b'\n');
    }
    crate::capture::record(crate::capture::CHANNEL, &rec);
}

/// How the enclave is started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Launch {
    /// A local `conclave-enclave serve` process with the sim attester (no hardware).
    Sim {
        /// The enclave program (default: `conclave-enclave` beside the `conclave` binary).
        #[serde(default)]
        program: Option<PathBuf>,
        #[serde(default = "default_corpus")]
        corpus: PathBuf,
        #[serde(default = "default_cache")]
        cache: PathBuf,
        /// libtorch threads per enclave (0: libtorch's default).
        #[serde(default)]
        threads: u32,
    },
    /// The measured guest image (`conclave image build`) under qemu: without a TEE (KVM when
    /// it works, else TCG; the enclave's sim evidence carries the launch measurement the guest
    /// computed), or as an SEV-SNP or TDX guest on hardware.
    Vm(VmLaunch),
}

impl Launch {
    /// The `conclave-enclave` program the host runs for the job's published facts, the corpus
    /// and the data cache.
    pub fn data_inputs(&self) -> (PathBuf, &Path, &Path) {
        match self {
            Launch::Sim {
                program,
                corpus,
                cache,
                ..
            }
            | Launch::Vm(VmLaunch {
                program,
                corpus,
                cache,
                ..
            }) => (
                program.clone().unwrap_or_else(default_enclave_program),
                corpus,
                cache,
            ),
        }
    }

    /// Checks what would fail later, naming the key.
    pub fn validate(&self) -> Result<()> {
        if let Launch::Vm(v) = self {
            v.validate()?;
        }
        Ok(())
    }
}

/// `[enclave] kind = "vm"`: the guest image each operator's enclave boots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmLaunch {
    /// The image folder written by `conclave image build`.
    #[serde(default = "default_image")]
    pub image: PathBuf,
    /// `none` (a plain VM: KVM when it works, else TCG), `snp` or `tdx` (hardware, KVM).
    #[serde(default = "default_vm_tee")]
    pub tee: VmTee,
    #[serde(default = "default_qemu")]
    pub qemu: PathBuf,
    /// OVMF (SNP) or TDVF (TDX); optional for `tee = "none"`.
    #[serde(default)]
    pub firmware: Option<PathBuf>,
    /// vCPUs of each guest.
    #[serde(default = "default_vm_vcpus")]
    pub vcpus: u32,
    /// Memory of each guest, MiB (the root filesystem's page cache, libtorch, the model and
    /// the scratch tmpfs live in it).
    #[serde(default = "default_vm_memory")]
    pub memory_mib: u64,
    /// For `tee = "none"`: `kvm` or `tcg` (default: KVM where it works, else TCG).
    #[serde(default)]
    pub accel: Option<String>,
    /// SNP guest policy.
    #[serde(default = "default_snp_policy")]
    pub snp_policy: u64,
    /// The corpus the dataset disk is made from.
    #[serde(default = "default_corpus")]
    pub corpus: PathBuf,
    /// The host's data cache (the shards go onto the dataset disk; disks are kept here).
    #[serde(default = "default_cache")]
    pub cache: PathBuf,
    /// The host's `conclave-enclave`, run for the job's published facts (default: beside
    /// `conclave`). The guest runs its own, from the image.
    #[serde(default)]
    pub program: Option<PathBuf>,
    /// The longest a guest may take from qemu's start to the enclave's first answer.
    #[serde(default = "default_boot_timeout")]
    pub boot_timeout_s: u64,
}

/// What every guest of a job boots: the image's files, the job's dataset disk and the
/// command line (the image's, with the attester and the dataset's verity parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct GuestBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub root_disk: PathBuf,
    pub data_disk: PathBuf,
    pub cmdline: String,
}

fn default_image() -> PathBuf {
    PathBuf::from("runs/image")
}
fn default_vm_tee() -> VmTee {
    VmTee::None
}
fn default_vm_vcpus() -> u32 {
    1
}
fn default_vm_memory() -> u64 {
    2048
}
fn default_boot_timeout() -> u64 {
    600
}

impl VmLaunch {
    /// A plain VM of `image` with the defaults, reading `corpus` and `cache`.
    pub fn new(image: PathBuf, corpus: PathBuf, cache: PathBuf) -> Self {
        VmLaunch {
            image,
            tee: VmTee::None,
            qemu: default_qemu(),
            firmware: None,
            vcpus: default_vm_vcpus(),
            memory_mib: default_vm_memory(),
            accel: None,
            snp_policy: default_snp_policy(),
            corpus,
            cache,
            program: None,
            boot_timeout_s: default_boot_timeout(),
        }
    }

    /// The qemu launch of one guest of `boot`, its channel on `socket`.
    pub fn qemu(&self, boot: &GuestBoot, socket: PathBuf, cid: u32) -> QemuConfig {
        QemuConfig {
            tee: self.tee,
            qemu: self.qemu.clone(),
            firmware: self.firmware.clone(),
            kernel: boot.kernel.clone(),
            initrd: boot.initrd.clone(),
            cmdline: boot.cmdline.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            vsock_cid: cid,
            snp_policy: self.snp_policy,
            accel: self.accel.clone(),
            root_disk: Some(boot.root_disk.clone()),
            data_disk: Some(boot.data_disk.clone()),
            channel_socket: socket,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.boot_timeout_s == 0 {
            bail!("enclave.boot_timeout_s must be at least 1");
        }
        // The rest is what qemu would refuse, named as this section's keys.
        let boot = GuestBoot {
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
            root_disk: PathBuf::new(),
            data_disk: PathBuf::new(),
            cmdline: String::new(),
        };
        self.qemu(&boot, PathBuf::from("channel.sock"), 3)
            .check("enclave")
    }
}

fn default_corpus() -> PathBuf {
    PathBuf::from(".data/moby-dick/package")
}
fn default_cache() -> PathBuf {
    PathBuf::from(".data/cache")
}

/// The TEE a VM is launched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmTee {
    Snp,
    Tdx,
    /// A plain VM (KVM when available, else TCG emulation) whose enclave uses the `sim`
    /// attester: for booting and testing an image on a machine without a TEE.
    None,
}

/// A confidential VM's launch: everything its qemu command line is built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuConfig {
    pub tee: VmTee,
    #[serde(default = "default_qemu")]
    pub qemu: PathBuf,
    /// OVMF (SNP: the measured `OVMF.fd`; TDX: TDVF). Optional for `tee = "none"` (qemu's
    /// default BIOS then loads the kernel).
    #[serde(default)]
    pub firmware: Option<PathBuf>,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    /// The guest's vsock context id (≥ 3).
    #[serde(default = "default_cid")]
    pub vsock_cid: u32,
    /// SNP guest policy.
    #[serde(default = "default_snp_policy")]
    pub snp_policy: u64,
    /// For `tee = "none"`: the accelerator (`kvm`, `tcg`); default: KVM where it works, else
    /// TCG emulation.
    #[serde(default)]
    pub accel: Option<String>,
    /// The image's root filesystem with its dm-verity tree (`rootfs.img` of `conclave image
    /// build`), attached read-only as the first disk.
    #[serde(default)]
    pub root_disk: Option<PathBuf>,
    /// Extra disk (the dataset), attached read-only.
    #[serde(default)]
    pub data_disk: Option<PathBuf>,
    /// The host end of the guest's virtio-serial channel port (a Unix socket qemu listens
    /// on; the enclave serves `/dev/virtio-ports/org.conclave.channel`).
    #[serde(default = "default_channel_socket")]
    pub channel_socket: PathBuf,
}

/// The virtio-serial port name the guest's enclave serves.
pub const CHANNEL_PORT: &str = "org.conclave.channel";

fn default_channel_socket() -> PathBuf {
    PathBuf::from("runs/vm/channel.sock")
}

fn default_qemu() -> PathBuf {
    PathBuf::from("qemu-system-x86_64")
}
fn default_vcpus() -> u32 {
    4
}
fn default_memory() -> u64 {
    8192
}
fn default_cid() -> u32 {
    3
}
fn default_snp_policy() -> u64 {
    0x30000
}

impl QemuConfig {
    /// Checks what qemu would refuse later, naming the key.
    pub fn validate(&self) -> Result<()> {
        self.check("qemu")
    }

    /// [`validate`](Self::validate) with the keys named as those of config section `section`.
    fn check(&self, section: &str) -> Result<()> {
        if self.vcpus == 0 || self.vcpus > 256 {
            bail!("{section}.vcpus must be 1 to 256");
        }
        if self.memory_mib < 512 {
            bail!("{section}.memory_mib must be at least 512 (libtorch and the model live in it)");
        }
        if self.vsock_cid < 3 {
            bail!("{section}.vsock_cid must be 3 or more (0-2 are reserved)");
        }
        if self.tee == VmTee::Snp && self.snp_policy & (1 << 19) != 0 {
            bail!("{section}.snp_policy allows debugging (bit 19): refused");
        }
        if let Some(a) = &self.accel {
            if self.tee != VmTee::None {
                bail!("{section}.accel is for tee = \"none\" (confidential VMs need KVM)");
            }
            if !matches!(a.as_str(), "kvm" | "tcg") {
                bail!("{section}.accel must be kvm or tcg, not {a:?}");
            }
        }
        if self.tee != VmTee::None && self.firmware.is_none() {
            bail!(
                "{section}.firmware is required for a confidential VM (OVMF for SNP, TDVF for TDX)"
            );
        }
        Ok(())
    }

    /// The qemu arguments (without the program), in the documented forms: for SEV-SNP the
    /// `sev-snp-guest` object with `cbitpos=51,reduced-phys-bits=1`, kernel hashes measured
    /// (`kernel-hashes=on`) and memory from `memory-backend-memfd`; for TDX the `tdx-guest`
    /// object, `kernel-irqchip=split` and the same memfd memory. Both: no default devices, the
    /// channel as a virtio-serial port backed by a Unix socket chardev (works without
    /// `/dev/vhost-vsock`), a vhost-vsock device for guests that prefer vsock, the serial
    /// console on stdio.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &str| a.push(s.to_string());
        if self.tee == VmTee::None {
            match self.accel.as_deref() {
                Some(accel) => {
                    push("-accel");
                    push(accel);
                }
                None => {
                    // KVM where there is one, else TCG (qemu tries them in order).
                    push("-accel");
                    push("kvm");
                    push("-accel");
                    push("tcg");
                }
            }
            push("-cpu");
            push("max");
        } else {
            push("-enable-kvm");
            push("-cpu");
            push("host");
        }
        push("-nodefaults");
        push("-nographic");
        push("-no-reboot");
        push("-smp");
        push(&self.vcpus.to_string());
        push("-m");
        push(&format!("{}M", self.memory_mib));
        push("-object");
        push(&format!(
            "memory-backend-memfd,id=ram1,size={}M,share=true,prealloc=false",
            self.memory_mib
        ));
        match self.tee {
            VmTee::Snp => {
                push("-machine");
                push("q35,confidential-guest-support=sev0,memory-backend=ram1");
                push("-object");
                push(&format!(
                    "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy={:#x},kernel-hashes=on",
                    self.snp_policy
                ));
            }
            VmTee::Tdx => {
                push("-machine");
                push(
                    "q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram1",
                );
                push("-object");
                push("tdx-guest,id=tdx0");
            }
            VmTee::None => {
                push("-machine");
                push("q35,memory-backend=ram1");
            }
        }
        if let Some(fw) = &self.firmware {
            push("-bios");
            push(&fw.display().to_string());
        }
        push("-kernel");
        push(&self.kernel.display().to_string());
        push("-initrd");
        push(&self.initrd.display().to_string());
        push("-append");
        push(&self.cmdline);
        push("-device");
        push("virtio-serial-pci,id=virtio-serial0");
        push("-chardev");
        push(&format!(
            "socket,id=conclave0,path={},server=on,wait=off",
            self.channel_socket.display()
        ));
        push("-device");
        push(&format!(
            "virtserialport,bus=virtio-serial0.0,chardev=conclave0,name={CHANNEL_PORT}"
        ));
        if self.tee != VmTee::None {
            push("-device");
            push(&format!(
                "vhost-vsock-pci,id=vsock0,guest-cid={}",
                self.vsock_cid
            ));
        }
        // The root disk first (the guest's /dev/vda), the dataset second (/dev/vdb).
        if let Some(d) = &self.root_disk {
            push("-drive");
            push(&format!(
                "file={},if=none,id=root0,format=raw,readonly=on",
                d.display()
            ));
            push("-device");
            push("virtio-blk-pci,drive=root0");
        }
        if let Some(d) = &self.data_disk {
            push("-drive");
            push(&format!(
                "file={},if=none,id=data0,format=raw,readonly=on",
                d.display()
            ));
            push("-device");
            push("virtio-blk-pci,drive=data0");
        }
        push("-serial");
        push("stdio");
        a
    }
}

/// A started enclave: its process (killed on drop) and channel socket.
pub struct Launched {
    pub child: Child,
    pub socket: PathBuf,
    /// Set on drop: stops a guest's watchdog.
    pub watch: Option<Arc<AtomicBool>>,
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Some(w) = &self.watch {
            w.store(true, Ordering::Relaxed);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The program `name` beside the running executable (or, when it is not there, on the PATH).
pub fn program_beside_this(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The `conclave-enclave` program beside the running executable (or on the PATH).
pub fn default_enclave_program() -> PathBuf {
    program_beside_this("conclave-enclave")
}

/// Starts a `sim` enclave serving on `socket`. Its log goes to `log`.
pub fn launch_sim(launch: &Launch, socket: &Path, scratch: &Path, log: &Path) -> Result<Launched> {
    let Launch::Sim {
        program,
        corpus,
        cache,
        threads,
    } = launch
    else {
        bail!("launch_sim needs a sim launch");
    };
    let program = program.clone().unwrap_or_else(default_enclave_program);
    let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(&program)
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .args(["--attester", "sim"])
        .arg("--corpus")
        .arg(corpus)
        .arg("--cache")
        .arg(cache)
        .arg("--scratch")
        .arg(scratch)
        .args(["--threads", &threads.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Launched {
        child,
        socket: socket.to_path_buf(),
        watch: None,
    })
}

/// Starts a confidential VM under qemu and returns once its channel socket exists. The guest's
/// init runs `conclave-enclave serve --device /dev/virtio-ports/org.conclave.channel` with
/// the `snp` or `tdx` attester.
pub fn launch_qemu(q: &QemuConfig, log: &Path, timeout: Duration) -> Result<Launched> {
    q.validate()?;
    let log_path = log;
    if let Some(dir) = q.channel_socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&q.channel_socket);
    let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(&q.qemu);
    cmd.args(q.args())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = spawn_tied(cmd).with_context(|| format!("starting {}", q.qemu.display()))?;
    let mut launched = Launched {
        child,
        socket: q.channel_socket.clone(),
        watch: None,
    };
    let start = Instant::now();
    while !q.channel_socket.exists() {
        if let Some(status) = launched.child.try_wait()? {
            bail!(
                "qemu exited with {status} before opening the channel: {}",
                console_report(log_path)
            );
        }
        if start.elapsed() > timeout {
            bail!("qemu opened no channel socket in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(launched)
}

/// Starts `cmd` so that it dies with this process however it ends (a kill, a panic, a signal
/// with no handler): it gets SIGKILL when its parent thread exits (`PR_SET_PDEATHSIG`), and
/// that parent is one thread kept for the process's whole life, so any thread may call this.
pub fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    use std::sync::mpsc;
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<mpsc::Sender<Request>>> =
        std::sync::OnceLock::new();
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("conclave-spawner".into())
            .spawn(move || {
                // The static keeps a sender: this loop ends only with the process.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the spawner thread");
        std::sync::Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .map_err(|_| std::io::Error::other("the spawner's lock is poisoned"))?
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Console lines after which a guest will never answer.
pub const FATAL: &[&str] = &[
    "conclave-init: boot failed",
    "Kernel panic",
    "KVM internal error",
];

/// The informative lines of a guest's console log: the init's, fatal ones, qemu's own
/// complaints, and the last few lines whatever they are.
pub fn console_lines(log: &Path) -> Vec<String> {
    let Ok(bytes) = std::fs::read(log) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = all.len().saturating_sub(5);
    all.iter()
        .enumerate()
        .filter(|(i, l)| {
            *i >= tail
                || l.contains("conclave-init")
                || l.contains("qemu-system")
                || FATAL.iter().any(|m| l.contains(m))
        })
        .map(|(_, l)| l.chars().take(400).collect())
        .collect()
}

/// "the guest's console (LOG) ends with: ..." for an error about a guest.
pub fn console_report(log: &Path) -> String {
    let lines = console_lines(log);
    let lines = &lines[lines.len().saturating_sub(20)..];
    format!(
        "the guest's console ({}) ends with:\n  {}",
        log.display(),
        if lines.is_empty() {
            "(nothing)".to_string()
        } else {
            lines.join("\n  ")
        }
    )
}

/// A guest's watchdog: ends any wait on its channel (by shutting `channel` down) as soon as
/// the guest is known dead: qemu (`pid`) gone, or a fatal line on its console. Setting the
/// returned flag stops the watch.
pub fn watch_guest(channel: UnixStream, pid: u32, log: PathBuf) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z "));
            let fatal = std::fs::read(&log).is_ok_and(|b| {
                let t = String::from_utf8_lossy(&b);
                FATAL.iter().any(|m| t.contains(m))
            });
            if !alive || fatal {
                if !stop.load(Ordering::Relaxed) {
                    tracing::warn!(pid, log = %log.display(), alive, "guest died");
                }
                let _ = channel.shutdown(std::net::Shutdown::Both);
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tee: VmTee) -> QemuConfig {
        QemuConfig {
            tee,
            qemu: default_qemu(),
            firmware: Some("/usr/share/ovmf/OVMF.fd".into()),
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            cmdline: "console=ttyS0".into(),
            vcpus: 4,
            memory_mib: 8192,
            vsock_cid: 7,
            snp_policy: 0x30000,
            accel: None,
            root_disk: None,
            data_disk: None,
            channel_socket: "/run/conclave/ch.sock".into(),
        }
    }

    fn pairs(args: &[String]) -> Vec<(String, String)> {
        args.windows(2)
            .filter(|w| w[0].starts_with('-') && !w[1].starts_with('-'))
            .map(|w| (w[0].clone(), w[1].clone()))
            .collect()
    }

    #[test]
    fn snp_command_line_has_the_documented_form() {
        let a = cfg(VmTee::Snp).args();
        let p = pairs(&a);
        let has = |k: &str, v: &str| p.iter().any(|(a, b)| a == k && b == v);
        // QEMU's docs (system/i386/amd-memory-encryption): SNP guest with memfd memory.
        assert!(has(
            "-machine",
            "q35,confidential-guest-support=sev0,memory-backend=ram1"
        ));
        assert!(has(
            "-object",
            "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,kernel-hashes=on"
        ));
        assert!(has(
            "-object",
            "memory-backend-memfd,id=ram1,size=8192M,share=true,prealloc=false"
        ));
        assert!(has("-bios", "/usr/share/ovmf/OVMF.fd"));
        assert!(has("-device", "vhost-vsock-pci,id=vsock0,guest-cid=7"));
        assert!(has(
            "-chardev",
            "socket,id=conclave0,path=/run/conclave/ch.sock,server=on,wait=off"
        ));
        assert!(has(
            "-device",
            "virtserialport,bus=virtio-serial0.0,chardev=conclave0,name=org.conclave.channel"
        ));
        assert!(has("-append", "console=ttyS0"));
        assert!(a.contains(&"-enable-kvm".to_string()));
        assert!(!a.iter().any(|x| x.contains("tdx")));
    }

    #[test]
    fn tdx_command_line_has_the_documented_form() {
        let mut c = cfg(VmTee::Tdx);
        c.data_disk = Some("data.img".into());
        let a = c.args();
        let p = pairs(&a);
        let has = |k: &str, v: &str| p.iter().any(|(a, b)| a == k && b == v);
        // QEMU's docs (system/i386/tdx): tdx-guest object, split irqchip, TDVF as -bios.
        assert!(has(
            "-machine",
            "q35,kernel-irqchip=split,confidential-guest-support=tdx0,memory-backend=ram1"
        ));
        assert!(has("-object", "tdx-guest,id=tdx0"));
        assert!(has(
            "-drive",
            "file=data.img,if=none,id=data0,format=raw,readonly=on"
        ));
        assert!(!a.iter().any(|x| x.contains("sev")));
    }

    #[test]
    fn a_plain_vm_boots_the_image_without_tee_objects() {
        let mut c = cfg(VmTee::None);
        c.firmware = None;
        c.root_disk = Some("image/rootfs.img".into());
        c.data_disk = Some("data.img".into());
        assert!(c.validate().is_ok());
        let a = c.args();
        let p = pairs(&a);
        let has = |k: &str, v: &str| p.iter().any(|(a, b)| a == k && b == v);
        assert!(has("-accel", "kvm") && has("-accel", "tcg"));
        assert!(has("-machine", "q35,memory-backend=ram1"));
        assert!(
            !a.iter()
                .any(|x| x.contains("sev") || x.contains("tdx") || x == "-bios")
        );
        assert!(
            !a.iter().any(|x| x.contains("vhost-vsock")),
            "needs /dev/vhost-vsock"
        );
        // The root disk is the first virtio disk (the guest's /dev/vda).
        let root = a.iter().position(|x| x.contains("id=root0")).unwrap();
        let data = a.iter().position(|x| x.contains("id=data0")).unwrap();
        assert!(root < data);
        assert!(a.contains(&"-no-reboot".to_string()));
        let mut snp = cfg(VmTee::Snp);
        snp.firmware = None;
        assert!(snp.validate().unwrap_err().to_string().contains("firmware"));
    }

    #[test]
    fn refuses_debug_policy_and_reserved_cids() {
        let mut c = cfg(VmTee::Snp);
        c.snp_policy |= 1 << 19;
        assert!(c.validate().unwrap_err().to_string().contains("debug"));
        let mut c = cfg(VmTee::Tdx);
        c.vsock_cid = 2;
        assert!(c.validate().unwrap_err().to_string().contains("vsock_cid"));
        assert!(cfg(VmTee::Snp).validate().is_ok());
    }
}
