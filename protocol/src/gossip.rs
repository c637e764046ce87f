//! What operators gossip to each other (libp2p gossipsub, one topic per message kind and job):
//! an [`Announce`] of an operator's attested enclave, the signed [`Update`] of a round, and a
//! [`Heartbeat`] with the model hash a round ended on.
//!
//! Wire format: `"CNVGS" ‖ version (u8) ‖ kind (u8) ‖ body`, the body one JSON object (unknown
//! fields refused; bytes as standard base64). The total size is checked against a per-kind
//! limit before anything is parsed, then every field is bounded and checked for shape, and
//! every failure is a named [`GossipError`]. Decoding never panics.
//!
//! The gossip layer says nothing the receiver has to trust: an update is a signed envelope that
//! the receiver verifies against the signer's announced evidence; an announce carries evidence
//! the receiver appraises under the job policy.

use conclave_attestation::{EnclaveAddress, JobId, Nonce};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::channel::Blob;
use crate::hash::Hash32;

/// Message magic.
pub const GOSSIP_MAGIC: &[u8; 5] = b"CNVGS";
/// The gossip version.
pub const GOSSIP_VERSION: u8 = 1;
/// Header length: magic, version, kind.
pub const HEADER_LEN: usize = 7;

/// Largest announce message (the evidence bundle dominates: a report and its cert chain).
pub const MAX_ANNOUNCE: usize = 256 * 1024;
/// Largest update message (a signed sparse update, base64 in JSON).
pub const MAX_UPDATE: usize = 16 * 1024 * 1024;
/// Largest heartbeat message (its signed receipt dominates).
pub const MAX_HEARTBEAT: usize = 64 * 1024;
/// Largest gossip message of any kind (the transport limit is set from this).
pub const MAX_MESSAGE: usize = MAX_UPDATE;

/// Largest evidence bundle in an announce.
pub const MAX_EVIDENCE: usize = 128 * 1024;
/// Most listen addresses in an announce.
pub const MAX_ADDRS: usize = 16;
/// Longest listen address (multiaddr text) or peer id.
pub const MAX_ADDR_LEN: usize = 256;
/// Largest operator set.
pub const MAX_OPERATORS: u32 = 1024;
/// The largest signed announce statement (an envelope around a few hundred bytes of JSON).
pub const MAX_ANNOUNCE_STATEMENT: usize = 4096;
/// The most enclaves a round's update set names (the contract's bound).
pub const MAX_MEMBERS: usize = 256;

/// Why a gossip message was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GossipError {
    #[error("message of {len} bytes exceeds the {kind} limit of {max}")]
    TooLarge {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("message of {0} bytes is shorter than the header")]
    Truncated(usize),
    #[error("bad gossip magic (not a Conclave gossip message)")]
    BadMagic,
    #[error("gossip version {0} is not supported (expected {GOSSIP_VERSION})")]
    Version(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("a {got} message where a {expected} was expected")]
    WrongKind {
        expected: &'static str,
        got: &'static str,
    },
    #[error("malformed {kind}: {reason}")]
    Malformed { kind: &'static str, reason: String },
    #[error("bad field {field}: {reason}")]
    Field { field: &'static str, reason: String },
}

/// The kinds of gossip messages; each has its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Announce = 1,
    Update = 2,
    Heartbeat = 3,
}

impl Kind {
    pub fn from_u8(b: u8) -> Result<Self, GossipError> {
        match b {
            1 => Ok(Kind::Announce),
            2 => Ok(Kind::Update),
            3 => Ok(Kind::Heartbeat),
            b => Err(GossipError::UnknownKind(b)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Announce => "announce",
            Kind::Update => "update",
            Kind::Heartbeat => "heartbeat",
        }
    }

    /// The largest message of this kind.
    pub fn max_len(self) -> usize {
        match self {
            Kind::Announce => MAX_ANNOUNCE,
            Kind::Update => MAX_UPDATE,
            Kind::Heartbeat => MAX_HEARTBEAT,
        }
    }

    /// The gossipsub topic of this kind for a job (job id hex).
    pub fn topic(self, job_hex: &str) -> String {
        format!("conclave/{job_hex}/{}", self.topic_suffix())
    }

    fn topic_suffix(self) -> &'static str {
        match self {
            Kind::Announce => "announce",
            Kind::Update => "updates",
            Kind::Heartbeat => "heartbeat",
        }
    }
}

