//! Small types that carry meaning: fixed-size values that print as the hex users paste.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds since the Unix epoch. Verification takes one of these; nothing in this crate reads a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnixTime(pub u64);

macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// Parses hex text (an optional `0x` prefix and surrounding whitespace are allowed).
            pub fn from_hex(text: &str) -> Result<Self, HexError> {
                let bytes = decode_hex(text)?;
                Self::from_slice(&bytes)
            }

            /// Takes exactly [`Self::LEN`] bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, HexError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| HexError::Length {
                    expected: $len,
                    got: bytes.len(),
                })?;
                Ok(Self(arr))
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }

        impl std::str::FromStr for $name {
            type Err = HexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                Self::from_hex(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_bytes!(
    /// A 48-byte launch measurement: the SEV-SNP MEASUREMENT or the TDX MRTD / RTMR value.
    Measurement,
    48
);
hex_bytes!(
    /// The 64 bytes a guest binds into its report (SNP REPORT_DATA, TDX REPORTDATA).
    ReportData,
    64
);
hex_bytes!(
    /// An enclave's identity: the Ethereum address of its secp256k1 key.
    EnclaveAddress,
    20
);
hex_bytes!(
    /// A training job's identifier (a `bytes32` on chain).
    JobId,
    32
);
hex_bytes!(
    /// A verifier-chosen, single-use value bound into the report with the enclave key.
    Nonce,
    32
);
hex_bytes!(
    /// SHA-256 of a piece of evidence: of the canonical encoding of its report or quote
    /// (see `Evidence::hash`).
    EvidenceHash,
    32
);
hex_bytes!(
    /// SEV-SNP HOST_DATA: 32 bytes chosen by the host at launch.
    HostData,
    32
);

impl EnclaveAddress {
    /// EIP-55 mixed-case checksum form, as wallets and block explorers print it.
    pub fn to_checksum(&self) -> String {
        use sha3::{Digest, Keccak256};
        let lower = hex::encode(self.0);
        let hash = Keccak256::digest(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// What was wrong with a hex value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// Not hex text.
    #[error("not valid hex: {0}")]
    Invalid(String),
    /// Hex of the wrong length.
    #[error("expected {expected} bytes, got {got}")]
    Length {
        /// Bytes wanted.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
}

/// Decodes hex text, allowing a `0x` prefix and surrounding whitespace.
pub fn decode_hex(text: &str) -> Result<Vec<u8>, HexError> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    hex::decode(t).map_err(|e| HexError::Invalid(e.to_string()))
}

/// Which trusted execution environment produced a piece of evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tee {
    /// AMD SEV-SNP, signed by a VCEK/VLEK chaining to an AMD root.
    Snp,
    /// Intel TDX, a DCAP quote chaining to the Intel SGX root.
    Tdx,
    /// Software simulation: the SEV-SNP report format signed by a locally generated root.
    /// Worth nothing as a security claim; for development and tests only.
    Sim,
}

impl fmt::Display for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tee::Snp => "snp",
            Tee::Tdx => "tdx",
            Tee::Sim => "sim",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_prefix() {
        let m = Measurement::from_hex(&format!("0x{}", "ab".repeat(48))).unwrap();
        assert_eq!(m.to_string(), "ab".repeat(48));
        assert_eq!(
            Measurement::from_hex("abcd"),
            Err(HexError::Length {
                expected: 48,
                got: 2
            })
        );
        assert!(matches!(
            ReportData::from_hex("zz"),
            Err(HexError::Invalid(_))
        ));
    }

    #[test]
    fn eip55_checksum_matches_the_eip_example() {
        let a = EnclaveAddress::from_hex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").unwrap();
        assert_eq!(
            a.to_checksum(),
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
        );
    }
}
