//! `conclave image build`: the guest image from pinned package inputs, reproducibly.
//!
//! Inputs: the Debian kernel package pinned in `images/inputs.toml` (fetched by
//! `scripts/setup-image.sh`, checked here against its SHA-256), the `conclave-init` and
//! `conclave-enclave` programs, and the shared libraries the dynamic loader resolves for them
//! (`ldd`: glibc from the machine's Debian, libtorch from the project's PyTorch wheel). Outputs
//! (see `conclave_images::guest`): `vmlinuz`, `initrd.img` (our own cpio writer), `rootfs.img`
//! (`mksquashfs` with fixed owners and times, then our dm-verity tree), `cmdline` and
//! `manifest.json`. Everything is written to a sibling folder and renamed into place at the end.
//!
//! The same inputs give the same bytes: archive entries are sorted with zero times and root
//! owners, squashfs is made with `-all-time 0 -mkfs-time 0 -all-root` (mksquashfs output is
//! reproducible since 4.4), the verity salt is derived from the filesystem's own hash, and the
//! manifest names no machine paths.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use conclave_images::guest::cpio::{Archive, Node};
use conclave_images::guest::modules::{self, ModInfo};
use conclave_images::guest::{
    self, Input, Manifest, OPTIONAL_MODULES, Output, REQUIRED_MODULES, verity,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The pinned inputs, built in.
pub const INPUTS_TOML: &str = include_str!("../../images/inputs.toml");

/// One pinned package.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedPackage {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    pub role: String,
}

/// `images/inputs.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedInputs {
    pub suite: String,
    pub package: Vec<PinnedPackage>,
}

impl PinnedInputs {
    /// The built-in pins.
    pub fn builtin() -> Result<Self> {
        toml::from_str(INPUTS_TOML).context("images/inputs.toml")
    }

    /// The package with this role.
    pub fn role(&self, role: &str) -> Result<&PinnedPackage> {
        self.package
            .iter()
            .find(|p| p.role == role)
            .with_context(|| format!("images/inputs.toml pins no {role} package"))
    }
}

/// What to build from.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Folder with the pinned packages (`.image-inputs`).
    pub inputs: PathBuf,
    /// `conclave-init`.
    pub init: PathBuf,
    /// `conclave-enclave`.
    pub enclave: PathBuf,
    /// Where the image goes (replaced if it is an earlier image).
    pub out: PathBuf,
    /// zstd level for the root filesystem (1-22).
    pub compression_level: u32,
    /// Keep the CUDA libraries (an image for GPU hosts). Without it the guest's copy of
    /// `conclave-enclave` drops the CUDA-only libraries it names and ships what remains.
    pub cuda: bool,
}

/// The libraries a CPU guest's `conclave-enclave` stops naming: linked only so that a GPU host
/// finds CUDA (no symbol of theirs is used; `libtorch.so` is the wheel's shim that pulls
/// `libtorch_cuda.so`).
pub const CUDA_ONLY_LIBRARIES: &[&str] = &["libtorch_cuda.so", "libtorch.so", "libc10_cuda.so"];

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

/// SHA-256 of a file, hex, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn run(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: starting {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The shared libraries the dynamic loader resolves for `program`, as (path the program asks
/// for, resolved file). An entry whose requested path is absolute is the interpreter.
pub fn shared_libraries(program: &Path) -> Result<Vec<(String, PathBuf)>> {
    let text = run(
        Command::new("ldd").arg(program),
        &format!("ldd {}", program.display()),
    )?;
    parse_ldd(&String::from_utf8_lossy(&text))
        .with_context(|| format!("the libraries of {}", program.display()))
}