/// An operator's attested enclave and where its libp2p node listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    pub job_id: JobId,
    /// The operator's index in the active set.
    pub operator: u32,
    /// The enclave key's address.
    pub address: EnclaveAddress,
    /// The enclave's evidence bundle.
    pub evidence: Blob,
    /// The nonce the evidence binds with the key and the job.
    pub nonce: Nonce,
    /// The operator's libp2p peer id (base58 text).
    pub peer_id: String,
    /// Its listen multiaddrs (text).
    pub addrs: Vec<String>,
    /// The enclave's signed `announce` statement naming this peer id, the operator slot and,
    /// with a chain, the operator account: without it an announce is anyone's.
    pub statement: Blob,
}

/// A signed update of a round, as its enclave sealed it: inline, or (when it would exceed
/// the gossip limit) a reference that receivers resolve by request-response from the
/// publisher ([`crate::sync::SyncRequest::Blob`]), then check like an inline one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub round: u64,
    /// The encoded `update` envelope (empty when `blob` names it).
    #[serde(default)]
    pub envelope: Blob,
    /// The envelope travels by request-response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
}

/// A large payload named by hash, fetched from the publisher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
    /// SHA-256 of the bytes.
    pub sha256: Hash32,
    pub size: u64,
}

/// Largest payload carried by reference.
pub const MAX_BLOB: u64 = 1 << 30;

/// The model an operator's round ended on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub operator: u32,
    pub round: u64,
    /// SHA-256 of the weights after the round.
    pub model_hash: Hash32,
    /// The operator's signed `round-receipt` envelope of the round, so that every operator
    /// keeps every receipt (an auditor finds the one a checkpoint on chain names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Blob>,
    /// At an on-chain checkpoint round: the enclave's EIP-712 checkpoint statement, which
    /// peers gather into the round's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitment: Option<Commitment>,
}

/// An enclave's checkpoint statement for an on-chain round (EIP-712 `Checkpoint`, which also
/// names the job's spec hash and dataset root): the model, the round's outcome
/// (`RoundReceipt::outcome_hash`) and the enclaves whose updates the round aggregated. A
/// quorum of the same statement is the round's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commitment {
    /// The on-chain round (rounds closed).
    pub round: u64,
    pub model_hash: Hash32,
    pub receipt_hash: Hash32,
    /// Strictly ascending.
    pub members: Vec<EnclaveAddress>,
    /// r ‖ s ‖ v, 130 hex digits.
    pub signature: String,
}

