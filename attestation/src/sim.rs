//! The `sim` backend: a software attester for machines without TEE hardware. It produces
//! evidence in the real SEV-SNP report format, signed by a locally generated P-384 chain
//! (ARK → ASK → VCEK, with the VCEK carrying AMD's TCB and hwID extensions), so the same
//! parsing, signature, extension and policy code runs on it as on hardware evidence.
//!
//! Sim evidence says nothing about confidentiality: anyone can mint a sim root. It travels only
//! as a bundle labelled `sim`, and the default policy rejects it.

use std::str::FromStr;

use der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, UtcTime};
use der::{Decode, Encode};
use p384::ecdsa::SigningKey;
use sha2::{Digest, Sha384};
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

use crate::evidence::Evidence;
use crate::snp::certs::oids;
use crate::snp::report::{ReportBuilder, TcbVersion};
use crate::types::{HostData, Measurement, ReportData, Tee, UnixTime};

/// FAMILY_ID of sim reports (so a human reading the report sees what it is).
pub const SIM_FAMILY_ID: [u8; 16] = *b"CONCLAVE-SIM\0\0\0\0";

/// The measurement sim reports carry unless configured otherwise:
/// `SHA-384("conclave/v1/sim-measurement")`.
pub fn default_sim_measurement() -> Measurement {
    Measurement(Sha384::digest(b"conclave/v1/sim-measurement").into())
}

/// What a sim report states. The defaults are those of a well-configured production guest, so
/// tests can change one field and see exactly one rejection.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// MEASUREMENT.
    pub measurement: Measurement,
    /// POLICY (default 0x30000: SMT allowed, debug off, no migration agent).
    pub policy: u64,
    /// VMPL (default 0).
    pub vmpl: u32,
    /// TCB reported everywhere (and stated by the VCEK).
    pub tcb: TcbVersion,
    /// HOST_DATA.
    pub host_data: HostData,
    /// Start of the chain's validity.
    pub not_before: UnixTime,
    /// End of the chain's validity.
    pub not_after: UnixTime,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            measurement: default_sim_measurement(),
            policy: 0x30000,
            vmpl: 0,
            tcb: TcbVersion {
                fmc: None,
                bootloader: 4,
                tee: 0,
                snp: 24,
                microcode: 219,
            },
            host_data: HostData([0; 32]),
            // 2024-01-01T00:00:00Z .. 2099-12-31T23:59:59Z
            not_before: UnixTime(1_704_067_200),
            not_after: UnixTime(4_102_444_799),
        }
    }
}

/// Why the sim attester could not mint its chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sim attester: {0}")]
pub struct SimError(String);

/// A software attester with its own root.
pub struct SimAttester {
    config: SimConfig,
    vcek_key: SigningKey,
    chain_der: Vec<Vec<u8>>,
    chip_id: [u8; 64],
}

impl std::fmt::Debug for SimAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAttester")
            .field("measurement", &self.config.measurement)
            .finish_non_exhaustive()
    }
}

fn derive_key(seed: &[u8; 32], label: &str) -> SigningKey {
    for counter in 0u32.. {
        let mut h = Sha384::new();
        h.update(b"conclave/v1/sim-key");
        h.update(seed);
        h.update(label.as_bytes());
        h.update(counter.to_be_bytes());
        if let Ok(k) = SigningKey::from_slice(&h.finalize()) {
            return k;
        }
    }
    unreachable!("a SHA-384 output is a valid P-384 scalar with overwhelming probability")
}

fn oid(s: &str) -> Result<ObjectIdentifier, SimError> {
    ObjectIdentifier::new(s).map_err(|e| SimError(format!("oid {s}: {e}")))
}

fn ext(id: &str, value: Vec<u8>) -> Result<Extension, SimError> {
    Ok(Extension {
        extn_id: oid(id)?,
        critical: false,
        extn_value: OctetString::new(value).map_err(|e| SimError(e.to_string()))?,
    })
}

fn der_of<T: Encode + ?Sized>(v: &T) -> Result<Vec<u8>, SimError> {
    v.to_der().map_err(|e| SimError(e.to_string()))
}

fn time(t: UnixTime) -> Result<Time, SimError> {
    let d = std::time::Duration::from_secs(t.0);
    // RFC 5280: UTCTime through 2049, GeneralizedTime after.
    if t.0 < 2_524_608_000 {
        UtcTime::from_unix_duration(d).map(Time::UtcTime)
    } else {
        GeneralizedTime::from_unix_duration(d).map(Time::GeneralTime)
    }
    .map_err(|e| SimError(e.to_string()))
}

