//! # conclave-host
//!
//! The operator's side of Conclave, outside the VM. Today: the chain client ([`chain`]) that
//! deploys and talks to the `ConclaveTraining` contract. The `conclave` binary adds the
//! command line (`verify`, `sim-evidence`, `image measure`, `chain`).

pub mod chain;