/// Reads `ldd` output: `name => /path (0x…)` lines, the interpreter as `/path (0x…)`; the vDSO
/// is skipped; a library the loader cannot find is an error naming it.
pub fn parse_ldd(text: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("linux-vdso") || line.contains("statically linked") {
            continue;
        }
        if let Some((name, rest)) = line.split_once(" => ") {
            if rest.starts_with("not found") {
                bail!(
                    "{name} is not found by the loader (source scripts/env.sh sets \
                     LD_LIBRARY_PATH for libtorch)"
                );
            }
            let path = rest.split(" (").next().unwrap_or(rest).trim();
            if !path.starts_with('/') {
                bail!("unexpected ldd line: {line}");
            }
            libs.push((name.to_string(), PathBuf::from(path)));
        } else if let Some(path) = line.split(" (").next().filter(|p| p.starts_with('/')) {
            libs.push((path.to_string(), PathBuf::from(path)));
        } else {
            bail!("unexpected ldd line: {line}");
        }
    }
    Ok(libs)
}

/// The kernel package unpacked: the kernel and the modules by normalized name.
struct Kernel {
    vmlinuz: PathBuf,
    config: Vec<String>,
    release: String,
    modules: BTreeMap<String, PathBuf>,
}

fn unpack_kernel(deb: &Path, into: &Path) -> Result<Kernel> {
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(into),
        "unpacking the kernel package (dpkg-deb)",
    )?;
    let boot = into.join("boot");
    let vmlinuz = fs::read_dir(&boot)
        .with_context(|| format!("{} has no boot/", deb.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{} has no boot/vmlinuz-*", deb.display()))?;
    let release = vmlinuz
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_start_matches("vmlinuz-")
                .to_string()
        })
        .unwrap_or_default();
    let moddir = into.join("usr/lib/modules").join(&release);
    let mut modules = BTreeMap::new();
    let mut stack = vec![moddir.join("kernel")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(stem) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko.xz"))
            {
                modules.insert(modules::normalize(stem), p);
            }
        }
    }
    if modules.is_empty() {
        bail!("no xz-compressed modules under {}", moddir.display());
    }
    let config_path = boot.join(format!("config-{release}"));
    let config_text = fs::read_to_string(&config_path)
        .with_context(|| format!("{} has no boot/config-{release}", deb.display()))?;
    let config = conclave_images::guest::kconfig::check(&config_text)
        .with_context(|| format!("{}", deb.display()))?;
    Ok(Kernel {
        vmlinuz,
        config,
        release,
        modules,
    })
}

/// The modules to load in order, each with whether the boot needs it.
fn module_plan(kernel: &Kernel) -> Result<Vec<(String, bool)>> {
    // Read the metadata of what is reachable from the wanted modules (a module's file is named
    // after it; its `.modinfo` has the dependencies).
    let mut infos: BTreeMap<String, ModInfo> = BTreeMap::new();
    let mut todo: Vec<String> = REQUIRED_MODULES
        .iter()
        .chain(OPTIONAL_MODULES)
        .map(|m| modules::normalize(m))
        .collect();
    while let Some(name) = todo.pop() {
        if infos.contains_key(&name) {
            continue;
        }
        let Some(path) = kernel.modules.get(&name) else {
            // Built into the kernel (modules.builtin) or absent; load_order names the latter.
            continue;
        };
        let elf = run(
            Command::new("xz").arg("-dc").arg(path),
            &format!("decompressing {}", path.display()),
        )?;
        let info = modules::modinfo(&elf).with_context(|| format!("{}", path.display()))?;
        todo.extend(info.depends.iter().cloned());
        infos.insert(name, info);
    }
    let required = modules::load_order(&infos, REQUIRED_MODULES)?;
    let mut plan: Vec<(String, bool)> = required.iter().map(|m| (m.clone(), true)).collect();
    for m in OPTIONAL_MODULES {
        if !infos.contains_key(&modules::normalize(m)) {
            continue;
        }
        for dep in modules::load_order(&infos, &[m])? {
            if !plan.iter().any(|(p, _)| *p == dep) {
                plan.push((dep, false));
            }
        }
    }
    Ok(plan)
}

