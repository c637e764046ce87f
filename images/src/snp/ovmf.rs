//! OVMF firmware as SEV-SNP launches it: the footer table of GUIDed entries that ends 32 bytes
//! before the image's end, and the "ASEV" SEV metadata block listing the pages the firmware
//! wants pre-validated (edk2 `OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm`; parsed as
//! sev-snp-measure's `ovmf.py` does). Every offset is checked against the image; nothing here
//! panics on a malformed file.

use conclave_attestation::Measurement;

use super::gctx::{Gctx, PAGE};
use super::guid_le;
use crate::MeasureError;

/// The largest firmware image accepted (OVMF builds are 2 to 4 MiB).
pub const MAX_OVMF_BYTES: usize = 64 << 20;
/// The most metadata sections accepted (OVMF has about eight).
pub const MAX_SECTIONS: usize = 64;

const FOUR_GIB: u64 = 1 << 32;
const ENTRY_HEADER: usize = 18; // u16 size + GUID

const FOOTER_GUID: [u8; 16] = guid_le(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
const SEV_HASH_TABLE_RV_GUID: [u8; 16] = guid_le(
    0x7255_371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);
const SEV_ES_RESET_BLOCK_GUID: [u8; 16] = guid_le(
    0x00f7_71de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
const SEV_META_DATA_GUID: [u8; 16] = guid_le(
    0xdc88_6566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);

/// What a metadata section asks the VMM to do with its pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    /// 1: pre-validated zero pages (GCE: unmeasured).
    SnpSecMem,
    /// 2: the secrets page.
    SnpSecrets,
    /// 3: the CPUID page.
    Cpuid,
    /// 4: the SVSM calling-area page, zero.
    SvsmCaa,
    /// 0x10: the page QEMU fills with the kernel/initrd/cmdline hashes table.
    SnpKernelHashes,
}

impl SectionKind {
    /// From the metadata's type number.
    pub fn from_u32(value: u32) -> Result<Self, MeasureError> {
        Ok(match value {
            1 => SectionKind::SnpSecMem,
            2 => SectionKind::SnpSecrets,
            3 => SectionKind::Cpuid,
            4 => SectionKind::SvsmCaa,
            0x10 => SectionKind::SnpKernelHashes,
            _ => return Err(MeasureError::UnknownSectionType { value }),
        })
    }

    /// The name OVMF's sources use.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::SnpSecMem => "SNP_SEC_MEM",
            SectionKind::SnpSecrets => "SNP_SECRETS",
            SectionKind::Cpuid => "CPUID",
            SectionKind::SvsmCaa => "SVSM_CAA",
            SectionKind::SnpKernelHashes => "SNP_KERNEL_HASHES",
        }
    }
}

/// One SEV metadata section: `{gpa u32, size u32, type u32}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataSection {
    /// Guest physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// What the section is.
    pub kind: SectionKind,
}

/// A footer-table entry: its GUID (in-memory byte order) and payload.
type TableEntry<'a> = ([u8; 16], &'a [u8]);

/// A parsed OVMF image: its bytes, footer-table entries and SEV metadata sections.
pub struct Ovmf<'a> {
    data: &'a [u8],
    table: Vec<TableEntry<'a>>,
    sections: Vec<MetadataSection>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn check_size(data: &[u8]) -> Result<(), MeasureError> {
    if data.len() > MAX_OVMF_BYTES {
        return Err(MeasureError::OvmfTooLarge {
            len: data.len(),
            max: MAX_OVMF_BYTES,
        });
    }
    if data.is_empty() || !data.len().is_multiple_of(PAGE) {
        return Err(MeasureError::OvmfNotPageAligned { len: data.len() });
    }
    Ok(())
}

/// The SNP "OVMF hash": the launch digest after measuring every firmware page, from a zero
/// seed, at GPA 4 GiB − len (sev-snp-measure `--mode snp:ovmf-hash`). Needs no footer table.
pub fn ovmf_hash(data: &[u8]) -> Result<Measurement, MeasureError> {
    check_size(data)?;
    let mut gctx = Gctx::new([0; 48]);
    gctx.normal_pages(FOUR_GIB - data.len() as u64, data);
    Ok(gctx.digest())
}

impl<'a> Ovmf<'a> {
    /// Parses the footer table and the SEV metadata. An image without either is refused: it
    /// cannot launch as an SNP guest.
    pub fn parse(data: &'a [u8]) -> Result<Self, MeasureError> {
        check_size(data)?;
        let table = parse_footer_table(data)?;
        let mut ovmf = Ovmf {
            data,
            table,
            sections: Vec::new(),
        };
        ovmf.sections = ovmf.parse_metadata()?;
        Ok(ovmf)
    }