/// Any gossip message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Announce(Announce),
    Update(Update),
    Heartbeat(Heartbeat),
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Announce(_) => Kind::Announce,
            Message::Update(_) => Kind::Update,
            Message::Heartbeat(_) => Kind::Heartbeat,
        }
    }

    /// Encodes and checks the result against the kind's limit.
    pub fn encode(&self) -> Result<Vec<u8>, GossipError> {
        let kind = self.kind();
        let body = match self {
            Message::Announce(a) => serde_json::to_vec(a),
            Message::Update(u) => serde_json::to_vec(u),
            Message::Heartbeat(h) => serde_json::to_vec(h),
        }
        .map_err(|e| GossipError::Malformed {
            kind: kind.name(),
            reason: e.to_string(),
        })?;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(GOSSIP_MAGIC);
        out.push(GOSSIP_VERSION);
        out.push(kind as u8);
        out.extend_from_slice(&body);
        if out.len() > kind.max_len() {
            return Err(GossipError::TooLarge {
                kind: kind.name(),
                len: out.len(),
                max: kind.max_len(),
            });
        }
        // What we send must be what we accept.
        self.check()?;
        Ok(out)
    }

    /// Decodes a message of any kind: size, header, JSON shape and every field's bounds.
    pub fn decode(bytes: &[u8]) -> Result<Self, GossipError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(GossipError::TooLarge {
                kind: "gossip",
                len: bytes.len(),
                max: MAX_MESSAGE,
            });
        }
        if bytes.len() < HEADER_LEN {
            return Err(GossipError::Truncated(bytes.len()));
        }
        if &bytes[..5] != GOSSIP_MAGIC {
            return Err(GossipError::BadMagic);
        }
        if bytes[5] != GOSSIP_VERSION {
            return Err(GossipError::Version(bytes[5]));
        }
        let kind = Kind::from_u8(bytes[6])?;
        if bytes.len() > kind.max_len() {
            return Err(GossipError::TooLarge {
                kind: kind.name(),
                len: bytes.len(),
                max: kind.max_len(),
            });
        }
        let body = &bytes[HEADER_LEN..];
        let malformed = |e: serde_json::Error| GossipError::Malformed {
            kind: kind.name(),
            reason: e.to_string(),
        };
        let msg = match kind {
            Kind::Announce => Message::Announce(serde_json::from_slice(body).map_err(malformed)?),
            Kind::Update => Message::Update(serde_json::from_slice(body).map_err(malformed)?),
            Kind::Heartbeat => Message::Heartbeat(serde_json::from_slice(body).map_err(malformed)?),
        };
        msg.check()?;
        Ok(msg)
    }

    /// Decodes a message that must be of `expected` kind (the topic it came on).
    pub fn decode_as(bytes: &[u8], expected: Kind) -> Result<Self, GossipError> {
        // The topic's limit applies before the header is even read.
        if bytes.len() > expected.max_len() {
            return Err(GossipError::TooLarge {
                kind: expected.name(),
                len: bytes.len(),
                max: expected.max_len(),
            });
        }
        let m = Self::decode(bytes)?;
        if m.kind() != expected {
            return Err(GossipError::WrongKind {
                expected: expected.name(),
                got: m.kind().name(),
            });
        }
        Ok(m)
    }

    /// Field bounds and shapes.
    fn check(&self) -> Result<(), GossipError> {
        match self {
            Message::Announce(a) => {
                if a.operator >= MAX_OPERATORS {
                    return Err(field(
                        "operator",
                        format!("{} is not below {MAX_OPERATORS}", a.operator),
                    ));
                }
                if a.evidence.0.is_empty() || a.evidence.0.len() > MAX_EVIDENCE {
                    return Err(field(
                        "evidence",
                        format!("{} bytes (1 to {MAX_EVIDENCE})", a.evidence.0.len()),
                    ));
                }
                text_field("peer_id", &a.peer_id)?;
                if a.statement.0.is_empty() || a.statement.0.len() > MAX_ANNOUNCE_STATEMENT {
                    return Err(field(
                        "statement",
                        format!(
                            "{} bytes (1 to {MAX_ANNOUNCE_STATEMENT})",
                            a.statement.0.len()
                        ),
                    ));
                }
                if a.addrs.len() > MAX_ADDRS {
                    return Err(field(
                        "addrs",
                        format!("{} addresses (at most {MAX_ADDRS})", a.addrs.len()),
                    ));
                }
                for s in &a.addrs {
                    text_field("addrs", s)?;
                }
                Ok(())
            }
            Message::Update(u) => match &u.blob {
                None if u.envelope.0.is_empty() => Err(field("envelope", "empty")),
                None => Ok(()),
                Some(_) if !u.envelope.0.is_empty() => Err(field(
                    "blob",
                    "an update is inline or by reference, not both",
                )),
                Some(b) => {
                    if b.size == 0 || b.size > MAX_BLOB {
                        return Err(field("blob", format!("{} bytes (1 to {MAX_BLOB})", b.size)));
                    }
                    Ok(())
                }
            },
            Message::Heartbeat(h) => {
                if h.operator >= MAX_OPERATORS {
                    return Err(field(
                        "operator",
                        format!("{} is not below {MAX_OPERATORS}", h.operator),
                    ));
                }
                if h.receipt.as_ref().is_some_and(|r| r.0.is_empty()) {
                    return Err(field("receipt", "empty"));
                }
                if let Some(c) = &h.commitment {
                    if c.round == 0 {
                        return Err(field("commitment.round", "0 (rounds start at 1)"));
                    }
                    if c.members.is_empty() || c.members.len() > MAX_MEMBERS {
                        return Err(field(
                            "commitment.members",
                            format!("{} members (1 to {MAX_MEMBERS})", c.members.len()),
                        ));
                    }
                    if c.members.windows(2).any(|w| w[0].0 >= w[1].0) {
                        return Err(field("commitment.members", "not strictly ascending"));
                    }
                    if c.signature.len() != 130
                        || !c.signature.bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(field("commitment.signature", "not 65 bytes of hex"));
                    }
                }
                Ok(())
            }
        }
    }
}

