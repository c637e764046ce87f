//! `conclave-init`: PID 1 of the Conclave guest, run from the initramfs.
//!
//! 1. mounts `/dev` (devtmpfs), `/proc`, `/sys`;
//! 2. reads the kernel command line (measured at launch): `conclave.verity=` pins the root
//!    filesystem, `conclave.attester=` optionally names the attester;
//! 3. loads the kernel modules listed in `/etc/conclave/modules` (xz-compressed, decompressed by
//!    the kernel), in that order;
//! 4. creates the dm-verity device over `/dev/vda` with the root hash from the command line and
//!    mounts it (squashfs, read-only) as the new root, with tmpfs on `/tmp` and `/run`;
//!    with `conclave.data=` on the command line, the same over the dataset disk `/dev/vdb`,
//!    mounted read-only at `/data` (the enclave's corpus);
//! 5. with the `sim` attester (a VM without a TEE), computes the launch measurement from the
//!    kernel, initrd and command line qemu loaded, read back through `fw_cfg`, and gives it to
//!    the enclave, which reports it as MEASUREMENT;
//! 6. runs `conclave-enclave serve` on the virtio-serial port `org.conclave.channel`, reaps
//!    orphans, and powers the VM off when the enclave exits.
//!
//! Any failure is printed to the console and powers the VM off: a guest that cannot prove what
//! it runs must not run anything.

#[cfg(target_os = "linux")]
mod dm;
#[cfg(target_os = "linux")]
mod fwcfg;
#[cfg(target_os = "linux")]
mod init;

#[cfg(target_os = "linux")]
fn main() {
    // It mounts over /dev, /proc and /sys and powers the machine off: never outside the guest.
    if std::process::id() != 1 {
        eprintln!(
            "conclave-init runs only as PID 1 of the Conclave guest (it is the image's /init); \
             nothing was done"
        );
        std::process::exit(2);
    }
    init::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("conclave-init runs only as PID 1 of a Linux guest");
    std::process::exit(2);
}
