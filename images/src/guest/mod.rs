//! The guest image: what `conclave image build` writes and the guest's init reads.
//!
//! An image is four files, all measured at launch (the kernel, initrd and command line by the
//! SEV hashes table or TDX's RTMRs) or covered by what is measured:
//!
//! - `vmlinuz`: Debian's cloud kernel (SEV-SNP and TDX guest drivers, configfs-tsm, vsock);
//! - `initrd.img`: a [`cpio`] archive holding `conclave-init`, its libraries and the kernel
//!   [`modules`] it loads (virtio-blk, dm-verity, squashfs, the attestation drivers);
//! - `rootfs.img`: a read-only squashfs with `conclave-enclave` and its libraries (libtorch),
//!   followed by its dm-[`verity`] hash tree;
//! - the kernel command line, which carries the tree's root hash (`conclave.verity=`), so the
//!   measured command line pins every byte of the root filesystem.
//!
//! `manifest.json` names the inputs (package versions and hashes) and the outputs' hashes.

pub mod cpio;
pub mod elf;
pub mod kconfig;
pub mod launch;
pub mod modules;
pub mod verity;

use serde::{Deserialize, Serialize};

pub use verity::VerityParams;

/// The virtio-serial port name the guest's enclave serves (the host's channel).
pub const CHANNEL_PORT: &str = "org.conclave.channel";

/// Kernel command-line key holding the root filesystem's verity parameters.
pub const VERITY_KEY: &str = "conclave.verity";
/// Kernel command-line key naming the attester (`snp`, `tdx`, or `sim` for a VM without a
/// TEE; without it the init picks the TEE whose guest device exists).
pub const ATTESTER_KEY: &str = "conclave.attester";
/// Kernel command-line key holding the dataset disk's verity parameters (the disk is the
/// second virtio disk, mounted read-only at `/data`; without the key no dataset is mounted).
pub const DATA_KEY: &str = "conclave.data";
/// Where the dataset disk is mounted in the guest. It holds `corpus/` (the corpus, the
/// enclave's `--corpus`) and `cache/` (the tokenizer and the job's shards, its `--cache`).
pub const DATA_MOUNT: &str = "/data";
/// The corpus on the dataset disk.
pub const DATA_CORPUS: &str = "/data/corpus";
/// The data cache on the dataset disk (read-only: the host prepared the job's shards).
pub const DATA_CACHE: &str = "/data/cache";

/// The modules the init must load to reach the root filesystem.
pub const REQUIRED_MODULES: &[&str] = &["virtio_blk", "dm_verity", "squashfs"];
/// Modules loaded when present and loadable (the attestation drivers fail to load outside
/// their TEE, which is fine: the attester then reports the missing device).
pub const OPTIONAL_MODULES: &[&str] = &[
    "tsm",
    "sev_guest",
    "tdx_guest",
    "vmw_vsock_virtio_transport",
];

/// The console and panic settings every image boots with; the verity key is appended.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

/// Why an image input or a boot parameter is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The verity parameters on the command line do not parse.
    #[error("bad {VERITY_KEY} value {value:?}: {detail}")]
    BadVerityParams {
        /// The value (first 200 characters).
        value: String,
        /// What is wrong.
        detail: String,
    },
    /// The command line lacks a key the init needs.
    #[error("the kernel command line has no {key}=")]
    MissingCmdlineKey {
        /// The key.
        key: &'static str,
    },
    /// An attester name the init does not know.
    #[error("{ATTESTER_KEY}={value:?} is not snp, tdx or sim")]
    UnknownAttester {
        /// The value given.
        value: String,
    },
    /// Verity data must be whole 4 KiB blocks.
    #[error("verity data is {len} bytes, not a positive whole number of 4 KiB blocks")]
    NotBlockAligned {
        /// Bytes read.
        len: u64,
    },
    /// Something is larger than accepted.
    #[error("{what} is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Reading failed.
    #[error("{what}: {detail}")]
    Io {
        /// What was being read.
        what: String,
        /// The error.
        detail: String,
    },
    /// A path that cannot go into an archive.
    #[error("archive path {path:?} is not a relative path of normal components")]
    BadArchivePath {
        /// The path.
        path: String,
    },
    /// Added twice, or under a non-directory.
    #[error("archive path {path:?} is already taken")]
    DuplicateArchivePath {
        /// The path.
        path: String,
    },
    /// A cpio archive that does not parse.
    #[error("cpio archive is malformed at offset {offset}: {detail}")]
    BadArchive {
        /// Where.
        offset: usize,
        /// What.
        detail: String,
    },
    /// An ELF program that cannot be read or edited.
    #[error("ELF program: {detail}")]
    BadElf {
        /// What is wrong.
        detail: String,
    },
    /// A kernel image that is not a bzImage.
    #[error("kernel image: {detail}")]
    BadKernel {
        /// What is wrong.
        detail: String,
    },
    /// A kernel module whose metadata cannot be read.
    #[error("kernel module: {detail}")]
    BadModule {
        /// What is wrong.
        detail: String,
    },
    /// The kernel lacks options the guest needs.
    #[error("the kernel's config lacks {}: not a usable guest kernel", missing.join(", "))]
    KernelConfig {
        /// The options neither `y` nor `m`.
        missing: Vec<String>,
    },
    /// A module the image needs is not in the kernel package.
    #[error("kernel module {name} is not in the kernel package")]
    MissingModule {
        /// The module.
        name: String,
    },
}

