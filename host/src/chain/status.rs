//! The contract's job and operator statuses, typed (`IConclaveTraining.JobStatus`,
//! `OperatorStatus`), so that no code compares their numbers.

/// A job's status on chain (`IConclaveTraining.JobStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// No such job.
    None,
    /// Created; operators join and register; the customer may cancel.
    Open,
    /// Started; checkpoints are accepted until the deadline.
    Running,
    /// The final round's checkpoint is accepted.
    Completed,
    /// Cancelled before start; the escrow went back to the customer.
    Cancelled,
    /// A value this client does not know (a newer contract).
    Unknown(u8),
}

impl From<u8> for JobStatus {
    fn from(v: u8) -> Self {
        match v {
            0 => JobStatus::None,
            1 => JobStatus::Open,
            2 => JobStatus::Running,
            3 => JobStatus::Completed,
            4 => JobStatus::Cancelled,
            x => JobStatus::Unknown(x),
        }
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobStatus::None => f.write_str("none"),
            JobStatus::Open => f.write_str("open"),
            JobStatus::Running => f.write_str("running"),
            JobStatus::Completed => f.write_str("completed"),
            JobStatus::Cancelled => f.write_str("cancelled"),
            JobStatus::Unknown(x) => write!(f, "unknown ({x})"),
        }
    }
}

/// An operator's status in a job on chain (`IConclaveTraining.OperatorStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorStatus {
    /// Not in the job.
    None,
    /// Stake deposited; active once its enclave key is registered.
    Joined,
    /// Unbonding; still slashable.
    Leaving,
    /// Stake returned; payment (if any) once the job settles.
    Exited,
    /// Stake taken; never paid.
    Slashed,
    /// A value this client does not know.
    Unknown(u8),
}

impl From<u8> for OperatorStatus {
    fn from(v: u8) -> Self {
        match v {
            0 => OperatorStatus::None,
            1 => OperatorStatus::Joined,
            2 => OperatorStatus::Leaving,
            3 => OperatorStatus::Exited,
            4 => OperatorStatus::Slashed,
            x => OperatorStatus::Unknown(x),
        }
    }
}

impl std::fmt::Display for OperatorStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OperatorStatus::None => f.write_str("none"),
            OperatorStatus::Joined => f.write_str("joined"),
            OperatorStatus::Leaving => f.write_str("leaving"),
            OperatorStatus::Exited => f.write_str("exited"),
            OperatorStatus::Slashed => f.write_str("slashed"),
            OperatorStatus::Unknown(x) => write!(f, "unknown ({x})"),
        }
    }
}
