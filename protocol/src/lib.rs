//! # conclave-protocol
//!
//! What the parties of Conclave say to each other, as bytes: the sparse compressed update that
//! trainers exchange every round ([`update`]), and the small packings it is made of ([`pack`]).
//! Every decoder here bounds its sizes before allocating, never panics on input, and names what
//! was wrong. Nothing here depends on tch or tokio: this crate is what a verifier outside the
//! enclave links.
//!
//! Start reading at [`update::SparseUpdate`].

pub mod channel;
pub mod dataset;
pub mod gossip;
pub mod hash;
pub mod model;
pub mod pack;
pub mod receipt;
pub mod statement;
pub mod sync;
pub mod toploc;
pub mod update;

pub use hash::Hash32;
pub use statement::{
    CheckpointManifest, JobAccepted, Signed, Statement, StatementError, StatementKind,
    UpdatePayload, job_domain,
};
pub use update::{
    BlockShape, Codebook, DecodeLimits, IndexEncoding, SparseUpdate, TensorUpdate, Transform,
    UpdateError, UpdateHash, ValueEncoding, Values,
};
