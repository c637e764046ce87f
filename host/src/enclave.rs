//! The host's side of the enclave channel: launching the enclave (a local process for `sim`,
//! qemu with `sev-snp-guest` or `tdx-guest` on hardware), the framed request/response client,
//! and the checks the host makes on what comes back. The host holds no enclave key and has no
//! code path that signs results: it relays the enclave's signed envelopes.

use std::io::{BufReader, BufWriter};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
        })
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
        write_frame(&mut self.w, req).context("writing to the enclave")?;
        let resp: Response = read_frame(&mut self.r, MAX_FRAME).context("reading the enclave")?;
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
    /// A confidential VM under qemu.
    Qemu(QemuConfig),
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
        if self.vcpus == 0 {
            bail!("qemu.vcpus must be at least 1");
        }
        if self.memory_mib < 512 {
            bail!("qemu.memory_mib must be at least 512");
        }
        if self.vsock_cid < 3 {
            bail!("qemu.vsock_cid must be 3 or more (0-2 are reserved)");
        }
        if self.tee == VmTee::Snp && self.snp_policy & (1 << 19) != 0 {
            bail!("qemu.snp_policy allows debugging (bit 19): refused");
        }
        if let Some(a) = &self.accel {
            if self.tee != VmTee::None {
                bail!("qemu.accel is for tee = \"none\" (confidential VMs need KVM)");
            }
            if !matches!(a.as_str(), "kvm" | "tcg") {
                bail!("qemu.accel must be kvm or tcg, not {a:?}");
            }
        }
        if self.tee != VmTee::None && self.firmware.is_none() {
            bail!("qemu.firmware is required for a confidential VM (OVMF for SNP, TDVF for TDX)");
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
}

impl Drop for Launched {
    fn drop(&mut self) {
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
    })
}

/// Starts a confidential VM under qemu and returns once its channel socket exists. The guest's
/// init runs `conclave-enclave serve --device /dev/virtio-ports/org.conclave.channel` with
/// the `snp` or `tdx` attester.
pub fn launch_qemu(q: &QemuConfig, log: &Path, timeout: Duration) -> Result<Launched> {
    q.validate()?;
    if let Some(dir) = q.channel_socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&q.channel_socket);
    let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(&q.qemu)
        .args(q.args())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", q.qemu.display()))?;
    let mut launched = Launched {
        child,
        socket: q.channel_socket.clone(),
    };
    let start = Instant::now();
    while !q.channel_socket.exists() {
        if let Some(status) = launched.child.try_wait()? {
            bail!("qemu exited with {status} before opening the channel (see its log)");
        }
        if start.elapsed() > timeout {
            bail!("qemu opened no channel socket in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(launched)
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
