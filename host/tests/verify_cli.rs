//! `conclave verify` on every shared vector, as a user runs it: exit codes and output.

use std::path::PathBuf;
use std::process::Command;

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

fn json(args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out, err) = conclave(&a);
    let value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, value)
}

const SNP_AT: &str = "2026-07-01T00:00:00Z";
const S3_MEASUREMENT: &str = "7f51e17f72a04d5422cb2c00998166536019a217376f3aa45a630e59c805a599847ff250dbffcd07e1ba639771d6f05d";

#[test]
fn snp_virtee_milan_hex_is_accepted() {
    let (code, j) = json(&[
        "verify",
        &v("snp/virtee-milan/report_milan.hex"),
        "--certs",
        &v("snp/virtee-milan/vcek_milan.der"),
        &v("snp/virtee-milan/cert_chain_milan"),
        "--at",
        SNP_AT,
    ]);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["verdict"], "accepted");
    assert_eq!(j["tee"], "snp");
    assert!(j["measurement"].as_str().unwrap().starts_with("7a1e5c26"));
    assert_eq!(j["reasons"].as_array().unwrap().len(), 0);
}

#[test]
fn snp_debug_guest_is_rejected_with_exit_1() {
    let (code, j) = json(&[
        "verify",
        &v("snp/go-sev-guest-debug/attestation.bin"),
        "--certs",
        &v("snp/go-sev-guest-debug/ask_ark_milan.pem"),
        &v("snp/go-sev-guest-debug/vcek.testcer"),
        "--at",
        SNP_AT,
    ]);
    assert_eq!(code, 1);
    assert_eq!(j["verdict"], "rejected");
    assert_eq!(j["reasons"][0]["code"], "debug_guest");
}

#[test]
fn snp_dstack_v3_with_pinned_measurement_is_accepted_and_a_tcb_floor_rejects_it() {
    let base = [
        "verify",
        &v("snp/dstack-milan-v3/sev_snp_report_extracted.bin"),
        "--certs",
        &v("snp/dstack-milan-v3/sev_snp_vcek.pem"),
        &v("snp/dstack-milan-v3/sev_snp_ask.pem"),
        "--at",
        SNP_AT,
        "--measurement",
        S3_MEASUREMENT,
    ]
    .map(String::from);
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    let (code, j) = json(&args);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["measurement"], S3_MEASUREMENT);

    let mut floor = args.clone();
    floor.extend(["--min-tcb", "snp=24"]);
    let (code, j) = json(&floor);
    assert_eq!(code, 1);
    assert_eq!(j["reasons"][0]["code"], "tcb_below_minimum");
    assert_eq!(j["reasons"][0]["got"], 23);

    let mut rd = args.clone();
    let wrong = "00".repeat(64);
    rd.extend(["--report-data", &wrong]);
    let (code, j) = json(&rd);
    assert_eq!(code, 1);
    assert_eq!(j["reasons"][0]["code"], "report_data_mismatch");
}

#[test]
fn tdx_quote_is_accepted_in_window_and_rejected_after() {
    let args = |at: &'static str| {
        vec![
            "verify".to_string(),
            v("tdx/dcap-qvl/tdx_quote"),
            "--collateral".into(),
            v("tdx/dcap-qvl/tdx_quote_collateral.json"),
            "--at".into(),
            at.into(),
        ]
    };
    let a = args("2025-07-01T00:00:00Z");
    let (code, j) = json(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["tee"], "tdx");
    assert_eq!(j["claims"]["tdx"]["tcb_status"], "UpToDate");
    let a = args("2025-07-20T10:00:35Z");
    let (code, j) = json(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1);
    assert!(
        j["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("TCBInfo expired")
    );
}

#[test]
fn tdx_outdated_quote_is_rejected() {
    let (code, j) = json(&[
        "verify",
        &v("tdx/dcap-qvl/tdx_quote_outdated"),
        "--collateral",
        &v("tdx/dcap-qvl/tdx_quote_outdated_collateral.json"),
        "--at",
        "2026-03-01T00:00:00Z",
    ]);
    assert_eq!(code, 1);
    assert!(
        j["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("No matching TCB level")
    );
}

#[test]
fn sim_evidence_is_rejected_unless_allowed_and_always_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.bin");
    let p = path.to_str().unwrap();
    let (code, _, err) = conclave(&["sim-evidence", "--out", p]);
    assert_eq!(code, 0, "{err}");
    let (code, j) = json(&["verify", p]);
    assert_eq!(code, 1);
    assert_eq!(j["tee"], "sim");
    assert_eq!(j["reasons"][0]["code"], "sim_not_allowed");
    let (code, j) = json(&["verify", p, "--allow-sim"]);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["sim"], true);
    let (code, out, _) = conclave(&["verify", p, "--allow-sim"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("verdict       ACCEPTED"),
        "verdict line first: {out}"
    );
    assert!(out.contains("SIM"), "{out}");
}

#[test]
fn base64_evidence_is_detected() {
    use base64::Engine;
    let raw = std::fs::read(vectors().join("snp/go-sev-guest-debug/attestation.bin")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.b64");
    std::fs::write(&path, base64::engine::general_purpose::STANDARD.encode(raw)).unwrap();
    let (code, j) = json(&[
        "verify",
        path.to_str().unwrap(),
        "--certs",
        &v("snp/go-sev-guest-debug/vcek.testcer"),
        "--at",
        SNP_AT,
    ]);
    assert_eq!(code, 1);
    assert_eq!(j["reasons"][0]["code"], "debug_guest");
}

#[test]
fn unusable_input_exits_2_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, [0xffu8; 300]).unwrap();
    let (code, _, err) = conclave(&["verify", junk.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not recognised as evidence"), "{err}");

    let (code, _, err) = conclave(&["verify", "/nonexistent/evidence"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/evidence"), "{err}");

    let report = v("snp/virtee-milan/report_milan.hex");
    let (code, _, err) = conclave(&["verify", &report, "--min-tcb", "snpp=3"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown component"), "{err}");
    let (code, _, err) = conclave(&["verify", &report, "--at", "yesterday"]);
    assert_eq!(code, 2);
    assert!(err.contains("RFC 3339"), "{err}");
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "allow_debugg = true\n").unwrap();
    let (code, _, err) = conclave(&["verify", &report, "--policy", policy.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("allow_debugg"), "{err}");
    let (code, _, err) = conclave(&["verify", &report, "--certs", junk.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("X.509"), "{err}");
}

#[test]
fn policy_file_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "allow_debug = true\n").unwrap();
    let (code, j) = json(&[
        "verify",
        &v("snp/go-sev-guest-debug/attestation.bin"),
        "--certs",
        &v("snp/go-sev-guest-debug/vcek.testcer"),
        "--policy",
        policy.to_str().unwrap(),
        "--at",
        SNP_AT,
    ]);
    assert_eq!(code, 0, "{j}");
    assert_eq!(j["debug"], true);
}
