//! # conclave-host
//!
//! The operator's side of Conclave, outside the VM: the chain client ([`chain`]) that deploys
//! and talks to the `ConclaveTraining` contract, the enclave channel and launcher
//! ([`enclave`]), and the local-mode host proxy ([`run`]). The `conclave` binary adds the
//! command line (`run`, `verify`, `sim-evidence`, `image measure`, `chain`).

pub mod api;
pub mod chain;
pub mod enclave;
pub mod run;