/// The attester the guest's enclave uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestAttester {
    /// SEV-SNP (configfs-tsm or /dev/sev-guest).
    Snp,
    /// TDX (configfs-tsm).
    Tdx,
    /// Simulated evidence: a VM without a TEE (tests, development). Its command line differs,
    /// so its launch measurement does too.
    Sim,
}

impl GuestAttester {
    /// The name `conclave-enclave serve --attester` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snp => "snp",
            Self::Tdx => "tdx",
            Self::Sim => "sim",
        }
    }
}

/// What the init reads from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// The root filesystem's verity parameters.
    pub verity: VerityParams,
    /// The attester, when the command line names one.
    pub attester: Option<GuestAttester>,
    /// The dataset disk's verity parameters, when there is a dataset.
    pub data: Option<VerityParams>,
}

/// Parses `/proc/cmdline` (space-separated; the last occurrence of a key wins, as the kernel's
/// own parameters do).
pub fn parse_cmdline(cmdline: &str) -> Result<BootParams, GuestError> {
    let mut verity = None;
    let mut attester = None;
    let mut data = None;
    for word in cmdline.split_ascii_whitespace() {
        if let Some(v) = word
            .strip_prefix(VERITY_KEY)
            .and_then(|r| r.strip_prefix('='))
        {
            verity = Some(VerityParams::parse(v)?);
        } else if let Some(v) = word
            .strip_prefix(DATA_KEY)
            .and_then(|r| r.strip_prefix('='))
        {
            data = Some(VerityParams::parse(v)?);
        } else if let Some(v) = word
            .strip_prefix(ATTESTER_KEY)
            .and_then(|r| r.strip_prefix('='))
        {
            attester = Some(match v {
                "snp" => GuestAttester::Snp,
                "tdx" => GuestAttester::Tdx,
                "sim" => GuestAttester::Sim,
                other => {
                    return Err(GuestError::UnknownAttester {
                        value: other.chars().take(64).collect(),
                    });
                }
            });
        }
    }
    Ok(BootParams {
        verity: verity.ok_or(GuestError::MissingCmdlineKey { key: VERITY_KEY })?,
        attester,
        data,
    })
}

/// The command line an image boots with.
pub fn cmdline(verity: &VerityParams) -> String {
    format!("{BASE_CMDLINE} {VERITY_KEY}={verity}")
}

/// One output file of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// File name inside the image folder.
    pub file: String,
    /// SHA-256, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// One input the image was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// What it is (a package file name, or the path it was taken from).
    pub name: String,
    /// Where it ends up in the image.
    pub role: String,
    /// SHA-256 of the input, hex.
    pub sha256: String,
}

/// `manifest.json` of an image folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version (1).
    pub format: u32,
    /// The kernel (`vmlinuz`).
    pub kernel: Output,
    /// The initramfs (`initrd.img`).
    pub initrd: Output,
    /// The root filesystem and its hash tree (`rootfs.img`).
    pub rootfs: Output,
    /// The kernel command line, exactly (also in `cmdline`).
    pub cmdline: String,
    /// The root filesystem's verity parameters (as on the command line).
    pub verity: String,
    /// Kernel release of the modules.
    pub kernel_release: String,
    /// The kernel options the guest needs, as the kernel's config has them.
    pub kernel_config: Vec<String>,
    /// Modules in the initramfs, in load order.
    pub modules: Vec<String>,
    /// Everything the image was built from.
    pub inputs: Vec<Input>,
}

/// The largest manifest read.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> VerityParams {
        VerityParams {
            data_blocks: 10,
            hash_start_block: 10,
            root: [7; 32],
            salt: vec![1, 2],
        }
    }

    #[test]
    fn the_cmdline_round_trips() {
        let line = cmdline(&params());
        let p = parse_cmdline(&line).unwrap();
        assert_eq!(p.verity, params());
        assert_eq!(p.attester, None);
        let sim = parse_cmdline(&format!("{line} {ATTESTER_KEY}=sim")).unwrap();
        assert_eq!(sim.attester, Some(GuestAttester::Sim));
    }

    #[test]
    fn a_missing_or_bad_key_is_named() {
        assert_eq!(
            parse_cmdline("console=ttyS0"),
            Err(GuestError::MissingCmdlineKey { key: VERITY_KEY })
        );
        assert!(matches!(
            parse_cmdline(&format!("{} conclave.attester=sgx", cmdline(&params()))),
            Err(GuestError::UnknownAttester { .. })
        ));
        assert!(matches!(
            parse_cmdline("conclave.verity=1:2"),
            Err(GuestError::BadVerityParams { .. })
        ));
        // A key that merely starts the same is not ours.
        assert!(parse_cmdline("conclave.verityx=1").is_err());
    }
}
