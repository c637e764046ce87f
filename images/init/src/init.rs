//! The boot sequence (see the crate docs). Every step says what it was doing when it fails.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conclave_images::guest::{self, CHANNEL_PORT, GuestAttester};

/// Where the kernel modules and their load list are in the initramfs.
const MODULES_DIR: &str = "/lib/modules";
const MODULES_LIST: &str = "/etc/conclave/modules";
/// The root filesystem's disk (first virtio-blk device) and where it is mounted.
const ROOT_DISK: &str = "/dev/vda";
const NEW_ROOT: &str = "/newroot";
/// The dataset disk (second virtio-blk device), verified and mounted read-only at /data when
/// the command line carries its verity parameters.
const DATA_DISK: &str = "/dev/vdb";
/// The enclave and its libraries inside the root filesystem.
const ENCLAVE: &str = "/usr/bin/conclave-enclave";
const LIBRARY_PATH: &str = "/usr/lib/conclave";
/// How long devices may take to appear (TCG guests are slow).
const DEVICE_WAIT: Duration = Duration::from_secs(60);
/// `finit_module` flag: the kernel decompresses the module itself.
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

fn log(msg: &str) {
    eprintln!("conclave-init: {msg}");
}

pub fn main() {
    let start = Instant::now();
    match boot(start) {
        Ok(()) => log("the enclave exited; powering off"),
        Err(e) => log(&format!("boot failed: {e:#}; powering off")),
    }
    power_off();
}

fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers; reboot only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot failed (it does not return otherwise): exiting makes the kernel panic, which
    // with panic=-1 on the command line restarts (or, under -no-reboot, stops) the VM.
    std::process::exit(1)
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{s:?} contains NUL"))
}

fn mount(src: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
    let (s, t) = (cstr(src)?, cstr(target)?);
    let f = fstype.map(cstr).transpose()?;
    // SAFETY: all pointers are valid NUL-terminated strings or null; data is null.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting {src} on {target} ({}): {}",
            fstype.unwrap_or("move"),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn wait_for(path: &Path) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > DEVICE_WAIT {
            bail!("{} did not appear in {DEVICE_WAIT:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn load_modules() -> Result<()> {
    let list =
        std::fs::read_to_string(MODULES_LIST).with_context(|| format!("reading {MODULES_LIST}"))?;
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let (name, required) = match line.split_once(' ') {
            Some((n, "required")) => (n, true),
            Some((n, "optional")) => (n, false),
            _ => bail!("{MODULES_LIST}: bad line {line:?}"),
        };
        let path = format!("{MODULES_DIR}/{name}.ko.xz");
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let params = cstr("")?;
        // SAFETY: a valid fd and an empty NUL-terminated parameter string.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                params.as_ptr(),
                MODULE_INIT_COMPRESSED_FILE,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EEXIST) {
                continue;
            }
            if required {
                bail!("loading module {name}: {e}");
            }
            log(&format!(
                "module {name} not loaded ({e}); fine outside its TEE"
            ));
        }
    }
    Ok(())
}

fn switch_root() -> Result<()> {
    for dir in ["/dev", "/proc", "/sys"] {
        mount(dir, &format!("{NEW_ROOT}{dir}"), None, libc::MS_MOVE)?;
    }
    std::env::set_current_dir(NEW_ROOT).context("entering the new root")?;
    mount(".", "/", None, libc::MS_MOVE)?;
    let dot = cstr(".")?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        bail!("chroot: {}", std::io::Error::last_os_error());
    }
    std::env::set_current_dir("/").context("entering /")?;
    Ok(())
}

