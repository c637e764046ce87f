//! The trainer: a GPT-style model in tch, trained on a real public-domain corpus with AdamW,
//! DeMo or SparseLoCo across R in-process replicas that exchange compressed updates.
//!
//! Start reading at [`run::Trainer::advance`].

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod model;
pub mod run;

pub use config::{Method, TrainConfig};
pub use run::{Summary, Trainer};
