//! Getting evidence inside a guest. The surface is one call: give me evidence for these 64
//! bytes. `snp` and `tdx` use the kernel's configfs-tsm interface
//! (`/sys/kernel/config/tsm/report`, Linux ≥ 6.7); `snp` falls back to the `/dev/sev-guest`
//! ioctl on older kernels. `sim` signs in software.
//!
//! configfs-tsm protocol (Documentation/ABI/testing/configfs-tsm): create an entry directory,
//! write `inblob` (and `privlevel` for SNP), read `generation`, read `outblob` (and `auxblob`),
//! read `generation` again: if it moved, another writer raced us and the blob may belong to
//! its request. Remove the entry afterwards.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::evidence::{Evidence, MAX_QUOTE};
use crate::sim::SimAttester;
use crate::snp::certs::MAX_CERTS;
use crate::snp::report::REPORT_LEN;
use crate::types::{ReportData, Tee};

/// Default configfs-tsm report directory.
pub const CONFIGFS_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";

/// Why evidence could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// configfs-tsm is not mounted or not supported by this kernel.
    #[error("configfs-tsm is not available at {path}: {source}")]
    TsmUnavailable {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file in the entry could not be read or written.
    #[error("configfs-tsm {file} in {entry}: {source}")]
    TsmIo {
        /// Which file.
        file: &'static str,
        /// The entry directory.
        entry: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The entry's provider is not the one asked for.
    #[error("configfs-tsm provider is {got:?}, expected {expected:?}")]
    WrongProvider {
        /// Wanted.
        expected: &'static str,
        /// Found.
        got: String,
    },
    /// Another process wrote to the entry while we used it.
    #[error(
        "configfs-tsm generation moved from {before} to {after}: a concurrent request raced ours"
    )]
    GenerationRaced {
        /// Before reading outblob.
        before: u64,
        /// After.
        after: u64,
    },
    /// The kernel returned something of the wrong shape.
    #[error("configfs-tsm returned a bad {what}: {detail}")]
    BadOutput {
        /// Which output.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The /dev/sev-guest fallback failed too.
    #[error("SEV-SNP report through /dev/sev-guest failed: {0}")]
    SevGuest(String),
}

/// Produces evidence binding 64 bytes of report data.
pub trait Attester {
    /// Which TEE this attester speaks for.
    fn tee(&self) -> Tee;
    /// Evidence whose report data is `report_data`.
    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, AttestError>;
}

impl Attester for SimAttester {
    fn tee(&self) -> Tee {
        Tee::Sim
    }
    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, AttestError> {
        Ok(SimAttester::evidence(self, report_data))
    }
}

/// One configfs-tsm report request.
#[derive(Clone, Debug)]
pub struct ConfigfsTsm {
    root: PathBuf,
    provider: &'static str,
    privlevel: Option<u32>,
}

/// What a configfs-tsm request returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsmOutput {
    /// The report (SNP) or quote (TDX).
    pub outblob: Vec<u8>,
    /// SNP: the host's certificate table, when it supplied one.
    pub auxblob: Option<Vec<u8>>,
    /// The generation the output belongs to.
    pub generation: u64,
}

fn read_generation(entry: &Path) -> Result<u64, AttestError> {
    let text =
        fs::read_to_string(entry.join("generation")).map_err(|source| AttestError::TsmIo {
            file: "generation",
            entry: entry.to_path_buf(),
            source,
        })?;
    text.trim().parse().map_err(|_| AttestError::BadOutput {
        what: "generation",
        detail: format!("{:?} is not a number", text.trim()),
    })
}

impl ConfigfsTsm {
    /// SEV-SNP through provider `sev_guest`, requesting VMPL 0.
    pub fn snp(root: impl Into<PathBuf>) -> Self {
        ConfigfsTsm {
            root: root.into(),
            provider: "sev_guest",
            privlevel: Some(0),
        }
    }

    /// TDX through provider `tdx_guest`.
    pub fn tdx(root: impl Into<PathBuf>) -> Self {
        ConfigfsTsm {
            root: root.into(),
            provider: "tdx_guest",
            privlevel: None,
        }
    }