/// The `/dev/vportNpM` whose virtio-serial port name is ours, linked where the enclave looks.
fn channel() -> Result<PathBuf> {
    let link = PathBuf::from(format!("/dev/virtio-ports/{CHANNEL_PORT}"));
    let start = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == CHANNEL_PORT {
                    let dev = Path::new("/dev").join(e.file_name());
                    wait_for(&dev)?;
                    std::fs::create_dir_all("/dev/virtio-ports")?;
                    let _ = std::fs::remove_file(&link);
                    std::os::unix::fs::symlink(&dev, &link)
                        .with_context(|| format!("linking {}", link.display()))?;
                    return Ok(link);
                }
            }
        }
        if start.elapsed() > DEVICE_WAIT {
            bail!("no virtio-serial port named {CHANNEL_PORT} (is the VM started with it?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn attester(named: Option<GuestAttester>) -> Result<GuestAttester> {
    if let Some(a) = named {
        return Ok(a);
    }
    if Path::new("/dev/sev-guest").exists() {
        return Ok(GuestAttester::Snp);
    }
    if Path::new("/dev/tdx_guest").exists() {
        return Ok(GuestAttester::Tdx);
    }
    bail!(
        "no TEE guest device (/dev/sev-guest, /dev/tdx_guest) and no conclave.attester= on the \
         command line"
    )
}

fn boot(start: Instant) -> Result<()> {
    mount("devtmpfs", "/dev", Some("devtmpfs"), libc::MS_NOSUID)?;
    mount(
        "proc",
        "/proc",
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    mount(
        "sysfs",
        "/sys",
        Some("sysfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    // The vector extensions the trainer's kernels choose between (float results follow them).
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let flags: Vec<&str> = info
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let have: Vec<&str> = [
            "sse4_2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512_vnni",
        ]
        .into_iter()
        .filter(|f| flags.contains(f))
        .collect();
        log(&format!("cpu: {}", have.join(" ")));
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let params = guest::parse_cmdline(&cmdline)?;

    load_modules()?;
    wait_for(Path::new(ROOT_DISK))?;
    let minor = crate::dm::create(
        "root",
        "verity",
        params.verity.sectors(),
        &params.verity.target_params(ROOT_DISK),
    )
    .context("creating the dm-verity root device")?;
    let root_dev = format!("/dev/dm-{minor}");
    wait_for(Path::new(&root_dev))?;
    mount(&root_dev, NEW_ROOT, Some("squashfs"), libc::MS_RDONLY)
        .context("mounting the verified root filesystem")?;
    log(&format!(
        "root filesystem verified by dm-verity (root hash {}) mounted after {:.1} s",
        hex_prefix(&params.verity.root),
        start.elapsed().as_secs_f64()
    ));
    for dir in ["tmp", "run"] {
        mount(
            "tmpfs",
            &format!("{NEW_ROOT}/{dir}"),
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
        )?;
    }
    match &params.data {
        Some(data) => {
            wait_for(Path::new(DATA_DISK))?;
            let minor = crate::dm::create(
                "data",
                "verity",
                data.sectors(),
                &data.target_params(DATA_DISK),
            )
            .context("creating the dm-verity dataset device")?;
            let data_dev = format!("/dev/dm-{minor}");
            wait_for(Path::new(&data_dev))?;
            mount(
                &data_dev,
                &format!("{NEW_ROOT}{}", guest::DATA_MOUNT),
                Some("squashfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            )
            .context("mounting the verified dataset disk")?;
            log(&format!(
                "dataset verified by dm-verity (root hash {}) mounted at {}",
                hex_prefix(&data.root),
                guest::DATA_MOUNT
            ));
        }
        None if Path::new(DATA_DISK).exists() => {
            log(
                "a second disk is attached but the command line has no conclave.data=: not mounted",
            );
        }
        None => {}
    }
    // The launch measurement of a VM without a TEE, before anything else can run.
    let measurement = if attester(params.attester)? == GuestAttester::Sim {
        let c = crate::fwcfg::launch_components().context("measuring the launch through fw_cfg")?;
        let hex: String = c.measurement().iter().map(|b| format!("{b:02x}")).collect();
        log(&format!(
            "launch measurement {hex} (kernel, initrd and command line read through fw_cfg: {c}) after {:.1} s",
            start.elapsed().as_secs_f64()
        ));
        Some(hex)
    } else {
        None
    };
    switch_root()?;
    // configfs-tsm (attestation reports on 6.7+ kernels) lives under /sys/kernel/config.
    if Path::new("/sys/kernel/config").exists() {
        let _ = mount(
            "configfs",
            "/sys/kernel/config",
            Some("configfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
        );
    }
    let attester = attester(params.attester)?;
    let device = channel()?;
    log(&format!(
        "starting {ENCLAVE} ({} attester) on {} after {:.1} s",
        attester.as_str(),
        device.display(),
        start.elapsed().as_secs_f64()
    ));
    let mut enclave = Command::new(ENCLAVE);
    enclave.arg("serve");
    if let Some(m) = &measurement {
        enclave.args(["--measurement", m]);
    }
    let mut child = enclave
        .arg("--device")
        .arg(&device)
        .args(["--attester", attester.as_str()])
        .args(["--corpus", guest::DATA_CORPUS])
        .args(["--cache", guest::DATA_CACHE])
        .args(["--scratch", "/run/conclave/scratch"])
        .env_clear()
        .env("LD_LIBRARY_PATH", LIBRARY_PATH)
        .env("HOME", "/run")
        .env("PATH", "/usr/bin")
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {ENCLAVE}"))?;
    let pid = child.id() as libc::pid_t;
    // PID 1 reaps every orphan; it returns when the enclave itself exits.
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: a valid pointer to a c_int.
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped == pid {
            log(&format!("enclave exited (wait status {status:#x})"));
            let _ = child.try_wait();
            return Ok(());
        }
        if reaped < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                bail!("waitpid: {e}");
            }
        }
    }
}

fn hex_prefix(b: &[u8; 32]) -> String {
    b[..8]
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<String>()
        + "…"
}