/// A copy of `program` without its debug sections (`objcopy --strip-debug`, deterministic):
/// the guest never reads them, and they are most of the bytes (26 of 29 MB of the initramfs).
fn strip_debug(program: &Path, to: &Path) -> Result<PathBuf> {
    run(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(program)
            .arg(to),
        &format!("stripping {} (objcopy, from binutils)", program.display()),
    )?;
    Ok(to.to_path_buf())
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn output(dir: &Path, file: &str) -> Result<Output> {
    let path = dir.join(file);
    Ok(Output {
        file: file.to_string(),
        sha256: sha256_file(&path)?,
        size: fs::metadata(&path)?.len(),
    })
}

/// The manifest's record of an input file.
fn input(file: &Path, role: String) -> Result<Input> {
    Ok(Input {
        name: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        role,
        sha256: sha256_file(file)?,
    })
}

/// The libraries of `program` with the guest path each goes to (relative to the guest's root):
/// the interpreter at the absolute path the program names, the others where `place` says
/// (given the name the program asks for and the file ldd resolved).
fn library_places(
    program: &Path,
    place: impl Fn(&str, &Path) -> String,
) -> Result<Vec<(String, PathBuf)>> {
    Ok(shared_libraries(program)?
        .into_iter()
        .map(|(wanted, file)| {
            let at = if wanted.starts_with('/') {
                wanted
            } else {
                place(&wanted, &file)
            };
            (at.trim_start_matches('/').to_string(), file)
        })
        .collect())
}

/// Builds the image.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(&str)) -> Result<Built> {
    let pins = PinnedInputs::builtin()?;
    let kernel_pin = pins.role("kernel")?;
    let deb = opts.inputs.join(&kernel_pin.file);
    if !deb.exists() {
        bail!(
            "{} is missing: run scripts/setup-image.sh (it downloads the pinned {} packages)",
            deb.display(),
            pins.suite
        );
    }
    let deb_sha = sha256_file(&deb)?;
    if deb_sha != kernel_pin.sha256 {
        bail!(
            "{} has SHA-256 {deb_sha}, not the pinned {}",
            deb.display(),
            kernel_pin.sha256
        );
    }
    for p in [&opts.init, &opts.enclave] {
        if !p.is_file() {
            bail!(
                "{} is not a file (build it first: cargo build --release)",
                p.display()
            );
        }
    }
    if !(1..=22).contains(&opts.compression_level) {
        bail!("the zstd level must be 1-22");
    }

    let out = &opts.out;
    if out.exists() && !out.join("manifest.json").exists() {
        bail!(
            "{} exists and is not an earlier image (no manifest.json): not replacing it",
            out.display()
        );
    }
    let work = work_dir_beside(out, ".image-build-")?;
    let stage = work.path().join("image");
    fs::create_dir_all(&stage)?;

    let mut inputs = vec![Input {
        name: kernel_pin.file.clone(),
        role: "kernel and modules".into(),
        sha256: deb_sha,
    }];

    progress("unpacking the kernel package");
    let kernel = unpack_kernel(&deb, &work.path().join("kernel"))?;
    fs::copy(&kernel.vmlinuz, stage.join("vmlinuz"))?;

    progress("initramfs: conclave-init, its libraries, the kernel modules");
    let plan = module_plan(&kernel)?;
    let mut initrd = Archive::new();
    for dir in ["dev", "proc", "sys", "newroot", "etc/conclave"] {
        initrd.add(dir, Node::Dir, 0o755)?;
    }
    initrd.add("dev/console", Node::CharDev(5, 1), 0o600)?;
    let init = strip_debug(&opts.init, &work.path().join("conclave-init"))?;
    initrd.add("init", Node::File(read_file(&init)?), 0o755)?;
    inputs.push(input(
        &opts.init,
        "initramfs /init (debug info stripped)".into(),
    )?);
    // The loader looks for libraries where ldd found them.
    for (rel, file) in library_places(&opts.init, |_, file| file.display().to_string())? {
        initrd.add(&rel, Node::File(read_file(&file)?), 0o755)?;
        inputs.push(input(&file, format!("initramfs /{rel}"))?);
    }
    let mut list = String::new();
    for (name, required) in &plan {
        let Some(path) = kernel.modules.get(name) else {
            bail!("module {name} is not in {}", kernel_pin.file);
        };
        initrd.add(
            &format!("lib/modules/{name}.ko.xz"),
            Node::File(read_file(path)?),
            0o644,
        )?;
        list.push_str(&format!(
            "{name} {}\n",
            if *required { "required" } else { "optional" }
        ));
    }
    initrd.add("etc/conclave/modules", Node::File(list.into_bytes()), 0o644)?;
    fs::write(stage.join("initrd.img"), initrd.to_bytes()?)?;

    progress("root filesystem: conclave-enclave and libtorch (mksquashfs)");
    let rootdir = work.path().join("rootfs");
    for dir in [
        "usr/bin",
        "usr/lib/conclave",
        "lib64",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "data",
        "etc",
    ] {
        fs::create_dir_all(rootdir.join(dir))?;
    }
    let place = |from: &Path, rel: &str, mode: u32| -> Result<()> {
        let to = rootdir.join(rel);
        fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
        fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let enclave = strip_debug(&opts.enclave, &work.path().join("conclave-enclave"))?;
    let role = if opts.cuda {
        "rootfs /usr/bin/conclave-enclave (debug info stripped)".to_string()
    } else {
        let mut elf = read_file(&enclave)?;
        let dropped = guest::elf::drop_needed(&mut elf, |n| CUDA_ONLY_LIBRARIES.contains(&n))?;
        fs::write(&enclave, &elf)?;
        fs::set_permissions(&enclave, fs::Permissions::from_mode(0o755))?;
        format!(
            "rootfs /usr/bin/conclave-enclave (debug info stripped; CPU image: {} not linked)",
            if dropped.is_empty() {
                "nothing CUDA-only was".to_string()
            } else {
                dropped.join(", ")
            }
        )
    };
    place(&enclave, "usr/bin/conclave-enclave", 0o755)?;
    inputs.push(input(&opts.enclave, role)?);
    // The enclave is started with LD_LIBRARY_PATH=/usr/lib/conclave; the libraries are those
    // the loader resolves for the copy that goes in.
    for (rel, file) in library_places(&enclave, |wanted, _| format!("usr/lib/conclave/{wanted}"))? {
        place(&file, &rel, 0o755)?;
        inputs.push(input(&file, format!("rootfs /{rel}"))?);
    }
    let rootfs = stage.join("rootfs.img");
    progress("dm-verity hash tree");
    let params = squashfs_verity(&rootdir, &rootfs, opts.compression_level)?;
    let cmdline = guest::cmdline(&params);
    fs::write(stage.join("cmdline"), &cmdline)?;

    let manifest = Manifest {
        format: 1,
        kernel: output(&stage, "vmlinuz")?,
        initrd: output(&stage, "initrd.img")?,
        rootfs: output(&stage, "rootfs.img")?,
        cmdline,
        verity: params.to_string(),
        kernel_release: kernel.release.clone(),
        kernel_config: kernel.config.clone(),
        modules: plan.iter().map(|(m, _)| m.clone()).collect(),
        inputs,
    };
    let mut text = serde_json::to_vec_pretty(&manifest)?;
    text.push(b'\n');
    fs::write(stage.join("manifest.json"), text)?;

    // Into place: the old image (if any) goes only once the new one is complete.
    if out.exists() {
        let old = work.path().join("old");
        fs::rename(out, &old).with_context(|| format!("moving the old {} aside", out.display()))?;
    }
    fs::rename(&stage, out).with_context(|| format!("moving the image to {}", out.display()))?;
    Ok(Built {
        manifest,
        dir: out.clone(),
    })
}

/// Writes a read-only squashfs of `dir` to `out` (fixed owners, modes of directories and
/// times: the same tree gives the same bytes), pads it to whole 4 KiB blocks and appends its
/// dm-verity hash tree; returns the tree's parameters. The salt is derived from the
/// filesystem's own hash: reproducible, yet different for every filesystem.
pub fn squashfs_verity(dir: &Path, out: &Path, level: u32) -> Result<verity::VerityParams> {
    if !(1..=22).contains(&level) {
        bail!("the zstd level must be 1-22");
    }
    // Directories get fixed modes too (mksquashfs keeps them; the umask may differ).
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() && !p.is_symlink() {
                dirs.push(p);
            }
        }
    }
    run(
        Command::new("mksquashfs")
            .arg(dir)
            .arg(out)
            .args(["-noappend", "-no-xattrs", "-all-root", "-reproducible"])
            .args(["-all-time", "0", "-mkfs-time", "0", "-comp", "zstd"])
            .args(["-Xcompression-level", &level.to_string()])
            .args(["-quiet", "-no-progress"]),
        "mksquashfs (apt-get install squashfs-tools, or run scripts/setup-image.sh)",
    )?;
    let fs_len = fs::metadata(out)?.len();
    let pad = fs_len.next_multiple_of(verity::BLOCK as u64) - fs_len;
    if pad > 0 {
        let mut f = fs::OpenOptions::new().append(true).open(out)?;
        f.write_all(&vec![0u8; pad as usize])?;
    }
    let fs_sha = sha256_file(out)?;
    let salt = verity_salt(&hex::decode(&fs_sha)?);
    let tree = verity::build(std::io::BufReader::new(fs::File::open(out)?), &salt)?;
    fs::OpenOptions::new()
        .append(true)
        .open(out)?
        .write_all(&tree.area)?;
    Ok(tree.params(&salt))
}

