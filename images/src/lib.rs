//! # conclave-images
//!
//! The expected measurements of a Conclave guest image, which customers pin in their
//! appraisal policy:
//!
//! - SEV-SNP: the launch digest (the report's MEASUREMENT) from the OVMF firmware, the kernel,
//!   initrd and command line, the vCPU count and model, the guest features and the VMM
//!   ([`snp::SnpLaunch::launch_digest`]); or from dstack's `launch_inputs.json`
//!   ([`snp::inputs::from_dstack_json`]).
//! - TDX: RTMR0..3 replayed from the CCEL boot event log ([`tdx::ccel::replay`]) and compared
//!   with a quote ([`tdx::compare_with_quote`]).
//! - Either as a policy fragment that `conclave verify --policy` reads ([`policy`]).
//!
//! Everything here is a pure function of bytes: callers read the files (the `conclave image
//! measure` command does, streaming kernels and initrds through [`snp::hashes::ComponentDigest`]).
//! Sizes are bounded and malformed input is a [`MeasureError`] naming what was wrong, never a
//! panic. The algorithms follow sev-snp-measure 0.0.13 (PyPI, virtee), which the tests run as
//! an oracle; where the `sev` crate's port differs, the module says so.
//!
//! [`guest`] holds the pure parts of building the guest image (initramfs archives, dm-verity
//! trees, module metadata, the command line and manifest); `conclave image build` drives them.
//!
//! **Must not**: read files, clocks or the network in its measurement code, or trust a size it
//! has not bounded. **Start reading** at [`snp::SnpLaunch::launch_digest`], then [`guest`].
//!
//! ```no_run
//! # fn f(launch_inputs_json: &[u8]) -> Result<(), conclave_images::MeasureError> {
//! let launch = conclave_images::snp::inputs::from_dstack_json(launch_inputs_json)?;
//! let measurement = launch.launch_digest()?;
//! print!("{}", conclave_images::policy::snp_fragment(&measurement, &[]));
//! # Ok(()) }
//! ```

mod error;
pub mod guest;
pub mod policy;
pub mod snp;
pub mod tdx;

pub use error::MeasureError;