    /// Writes the request into an existing entry and returns the generation it got.
    pub fn write_request(
        &self,
        entry: &Path,
        report_data: &ReportData,
    ) -> Result<u64, AttestError> {
        let io_err = |file: &'static str| {
            move |source| AttestError::TsmIo {
                file,
                entry: entry.to_path_buf(),
                source,
            }
        };
        if let Some(level) = self.privlevel {
            fs::write(entry.join("privlevel"), level.to_string()).map_err(io_err("privlevel"))?;
        }
        fs::write(entry.join("inblob"), report_data.0).map_err(io_err("inblob"))?;
        read_generation(entry)
    }

    /// Reads the response of the request that got `generation`, checking provider and race.
    pub fn read_response(&self, entry: &Path, generation: u64) -> Result<TsmOutput, AttestError> {
        let io_err = |file: &'static str| {
            move |source| AttestError::TsmIo {
                file,
                entry: entry.to_path_buf(),
                source,
            }
        };
        let provider = fs::read_to_string(entry.join("provider")).map_err(io_err("provider"))?;
        if provider.trim() != self.provider {
            return Err(AttestError::WrongProvider {
                expected: self.provider,
                got: provider.trim().to_string(),
            });
        }
        let outblob = fs::read(entry.join("outblob")).map_err(io_err("outblob"))?;
        let auxblob = match fs::read(entry.join("auxblob")) {
            Ok(b) if !b.is_empty() => Some(b),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            // The kernel answers ENODATA/ENOENT-like errors when the host supplied no certs.
            Err(_) => None,
        };
        let after = read_generation(entry)?;
        if after != generation {
            return Err(AttestError::GenerationRaced {
                before: generation,
                after,
            });
        }
        let ok_len = match self.provider {
            "sev_guest" => outblob.len() == REPORT_LEN,
            _ => !outblob.is_empty() && outblob.len() <= MAX_QUOTE,
        };
        if !ok_len {
            return Err(AttestError::BadOutput {
                what: "outblob",
                detail: format!("{} bytes", outblob.len()),
            });
        }
        Ok(TsmOutput {
            outblob,
            auxblob,
            generation,
        })
    }

    /// The whole request: create an entry, write, read, remove.
    pub fn request(&self, report_data: &ReportData) -> Result<TsmOutput, AttestError> {
        if let Err(source) = fs::metadata(&self.root) {
            return Err(AttestError::TsmUnavailable {
                path: self.root.clone(),
                source,
            });
        }
        let name = format!(
            "conclave-{}-{}",
            std::process::id(),
            hex::encode(&report_data.0[..8])
        );
        let entry = self.root.join(name);
        fs::create_dir(&entry).map_err(|source| AttestError::TsmUnavailable {
            path: entry.clone(),
            source,
        })?;
        let result = self
            .write_request(&entry, report_data)
            .and_then(|generation| self.read_response(&entry, generation));
        // configfs removes the entry's files with the directory.
        let _ = fs::remove_dir(&entry);
        result
    }
}

/// Splits an SNP certificate table (GUID table from the extended report / auxblob) into its
/// blobs. Entries are `{guid[16], offset u32, length u32}` ending with an all-zero entry.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<Vec<u8>>, AttestError> {
    let bad = |detail: String| AttestError::BadOutput {
        what: "certificate table",
        detail,
    };
    let mut out = Vec::new();
    for i in 0..=MAX_CERTS {
        let at = i * 24;
        let e = table
            .get(at..at + 24)
            .ok_or_else(|| bad(format!("entry {i} runs past the end")))?;
        if e.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let off = u32::from_le_bytes([e[16], e[17], e[18], e[19]]) as usize;
        let len = u32::from_le_bytes([e[20], e[21], e[22], e[23]]) as usize;
        let blob = off
            .checked_add(len)
            .and_then(|end| table.get(off..end))
            .ok_or_else(|| bad(format!("entry {i} points outside the table")))?;
        out.push(blob.to_vec());
    }
    Err(bad(format!("more than {MAX_CERTS} entries")))
}

/// SEV-SNP inside a guest: configfs-tsm, else `/dev/sev-guest`.
#[derive(Clone, Debug)]
pub struct SnpAttester {
    tsm: ConfigfsTsm,
}

impl SnpAttester {
    /// Uses the default configfs root.
    pub fn new() -> Self {
        SnpAttester {
            tsm: ConfigfsTsm::snp(CONFIGFS_TSM_ROOT),
        }
    }
}

impl Default for SnpAttester {
    fn default() -> Self {
        Self::new()
    }
}

fn certs_from_table(aux: Option<&[u8]>) -> Vec<Vec<u8>> {
    let blobs = aux
        .and_then(|t| parse_cert_table(t).ok())
        .unwrap_or_default();
    blobs
        .into_iter()
        .filter(|b| crate::snp::certs::load_certs(b).is_ok())
        .collect()
}

