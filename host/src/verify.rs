//! `conclave verify` and `conclave sim-evidence`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use conclave_attestation::evidence::MAX_EVIDENCE;
use conclave_attestation::snp::certs::{MAX_CERT_FILE, load_certs};
use conclave_attestation::snp::report::TcbComponent;
use conclave_attestation::tdx::parse_collateral;
use conclave_attestation::{
    Appraisal, Endorsements, Evidence, Measurement, Policy, ReportData, SimAttester, SimConfig,
    Tee, UnixTime, Verdict, appraise,
};
use serde_json::json;

use crate::input::{decode_text, read_bounded};

/// Arguments of `conclave verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// Evidence file: raw bytes, hex or base64 text (`-` for standard input). The kind (SEV-SNP
    /// report, TDX quote, Conclave evidence bundle with sim or hardware evidence) is detected.
    evidence: PathBuf,
    /// Certificates, PEM or DER, in any order: VCEK or VLEK, ASK or ASVK, ARK. AMD's ARKs are
    /// built in; a given ARK must equal them.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    certs: Vec<PathBuf>,
    /// TDX collateral: dcap-qvl `QuoteCollateralV3` JSON (from a PCCS, fetched ahead of time).
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// Appraisal policy (TOML). Options below add to it.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Allowed measurement (SNP MEASUREMENT or TDX MRTD), hex; repeatable.
    #[arg(long, value_name = "HEX")]
    measurement: Vec<String>,
    /// Minimum SEV-SNP TCB component (reported, committed and current), e.g. `snp=24`; repeatable.
    /// Components: fmc, bootloader, tee, snp, microcode.
    #[arg(long, value_name = "COMPONENT=N")]
    min_tcb: Vec<String>,
    /// The report data the evidence must carry, hex (64 bytes).
    #[arg(long, value_name = "HEX")]
    report_data: Option<String>,
    /// Accept sim evidence (no hardware). For development only.
    #[arg(long)]
    allow_sim: bool,
    /// Appraise at this time instead of now (RFC 3339, e.g. 2025-07-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    at: Option<String>,
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    json: bool,
}

fn build_policy(args: &VerifyArgs) -> Result<Policy> {
    let mut policy = match &args.policy {
        Some(path) => {
            let bytes = read_bounded(path, 1024 * 1024)?;
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
            Policy::from_toml(&text).with_context(|| format!("reading {}", path.display()))?
        }
        None => Policy::default(),
    };
    for m in &args.measurement {
        policy
            .measurements
            .push(Measurement::from_hex(m).with_context(|| format!("--measurement {m}"))?);
    }
    for spec in &args.min_tcb {
        let (name, value) = spec
            .split_once('=')
            .with_context(|| format!("--min-tcb {spec}: expected COMPONENT=N"))?;
        let component = TcbComponent::parse(name).with_context(|| {
            format!("--min-tcb {spec}: unknown component {name:?} (fmc, bootloader, tee, snp, microcode)")
        })?;
        let min: u8 = value
            .parse()
            .with_context(|| format!("--min-tcb {spec}: {value:?} is not a number 0..=255"))?;
        policy.snp.min_tcb.set(component, min);
    }
    if let Some(rd) = &args.report_data {
        policy.report_data =
            Some(ReportData::from_hex(rd).with_context(|| format!("--report-data {rd}"))?);
    }
    if args.allow_sim {
        policy.allow_sim = true;
    }
    Ok(policy)
}

fn parse_time(at: Option<&str>) -> Result<DateTime<Utc>> {
    match at {
        None => Ok(Utc::now()),
        Some(text) => Ok(DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--at {text}: not an RFC 3339 time"))?
            .with_timezone(&Utc)),
    }
}

/// Runs `conclave verify`.
pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    let raw = read_bounded(&args.evidence, 4 * MAX_EVIDENCE)?;
    // Raw bytes first; only if they are not evidence, try them as hex or base64 text.
    let evidence = Evidence::decode(&raw)
        .or_else(|_| Evidence::decode(&decode_text(&raw)))
        .with_context(|| format!("reading evidence {}", args.evidence.display()))?;

    let mut endorsements = Endorsements::default();
    for path in &args.certs {
        let bytes = read_bounded(path, MAX_CERT_FILE)?;
        let certs = load_certs(&bytes).with_context(|| format!("reading {}", path.display()))?;
        endorsements.certs.extend(certs);
    }
    if let Some(path) = &args.collateral {
        let bytes = read_bounded(path, 4 * 1024 * 1024)?;
        endorsements.tdx_collateral =
            Some(parse_collateral(&bytes).with_context(|| format!("reading {}", path.display()))?);
    }
    let policy = build_policy(&args)?;
    let at = parse_time(args.at.as_deref())?;
    let Ok(secs) = u64::try_from(at.timestamp()) else {
        bail!("--at {at}: before 1970");
    };
    let appraisal = appraise(&evidence, &endorsements, &policy, UnixTime(secs))
        .with_context(|| format!("appraising {}", args.evidence.display()))?;

    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&appraisal, at))?
        );
    } else {
        print_human(&appraisal, at);
    }
    Ok(match appraisal.verdict {
        Verdict::Accepted => ExitCode::SUCCESS,
        Verdict::Rejected => ExitCode::from(1),
    })
}

