//! Kernel modules for the initramfs: their `.modinfo` (name and dependencies, read from the
//! ELF section the kernel's `modpost` writes) and the order to load them in. Debian's kernel
//! package ships no `modules.dep` (its postinst runs depmod), so the recipe computes the
//! closure itself from the modules' own metadata.

use std::collections::{BTreeMap, BTreeSet};

use super::GuestError;

/// The largest module read (uncompressed).
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// A module's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    /// Its name (`name=`), with `-` written `_` as the kernel does.
    pub name: String,
    /// Modules it needs loaded first (`depends=`), normalized the same way.
    pub depends: Vec<String>,
}

/// `dm-verity` and `dm_verity` are the same module to the kernel.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn u64_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
    .ok()
}

/// The contents of the ELF64 little-endian section named `wanted`.
fn section<'a>(elf: &'a [u8], wanted: &str) -> Option<&'a [u8]> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(elf, 0x28)?;
    let shentsize = u16_at(elf, 0x3a)? as usize;
    let shnum = u16_at(elf, 0x3c)? as usize;
    let shstrndx = u16_at(elf, 0x3e)? as usize;
    if shentsize < 64 {
        return None;
    }
    let header = |i: usize| -> Option<(u32, usize, usize)> {
        let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
        Some((
            u32_at(elf, at)?,
            u64_at(elf, at.checked_add(0x18)?)?,
            u64_at(elf, at.checked_add(0x20)?)?,
        ))
    };
    let (_, str_off, str_size) = header(shstrndx)?;
    let names = elf.get(str_off..str_off.checked_add(str_size)?)?;
    for i in 0..shnum {
        let (name_at, off, size) = header(i)?;
        let name = names.get(name_at as usize..)?;
        let end = name.iter().position(|&c| c == 0)?;
        if &name[..end] == wanted.as_bytes() {
            return elf.get(off..off.checked_add(size)?);
        }
    }
    None
}

/// Reads `name=` and `depends=` from a module's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<ModInfo, GuestError> {
    if elf.len() > MAX_MODULE_BYTES {
        return Err(GuestError::TooLarge {
            what: "kernel module",
            len: elf.len() as u64,
            max: MAX_MODULE_BYTES as u64,
        });
    }
    let info = section(elf, ".modinfo").ok_or_else(|| GuestError::BadModule {
        detail: "not an x86-64 ELF module with a .modinfo section".into(),
    })?;
    let mut name = None;
    let mut depends = Vec::new();
    for entry in info.split(|&c| c == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        if let Some(n) = entry.strip_prefix("name=") {
            name = Some(normalize(n));
        } else if let Some(d) = entry.strip_prefix("depends=") {
            depends = d
                .split(',')
                .filter(|s| !s.is_empty())
                .map(normalize)
                .collect();
        }
    }
    let name = name.ok_or_else(|| GuestError::BadModule {
        detail: ".modinfo has no name=".into(),
    })?;
    Ok(ModInfo { name, depends })
}

/// The modules to load, dependencies first, for the `wanted` ones (which must all be in
/// `available`, keyed by normalized name).
pub fn load_order(
    available: &BTreeMap<String, ModInfo>,
    wanted: &[&str],
) -> Result<Vec<String>, GuestError> {
    fn visit(
        name: &str,
        available: &BTreeMap<String, ModInfo>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), GuestError> {
        if done.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            return Err(GuestError::BadModule {
                detail: format!("dependency cycle through {name}"),
            });
        }
        let info = available
            .get(name)
            .ok_or_else(|| GuestError::MissingModule { name: name.into() })?;
        path.push(name.to_string());
        for d in &info.depends {
            visit(d, available, done, path, out)?;
        }
        path.pop();
        done.insert(name.to_string());
        out.push(name.to_string());
        Ok(())
    }
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        visit(
            &normalize(w),
            available,
            &mut done,
            &mut Vec::new(),
            &mut out,
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a `.modinfo` section holding `info`.
    fn elf(info: &[u8]) -> Vec<u8> {
        let shstr = b"\0.modinfo\0.shstrtab\0";
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let info_off = b.len();
        b.extend_from_slice(info);
        let str_off = b.len();
        b.extend_from_slice(shstr);
        let shoff = b.len();
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        b[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            b.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, info_off, info.len());
        sh(10, str_off, shstr.len());
        b
    }

    #[test]
    fn modinfo_reads_name_and_depends() {
        let m = modinfo(&elf(
            b"license=GPL\0depends=dm-bufio,dm_mod\0name=dm_verity\0",
        ))
        .unwrap();
        assert_eq!(m.name, "dm_verity");
        assert_eq!(m.depends, ["dm_bufio", "dm_mod"]);
        let none = modinfo(&elf(b"depends=\0name=virtio_blk\0")).unwrap();
        assert!(none.depends.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(modinfo(b"").is_err());
        assert!(modinfo(b"\x7fELF\x02\x01garbage").is_err());
        let mut e = elf(b"name=x\0");
        let n = e.len();
        e.truncate(n - 40);
        assert!(modinfo(&e).is_err());
        assert!(modinfo(&elf(b"depends=a\0")).is_err(), "no name");
    }

    #[test]
    fn dependencies_load_first_once() {
        let mut av = BTreeMap::new();
        for (n, d) in [
            ("dm_verity", vec!["dm_bufio", "dm_mod"]),
            ("dm_bufio", vec![]),
            ("dm_mod", vec![]),
            ("squashfs", vec![]),
        ] {
            av.insert(
                n.to_string(),
                ModInfo {
                    name: n.into(),
                    depends: d.into_iter().map(String::from).collect(),
                },
            );
        }
        let order = load_order(&av, &["dm-verity", "squashfs", "dm_mod"]).unwrap();
        assert_eq!(order, ["dm_bufio", "dm_mod", "dm_verity", "squashfs"]);
        assert!(matches!(
            load_order(&av, &["nope"]),
            Err(GuestError::MissingModule { .. })
        ));
        av.get_mut("dm_mod")
            .unwrap()
            .depends
            .push("dm_verity".into());
        assert!(load_order(&av, &["dm_verity"]).is_err(), "cycle");
    }
}