#[allow(clippy::too_many_arguments)]
fn issue(
    serial: u8,
    subject: &str,
    issuer: &str,
    subject_key: &SigningKey,
    issuer_key: &SigningKey,
    config: &SimConfig,
    extensions: Option<Vec<Extension>>,
) -> Result<Certificate, SimError> {
    use p384::ecdsa::signature::Signer;
    use p384::pkcs8::EncodePublicKey;
    let spki_der = subject_key
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| SimError(e.to_string()))?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
        .map_err(|e| SimError(e.to_string()))?;
    let alg = AlgorithmIdentifierOwned {
        oid: oid(oids::ECDSA_SHA384)?,
        parameters: None,
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[serial]).map_err(|e| SimError(e.to_string()))?,
        signature: alg.clone(),
        issuer: Name::from_str(issuer).map_err(|e| SimError(e.to_string()))?,
        validity: Validity {
            not_before: time(config.not_before)?,
            not_after: time(config.not_after)?,
        },
        subject: Name::from_str(subject).map_err(|e| SimError(e.to_string()))?,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions,
    };
    let sig: p384::ecdsa::Signature = issuer_key.sign(&der_of(&tbs)?);
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(sig.to_der().as_bytes())
            .map_err(|e| SimError(e.to_string()))?,
    })
}

const ARK_NAME: &str = "CN=ARK-Conclave-SIM,O=Conclave sim backend (no hardware)";
const ASK_NAME: &str = "CN=SEV-Conclave-SIM,O=Conclave sim backend (no hardware)";
const VCEK_NAME: &str = "CN=SEV-VCEK,O=Conclave sim backend (no hardware)";

impl SimAttester {
    /// A sim attester with fresh random keys.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        Self::from_seed(&seed, config)
    }

    /// A sim attester whose keys and chip id derive from `seed` (reproducible tests and benches).
    pub fn from_seed(seed: &[u8; 32], config: SimConfig) -> Result<Self, SimError> {
        let ark_key = derive_key(seed, "ark");
        let ask_key = derive_key(seed, "ask");
        let vcek_key = derive_key(seed, "vcek");
        let mut chip_id = [0u8; 64];
        let mut h = Sha384::new();
        h.update(b"conclave/v1/sim-chip-id");
        h.update(seed);
        let d = h.finalize();
        chip_id[..48].copy_from_slice(&d);
        chip_id[48..].copy_from_slice(&d[..16]);

        let ark = issue(1, ARK_NAME, ARK_NAME, &ark_key, &ark_key, &config, None)?;
        let ask = issue(2, ASK_NAME, ARK_NAME, &ask_key, &ark_key, &config, None)?;
        let t = config.tcb;
        let vcek_ext = vec![
            ext(
                oids::PRODUCT_NAME,
                der_of(&Ia5String::new("Milan-B0").map_err(|e| SimError(e.to_string()))?)?,
            )?,
            ext(oids::BL_SPL, der_of(&t.bootloader)?)?,
            ext(oids::TEE_SPL, der_of(&t.tee)?)?,
            ext(oids::SNP_SPL, der_of(&t.snp)?)?,
            ext(oids::UCODE_SPL, der_of(&t.microcode)?)?,
            ext(
                oids::HW_ID,
                der_of(&OctetString::new(chip_id.to_vec()).map_err(|e| SimError(e.to_string()))?)?,
            )?,
        ];
        let vcek = issue(
            3,
            VCEK_NAME,
            ASK_NAME,
            &vcek_key,
            &ask_key,
            &config,
            Some(vcek_ext),
        )?;
        Ok(SimAttester {
            chain_der: vec![der_of(&vcek)?, der_of(&ask)?, der_of(&ark)?],
            config,
            vcek_key,
            chip_id,
        })
    }

    /// The chain as DER: VCEK, ASK, ARK.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// A signed report carrying `report_data`, bundled with the sim chain.
    pub fn evidence(&self, report_data: &ReportData) -> Evidence {
        let mut report_id = [0u8; 32];
        report_id.copy_from_slice(&Sha384::digest(report_data.0)[..32]);
        let report = ReportBuilder::new()
            .policy(self.config.policy)
            .vmpl(self.config.vmpl)
            .family_id(SIM_FAMILY_ID)
            .report_data(report_data)
            .measurement(&self.config.measurement)
            .host_data(&self.config.host_data)
            .chip_id(&self.chip_id)
            .tcb(&self.config.tcb)
            .report_id(report_id)
            .sign(&self.vcek_key);
        Evidence {
            tee: Tee::Sim,
            primary: report.to_vec(),
            certs: self.chain_der.clone(),
            collateral: None,
        }
    }
}