fn to_json(a: &Appraisal, at: DateTime<Utc>) -> serde_json::Value {
    let reasons: Vec<serde_json::Value> = a
        .reasons
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_else(|_| json!({}));
            if let Some(obj) = v.as_object_mut() {
                obj.insert("message".into(), json!(r.to_string()));
            }
            v
        })
        .collect();
    json!({
        "verdict": a.verdict,
        "tee": a.tee,
        "sim": a.tee == Tee::Sim,
        "measurement": a.claims.measurement,
        "report_data": a.claims.report_data,
        "evidence_hash": a.evidence_hash,
        "debug": a.claims.debug,
        "appraised_at": at.to_rfc3339(),
        "reasons": reasons,
        "claims": a.claims,
    })
}

fn print_human(a: &Appraisal, at: DateTime<Utc>) {
    let verdict = match a.verdict {
        Verdict::Accepted => "ACCEPTED",
        Verdict::Rejected => "REJECTED",
    };
    let tee = match a.tee {
        Tee::Snp => "AMD SEV-SNP".to_string(),
        Tee::Tdx => "Intel TDX".to_string(),
        Tee::Sim => "SIM (software simulation, no hardware: proves nothing)".to_string(),
    };
    println!("verdict       {verdict}");
    println!("tee           {tee}");
    println!("appraised at  {}", at.to_rfc3339());
    println!("evidence      sha256:{}", a.evidence_hash);
    let c = &a.claims;
    if let Some(s) = &c.snp {
        println!("measurement   {}", c.measurement);
        println!("report_data   {}", c.report_data);
        println!("host_data     {}", s.host_data);
        println!(
            "report        v{} {} signed by {:?}",
            s.version, s.generation, s.signing_key
        );
        println!(
            "policy        {:#x} (debug {}, migrate_ma {}, smt {})",
            s.policy,
            on_off(s.policy & (1 << 19) != 0),
            on_off(s.policy & (1 << 18) != 0),
            on_off(s.policy & (1 << 16) != 0)
        );
        println!("vmpl          {}", s.vmpl);
        println!("reported_tcb  {}", s.reported_tcb);
        println!("current_tcb   {}", s.current_tcb);
        println!("committed_tcb {}", s.committed_tcb);
        println!("launch_tcb    {}", s.launch_tcb);
    }
    if let Some(t) = &c.tdx {
        println!("mrtd          {}", t.mr_td);
        println!("report_data   {}", c.report_data);
        for (i, r) in t.rtmrs.iter().enumerate() {
            println!("rtmr{i}         {r}");
        }
        println!("mrconfigid    {}", t.mr_config_id);
        println!("quote         v{} {}", t.version, t.body);
        println!(
            "td_attributes {:#018x} (debug {})",
            t.td_attributes,
            on_off(c.debug)
        );
        println!(
            "tcb status    {}{}",
            t.tcb_status.as_deref().unwrap_or("not established"),
            if t.advisory_ids.is_empty() {
                String::new()
            } else {
                format!(" (advisories: {})", t.advisory_ids.join(", "))
            }
        );
    }
    if a.reasons.is_empty() {
        println!("reasons       none");
    } else {
        println!("reasons");
        for r in &a.reasons {
            println!("  - {r}");
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// Arguments of `conclave sim-evidence`.
#[derive(Args)]
pub struct SimEvidenceArgs {
    /// Report data to bind, hex (64 bytes); zeros by default.
    #[arg(long, value_name = "HEX")]
    report_data: Option<String>,
    /// Measurement to report, hex (48 bytes); the documented sim measurement by default.
    #[arg(long, value_name = "HEX")]
    measurement: Option<String>,
    /// Where to write the evidence bundle.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Runs `conclave sim-evidence`.
pub fn sim_evidence(args: SimEvidenceArgs) -> Result<ExitCode> {
    let mut config = SimConfig::default();
    if let Some(m) = &args.measurement {
        config.measurement =
            Measurement::from_hex(m).with_context(|| format!("--measurement {m}"))?;
    }
    let rd = match &args.report_data {
        Some(h) => ReportData::from_hex(h).with_context(|| format!("--report-data {h}"))?,
        None => ReportData([0; 64]),
    };
    let attester = SimAttester::new(config)?;
    let evidence = attester.evidence(&rd);
    std::fs::write(&args.out, evidence.encode())
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote sim evidence to {} (measurement {})",
        args.out.display(),
        attester.config().measurement
    );
    Ok(ExitCode::SUCCESS)
}
