//! # conclave-enclave
//!
//! The program inside a Conclave confidential VM, and the pieces of it that auditors run outside:
//! the DeMo / SparseLoCo [`codec`] (compression with error feedback, aggregation), safetensors
//! I/O ([`tensors`]), the trainer ([`train`]), the TOPLOC prover ([`prove`]), the auditor's
//! [`replay`] and the [`service`] that answers the host with signed results, each a typed
//! statement of `conclave_protocol::statement` sealed with a key that never leaves the process.
//!
//! **Must not**: open network sockets (its only channel is to the host), write or send its key,
//! sign caller-chosen bytes, or take a result from the host without checking it (peers'
//! updates must verify against evidence that passes the job's policy).
//!
//! **Start reading** at [`service`] (what the host may ask and what is refused, by
//! [`service::Refusal`]), then [`codec::Codec::compress`] and [`codec::aggregate`].

pub mod codec;
pub mod prove;
pub mod replay;
pub mod service;
pub mod tensors;
pub mod train;
