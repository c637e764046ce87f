//! qemu's firmware configuration device (`fw_cfg`), read through its x86 I/O ports: the
//! kernel, initrd and command line qemu loaded, from which the init computes the launch
//! measurement of a VM without a TEE ([`conclave_images::guest::launch`]).
//!
//! The legacy items (setup sectors, kernel, initrd, command line) are not files in fw_cfg's
//! directory, so Linux's `qemu_fw_cfg` sysfs driver does not show them; the init reads them
//! with port I/O (selector port 0x510, data port 0x511, `rep insb`), which PID 1 may do after
//! `iopl(3)`. Only used with the `sim` attester: SEV-SNP and TDX guests take their measurement
//! from the hardware.

use anyhow::{Context, Result, bail};

/// Item keys (qemu's `include/standards/firmware/qemu_fw_cfg.h` / `fw_cfg_keys.h`).
const SIGNATURE: u16 = 0x00;
const KERNEL_SIZE: u16 = 0x08;
const INITRD_SIZE: u16 = 0x0b;
const KERNEL_DATA: u16 = 0x11;
const INITRD_DATA: u16 = 0x12;
const CMDLINE_SIZE: u16 = 0x14;
const CMDLINE_DATA: u16 = 0x15;
const SETUP_SIZE: u16 = 0x17;
const SETUP_DATA: u16 = 0x18;

/// The largest item read (a kernel or initrd).
const MAX_ITEM: u64 = 1 << 30;

/// Access to the device (I/O privilege taken once).
pub struct FwCfg(());

#[cfg(target_arch = "x86_64")]
mod port {
    const SELECTOR: u16 = 0x510;
    const DATA: u16 = 0x511;

    /// Selects an item; the next data reads start at its offset 0.
    pub fn select(key: u16) {
        // SAFETY: a 16-bit write to the fw_cfg selector port; the caller holds I/O privilege.
        unsafe {
            core::arch::asm!("out dx, ax", in("dx") SELECTOR, in("ax") key, options(nomem, nostack));
        }
    }

    /// Reads the next `buf.len()` bytes of the selected item.
    pub fn read(buf: &mut [u8]) {
        // SAFETY: `rep insb` writes exactly rcx bytes at rdi, which is `buf`; the direction
        // flag is clear (the ABI guarantees it at function boundaries).
        unsafe {
            core::arch::asm!(
                "rep insb",
                in("dx") DATA,
                inout("rdi") buf.as_mut_ptr() => _,
                inout("rcx") buf.len() => _,
                options(nostack),
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod port {
    pub fn select(_key: u16) {}
    pub fn read(buf: &mut [u8]) {
        buf.fill(0);
    }
}

impl FwCfg {
    /// Takes I/O privilege and checks the device answers with its signature.
    pub fn open() -> Result<Self> {
        if !cfg!(target_arch = "x86_64") {
            bail!("fw_cfg port I/O is only implemented on x86_64");
        }
        // SAFETY: iopl takes an integer; it fails without CAP_SYS_RAWIO.
        if unsafe { libc::iopl(3) } != 0 {
            return Err(std::io::Error::last_os_error()).context("iopl(3) for fw_cfg port I/O");
        }
        let d = FwCfg(());
        let mut sig = [0u8; 4];
        port::select(SIGNATURE);
        port::read(&mut sig);
        if &sig != b"QEMU" {
            bail!("no qemu fw_cfg device (signature {sig:02x?})");
        }
        Ok(d)
    }

    fn size(&self, key: u16) -> Result<u64> {
        let mut b = [0u8; 4];
        port::select(key);
        port::read(&mut b);
        let n = u32::from_le_bytes(b) as u64;
        if n > MAX_ITEM {
            bail!("fw_cfg item {key:#x} claims {n} bytes (more than {MAX_ITEM})");
        }
        Ok(n)
    }

    /// A reader over an item whose size is at `size_key` and bytes at `data_key` (selected
    /// on the first read, so several readers can be made before any is read).
    fn item(&self, size_key: u16, data_key: u16) -> Result<Item> {
        Ok(Item {
            key: data_key,
            selected: false,
            left: self.size(size_key)?,
        })
    }

    /// The setup sectors as loaded (with qemu's loader fields written).
    pub fn setup(&self) -> Result<Vec<u8>> {
        let n = self.size(SETUP_SIZE)?;
        if n as usize > conclave_images::guest::launch::MAX_SETUP_BYTES {
            bail!("fw_cfg setup area is {n} bytes");
        }
        let mut v = vec![0u8; n as usize];
        port::select(SETUP_DATA);
        port::read(&mut v);
        Ok(v)
    }

    /// The command line as loaded (NUL-terminated).
    pub fn cmdline(&self) -> Result<Vec<u8>> {
        let n = self.size(CMDLINE_SIZE)?;
        if n > 1 << 16 {
            bail!("fw_cfg command line is {n} bytes");
        }
        let mut v = vec![0u8; n as usize];
        port::select(CMDLINE_DATA);
        port::read(&mut v);
        Ok(v)
    }

    /// The protected-mode kernel (read it to its end before reading another item).
    pub fn kernel(&self) -> Result<Item> {
        self.item(KERNEL_SIZE, KERNEL_DATA)
    }

    /// The initrd (read it to its end before reading another item).
    pub fn initrd(&self) -> Result<Item> {
        self.item(INITRD_SIZE, INITRD_DATA)
    }
}

/// An item being read.
pub struct Item {
    key: u16,
    selected: bool,
    left: u64,
}

impl std::io::Read for Item {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.selected {
            port::select(self.key);
            self.selected = true;
        }
        let n = (buf.len() as u64).min(self.left) as usize;
        port::read(&mut buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// The digests of what qemu loaded for this boot (their measurement is the launch
/// measurement).
pub fn launch_components() -> Result<conclave_images::guest::launch::Components> {
    let fw = FwCfg::open()?;
    let setup = fw.setup()?;
    let cmdline = fw.cmdline()?;
    // The digest reads the kernel to its end, then the initrd.
    let (kernel, initrd) = (fw.kernel()?, fw.initrd()?);
    Ok(conclave_images::guest::launch::components(
        &setup, kernel, initrd, &cmdline,
    )?)
}
