//! # conclave-protocol
//!
//! What the parties of Conclave say to each other, as bytes and typed values: the signed
//! statements an enclave makes ([`statement`]: [`StatementKind`], [`Signed<T>`],
//! [`UpdatePayload`], [`JobAccepted`], [`CheckpointManifest`], and the round receipt of
//! [`receipt`]), the one 32-byte hash type ([`Hash32`], hex on the wire), the sparse compressed
//! update that trainers exchange every round ([`update`]) and the small packings it is made of
//! ([`pack`]), TOPLOC proofs ([`toploc`]), the host-enclave channel ([`channel`]), gossip and
//! checkpoint-sync messages ([`gossip`], [`sync`]), dataset shards and Merkle roots
//! ([`dataset`]), the model architecture a manifest names ([`model`]) and the job document
//! every enclave of a job obeys ([`job`]).
//!
//! **Must not**: depend on tch or tokio (this crate is what a verifier outside the enclave
//! links), read clocks, files or sockets, allocate before bounding a size, or panic on input.
//! Every decoder names what was wrong.
//!
//! **Start reading** at [`statement`] (what is signed, and how it is verified), then
//! [`update::SparseUpdate`].

pub mod channel;
pub mod dataset;
pub mod gossip;
pub mod hash;
pub mod job;
pub mod keyrelease;
pub mod model;
pub mod pack;
pub mod receipt;
pub mod seal;
pub mod sealed_data;
pub mod statement;
pub mod sync;
pub mod toploc;
pub mod update;

pub use hash::Hash32;
pub use job::{JobDocument, JobDocumentError, JobTee, Sealing};
pub use statement::{
    AnnounceStatement, CheckpointManifest, JobAccepted, Signed, Statement, StatementError,
    StatementKind, UpdatePayload, job_domain,
};
pub use update::{
    BlockShape, Codebook, DecodeLimits, IndexEncoding, SparseUpdate, TensorUpdate, Transform,
    UpdateError, UpdateHash, ValueEncoding, Values,
};