fn field(field: &'static str, reason: impl Into<String>) -> GossipError {
    GossipError::Field {
        field,
        reason: reason.into(),
    }
}

fn text_field(name: &'static str, s: &str) -> Result<(), GossipError> {
    if s.is_empty() || s.len() > MAX_ADDR_LEN {
        return Err(field(name, format!("1 to {MAX_ADDR_LEN} characters")));
    }
    if !s.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(field(name, "printable ASCII only"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce() -> Message {
        Message::Announce(Announce {
            job_id: JobId([0xab; 32]),
            operator: 2,
            address: EnclaveAddress([0x12; 20]),
            evidence: Blob(vec![7; 1000]),
            nonce: Nonce([0xcd; 32]),
            peer_id: "12D3KooWExample".into(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            statement: Blob(vec![5; 300]),
        })
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            announce(),
            Message::Update(Update {
                round: 3,
                envelope: Blob(vec![1, 2, 3]),
                blob: None,
            }),
            Message::Update(Update {
                round: 3,
                envelope: Blob(Vec::new()),
                blob: Some(BlobRef {
                    sha256: Hash32([0xab; 32]),
                    size: 20 << 20,
                }),
            }),
            Message::Heartbeat(Heartbeat {
                operator: 1,
                round: 3,
                model_hash: Hash32([0xef; 32]),
                receipt: None,
                commitment: None,
            }),
            Message::Heartbeat(Heartbeat {
                operator: 1,
                round: 3,
                model_hash: Hash32([0xef; 32]),
                receipt: Some(Blob(vec![7; 3000])),
                commitment: Some(commitment()),
            }),
        ] {
            let b = m.encode().unwrap();
            assert_eq!(Message::decode(&b).unwrap(), m);
            assert_eq!(Message::decode_as(&b, m.kind()).unwrap(), m);
        }
    }

    fn commitment() -> Commitment {
        Commitment {
            round: 4,
            model_hash: Hash32([1; 32]),
            receipt_hash: Hash32([2; 32]),
            members: vec![EnclaveAddress([3; 20]), EnclaveAddress([4; 20])],
            signature: "ab".repeat(65),
        }
    }

    #[test]
    fn commitments_are_bounded_and_canonical() {
        let hb = |c: Commitment| {
            Message::Heartbeat(Heartbeat {
                operator: 1,
                round: 3,
                model_hash: Hash32([0xef; 32]),
                receipt: None,
                commitment: Some(c),
            })
        };
        let cases: Vec<(Commitment, &str)> = vec![
            (
                Commitment {
                    round: 0,
                    ..commitment()
                },
                "commitment.round",
            ),
            (
                Commitment {
                    members: vec![],
                    ..commitment()
                },
                "commitment.members",
            ),
            (
                Commitment {
                    members: vec![EnclaveAddress([4; 20]), EnclaveAddress([3; 20])],
                    ..commitment()
                },
                "commitment.members",
            ),
            (
                Commitment {
                    members: vec![EnclaveAddress([3; 20]), EnclaveAddress([3; 20])],
                    ..commitment()
                },
                "commitment.members",
            ),
            (
                Commitment {
                    members: (0..=MAX_MEMBERS as u32)
                        .map(|i| {
                            let mut a = [0u8; 20];
                            a[16..].copy_from_slice(&i.to_be_bytes());
                            EnclaveAddress(a)
                        })
                        .collect(),
                    ..commitment()
                },
                "commitment.members",
            ),
            (
                Commitment {
                    signature: "zz".repeat(65),
                    ..commitment()
                },
                "commitment.signature",
            ),
        ];
        for (c, name) in cases {
            let m = hb(c);
            match m.encode() {
                Err(GossipError::Field { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn garbage_is_refused_by_name() {
        assert_eq!(Message::decode(b""), Err(GossipError::Truncated(0)));
        assert_eq!(
            Message::decode(b"hello world, not gossip"),
            Err(GossipError::BadMagic)
        );
        let mut b = announce().encode().unwrap();
        b[6] = 9;
        assert_eq!(Message::decode(&b), Err(GossipError::UnknownKind(9)));
        let mut b = announce().encode().unwrap();
        let n = b.len();
        b.truncate(n - 3);
        assert!(matches!(
            Message::decode(&b),
            Err(GossipError::Malformed {
                kind: "announce",
                ..
            })
        ));
        // Unknown fields are refused.
        let mut b = b"CNVGS\x01\x03".to_vec();
        b.extend_from_slice(
            format!(
                "{{\"operator\":1,\"round\":1,\"model_hash\":\"{}\",\"x\":1}}",
                "00".repeat(32)
            )
            .as_bytes(),
        );
        assert!(matches!(
            Message::decode(&b),
            Err(GossipError::Malformed { .. })
        ));
        // Every random byte string is refused or decodes; none panics.
        let mut x = 0x9e3779b97f4a7c15u64;
        for len in 0..300 {
            let mut v = b"CNVGS\x01".to_vec();
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            let _ = Message::decode(&v);
        }
    }

    #[test]
    fn bad_version_and_wrong_kind_are_refused() {
        let mut b = announce().encode().unwrap();
        b[5] = 2;
        assert_eq!(Message::decode(&b), Err(GossipError::Version(2)));
        let b = announce().encode().unwrap();
        assert_eq!(
            Message::decode_as(&b, Kind::Update),
            Err(GossipError::WrongKind {
                expected: "update",
                got: "announce"
            })
        );
    }

    #[test]
    fn oversize_messages_are_refused_before_parsing() {
        let big = vec![b'x'; MAX_MESSAGE + 1];
        assert!(matches!(
            Message::decode(&big),
            Err(GossipError::TooLarge { kind: "gossip", .. })
        ));
        let mut hb = b"CNVGS\x01\x03".to_vec();
        hb.resize(MAX_HEARTBEAT + 1, b' ');
        assert!(matches!(
            Message::decode(&hb),
            Err(GossipError::TooLarge {
                kind: "heartbeat",
                ..
            })
        ));
        assert!(matches!(
            Message::decode_as(&hb, Kind::Heartbeat),
            Err(GossipError::TooLarge {
                kind: "heartbeat",
                ..
            })
        ));
        let Message::Announce(mut a) = announce() else {
            unreachable!()
        };
        a.evidence = Blob(vec![0; MAX_EVIDENCE + 1]);
        assert!(Message::Announce(a).encode().is_err());
    }

    #[test]
    fn hex_fields_that_are_not_hex_do_not_decode() {
        let m = announce();
        let Message::Announce(a) = &m else {
            unreachable!()
        };
        let bytes = m.encode().unwrap();
        for (good, len) in [(a.nonce.to_string(), 64), (a.address.to_string(), 40)] {
            let text = String::from_utf8_lossy(&bytes).replacen(&good, &"z".repeat(len), 1);
            assert!(Message::decode(text.as_bytes()).is_err(), "{good}");
        }
    }

    #[test]
    fn fields_are_checked() {
        let Message::Announce(a) = announce() else {
            unreachable!()
        };
        let cases: Vec<(Announce, &str)> = vec![
            (
                Announce {
                    addrs: vec!["/ip4/1.2.3.4/tcp/1".into(); MAX_ADDRS + 1],
                    ..a.clone()
                },
                "addrs",
            ),
            (
                Announce {
                    peer_id: "has space".into(),
                    ..a.clone()
                },
                "peer_id",
            ),
            (
                Announce {
                    operator: MAX_OPERATORS,
                    ..a.clone()
                },
                "operator",
            ),
        ];
        for (bad, name) in cases {
            let mut b = b"CNVGS\x01\x01".to_vec();
            b.extend_from_slice(&serde_json::to_vec(&bad).unwrap());
            match Message::decode(&b) {
                Err(GossipError::Field { field, .. }) => assert_eq!(field, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn topics_are_per_job_and_kind() {
        assert_eq!(Kind::Update.topic("ab"), "conclave/ab/updates");
        assert_eq!(Kind::Announce.topic("ab"), "conclave/ab/announce");
        assert_eq!(Kind::Heartbeat.topic("ab"), "conclave/ab/heartbeat");
    }
}