fn verity_salt(fs_sha256: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"conclave/v1/verity-salt")
        .chain_update(fs_sha256)
        .finalize()
        .into()
}

/// The largest dataset disk read back.
pub const MAX_DATA_DISK_BYTES: u64 = verity::MAX_DATA_BYTES;

/// The verity parameters of a disk written by [`squashfs_verity`], recomputed from its bytes:
/// the squashfs's size from its superblock, the salt and tree from the filesystem; the stored
/// tree must be the one the filesystem gives (a disk changed anywhere is refused by name).
pub fn squashfs_verity_params(file: &Path) -> Result<verity::VerityParams> {
    let mut f = fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let len = f.metadata()?.len();
    if len > MAX_DATA_DISK_BYTES {
        bail!(
            "{} is {len} bytes, more than the {MAX_DATA_DISK_BYTES} accepted",
            file.display()
        );
    }
    let mut sb = [0u8; 96];
    f.read_exact(&mut sb)
        .with_context(|| format!("{}: too short for a squashfs superblock", file.display()))?;
    if &sb[..4] != b"hsqs" {
        bail!("{} is not a squashfs (no hsqs magic)", file.display());
    }
    let used = u64::from_le_bytes(sb[40..48].try_into().expect("8 bytes"));
    let data_len = used.next_multiple_of(verity::BLOCK as u64);
    if data_len == 0 || data_len > len {
        bail!(
            "{}: the squashfs claims {used} bytes of a {len}-byte file: no hash tree after it",
            file.display()
        );
    }
    let mut h = Sha256::new();
    std::io::copy(&mut fs::File::open(file)?.take(data_len), &mut h)?;
    let salt = verity_salt(&h.finalize());
    let tree = verity::build(
        std::io::BufReader::new(fs::File::open(file)?.take(data_len)),
        &salt,
    )?;
    let mut stored = Vec::new();
    let mut rest = fs::File::open(file)?;
    std::io::Seek::seek(&mut rest, std::io::SeekFrom::Start(data_len))?;
    rest.read_to_end(&mut stored)?;
    if stored != tree.area {
        bail!(
            "{}: the dm-verity hash tree after the filesystem is not the filesystem's (changed disk)",
            file.display()
        );
    }
    Ok(tree.params(&salt))
}

