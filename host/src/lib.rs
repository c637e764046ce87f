//! # conclave-host
//!
//! The operator's side of Conclave, outside the VM: the chain client ([`chain`]) that deploys
//! and talks to the `ConclaveTraining` contract, the enclave channel and launcher
//! ([`enclave`]), the local-mode host proxy ([`run`]), and the operator network ([`net`],
//! [`node`]): one operator per process, gossiping over libp2p. The `conclave` binary adds the
//! command line (`run`, `node`, `verify`, `sim-evidence`, `image measure`, `chain`).

pub mod api;
pub mod audit;
pub mod chain;
pub mod demo;
pub mod enclave;
pub mod image_boot;
pub mod image_build;
pub mod net;
pub mod node;
pub mod run;
