//! Checkpoints: the weights as canonical f32 safetensors (tensors sorted by name, no metadata,
//! so the bytes are a function of the weights) and a JSON manifest naming the model hash
//! (SHA-256 of those bytes), the step, the config hash and the dataset root. Both are written
//! atomically.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use conclave_protocol::Hash32;
use tch::Tensor;

use super::model::{set_from, to_vec};
use crate::tensors::{self, NamedTensor, write_atomic};

/// The JSON beside a checkpoint's weights (also the payload of its signed manifest).
pub use conclave_protocol::CheckpointManifest;

/// The model's weights as named f32 tensors, sorted by name.
pub fn named(params: &[(String, Tensor)]) -> Vec<NamedTensor> {
    params
        .iter()
        .map(|(n, t)| NamedTensor {
            name: n.clone(),
            shape: t.size().iter().map(|&d| d as usize).collect(),
            data: to_vec(t),
        })
        .collect()
}

/// The canonical safetensors bytes of the weights.
pub fn weights_bytes(params: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut n = named(params);
    n.sort_by(|a, b| a.name.cmp(&b.name));
    tensors::to_safetensors(&n)
}

/// The model hash: SHA-256 of [`weights_bytes`].
pub fn model_hash(params: &[(String, Tensor)]) -> Result<Hash32> {
    Ok(Hash32::sha256(&weights_bytes(params)?))
}

/// Writes `dir/step-NNNNNN.safetensors` and its `.json` manifest; returns the manifest path.
pub fn save(
    dir: &Path,
    params: &[(String, Tensor)],
    mut manifest: CheckpointManifest,
) -> Result<(PathBuf, CheckpointManifest)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the checkpoint folder {}", dir.display()))?;
    let bytes = weights_bytes(params)?;
    let stem = format!("step-{:06}", manifest.step);
    let weights = dir.join(format!("{stem}.safetensors"));
    write_atomic(&weights, &bytes)?;
    manifest.model_hash = Hash32::sha256(&bytes);
    manifest.weights = format!("{stem}.safetensors");
    let mpath = dir.join(format!("{stem}.json"));
    write_atomic(&mpath, &serde_json::to_vec_pretty(&manifest)?)?;
    Ok((mpath, manifest))
}

/// Loads weights into the model's variables (names and shapes must match exactly); returns the
/// file's model hash.
pub fn load_into(path: &Path, params: &[(String, Tensor)]) -> Result<Hash32> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading weights {}", path.display()))?;
    load_bytes_into(&bytes, params).with_context(|| format!("loading {}", path.display()))
}

/// [`load_into`] from safetensors bytes. Nothing is changed unless every tensor matches.
pub fn load_bytes_into(bytes: &[u8], params: &[(String, Tensor)]) -> Result<Hash32> {
    let loaded = tensors::from_safetensors(bytes).context("reading weights")?;
    if loaded.len() != params.len() {
        bail!("{} tensors, the model has {}", loaded.len(), params.len());
    }
    for ((name, t), l) in params.iter().zip(&loaded) {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        if &l.name != name || l.shape != shape {
            bail!(
                "tensor {:?} {:?} where the model has {:?} {:?}",
                l.name,
                l.shape,
                name,
                shape
            );
        }
    }
    for ((_, t), l) in params.iter().zip(&loaded) {
        set_from(t, &l.data);
    }
    Ok(Hash32::sha256(bytes))
}

/// Reads a manifest and checks that its weights file hashes to its model hash.
pub fn read_manifest(path: &Path) -> Result<(CheckpointManifest, PathBuf)> {
    let m: CheckpointManifest = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a checkpoint manifest", path.display()))?;
    if m.weights.contains('/') || m.weights.contains("..") {
        bail!(
            "{}: weights must be a file beside the manifest",
            path.display()
        );
    }
    let w = path.parent().unwrap_or(Path::new(".")).join(&m.weights);
    let bytes = std::fs::read(&w).with_context(|| format!("reading {}", w.display()))?;
    let h = Hash32::sha256(&bytes);
    if h != m.model_hash {
        bail!(
            "{}: weights hash {h}, the manifest says {}",
            w.display(),
            m.model_hash
        );
    }
    Ok((m, w))
}