/// A dataset disk: a read-only squashfs with its dm-verity tree.
#[derive(Debug, Clone)]
pub struct DataDisk {
    pub path: PathBuf,
    pub params: verity::VerityParams,
}

/// Builds a dataset disk of `root` (whose contents become the disk's root, mounted at
/// `/data` in the guest) at `out`, atomically (written beside, renamed into place).
pub fn build_data_disk(root: &Path, out: &Path) -> Result<DataDisk> {
    if !root.is_dir() {
        bail!("{} is not a folder", root.display());
    }
    let work = work_dir_beside(out, ".data-disk-")?;
    // mksquashfs reads the tree as it is; a copy gets fixed modes without touching `root`.
    let tree = work.path().join("root");
    copy_tree(root, &tree)?;
    let img = work.path().join("disk.img");
    let params = squashfs_verity(&tree, &img, 3)?;
    fs::rename(&img, out).with_context(|| format!("moving the disk to {}", out.display()))?;
    Ok(DataDisk {
        path: out.to_path_buf(),
        params,
    })
}

/// Copies a folder of regular files and folders (symlinks are refused: a dataset is files).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let ty = e.file_type()?;
        let dst = to.join(e.file_name());
        if ty.is_dir() {
            copy_tree(&e.path(), &dst)?;
        } else if ty.is_file() {
            fs::copy(e.path(), &dst).with_context(|| format!("copying {}", e.path().display()))?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(0o644))?;
        } else {
            bail!("{} is not a regular file or folder", e.path().display());
        }
    }
    Ok(())
}

