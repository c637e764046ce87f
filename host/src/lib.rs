//! # conclave-host
//!
//! The operator's side of Conclave, outside the VM, and the user-facing command line
//! (`conclave`). It launches enclaves and talks to them over the channel, relays what they
//! sign, gossips with the other operators, stores the job folder and drives the chain.
//!
//! **Must not**: hold or see an enclave's private key, sign a result itself, or trust anything
//! it relays before checking the enclave's signature against appraised evidence. It does not
//! link libtorch.
//!
//! **Where to start reading**: [`operator`] (one enclave: launch → Hello → appraise → load
//! the job, and [`operator::Operator::verify`] for every signed statement, typed by
//! [`conclave_protocol::statement`]); then [`round`] (the round barrier as a pure state
//! machine) and [`node`] (the driver that performs its actions on the network of [`net`],
//! whose validator [`net::state`] is pure too); [`store`] is the job folder's one layout.
//!
//! Modules:
//! - [`config`]: the TOML configs (`[job]`, `[enclave]`, `[storage]`, `[api]`, `[node]`,
//!   `[chain]`) with `CONCLAVE_<SECTION>__<KEY>` overrides;
//! - [`operator`]: preparing a job (`conclave-enclave spec`), launching and appraising an
//!   operator's enclave, verifying what it signs;
//! - [`store`]: the job folder (paths, typed operator records, atomic writes, bounded reads);
//! - [`run`]: `conclave run`, a local peer set driven by one host;
//! - [`round`]: the round barrier, set selection, catch-up and checkpoint decisions (pure);
//! - [`net`]: the libp2p swarm ([`net::state`]: the gossip validator, pure; [`net::sync`]:
//!   checkpoint and payload transfer);
//! - [`node`]: `conclave node`, one operator on the network, with its on-chain job;
//! - [`chain`]: the `ConclaveTraining` client (alloy) and a local anvil;
//! - [`audit`]: `conclave audit` (fetch, then a pure judge, then replays);
//! - [`api`]: the HTTP API (`conclave serve`); [`demo`]: `conclave demo`;
//! - [`enclave`]: the channel and the launchers (sim process, qemu);
//! - [`image_build`], [`image_boot`]: the guest image.

pub mod api;
pub mod approve;
pub mod audit;
pub mod capture;
pub mod chain;
pub mod config;
pub mod demo;
pub mod enclave;
pub mod image_boot;
pub mod image_build;
pub mod keys;
pub mod net;
pub mod node;
pub mod operator;
pub mod round;
pub mod run;
pub mod store;
