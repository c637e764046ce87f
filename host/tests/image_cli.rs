//! `conclave image measure` as a user runs it: the measured values, the policy fragments it
//! writes (and that `conclave verify --policy` then applies to real evidence), exit codes.

use std::path::PathBuf;
use std::process::Command;

use conclave_attestation::{Measurement, Policy};

fn vectors() -> PathBuf {
    std::env::var("CONCLAVE_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"))
}

fn v(rel: &str) -> String {
    vectors().join(rel).display().to_string()
}

fn conclave(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(args)
        .output()
        .expect("run conclave");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const S3_MEASUREMENT: &str = "7f51e17f72a04d5422cb2c00998166536019a217376f3aa45a630e59c805a599847ff250dbffcd07e1ba639771d6f05d";
const SUFFIX_DIGEST: &str = "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977";
const CCEL: &str = "tdx/go-tdx-guest-ccel/ccel_data.dat";
const COS_QUOTE: &str = "tdx/go-tdx-guest-ccel/cos-113-tdx-quote.dat";

fn verify_dstack_report(policy: &str) -> (i32, String) {
    let (code, out, err) = conclave(&[
        "verify",
        &v("snp/dstack-milan-v3/sev_snp_report_extracted.bin"),
        "--certs",
        &v("snp/dstack-milan-v3/sev_snp_vcek.pem"),
        &v("snp/dstack-milan-v3/sev_snp_ask.pem"),
        "--at",
        "2026-07-01T00:00:00Z",
        "--policy",
        policy,
    ]);
    (code, format!("{out}{err}"))
}

#[test]
fn measured_launch_inputs_give_a_policy_that_accepts_the_real_report() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let (code, out, err) = conclave(&[
        "image",
        "measure",
        "--inputs",
        &v("snp/dstack-milan-v3/launch_inputs.json"),
        "--policy-out",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.lines().next().unwrap().contains(S3_MEASUREMENT),
        "{out}"
    );
    let text = std::fs::read_to_string(&policy).unwrap();
    let parsed = Policy::from_toml(&text).unwrap();
    assert_eq!(
        parsed.measurements,
        vec![Measurement::from_hex(S3_MEASUREMENT).unwrap()]
    );
    let (code, out) = verify_dstack_report(policy.to_str().unwrap());
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_policy_measured_from_other_inputs_rejects_the_real_report() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let (code, out, err) = conclave(&[
        "image",
        "measure",
        "--ovmf",
        &v("snp/ovmf-suffix/ovmf_AmdSev_suffix.bin"),
        "--kernel",
        "/dev/null",
        "--initrd",
        "/dev/null",
        "--append",
        "console=ttyS0 loglevel=7",
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC-v4",
        "--guest-features",
        "0x21",
        "--json",
        "--policy-out",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["measurement"], SUFFIX_DIGEST);
    assert_eq!(j["vcpu_signature"], "0x00800f12");
    let (code, out) = verify_dstack_report(policy.to_str().unwrap());
    assert_eq!(code, 1, "{out}");
}

#[test]
fn ccel_with_its_quote_matches_and_pins_rtmr0_to_2() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("tdx.toml");
    let (code, out, err) = conclave(&[
        "image",
        "measure",
        "--ccel",
        &v(CCEL),
        "--quote",
        &v(COS_QUOTE),
        "--policy-out",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("verdict       MATCH"), "{out}");
    let parsed = Policy::from_toml(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    assert!(parsed.tdx.rtmr0[0].to_string().starts_with("3fa2f61f"));
    assert!(parsed.tdx.rtmr1[0].to_string().starts_with("f62dbc07"));
    assert!(parsed.tdx.rtmr2[0].to_string().starts_with("4969684d"));
    assert!(parsed.tdx.rtmr3.is_empty());
    assert_eq!(parsed.measurements.len(), 1, "the quote's MRTD");

    // Without a quote: the replayed values, exit 0.
    let (code, out, _) = conclave(&["image", "measure", "--ccel", &v(CCEL), "--json"]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["events"], 43);
    assert!(j["boot_rtmrs_match"].is_null());
}

#[test]
fn a_tampered_ccel_or_another_tds_quote_is_a_mismatch_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = std::fs::read(v(CCEL)).unwrap();
    // The first byte of the SHA-384 digest of the first event after the Spec ID header (an
    // RTMR0 event): past its mr_index, type, digest count and algorithm id.
    let header_len = 32 + u32::from_le_bytes(log[28..32].try_into().unwrap()) as usize;
    log[header_len + 14] ^= 0xff;
    let tampered = dir.path().join("ccel_tampered.dat");
    std::fs::write(&tampered, &log).unwrap();
    let policy = dir.path().join("tdx.toml");
    let (code, out, err) = conclave(&[
        "image",
        "measure",
        "--ccel",
        tampered.to_str().unwrap(),
        "--quote",
        &v(COS_QUOTE),
        "--policy-out",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("verdict       MISMATCH"), "{out}");
    assert!(out.contains("DIFFERS"));
    assert!(
        !policy.exists(),
        "no fragment is written for a log that does not match"
    );

    let (code, out, _) = conclave(&[
        "image",
        "measure",
        "--ccel",
        &v(CCEL),
        "--quote",
        &v("tdx/dcap-qvl/tdx_quote"),
    ]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn unusable_input_exits_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
    let junk = junk.to_str().unwrap();
    let ovmfx64 = v("snp/ovmf-suffix/ovmf_OvmfX64_suffix.bin");
    let amdsev = v("snp/ovmf-suffix/ovmf_AmdSev_suffix.bin");
    let ccel = v(CCEL);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--ovmf", junk, "--vcpus", "1", "--vcpu-type", "EPYC-v4"],
            "footer table",
        ),
        (
            vec![
                "--ovmf",
                &ovmfx64,
                "--kernel",
                "/dev/null",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC-v4",
            ],
            "SNP_KERNEL_HASHES",
        ),
        (vec!["--ovmf", &amdsev, "--vcpu-type", "EPYC-v4"], "--vcpus"),
        (vec!["--ovmf", &amdsev, "--vcpus", "1"], "--vcpu-type"),
        (
            vec!["--ovmf", &amdsev, "--vcpus", "1", "--vcpu-type", "Skylake"],
            "unknown vCPU type",
        ),
        (
            vec!["--ovmf", &amdsev, "--vcpus", "0", "--vcpu-type", "EPYC-v4"],
            "vCPU count",
        ),
        (
            vec![
                "--ovmf",
                &amdsev,
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC-v4",
                "--guest-features",
                "zz",
            ],
            "not a hex number",
        ),
        (vec!["--inputs", junk], "not JSON"),
        (vec!["--ccel", junk], "Spec ID"),
        (vec!["--ccel", &ccel, "--quote", junk], "quote"),
        (
            vec!["--inputs", "/nonexistent/launch_inputs.json"],
            "opening",
        ),
        (
            vec!["--inputs", junk, "--ccel", junk],
            "cannot be used with",
        ),
        (vec![], "required"),
    ];
    for (args, expect) in cases {
        let mut full = vec!["image", "measure"];
        full.extend(&args);
        let (code, out, err) = conclave(&full);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err}"
        );
    }
}
