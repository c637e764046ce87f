//! The kernel's build configuration (`/boot/config-<release>` in Debian's package), checked for
//! what the guest needs before an image is built from it: a kernel without the TEE guest
//! drivers, configfs-tsm, virtio, dm-verity or squashfs would build an image that cannot attest
//! or cannot mount its root.

use super::GuestError;

/// Options the guest needs, each built in (`y`) or as a module (`m`).
pub const REQUIRED: &[&str] = &[
    // Attestation: SEV-SNP and TDX guest drivers, the configfs-tsm report interface.
    "CONFIG_AMD_MEM_ENCRYPT",
    "CONFIG_SEV_GUEST",
    "CONFIG_INTEL_TDX_GUEST",
    "CONFIG_TDX_GUEST_DRIVER",
    "CONFIG_TSM_REPORTS",
    // The channel to the host: virtio-serial, and vsock for guests that prefer it.
    "CONFIG_VIRTIO_PCI",
    "CONFIG_VIRTIO_CONSOLE",
    "CONFIG_VIRTIO_VSOCKETS",
    // The verified root filesystem.
    "CONFIG_VIRTIO_BLK",
    "CONFIG_BLK_DEV_DM",
    "CONFIG_DM_VERITY",
    "CONFIG_SQUASHFS",
    "CONFIG_SQUASHFS_ZSTD",
    // Booting from our initramfs with compressed modules the kernel unpacks itself.
    "CONFIG_BLK_DEV_INITRD",
    "CONFIG_DEVTMPFS",
    "CONFIG_TMPFS",
    "CONFIG_MODULE_DECOMPRESS",
    "CONFIG_MODULE_COMPRESS_XZ",
];

/// The largest config file read.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// Checks `config` (the text of a kernel `.config`) and returns the required options with their
/// values (`CONFIG_X=y` / `=m`), or every missing one at once.
pub fn check(config: &str) -> Result<Vec<String>, GuestError> {
    if config.len() > MAX_CONFIG_BYTES {
        return Err(GuestError::TooLarge {
            what: "kernel config",
            len: config.len() as u64,
            max: MAX_CONFIG_BYTES as u64,
        });
    }
    let value = |opt: &str| {
        config.lines().find_map(|l| {
            l.strip_prefix(opt)
                .and_then(|r| r.strip_prefix('='))
                .map(str::trim)
        })
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for opt in REQUIRED {
        match value(opt) {
            Some(v @ ("y" | "m")) => found.push(format!("{opt}={v}")),
            _ => missing.push(opt.to_string()),
        }
    }
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(GuestError::KernelConfig { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> String {
        REQUIRED
            .iter()
            .enumerate()
            .map(|(i, o)| format!("{o}={}\n", if i % 2 == 0 { "y" } else { "m" }))
            .collect()
    }

    #[test]
    fn a_kernel_with_everything_passes_with_its_values() {
        let found = check(&format!("# comment\n{}CONFIG_OTHER=y\n", full())).unwrap();
        assert_eq!(found.len(), REQUIRED.len());
        assert_eq!(found[0], "CONFIG_AMD_MEM_ENCRYPT=y");
        assert_eq!(found[1], "CONFIG_SEV_GUEST=m");
    }

    #[test]
    fn every_missing_option_is_named() {
        let text = full()
            .replace(
                "CONFIG_TDX_GUEST_DRIVER=m",
                "# CONFIG_TDX_GUEST_DRIVER is not set",
            )
            .replace("CONFIG_DM_VERITY=", "CONFIG_DM_VERITY_X=");
        let Err(GuestError::KernelConfig { missing }) = check(&text) else {
            panic!("accepted")
        };
        assert_eq!(missing, ["CONFIG_TDX_GUEST_DRIVER", "CONFIG_DM_VERITY"]);
        // Debian bookworm's 6.1 kernel has no TSM reports or TDX guest driver.
        let bookworm = full()
            .replace("CONFIG_TSM_REPORTS=y", "")
            .replace("CONFIG_TSM_REPORTS=m", "");
        assert!(check(&bookworm).is_err());
    }
}
