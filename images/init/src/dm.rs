//! The device-mapper ioctls (`include/uapi/linux/dm-ioctl.h`), enough to create one table
//! device and activate it: `DM_DEV_CREATE`, `DM_TABLE_LOAD`, `DM_DEV_SUSPEND` (resume).

use std::fs::File;
use std::os::fd::AsRawFd;

use anyhow::{Result, bail};

/// `sizeof(struct dm_ioctl)`.
const HEADER: usize = 312;
/// `sizeof(struct dm_target_spec)`.
const SPEC: usize = 40;
const DM_NAME_LEN: usize = 128;
const DM_READONLY_FLAG: u32 = 1;

const DM_DEV_CREATE: u64 = 3;
const DM_DEV_SUSPEND: u64 = 6;
const DM_TABLE_LOAD: u64 = 9;

/// `_IOWR(0xfd, nr, struct dm_ioctl)`.
fn request(nr: u64) -> u64 {
    (3 << 30) | ((HEADER as u64) << 16) | (0xfd << 8) | nr
}

fn header(name: &str, flags: u32, extra: usize, targets: u32) -> Result<Vec<u8>> {
    if name.len() >= DM_NAME_LEN {
        bail!("device-mapper name {name:?} is too long");
    }
    let mut b = vec![0u8; HEADER + extra];
    let put = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    put(&mut b, 0, 4); // version 4.0.0
    let size = b.len() as u32;
    put(&mut b, 12, size); // data_size
    put(&mut b, 16, HEADER as u32); // data_start
    put(&mut b, 20, targets); // target_count
    put(&mut b, 28, flags);
    b[48..48 + name.len()].copy_from_slice(name.as_bytes());
    Ok(b)
}

fn call(control: &File, nr: u64, buf: &mut [u8], what: &str) -> Result<()> {
    // SAFETY: buf is at least sizeof(struct dm_ioctl) and its data_size field says how long it
    // is; the kernel writes back at most that many bytes.
    let rc = unsafe {
        libc::ioctl(
            control.as_raw_fd(),
            request(nr) as libc::c_ulong,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Creates the read-only device `name` with one target (`kind` over `sectors` sectors with
/// `params`), activates it, and returns its minor number (`/dev/dm-<minor>`).
pub fn create(name: &str, kind: &str, sectors: u64, params: &str) -> Result<u32> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .map_err(|e| anyhow::anyhow!("opening /dev/mapper/control (is dm_mod loaded?): {e}"))?;

    let mut b = header(name, 0, 0, 0)?;
    call(&control, DM_DEV_CREATE, &mut b, "DM_DEV_CREATE")?;
    let dev = u64::from_ne_bytes(b[40..48].try_into()?);
    // huge_encode_dev: minor = low 8 bits | bits 20.. shifted down.
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;

    let mut text = params.as_bytes().to_vec();
    text.push(0);
    while !(SPEC + text.len()).is_multiple_of(8) {
        text.push(0);
    }
    let mut b = header(name, DM_READONLY_FLAG, SPEC + text.len(), 1)?;
    let s = HEADER;
    b[s..s + 8].copy_from_slice(&0u64.to_ne_bytes()); // sector_start
    b[s + 8..s + 16].copy_from_slice(&sectors.to_ne_bytes()); // length
    b[s + 20..s + 24].copy_from_slice(&((SPEC + text.len()) as u32).to_ne_bytes()); // next
    if kind.len() >= 16 {
        bail!("target type {kind:?} is too long");
    }
    b[s + 24..s + 24 + kind.len()].copy_from_slice(kind.as_bytes());
    b[s + SPEC..].copy_from_slice(&text);
    call(&control, DM_TABLE_LOAD, &mut b, "DM_TABLE_LOAD")?;

    let mut b = header(name, 0, 0, 0)?;
    call(&control, DM_DEV_SUSPEND, &mut b, "DM_DEV_SUSPEND (resume)")?;
    Ok(minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_numbers_match_the_uapi_header() {
        // DM_DEV_CREATE = _IOWR(0xfd, 3, struct dm_ioctl) = 0xc138fd03 on x86-64.
        assert_eq!(request(DM_DEV_CREATE), 0xc138_fd03);
        assert_eq!(request(DM_TABLE_LOAD), 0xc138_fd09);
        assert_eq!(request(DM_DEV_SUSPEND), 0xc138_fd06);
    }

    #[test]
    fn the_header_is_laid_out_as_struct_dm_ioctl() {
        let b = header("root", DM_READONLY_FLAG, 48, 1).unwrap();
        assert_eq!(b.len(), 360);
        assert_eq!(&b[0..4], &4u32.to_ne_bytes());
        assert_eq!(&b[12..16], &360u32.to_ne_bytes());
        assert_eq!(&b[16..20], &312u32.to_ne_bytes());
        assert_eq!(&b[20..24], &1u32.to_ne_bytes());
        assert_eq!(&b[28..32], &1u32.to_ne_bytes());
        assert_eq!(&b[48..53], b"root\0");
        assert!(header(&"x".repeat(128), 0, 0, 0).is_err());
    }
}
