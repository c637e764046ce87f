//! Launch inputs as dstack records them (`launch_inputs.json`): the field
//! `sev_snp_measurement` is a JSON document (nested as a string) holding the OVMF hash seed,
//! the OVMF metadata sections, the kernel and initrd SHA-256, the command line, the hashes
//! table address, the AP reset address, vCPU count and type, and guest features. The VMM is
//! QEMU. The other top-level fields (TDX and app configuration) do not enter the SNP digest
//! and are ignored; unknown fields *inside* the measurement document are refused, so a newer
//! format never silently measures something else.

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::hashes::SevHashes;
use super::ovmf::{MAX_SECTIONS, MetadataSection, SectionKind};
use super::vmsa::{CpuSignature, GuestFeatures, VmmType};
use super::{Firmware, SnpLaunch};
use crate::MeasureError;
use conclave_attestation::Measurement;

/// The largest launch-inputs document accepted.
pub const MAX_INPUTS_BYTES: usize = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeasurementDoc {
    ovmf_sections: Vec<SectionDoc>,
    base_cmdline: String,
    ovmf_hash: String,
    kernel_hash: String,
    initrd_hash: String,
    sev_hashes_table_gpa: u64,
    sev_es_reset_eip: u32,
    vcpus: u32,
    vcpu_type: String,
    guest_features: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionDoc {
    gpa: u32,
    size: u32,
    section_type: u32,
}

fn bad(detail: impl Into<String>) -> MeasureError {
    MeasureError::LaunchInputs {
        detail: detail.into(),
    }
}

fn hex_array<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], MeasureError> {
    let bytes = hex::decode(text.trim()).map_err(|e| MeasureError::BadHex {
        field,
        detail: format!("not hex: {e}"),
    })?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| MeasureError::BadHex {
            field,
            detail: format!("expected {N} bytes, got {}", bytes.len()),
        })
}

/// A launch from dstack's `launch_inputs.json`, or from the bare `sev_snp_measurement`
/// document. What the digest also depends on but the document does not say: the VMM (QEMU).
pub fn from_dstack_json(bytes: &[u8]) -> Result<SnpLaunch, MeasureError> {
    if bytes.len() > MAX_INPUTS_BYTES {
        return Err(bad(format!(
            "{} bytes, more than the {MAX_INPUTS_BYTES} accepted",
            bytes.len()
        )));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let doc: MeasurementDoc = match value.get("sev_snp_measurement") {
        Some(Value::String(nested)) => serde_json::from_str(nested),
        Some(object @ Value::Object(_)) => serde_json::from_value(object.clone()),
        Some(_) => return Err(bad("sev_snp_measurement is neither a string nor an object")),
        None if value.get("ovmf_sections").is_some() => serde_json::from_value(value),
        None => {
            return Err(bad(
                "no sev_snp_measurement field: not a dstack launch_inputs.json \
                 (its SNP inputs are missing)",
            ));
        }
    }
    .map_err(|e| bad(format!("sev_snp_measurement: {e}")))?;

    if doc.ovmf_sections.len() > MAX_SECTIONS {
        return Err(MeasureError::TooManySections {
            count: doc.ovmf_sections.len(),
            max: MAX_SECTIONS,
        });
    }
    let sections = doc
        .ovmf_sections
        .iter()
        .map(|s| {
            Ok(MetadataSection {
                gpa: s.gpa,
                size: s.size,
                kind: SectionKind::from_u32(s.section_type)?,
            })
        })
        .collect::<Result<Vec<_>, MeasureError>>()?;
    // dstack: an empty initrd_hash means no initrd, which QEMU hashes as zero bytes.
    let initrd = if doc.initrd_hash.trim().is_empty() {
        Sha256::digest(b"").into()
    } else {
        hex_array("initrd_hash", &doc.initrd_hash)?
    };
    Ok(SnpLaunch {
        firmware: Firmware {
            ovmf_hash: Measurement(hex_array("ovmf_hash", &doc.ovmf_hash)?),
            sections,
            sev_hashes_table_gpa: Some(doc.sev_hashes_table_gpa),
            sev_es_reset_eip: Some(doc.sev_es_reset_eip),
        },
        kernel: Some(SevHashes::new(
            hex_array("kernel_hash", &doc.kernel_hash)?,
            initrd,
            &doc.base_cmdline,
        )),
        vcpus: doc.vcpus,
        vcpu_sig: CpuSignature::from_qemu_model(&doc.vcpu_type)?,
        guest_features: GuestFeatures(doc.guest_features),
        vmm: VmmType::Qemu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(extra: &str) -> String {
        format!(
            r#"{{"ovmf_sections":[{{"gpa":8454144,"size":4096,"section_type":16}}],
               "base_cmdline":"console=ttyS0","ovmf_hash":"{o}","kernel_hash":"{k}",
               "initrd_hash":"","sev_hashes_table_gpa":8457216,"sev_es_reset_eip":8433668,
               "vcpus":1,"vcpu_type":"EPYC-v4","guest_features":1{extra}}}"#,
            o = "00".repeat(48),
            k = "11".repeat(32)
        )
    }

    #[test]
    fn nested_string_object_and_bare_documents_agree() {
        let bare = from_dstack_json(doc("").as_bytes()).unwrap();
        let nested = serde_json::json!({ "cpu_count": 1, "sev_snp_measurement": doc("") });
        assert_eq!(
            from_dstack_json(nested.to_string().as_bytes()).unwrap(),
            bare
        );
        let object: Value = serde_json::from_str(&doc("")).unwrap();
        let wrapped = serde_json::json!({ "sev_snp_measurement": object });
        assert_eq!(
            from_dstack_json(wrapped.to_string().as_bytes()).unwrap(),
            bare
        );
        assert_eq!(
            bare.kernel.unwrap().initrd,
            <[u8; 32]>::from(Sha256::digest(b""))
        );
    }

    #[test]
    fn bad_documents_are_named() {
        let err = from_dstack_json(doc(r#","vmm_type":"ec2""#).as_bytes()).unwrap_err();
        assert!(err.to_string().contains("vmm_type"), "{err}");
        let err = from_dstack_json(b"{\"os_image_hash\":\"00\"}").unwrap_err();
        assert!(err.to_string().contains("sev_snp_measurement"), "{err}");
        let err = from_dstack_json(b"\xff\xfe").unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
        let short = doc("").replace(&"11".repeat(32), "1111");
        assert!(matches!(
            from_dstack_json(short.as_bytes()),
            Err(MeasureError::BadHex {
                field: "kernel_hash",
                ..
            })
        ));
        let err = from_dstack_json(doc("").replace("EPYC-v4", "EPYC-v9").as_bytes()).unwrap_err();
        assert!(matches!(err, MeasureError::UnknownVcpuType { .. }));
        let err = from_dstack_json(doc("").replace("\"gpa\":8454144", "\"gpa\":-1").as_bytes())
            .unwrap_err();
        assert!(
            err.to_string().contains("gpa") || err.to_string().contains("-1"),
            "{err}"
        );
        let err = from_dstack_json(
            doc("")
                .replace("\"section_type\":16", "\"section_type\":9")
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(err, MeasureError::UnknownSectionType { value: 9 });
    }
}