    /// The image bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Where the image is mapped: it ends at 4 GiB.
    pub fn gpa(&self) -> u64 {
        FOUR_GIB - self.data.len() as u64
    }

    /// The SEV metadata sections, in metadata order (the order they are measured in).
    pub fn sections(&self) -> &[MetadataSection] {
        &self.sections
    }

    /// Where QEMU writes the kernel hashes table, if this build has one.
    pub fn sev_hashes_table_gpa(&self) -> Result<Option<u32>, MeasureError> {
        self.entry_u32(SEV_HASH_TABLE_RV_GUID, "SEV_HASH_TABLE_RV_GUID")
    }

    /// The application processors' reset address (SEV-ES reset block).
    pub fn sev_es_reset_eip(&self) -> Result<u32, MeasureError> {
        self.entry_u32(SEV_ES_RESET_BLOCK_GUID, "SEV_ES_RESET_BLOCK_GUID")?
            .ok_or(MeasureError::MissingTableEntry {
                name: "SEV_ES_RESET_BLOCK_GUID",
                guid: "00f771de-1a7e-4fcb-890e-68c77e2fb44e",
            })
    }

    /// An entry's payload. The table is walked from its end, and like sev-snp-measure's dict a
    /// later-walked (earlier in the file) duplicate wins.
    fn entry(&self, guid: [u8; 16]) -> Option<&'a [u8]> {
        self.table
            .iter()
            .rev()
            .find(|(g, _)| *g == guid)
            .map(|(_, d)| *d)
    }

    fn entry_u32(&self, guid: [u8; 16], name: &'static str) -> Result<Option<u32>, MeasureError> {
        match self.entry(guid) {
            None => Ok(None),
            Some(d) => u32_at(d, 0)
                .map(Some)
                .ok_or_else(|| MeasureError::BadFooterTable {
                    detail: format!("{name} entry has {} bytes, needs 4", d.len()),
                }),
        }
    }

    fn parse_metadata(&self) -> Result<Vec<MetadataSection>, MeasureError> {
        let bad = |detail: String| MeasureError::BadMetadata { detail };
        let entry = self
            .entry(SEV_META_DATA_GUID)
            .ok_or(MeasureError::MissingTableEntry {
                name: "OVMF_SEV_META_DATA_GUID",
                guid: "dc886566-984a-4798-a75e-5585a7bf67cc",
            })?;
        let from_end = u32_at(entry, 0)
            .ok_or_else(|| bad(format!("pointer entry has {} bytes, needs 4", entry.len())))?;
        let start = self
            .data
            .len()
            .checked_sub(from_end as usize)
            .ok_or_else(|| {
                bad(format!(
                    "offset {from_end:#x} from the end is before the image"
                ))
            })?;
        let header = self
            .data
            .get(start..start.saturating_add(16))
            .filter(|h| h.len() == 16)
            .ok_or_else(|| bad(format!("header at {start:#x} runs past the image")))?;
        if header.get(..4) != Some(b"ASEV".as_slice()) {
            return Err(bad(format!(
                "signature at {start:#x} is {:?}, not \"ASEV\"",
                String::from_utf8_lossy(header.get(..4).unwrap_or_default())
            )));
        }
        let size = u32_at(header, 4).unwrap_or(0) as usize;
        let version = u32_at(header, 8).unwrap_or(0);
        let count = u32_at(header, 12).unwrap_or(0) as usize;
        if version != 1 {
            return Err(bad(format!("version {version}, only 1 is known")));
        }
        if count > MAX_SECTIONS {
            return Err(MeasureError::TooManySections {
                count,
                max: MAX_SECTIONS,
            });
        }
        let items = size
            .checked_sub(16)
            .and_then(|n| self.data.get(start + 16..start + 16 + n))
            .ok_or_else(|| bad(format!("block size {size:#x} does not fit the image")))?;
        if items.len() < count * 12 {
            return Err(bad(format!(
                "{count} sections need {} bytes, the block has {}",
                count * 12,
                items.len()
            )));
        }
        items
            .chunks_exact(12)
            .take(count)
            .map(|item| {
                Ok(MetadataSection {
                    gpa: u32_at(item, 0).unwrap_or(0),
                    size: u32_at(item, 4).unwrap_or(0),
                    kind: SectionKind::from_u32(u32_at(item, 8).unwrap_or(0))?,
                })
            })
            .collect()
    }
}

