//! Policy fragments: the expected values as the TOML that `conclave verify --policy` reads
//! (`conclave_attestation::Policy`). A fragment sets only the allowlists; every other key keeps
//! its strict default, so a fragment is a complete policy on its own and can be merged by hand
//! into a larger one.

use std::fmt::Write;

use conclave_attestation::Measurement;

/// What a TDX fragment pins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TdxPins {
    /// MRTD (goes into `measurements`); `None`: not pinned.
    pub mr_td: Option<Measurement>,
    /// RTMR0..3; `None`: not pinned.
    pub rtmrs: [Option<Measurement>; 4],
}

/// Comment lines: one `# ` line per note line, control characters dropped so nothing a note
/// says can escape the comment.
fn comments(out: &mut String, notes: &[String]) {
    for note in notes {
        for line in note.lines() {
            let clean: String = line.chars().filter(|c| !c.is_control()).collect();
            let _ = writeln!(out, "# {clean}");
        }
    }
}

fn list(values: &[Measurement]) -> String {
    let quoted: Vec<String> = values.iter().map(|m| format!("\"{m}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `measurements = ["<hex>"]`, headed by the notes as comments.
pub fn snp_fragment(measurement: &Measurement, notes: &[String]) -> String {
    let mut out = String::new();
    comments(&mut out, notes);
    let _ = writeln!(out, "measurements = {}", list(&[*measurement]));
    out
}

/// `measurements = [MRTD]` (if pinned) and a `[tdx]` table with the pinned RTMRs.
pub fn tdx_fragment(pins: &TdxPins, notes: &[String]) -> String {
    let mut out = String::new();
    comments(&mut out, notes);
    if let Some(mr_td) = &pins.mr_td {
        let _ = writeln!(out, "measurements = {}", list(&[*mr_td]));
    }
    let _ = writeln!(out, "\n[tdx]");
    for (i, rtmr) in pins.rtmrs.iter().enumerate() {
        if let Some(m) = rtmr {
            let _ = writeln!(out, "rtmr{i} = {}", list(&[*m]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_attestation::Policy;

    #[test]
    fn fragments_parse_as_policies_with_strict_defaults() {
        let m = Measurement([0xab; 48]);
        let notes = vec!["line one\nline two\u{7}".to_string()];
        let snp = Policy::from_toml(&snp_fragment(&m, &notes)).unwrap();
        assert_eq!(snp.measurements, vec![m]);
        assert_eq!(
            Policy {
                measurements: vec![],
                ..snp
            },
            Policy::default()
        );

        let pins = TdxPins {
            mr_td: Some(Measurement([1; 48])),
            rtmrs: [Some(Measurement([2; 48])), Some(m), None, None],
        };
        let text = tdx_fragment(&pins, &notes);
        let tdx = Policy::from_toml(&text).unwrap();
        assert_eq!(tdx.measurements, vec![Measurement([1; 48])]);
        assert_eq!(tdx.tdx.rtmr0, vec![Measurement([2; 48])]);
        assert_eq!(tdx.tdx.rtmr1, vec![m]);
        assert!(tdx.tdx.rtmr2.is_empty() && tdx.tdx.rtmr3.is_empty());
        assert_eq!(tdx.tdx.allowed_status, vec!["UpToDate"]);
        assert!(text.contains("# line two\n"), "{text}");
    }
}
