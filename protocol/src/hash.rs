//! [`Hash32`]: the one 32-byte hash type of the protocol (model hashes, config hashes, dataset
//! roots, shard and update hashes, receipt hashes). It prints and serialises as the 64 lowercase
//! hex digits users paste, and parses hex with or without `0x` in either case.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A 32-byte hash (SHA-256 unless a field says otherwise).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash32(pub [u8; 32]);

/// Text that is not 32 bytes of hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not 32 bytes of hex: {text:?}")]
pub struct HashParseError {
    /// The text, cut to 80 characters.
    pub text: String,
}

impl Hash32 {
    /// All zeros (the chain's "none").
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// SHA-256 of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Self {
        Hash32(Sha256::digest(bytes).into())
    }

    /// Parses 64 hex digits (an optional `0x` prefix and surrounding whitespace allowed).
    pub fn from_hex(text: &str) -> Result<Self, HashParseError> {
        let t = text.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        let mut out = [0u8; 32];
        match hex::decode_to_slice(t, &mut out) {
            Ok(()) => Ok(Hash32(out)),
            Err(_) => Err(HashParseError {
                text: text.chars().take(80).collect(),
            }),
        }
    }

    /// The 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 bytes in hex, for tables and logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", hex::encode(self.0))
    }
}

impl std::str::FromStr for Hash32 {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl From<[u8; 32]> for Hash32 {
    fn from(b: [u8; 32]) -> Self {
        Hash32(b)
    }
}

impl Serialize for Hash32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_bad_text_is_named() {
        let h = Hash32::sha256(b"abc");
        assert_eq!(
            h.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            Hash32::from_hex(&format!("0x{}", h.to_hex().to_uppercase())),
            Ok(h)
        );
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{h}\""));
        assert_eq!(serde_json::from_str::<Hash32>(&json).unwrap(), h);
        assert!(Hash32::from_hex("abc").is_err());
        assert!(
            serde_json::from_str::<Hash32>("\"zz\"")
                .unwrap_err()
                .to_string()
                .contains("not 32 bytes")
        );
    }
}