/// The footer table: a final entry (size u16, footer GUID) 32 bytes before the end whose size
/// covers the whole table; entries are `data ‖ size u16 ‖ GUID`, read from the end backwards.
fn parse_footer_table(data: &[u8]) -> Result<Vec<TableEntry<'_>>, MeasureError> {
    let bad = |detail: String| MeasureError::BadFooterTable { detail };
    let footer_at = data
        .len()
        .checked_sub(32 + ENTRY_HEADER)
        .ok_or(MeasureError::NoFooterTable)?;
    if data.get(footer_at + 2..footer_at + ENTRY_HEADER) != Some(FOOTER_GUID.as_slice()) {
        return Err(MeasureError::NoFooterTable);
    }
    let total = u16_at(data, footer_at).unwrap_or(0) as usize;
    let table_len = total.checked_sub(ENTRY_HEADER).ok_or_else(|| {
        bad(format!(
            "footer size {total} is below the entry header size"
        ))
    })?;
    let table = footer_at
        .checked_sub(table_len)
        .and_then(|start| data.get(start..footer_at))
        .ok_or_else(|| {
            bad(format!(
                "table of {table_len} bytes starts before the image"
            ))
        })?;

    let mut entries = Vec::new();
    let mut end = table.len();
    while end >= ENTRY_HEADER {
        let size = u16_at(table, end - ENTRY_HEADER).unwrap_or(0) as usize;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&table[end - 16..end]);
        if size < ENTRY_HEADER || size > end {
            return Err(bad(format!(
                "entry ending at table byte {end} has size {size}, outside {ENTRY_HEADER}..={end}"
            )));
        }
        entries.push((guid, &table[end - size..end - ENTRY_HEADER]));
        end -= size;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-page image with a footer table holding the given entries (first = lowest).
    fn image(entries: &[([u8; 16], Vec<u8>)], extra: &[(usize, &[u8])]) -> Vec<u8> {
        let mut table = Vec::new();
        for (guid, payload) in entries {
            table.extend_from_slice(payload);
            table.extend_from_slice(&((payload.len() + ENTRY_HEADER) as u16).to_le_bytes());
            table.extend_from_slice(guid);
        }
        table.extend_from_slice(&((table.len() + ENTRY_HEADER) as u16).to_le_bytes());
        table.extend_from_slice(&FOOTER_GUID);
        let mut img = vec![0u8; PAGE];
        let end = PAGE - 32;
        img[end - table.len()..end].copy_from_slice(&table);
        for (at, bytes) in extra {
            img[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        img
    }

    #[test]
    fn reads_entries_and_metadata() {
        let mut meta = b"ASEV".to_vec();
        for v in [
            16 + 24u32,
            1,
            2,
            0x80_0000,
            0x1000,
            1,
            0x80_1000,
            0x1000,
            0x10,
        ] {
            meta.extend_from_slice(&v.to_le_bytes());
        }
        let meta_at = 0x100;
        let img = image(
            &[
                (
                    SEV_META_DATA_GUID,
                    ((PAGE - meta_at) as u32).to_le_bytes().to_vec(),
                ),
                (SEV_ES_RESET_BLOCK_GUID, 0x80b004u32.to_le_bytes().to_vec()),
            ],
            &[(meta_at, &meta)],
        );
        let o = Ovmf::parse(&img).unwrap();
        assert_eq!(o.sev_es_reset_eip().unwrap(), 0x80b004);
        assert_eq!(o.sev_hashes_table_gpa().unwrap(), None);
        assert_eq!(o.sections().len(), 2);
        assert_eq!(o.sections()[1].kind, SectionKind::SnpKernelHashes);
        assert_eq!(o.gpa(), FOUR_GIB - PAGE as u64);
    }

    #[test]
    fn malformed_images_are_named_errors() {
        assert_eq!(
            Ovmf::parse(&[0u8; PAGE]).err(),
            Some(MeasureError::NoFooterTable)
        );
        assert!(matches!(
            Ovmf::parse(&[0u8; 100]),
            Err(MeasureError::OvmfNotPageAligned { len: 100 })
        ));
        assert!(matches!(
            Ovmf::parse(&[]),
            Err(MeasureError::OvmfNotPageAligned { len: 0 })
        ));
        // No metadata entry.
        let img = image(&[], &[]);
        assert!(matches!(
            Ovmf::parse(&img),
            Err(MeasureError::MissingTableEntry { .. })
        ));
        // Metadata pointer past the start of the image.
        let img = image(
            &[(SEV_META_DATA_GUID, 0x10_0000u32.to_le_bytes().to_vec())],
            &[],
        );
        assert!(matches!(
            Ovmf::parse(&img),
            Err(MeasureError::BadMetadata { .. })
        ));
        // An entry whose size runs past the table start.
        let mut img = image(&[(SEV_ES_RESET_BLOCK_GUID, vec![1, 2, 3, 4])], &[]);
        let entry_size_at = PAGE - 32 - ENTRY_HEADER - ENTRY_HEADER;
        img[entry_size_at..entry_size_at + 2].copy_from_slice(&0x4000u16.to_le_bytes());
        assert!(matches!(
            Ovmf::parse(&img),
            Err(MeasureError::BadFooterTable { .. })
        ));
    }
}
