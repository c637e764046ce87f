//! # conclave-enclave
//!
//! The program inside a Conclave confidential VM, and the pieces of it that auditors run outside:
//! the DeMo / SparseLoCo [`codec`] (compression with error feedback, aggregation), and safetensors
//! I/O ([`tensors`]). The trainer, the TOPLOC prover and the service loop join here with their
//! issues. This crate opens no network sockets; its only channel is to the host.
//!
//! Start reading at [`codec::Codec::compress`] and [`codec::aggregate`].

pub mod codec;
pub mod prove;
pub mod replay;
pub mod tensors;
pub mod train;