impl Attester for SnpAttester {
    fn tee(&self) -> Tee {
        Tee::Snp
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, AttestError> {
        match self.tsm.request(report_data) {
            Ok(out) => Ok(Evidence {
                tee: Tee::Snp,
                certs: certs_from_table(out.auxblob.as_deref()),
                primary: out.outblob,
                collateral: None,
            }),
            Err(AttestError::TsmUnavailable { .. }) => {
                let mut fw = sev::firmware::guest::Firmware::open()
                    .map_err(|e| AttestError::SevGuest(e.to_string()))?;
                let report = fw
                    .get_report(None, Some(report_data.0), Some(0))
                    .map_err(|e| AttestError::SevGuest(e.to_string()))?;
                Ok(Evidence::snp(report))
            }
            Err(e) => Err(e),
        }
    }
}

/// TDX inside a guest: configfs-tsm (upstream Linux has no quote ioctl).
#[derive(Clone, Debug)]
pub struct TdxAttester {
    tsm: ConfigfsTsm,
}

impl TdxAttester {
    /// Uses the default configfs root.
    pub fn new() -> Self {
        TdxAttester {
            tsm: ConfigfsTsm::tdx(CONFIGFS_TSM_ROOT),
        }
    }
}

impl Default for TdxAttester {
    fn default() -> Self {
        Self::new()
    }
}

impl Attester for TdxAttester {
    fn tee(&self) -> Tee {
        Tee::Tdx
    }

    fn evidence(&self, report_data: &ReportData) -> Result<Evidence, AttestError> {
        let out = self.tsm.request(report_data)?;
        Ok(Evidence::tdx(out.outblob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lays out an entry the way configfs would after mkdir, then plays the kernel's part.
    fn entry(dir: &Path, provider: &str, generation: u64) -> PathBuf {
        let e = dir.join("e");
        fs::create_dir(&e).unwrap();
        fs::write(e.join("provider"), format!("{provider}\n")).unwrap();
        fs::write(e.join("generation"), format!("{generation}\n")).unwrap();
        e
    }

    #[test]
    fn snp_request_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry(dir.path(), "sev_guest", 1);
        let tsm = ConfigfsTsm::snp(dir.path());
        let rd = ReportData([5; 64]);
        let generation = tsm.write_request(&e, &rd).unwrap();
        assert_eq!(fs::read(e.join("inblob")).unwrap(), vec![5; 64]);
        assert_eq!(fs::read_to_string(e.join("privlevel")).unwrap(), "0");
        fs::write(e.join("outblob"), vec![7u8; REPORT_LEN]).unwrap();
        let out = tsm.read_response(&e, generation).unwrap();
        assert_eq!(out.outblob.len(), REPORT_LEN);
        assert_eq!(out.auxblob, None);
    }

    #[test]
    fn a_racing_writer_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry(dir.path(), "tdx_guest", 4);
        let tsm = ConfigfsTsm::tdx(dir.path());
        let generation = tsm.write_request(&e, &ReportData([1; 64])).unwrap();
        fs::write(e.join("outblob"), b"quote").unwrap();
        fs::write(e.join("generation"), "5\n").unwrap();
        assert!(matches!(
            tsm.read_response(&e, generation),
            Err(AttestError::GenerationRaced {
                before: 4,
                after: 5
            })
        ));
    }

    #[test]
    fn wrong_provider_and_bad_output_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = entry(dir.path(), "tdx_guest", 1);
        let tsm = ConfigfsTsm::snp(dir.path());
        fs::write(e.join("outblob"), vec![0u8; REPORT_LEN]).unwrap();
        assert!(matches!(
            tsm.read_response(&e, 1),
            Err(AttestError::WrongProvider {
                expected: "sev_guest",
                ..
            })
        ));
        fs::write(e.join("provider"), "sev_guest").unwrap();
        fs::write(e.join("outblob"), vec![0u8; 10]).unwrap();
        assert!(matches!(
            tsm.read_response(&e, 1),
            Err(AttestError::BadOutput {
                what: "outblob",
                ..
            })
        ));
    }

    #[test]
    fn missing_configfs_is_reported() {
        let tsm = ConfigfsTsm::tdx("/nonexistent/tsm/report");
        assert!(matches!(
            tsm.request(&ReportData([0; 64])),
            Err(AttestError::TsmUnavailable { .. })
        ));
    }

    #[test]
    fn cert_table_parses_and_rejects_out_of_bounds() {
        let mut t = vec![0u8; 48];
        t[16..20].copy_from_slice(&48u32.to_le_bytes());
        t[20..24].copy_from_slice(&3u32.to_le_bytes());
        t.extend_from_slice(b"abc");
        assert_eq!(parse_cert_table(&t).unwrap(), vec![b"abc".to_vec()]);
        t[20..24].copy_from_slice(&300u32.to_le_bytes());
        assert!(parse_cert_table(&t).is_err());
    }
}