/// A temporary folder in `out`'s folder (made if missing): written there, renamed into place.
fn work_dir_beside(out: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .with_context(|| format!("making a work folder in {}", parent.display()))
}

/// Reads an image folder's manifest and checks the files against it.
pub fn load_image(dir: &Path) -> Result<Manifest> {
    let path = dir.join("manifest.json");
    let len = fs::metadata(&path)
        .with_context(|| {
            format!(
                "{} is not an image folder (no manifest.json)",
                dir.display()
            )
        })?
        .len();
    if len > guest::MAX_MANIFEST_BYTES as u64 {
        bail!("{} is {len} bytes: not a manifest", path.display());
    }
    let bytes = read_file(&path)?;
    let m: Manifest =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    for o in [&m.kernel, &m.initrd, &m.rootfs] {
        let got = sha256_file(&dir.join(&o.file))?;
        if got != o.sha256 {
            bail!(
                "{} has SHA-256 {got}, not the manifest's {}",
                dir.join(&o.file).display(),
                o.sha256
            );
        }
    }
    let cmdline = fs::read_to_string(dir.join("cmdline"))?;
    if cmdline != m.cmdline {
        bail!("{}/cmdline differs from the manifest's", dir.display());
    }
    guest::parse_cmdline(&m.cmdline).context("the manifest's command line")?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \tlibtorch_cpu.so => /venv/torch/lib/libtorch_cpu.so (0x00007f04)\n\
                    \tlibcudart.so.13 => /venv/torch/lib/../../nvidia/lib/libcudart.so.13 (0x7f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f04)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f04)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(libs.len(), 4);
        assert_eq!(libs[0].0, "libtorch_cpu.so");
        assert_eq!(
            libs[1].1,
            PathBuf::from("/venv/torch/lib/../../nvidia/lib/libcudart.so.13")
        );
        assert_eq!(
            libs[3],
            (
                "/lib64/ld-linux-x86-64.so.2".into(),
                "/lib64/ld-linux-x86-64.so.2".into()
            )
        );
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn a_missing_library_or_odd_line_is_an_error() {
        let e = parse_ldd("\tlibtorch_cpu.so => not found\n").unwrap_err();
        assert!(e.to_string().contains("libtorch_cpu.so is not found"));
        assert!(parse_ldd("\tgarbage\n").is_err());
    }

    #[test]
    fn the_builtin_pins_name_a_kernel_and_firmware() {
        let pins = PinnedInputs::builtin().unwrap();
        assert_eq!(pins.suite, "trixie");
        let k = pins.role("kernel").unwrap();
        assert!(k.file.starts_with(&k.name) && k.sha256.len() == 64);
        assert!(pins.role("firmware").is_ok());
        assert!(pins.role("nothing").is_err());
    }
}
