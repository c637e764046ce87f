//! # conclave-enclave
//!
//! The program inside a Conclave confidential VM, and the pieces of it that auditors run outside:
//! the DeMo / SparseLoCo [`codec`] (compression with error feedback, aggregation), safetensors
//! I/O ([`tensors`]), the trainer ([`train`]), the TOPLOC prover ([`prove`]), the auditor's
//! [`replay`] and the [`service`] that answers the host with signed results. This crate opens no network sockets; its only channel is to the host.
//!
//! Start reading at [`codec::Codec::compress`] and [`codec::aggregate`].

pub mod codec;
pub mod prove;
pub mod replay;
pub mod service;
pub mod tensors;
pub mod train;
