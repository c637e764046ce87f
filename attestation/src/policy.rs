//! The appraisal policy: what a verifier demands of evidence beyond its signatures. Modelled on
//! go-sev-guest's `validate.Options` and go-tdx-guest's `TdQuoteBodyOptions`. The defaults are
//! the strict ones: no sim, no debug, VMPL 0, no migration, no service TDs, TDX status
//! `UpToDate` only, no advisories. Some rules have no knob because nothing may relax them: a TDX
//! TD must set SEPT_VE_DISABLE, must not be migratable and must not set reserved attribute bits
//! (dcap-qvl refuses such quotes too), and a Revoked TCB is always refused.
//!
//! Loadable from TOML; unknown keys are errors, so a misspelt key never silently weakens a policy.

use serde::{Deserialize, Serialize};

use crate::snp::report::{TcbComponent, TcbVersion};
use crate::types::{HostData, Measurement, ReportData};

/// The whole policy. Its default is the strict policy described above.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Accept `sim` evidence (no hardware behind it). Off by default; development only.
    pub allow_sim: bool,
    /// Accept debuggable guests (SNP policy bit 19; TDX TUD bits). Never in production.
    pub allow_debug: bool,
    /// Accept SNP guests that may be associated with a migration agent (MIGRATE_MA).
    /// Migratable TDX TDs are always refused.
    pub allow_migration: bool,
    /// Highest VMPL allowed to have requested an SNP report (0: only the most privileged level).
    pub max_vmpl: u32,
    /// Allowed launch measurements: SNP MEASUREMENT or TDX MRTD. Empty: not checked.
    pub measurements: Vec<Measurement>,
    /// The REPORT_DATA the evidence must carry (for example a key binding). None: not checked.
    pub report_data: Option<ReportData>,
    /// SEV-SNP specific rules.
    pub snp: SnpPolicy,
    /// TDX specific rules.
    pub tdx: TdxPolicy,
}

/// Minimum values per TCB component; a component left out is not checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinTcb {
    /// FMC SPL (Turin+; ignored for earlier products).
    pub fmc: Option<u8>,
    /// PSP bootloader SPL.
    pub bootloader: Option<u8>,
    /// PSP OS SPL.
    pub tee: Option<u8>,
    /// SNP firmware SPL.
    pub snp: Option<u8>,
    /// Microcode SPL.
    pub microcode: Option<u8>,
}

impl MinTcb {
    /// Sets one component's floor.
    pub fn set(&mut self, component: TcbComponent, min: u8) {
        let slot = match component {
            TcbComponent::Fmc => &mut self.fmc,
            TcbComponent::Bootloader => &mut self.bootloader,
            TcbComponent::Tee => &mut self.tee,
            TcbComponent::Snp => &mut self.snp,
            TcbComponent::Microcode => &mut self.microcode,
        };
        *slot = Some(min);
    }

    /// The components of `tcb` below their floors, as (component, got, min).
    pub fn shortfalls(&self, tcb: &TcbVersion) -> Vec<(TcbComponent, u8, u8)> {
        let mut out = Vec::new();
        for (component, got) in tcb.components() {
            let min = match component {
                TcbComponent::Fmc => self.fmc,
                TcbComponent::Bootloader => self.bootloader,
                TcbComponent::Tee => self.tee,
                TcbComponent::Snp => self.snp,
                TcbComponent::Microcode => self.microcode,
            };
            if let Some(min) = min
                && got < min
            {
                out.push((component, got, min));
            }
        }
        out
    }
}

/// SEV-SNP rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpPolicy {
    /// Floor for REPORTED_TCB, COMMITTED_TCB and CURRENT_TCB, per component.
    pub min_tcb: MinTcb,
    /// Floor for LAUNCH_TCB, per component.
    pub min_launch_tcb: MinTcb,
    /// Minimum GUEST_SVN.
    pub min_guest_svn: Option<u32>,
    /// The HOST_DATA the report must carry.
    pub host_data: Option<HostData>,
}

/// TDX rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdxPolicy {
    /// TCB statuses accepted (dcap-qvl spelling: `UpToDate`, `SWHardeningNeeded`,
    /// `ConfigurationNeeded`, `ConfigurationAndSWHardeningNeeded`, `OutOfDate`,
    /// `OutOfDateConfigurationNeeded`). Revoked is always refused.
    pub allowed_status: Vec<String>,
    /// Intel security advisories the platform may be affected by (`INTEL-SA-xxxxx`).
    pub allowed_advisories: Vec<String>,
    /// Accept TDs bound to service TDs (non-zero MR_SERVICETD or SERVTD_EXT).
    pub allow_service_td: bool,
    /// The MRCONFIGID the quote must carry.
    pub mr_config_id: Option<Measurement>,
    /// Allowed RTMR0 values; empty: not checked.
    pub rtmr0: Vec<Measurement>,
    /// Allowed RTMR1 values; empty: not checked.
    pub rtmr1: Vec<Measurement>,
    /// Allowed RTMR2 values; empty: not checked.
    pub rtmr2: Vec<Measurement>,
    /// Allowed RTMR3 values; empty: not checked.
    pub rtmr3: Vec<Measurement>,
}

impl Default for TdxPolicy {
    fn default() -> Self {
        TdxPolicy {
            allowed_status: vec!["UpToDate".to_string()],
            allowed_advisories: Vec::new(),
            allow_service_td: false,
            mr_config_id: None,
            rtmr0: Vec::new(),
            rtmr1: Vec::new(),
            rtmr2: Vec::new(),
            rtmr3: Vec::new(),
        }
    }
}

impl TdxPolicy {
    /// The RTMR allowlist for index 0..=3.
    pub fn rtmr(&self, index: usize) -> &[Measurement] {
        match index {
            0 => &self.rtmr0,
            1 => &self.rtmr1,
            2 => &self.rtmr2,
            _ => &self.rtmr3,
        }
    }
}

/// A policy file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid policy: {0}")]
pub struct PolicyError(pub String);

impl Policy {
    /// Parses TOML. Unknown keys and malformed hex are errors naming the key.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        toml::from_str(text).map_err(|e| PolicyError(e.to_string()))
    }

    /// Renders as TOML (for `conclave image measure` and friends to emit policy fragments).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_strict() {
        let p = Policy::default();
        assert!(!p.allow_sim && !p.allow_debug && !p.allow_migration);
        assert_eq!(p.max_vmpl, 0);
        assert_eq!(p.tdx.allowed_status, vec!["UpToDate"]);
        assert!(!p.tdx.allow_service_td);
    }

    #[test]
    fn toml_round_trips_and_rejects_unknown_keys() {
        let text = format!(
            r#"
            allow_sim = true
            measurements = ["{m}"]
            [snp.min_tcb]
            snp = 24
            [tdx]
            allowed_status = ["UpToDate", "SWHardeningNeeded"]
            "#,
            m = "7f".repeat(48)
        );
        let p = Policy::from_toml(&text).unwrap();
        assert!(p.allow_sim);
        assert_eq!(p.snp.min_tcb.snp, Some(24));
        assert!(!p.tdx.allow_service_td, "unset keys keep their defaults");
        assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);

        let err = Policy::from_toml("alow_debug = true").unwrap_err();
        assert!(err.0.contains("alow_debug"), "{err}");
        let err = Policy::from_toml("measurements = [\"abcd\"]").unwrap_err();
        assert!(err.0.contains("48 bytes"), "{err}");
    }
}
