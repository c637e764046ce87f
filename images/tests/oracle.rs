//! The SEV-SNP launch digest against the public reference implementation, PyPI
//! `sev-snp-measure` 0.0.13 (virtee), run by `tests/oracle/snp_measure_reference.py` with
//! `$CONCLAVE_PYTHON` or the project's venv: 1, 2 and 4 vCPUs, QEMU / EC2 / GCE, guest
//! features 0x1 and 0x21, with and without a measured kernel, several vCPU models, the OVMF
//! hash of both fixture images, and the dstack launch inputs.
//!
//! The only OVMF in the shared vectors is virtee's 4 KiB suffix fixtures (the footer table and
//! metadata of real AmdSev and OvmfX64 builds), so they stand in for a full image.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use conclave_images::snp::hashes::SevHashes;
use conclave_images::snp::inputs::from_dstack_json;
use conclave_images::snp::ovmf::ovmf_hash;
use conclave_images::snp::vmsa::{CpuSignature, GuestFeatures, VmmType};
use conclave_images::snp::{Firmware, SnpLaunch};
use serde_json::{Value, json};

const VERSION: &str = "0.0.13";

fn python() -> PathBuf {
    let p = std::env::var_os("CONCLAVE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let importable = Command::new(&p)
        .args(["-c", "import sevsnpmeasure"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        importable,
        "the sev-snp-measure oracle is not importable by {}: run `bash scripts/setup-python.sh` \
         (it installs sev-snp-measure=={VERSION}), or point CONCLAVE_PYTHON at a Python that has it",
        p.display()
    );
    p
}

/// One case on our side, and the same case as a job for the oracle.
struct Case {
    name: String,
    ours: String,
    job: Value,
}

/// A file on disk for the oracle and its contents for us.
type File<'a> = (&'a Path, &'a [u8]);

/// A measured direct boot: kernel, optional initrd, optional command line.
#[derive(Clone, Copy)]
struct Boot<'a> {
    kernel: File<'a>,
    initrd: Option<File<'a>>,
    append: Option<&'a str>,
}

fn launch_case(
    ovmf: &str,
    vcpus: u32,
    vcpu_type: &str,
    vmm: VmmType,
    features: u64,
    boot: Option<Boot<'_>>,
) -> Case {
    let firmware = Firmware::from_ovmf(&read(ovmf)).unwrap();
    let hashes = boot.map(|b| {
        SevHashes::from_contents(
            b.kernel.1,
            b.initrd.map(|(_, bytes)| bytes).unwrap_or(&[]),
            b.append.unwrap_or(""),
        )
    });
    let launch = SnpLaunch {
        firmware,
        kernel: hashes,
        vcpus,
        vcpu_sig: CpuSignature::from_qemu_model(vcpu_type).unwrap(),
        guest_features: GuestFeatures(features),
        vmm,
    };
    let vmm_name = match vmm {
        VmmType::Qemu => "QEMU",
        VmmType::Ec2 => "ec2",
        VmmType::Gce => "gce",
    };
    let (kpath, ipath, append) = match boot {
        Some(b) => (
            Some(b.kernel.0.display().to_string()),
            b.initrd.map(|(p, _)| p.display().to_string()),
            b.append,
        ),
        None => (None, None, None),
    };
    Case {
        name: format!(
            "{ovmf} {vcpus}x{vcpu_type} {vmm_name} features {features:#x} kernel {} initrd {} append {append:?}",
            kpath.is_some(),
            ipath.is_some()
        ),
        ours: launch.launch_digest().unwrap().to_string(),
        job: json!({
            "kind": "launch", "ovmf": path(ovmf), "vcpus": vcpus, "vcpu_type": vcpu_type,
            "vmm": vmm_name, "guest_features": features, "kernel": kpath, "initrd": ipath,
            "append": append,
        }),
    }
}

#[test]
fn launch_digests_equal_sev_snp_measure() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let kernel_path = dir.path().join("bzImage");
    let initrd_path = dir.path().join("initrd.img");
    let kernel: Vec<u8> = (0..300_001u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let initrd: Vec<u8> = (0..123_457u32)
        .map(|i| (i.wrapping_mul(40503) >> 8) as u8)
        .collect();
    std::fs::write(&kernel_path, &kernel).unwrap();
    std::fs::write(&initrd_path, &initrd).unwrap();
    let append = "console=ttyS0 root=/dev/vda1 conclave.job=42";

    let mut cases = Vec::new();
    for vcpus in [1u32, 2, 4] {
        for vmm in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
            for features in [0x1u64, 0x21] {
                cases.push(launch_case(AMDSEV, vcpus, "EPYC-v4", vmm, features, None));
                cases.push(launch_case(
                    AMDSEV,
                    vcpus,
                    "EPYC-v4",
                    vmm,
                    features,
                    Some(Boot {
                        kernel: (&kernel_path, &kernel),
                        initrd: Some((&initrd_path, &initrd)),
                        append: Some(append),
                    }),
                ));
            }
        }
        // The OvmfX64 build has no kernel-hashes page: firmware-only launches.
        cases.push(launch_case(
            OVMFX64,
            vcpus,
            "EPYC-v4",
            VmmType::Qemu,
            0x1,
            None,
        ));
    }
    for vcpu_type in [
        "EPYC",
        "EPYC-Rome",
        "EPYC-Milan",
        "EPYC-Genoa",
        "EPYC-Turin",
    ] {
        cases.push(launch_case(
            AMDSEV,
            2,
            vcpu_type,
            VmmType::Qemu,
            0x1,
            Some(Boot {
                kernel: (&kernel_path, &kernel),
                initrd: None,
                append: None,
            }),
        ));
    }
    for ovmf in [AMDSEV, OVMFX64] {
        cases.push(Case {
            name: format!("OVMF hash of {ovmf}"),
            ours: ovmf_hash(&read(ovmf)).unwrap().to_string(),
            job: json!({ "kind": "ovmf_hash", "ovmf": path(ovmf) }),
        });
    }
    cases.push(Case {
        name: "dstack launch_inputs.json".into(),
        ours: from_dstack_json(&read(LAUNCH_INPUTS))
            .unwrap()
            .launch_digest()
            .unwrap()
            .to_string(),
        job: json!({ "kind": "dstack", "inputs": path(LAUNCH_INPUTS) }),
    });

    let jobs_path = dir.path().join("jobs.json");
    let jobs: Vec<&Value> = cases.iter().map(|c| &c.job).collect();
    std::fs::write(&jobs_path, serde_json::to_vec(&jobs).unwrap()).unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/snp_measure_reference.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&jobs_path)
        .output()
        .expect("run the sev-snp-measure oracle");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        result["version"], VERSION,
        "the oracle is pinned to sev-snp-measure {VERSION}: run `bash scripts/setup-python.sh`"
    );
    let theirs = result["digests"].as_array().unwrap();
    assert_eq!(theirs.len(), cases.len());
    let mut mismatches = Vec::new();
    for (case, theirs) in cases.iter().zip(theirs) {
        if theirs.as_str() != Some(case.ours.as_str()) {
            mismatches.push(format!("{}: ours {} theirs {theirs}", case.name, case.ours));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // The oracle agrees with the published values too, so both sides measure the same thing.
    assert!(cases.iter().any(|c| c.ours == DSTACK_MEASUREMENT));
    assert!(cases.iter().any(|c| c.ours == AMDSEV_SUFFIX_OVMF_HASH));
}
