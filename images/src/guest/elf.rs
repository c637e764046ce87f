//! The one ELF edit the image build makes: dropping shared-library dependencies (`DT_NEEDED`
//! entries) a CPU guest must not carry.
//!
//! `conclave-enclave` built against PyPI's CUDA wheel keeps `libtorch_cuda.so` (and through
//! `libtorch.so`, the CUDA stack: cuBLAS, cuDNN, NCCL, about 1.8 GB) linked on purpose, so that
//! a GPU host finds CUDA. No symbol of those libraries is referenced: the linker would have
//! dropped them under `--as-needed`. The CPU image's copy of the program names, in their
//! place, a library it already needs (the dynamic loader loads a name once), which is what
//! linking it without them would give: the program's code and symbols are unchanged, and a
//! missing symbol would still fail at load (Rust links with `-z now`).

use super::GuestError;

const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
const DT_STRTAB: i64 = 5;
const DT_STRSZ: i64 = 10;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;

fn bad(detail: impl Into<String>) -> GuestError {
    GuestError::BadElf {
        detail: detail.into(),
    }
}

fn bytes<const N: usize>(b: &[u8], at: usize, plus: usize) -> Result<[u8; N], GuestError> {
    at.checked_add(plus)
        .and_then(|start| b.get(start..start.checked_add(N)?))
        .map(|s| s.try_into().expect("N bytes"))
        .ok_or_else(|| bad(format!("truncated at {at:#x}+{plus:#x}")))
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, GuestError> {
    Ok(u16::from_le_bytes(bytes(b, at, 0)?))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, GuestError> {
    Ok(u32::from_le_bytes(bytes(b, at, 0)?))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, GuestError> {
    Ok(u64::from_le_bytes(bytes(b, at, 0)?))
}

fn u64_plus(b: &[u8], at: usize, plus: usize) -> Result<u64, GuestError> {
    Ok(u64::from_le_bytes(bytes(b, at, plus)?))
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// The `DT_NEEDED` entries of a little-endian ELF64 file: (file offset of the entry's value,
/// the name).
fn needed(elf: &[u8]) -> Result<Vec<(usize, String)>, GuestError> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(bad("no ELF magic"));
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(bad("not a little-endian 64-bit ELF file"));
    }
    let phoff = u64_at(elf, 0x20)? as usize;
    let phentsize = u16_at(elf, 0x36)? as usize;
    let phnum = u16_at(elf, 0x38)? as usize;
    if phentsize < 56 || phnum > 4096 {
        return Err(bad("implausible program header table"));
    }
    let mut segs = Vec::new();
    for i in 0..phnum {
        let at = phoff
            .checked_add(i * phentsize)
            .ok_or_else(|| bad("program header offset overflows"))?;
        segs.push(Segment {
            kind: u32_at(elf, at)?,
            offset: u64_plus(elf, at, 8)?,
            vaddr: u64_plus(elf, at, 16)?,
            filesz: u64_plus(elf, at, 32)?,
        });
    }
    let dynamic = segs
        .iter()
        .find(|s| s.kind == PT_DYNAMIC)
        .ok_or_else(|| bad("no dynamic segment (a static program)"))?;
    let (Ok(start), Ok(len)) = (
        usize::try_from(dynamic.offset),
        usize::try_from(dynamic.filesz),
    ) else {
        return Err(bad("the dynamic segment lies outside the file"));
    };
    if start.checked_add(len).is_none_or(|e| e > elf.len()) {
        return Err(bad("the dynamic segment lies outside the file"));
    }
    let mut strtab = None;
    let mut strsz = None;
    let mut entries = Vec::new();
    for at in (start..start + len - len % 16).step_by(16) {
        let tag = u64_at(elf, at)? as i64;
        let val = u64_plus(elf, at, 8)?;
        match tag {
            DT_NULL => break,
            DT_NEEDED => entries.push((at + 8, val)),
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            _ => {}
        }
    }
    let (strtab, strsz) = (
        strtab.ok_or_else(|| bad("no DT_STRTAB"))?,
        strsz.ok_or_else(|| bad("no DT_STRSZ"))?,
    );
    let seg = segs
        .iter()
        .find(|s| {
            s.kind == PT_LOAD
                && s.vaddr <= strtab
                && s.vaddr
                    .checked_add(s.filesz)
                    .is_some_and(|end| strtab < end)
        })
        .ok_or_else(|| bad("DT_STRTAB is in no loaded segment"))?;
    let outside = || bad("the string table lies outside the file");
    let table_off = usize::try_from(
        (strtab - seg.vaddr)
            .checked_add(seg.offset)
            .ok_or_else(outside)?,
    )
    .map_err(|_| outside())?;
    let table = elf
        .get(table_off..table_off.saturating_add(usize::try_from(strsz).map_err(|_| outside())?))
        .ok_or_else(outside)?;
    entries
        .into_iter()
        .map(|(at, val)| {
            let rest = usize::try_from(val)
                .ok()
                .and_then(|v| table.get(v..))
                .ok_or_else(|| bad("a DT_NEEDED name lies outside the string table"))?;
            let end = rest
                .iter()
                .position(|&c| c == 0)
                .ok_or_else(|| bad("an unterminated DT_NEEDED name"))?;
            Ok((at, String::from_utf8_lossy(&rest[..end]).into_owned()))
        })
        .collect()
}

/// The libraries an ELF program names (`DT_NEEDED`), in order.
pub fn needed_libraries(elf: &[u8]) -> Result<Vec<String>, GuestError> {
    Ok(needed(elf)?.into_iter().map(|(_, n)| n).collect())
}

/// Points every `DT_NEEDED` entry whose name `drop` selects at the name of the first entry it
/// keeps; returns the names dropped. At least one entry must be kept.
pub fn drop_needed(elf: &mut [u8], drop: impl Fn(&str) -> bool) -> Result<Vec<String>, GuestError> {
    let entries = needed(elf)?;
    let keep = entries
        .iter()
        .find(|(_, n)| !drop(n))
        .map(|(at, _)| u64_at(elf, *at))
        .transpose()?
        .ok_or_else(|| bad("every DT_NEEDED entry would be dropped"))?;
    let mut dropped = Vec::new();
    for (at, name) in entries {
        if drop(&name) {
            // `at` came from a successful 8-byte read.
            elf[at..at + 8].copy_from_slice(&keep.to_le_bytes());
            dropped.push(name);
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test program itself: a real dynamic ELF.
    fn me() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn a_dropped_library_is_replaced_by_a_kept_one() {
        let mut elf = me();
        let before = needed_libraries(&elf).unwrap();
        assert!(
            before.iter().any(|n| n.starts_with("libc.so")),
            "{before:?}"
        );
        let victim = before.iter().find(|n| !n.starts_with("libc.so")).cloned();
        let Some(victim) = victim else { return };
        let dropped = drop_needed(&mut elf, |n| n == victim).unwrap();
        assert_eq!(dropped, vec![victim.clone()]);
        let after = needed_libraries(&elf).unwrap();
        assert_eq!(after.len(), before.len());
        assert!(!after.contains(&victim));
        assert_eq!(
            after[0],
            before.iter().find(|n| **n != victim).unwrap().clone()
        );
    }

    #[test]
    fn bad_files_are_refused_by_name() {
        assert!(
            needed_libraries(b"not an elf")
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        let mut elf = me();
        elf.truncate(100);
        assert!(needed_libraries(&elf).is_err());
        let mut elf = me();
        assert!(
            drop_needed(&mut elf, |_| true)
                .unwrap_err()
                .to_string()
                .contains("every")
        );
    }
}
