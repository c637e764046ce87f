//! The validator's verdicts, as types: every way a message is refused ([`Misbehaved`], in the
//! manner of rustls's `PeerMisbehaved`) or dropped without blame ([`Ignored`]), with the values
//! that say why.

use std::fmt;

use conclave_attestation::{EnclaveAddress, JobId};
use conclave_protocol::Hash32;
use libp2p::PeerId;

/// Every way a message is refused (and counted against the peer that delivered it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehaved {
    /// The bytes are not a message of the topic's kind (size, magic, shape).
    Malformed(String),
    AnnounceForAnotherJob(JobId),
    OperatorOutsideSet {
        operator: u32,
        operators: u32,
    },
    BadPeerId(String),
    AuthoredByAnother {
        peer: PeerId,
        author: Option<PeerId>,
    },
    BadEvidence {
        operator: u32,
        why: String,
    },
    IndexTaken {
        operator: u32,
        by: EnclaveAddress,
    },
    EvidenceTaken {
        operator: u32,
    },
    Appraisal {
        operator: u32,
        why: String,
    },
    EvidenceRejected {
        operator: u32,
        reasons: Vec<String>,
    },
    /// The enclave's signed announce statement names another peer id, operator slot or job
    /// than the announce (someone else's evidence announced as one's own).
    AnnounceNotBound {
        operator: u32,
        why: String,
    },
    BlobWithoutPublisher,
    /// A second, different update by reference from one operator for one round (an operator
    /// publishes exactly one update a round): not fetched.
    SecondUpdate {
        operator: u32,
        round: u64,
        first: Hash32,
        second: Hash32,
    },
    /// An update by reference declared larger than the job's largest update: not fetched.
    OversizeBlob {
        operator: u32,
        size: u64,
        max: u64,
    },
    /// The publisher of an update by reference served bytes other than it declared (an
    /// answer over the request's bound, a chunk out of place, an envelope for another job or
    /// of another size, bytes that hash otherwise). Found while fetching, not on a gossip
    /// message: it weighs on the publisher's application score.
    BadBlob {
        operator: u32,
        round: u64,
        why: String,
    },
    BadEnvelope(String),
    UnattestedSigner(EnclaveAddress),
    BadStatement {
        what: &'static str,
        operator: u32,
        why: String,
    },
    RoundMismatch {
        operator: u32,
        outside: u64,
        inside: u64,
    },
    HeartbeatByAnother {
        operator: u32,
    },
    ReceiptMismatch {
        operator: u32,
        round: u64,
        model: Hash32,
    },
}

impl fmt::Display for Misbehaved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Misbehaved::*;
        match self {
            Malformed(e) => f.write_str(e),
            AnnounceForAnotherJob(j) => write!(f, "announce for another job {j}"),
            OperatorOutsideSet {
                operator,
                operators,
            } => write!(
                f,
                "operator {operator} is outside the active set of {operators}"
            ),
            BadPeerId(p) => write!(f, "announce names an invalid peer id {p}"),
            AuthoredByAnother { peer, author } => write!(
                f,
                "announce of peer {peer} authored by {}",
                author
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "nobody".into())
            ),
            BadEvidence { operator, why } => write!(f, "operator {operator}: evidence: {why}"),
            IndexTaken { operator, by } => write!(
                f,
                "operator {operator} is already announced by enclave 0x{by} at another peer"
            ),
            EvidenceTaken { operator } => {
                write!(f, "this evidence is already operator {operator}'s")
            }
            AnnounceNotBound { operator, why } => {
                write!(
                    f,
                    "operator {operator}: the announce is not its enclave's: {why}"
                )
            }
            Appraisal { operator, why } => write!(f, "operator {operator}: appraisal: {why}"),
            EvidenceRejected { operator, reasons } => write!(
                f,
                "operator {operator}: evidence rejected: {}",
                reasons.join("; ")
            ),
            BlobWithoutPublisher => f.write_str("an update by reference without its publisher"),
            SecondUpdate {
                operator,
                round,
                first,
                second,
            } => write!(
                f,
                "operator {operator} referenced a second update {second} for round {round} \
                 (after {first}); one update per operator and round is fetched"
            ),
            OversizeBlob {
                operator,
                size,
                max,
            } => write!(
                f,
                "operator {operator} referenced an update of {size} bytes, over the job's \
                 largest update of {max}"
            ),
            BadBlob {
                operator,
                round,
                why,
            } => write!(
                f,
                "operator {operator} served its update of round {round} wrong: {why}"
            ),
            BadEnvelope(e) => write!(f, "update envelope: {e}"),
            UnattestedSigner(a) => write!(
                f,
                "update signed by 0x{a}, whose evidence no operator announced (unattested signer)"
            ),
            BadStatement {
                what,
                operator,
                why,
            } => {
                write!(f, "{what} of operator {operator}: {why}")
            }
            RoundMismatch {
                operator,
                outside,
                inside,
            } => write!(
                f,
                "update of operator {operator} says round {outside} outside, {inside} inside"
            ),
            HeartbeatByAnother { operator } => {
                write!(
                    f,
                    "heartbeat of operator {operator} authored by another peer"
                )
            }
            ReceiptMismatch {
                operator,
                round,
                model,
            } => write!(
                f,
                "receipt of operator {operator} is not of round {round} ending on {model}"
            ),
        }
    }
}

/// Every way a message is dropped without blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    DuplicateUpdate,
    DuplicateHeartbeat,
    /// An update for a round already closed.
    Replay {
        operator: u32,
        round: u64,
        current: u64,
    },
    BeyondWindow {
        operator: u32,
        round: u64,
        current: u64,
    },
    BlobOutsideWindow {
        round: u64,
        current: u64,
    },
    BlobFromStranger(PeerId),
    Excluded {
        operator: u32,
        since: u64,
    },
    HeartbeatOfUnknown(u32),
    HeartbeatOutsideWindow {
        operator: u32,
        round: u64,
        current: u64,
    },
}

impl Ignored {
    /// A plain duplicate (not worth a log line).
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Ignored::DuplicateUpdate | Ignored::DuplicateHeartbeat)
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Ignored::*;
        match self {
            DuplicateUpdate => f.write_str("duplicate update"),
            DuplicateHeartbeat => f.write_str("duplicate heartbeat"),
            Replay {
                operator,
                round,
                current,
            } => write!(
                f,
                "replay: operator {operator}'s update for round {round}, the current round is {current}"
            ),
            BeyondWindow {
                operator,
                round,
                current,
            } => write!(
                f,
                "operator {operator}'s update for round {round} is beyond the window (current {current})"
            ),
            BlobOutsideWindow { round, current } => write!(
                f,
                "update by reference for round {round} outside the window (current {current})"
            ),
            BlobFromStranger(p) => {
                write!(f, "update by reference from {p}, not an announced operator")
            }
            Excluded { operator, since } => {
                write!(
                    f,
                    "operator {operator} is excluded (equivocated in round {since})"
                )
            }
            HeartbeatOfUnknown(o) => write!(f, "heartbeat of operator {o}, not announced"),
            HeartbeatOutsideWindow {
                operator,
                round,
                current,
            } => write!(
                f,
                "heartbeat of operator {operator} for round {round} outside the window (current {current})"
            ),
        }
    }
}

/// A validation verdict and its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Ignore(Ignored),
    Reject(Misbehaved),
}
