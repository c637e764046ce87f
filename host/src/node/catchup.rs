//! Joining a round under way: fetch a peer's latest checkpoint by request-response, check it
//! against its signed manifest's hash, and have the enclave load it (the enclave verifies the
//! manifest against the signer's evidence). Used when a node starts on a job that already ran
//! rounds (it restarted, or joins late) and when a quorum closed a round without it.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use conclave_protocol::channel::{Blob, Request, Response};
use conclave_protocol::sync::{MAX_CHECKPOINT, MAX_CHUNK, SyncRequest, SyncResponse};
use conclave_protocol::{CheckpointManifest, Hash32, Signed, Statement};
use libp2p::PeerId;
use tokio::time::Instant;
use tracing::{info, warn};

use super::call_enclave;
use crate::net::{Net, State};
use crate::operator::Operator;
use crate::round::sync_source;

/// The latest checkpoint of the first announced peer that has one.
async fn latest_from_peers(net: &mut Net, me: u32) -> Result<Option<(PeerId, SyncResponse)>> {
    let peers: Vec<PeerId> = net
        .state
        .peers
        .values()
        .filter(|p| p.operator != me)
        .map(|p| p.peer_id)
        .collect();
    for peer in peers {
        let req = SyncRequest::Latest {
            job_id: net.state.view.job,
        };
        match net.request(peer, req).await {
            Ok(r @ SyncResponse::Latest { .. }) => return Ok(Some((peer, r))),
            Ok(_) => {}
            Err(e) => warn!("asking {peer} for its checkpoint: {e:#}"),
        }
    }
    Ok(None)
}

/// Joins a job under way: when a peer has a checkpoint (rounds have closed), waits for the
/// next round to close (a heartbeat, or right away when this node did not run before), then
/// fetches that peer's latest checkpoint and loads it. `None`: the job has not started.
pub(super) async fn catch_up(
    net: &mut Net,
    own_slot: &mut Option<Operator>,
    me: u32,
    restarted: bool,
    timeout: Duration,
) -> Result<Option<(u64, Hash32)>> {
    let Some((_, info)) = latest_from_peers(net, me).await? else {
        return Ok(None);
    };
    let SyncResponse::Latest { round, .. } = info else {
        return Ok(None);
    };
    info!(
        "operator {me}: the job is under way (a peer is after round {round}){}",
        if restarted { "; rejoining" } else { "" }
    );
    // Fetch right after a round closes, so that the next round has not got far without us.
    net.state.round = round;
    let deadline = Instant::now() + timeout;
    let closed = |s: &State| s.heartbeats.keys().any(|r| *r >= round);
    if !net.pump_while(deadline, closed).await {
        bail!("no round closed within {} s", timeout.as_secs());
    }
    // From the operator that just closed it: its checkpoint is stored before its heartbeat.
    let peer = sync_source(&net.state.heartbeats, round, u64::MAX, me)
        .and_then(|o| net.state.peers.get(&o).map(|p| p.peer_id))
        .context("no peer to sync from")?;
    sync_from(net, own_slot, peer).await.map(Some)
}

/// Fetches `peer`'s latest checkpoint in chunks, checks the weights against the signed
/// manifest's hash, and has the enclave load it (the enclave verifies the manifest against
/// the signer's evidence). Returns the round the model is after and its hash.
pub(super) async fn sync_from(
    net: &mut Net,
    own_slot: &mut Option<Operator>,
    peer: PeerId,
) -> Result<(u64, Hash32)> {
    let t = Instant::now();
    let job_id = net.state.view.job;
    let info = net.request(peer, SyncRequest::Latest { job_id }).await?;
    let SyncResponse::Latest {
        round,
        step,
        model_hash,
        size,
        manifest,
        signer,
    } = info
    else {
        bail!("{peer} offers no checkpoint: {info:?}");
    };
    if size > MAX_CHECKPOINT {
        bail!("{peer} offers a checkpoint of {size} bytes (at most {MAX_CHECKPOINT})");
    }
    let mut weights = Vec::with_capacity(size as usize);
    while (weights.len() as u64) < size {
        let offset = weights.len() as u64;
        let req = SyncRequest::Chunk {
            job_id,
            step,
            offset,
            len: MAX_CHUNK,
        };
        match net.request(peer, req).await? {
            SyncResponse::Chunk { offset: o, bytes }
                if o == offset && !bytes.0.is_empty() && offset + bytes.0.len() as u64 <= size =>
            {
                weights.extend_from_slice(&bytes.0);
            }
            SyncResponse::Refused { reason } => bail!("{peer} refused a chunk: {reason}"),
            other => bail!("{peer} answered a chunk request with {other:?}"),
        }
    }
    // The file's hash as the signed manifest names it (the sealed weights' for a sealed job;
    // the enclave checks the signature and what is inside).
    let named = Signed::<CheckpointManifest>::decode_envelope(&manifest.0)
        .ok()
        .and_then(|env| CheckpointManifest::from_payload(&env.payload).ok())
        .with_context(|| format!("{peer}'s checkpoint manifest does not decode"))?;
    if named.model_hash != model_hash {
        bail!(
            "{peer}'s checkpoint manifest names model {}, it announced {model_hash}",
            named.model_hash
        );
    }
    let got = Hash32::sha256(&weights);
    if got != named.file_hash() {
        bail!(
            "{peer}'s checkpoint hashes to {got}, its manifest names {}",
            named.file_hash()
        );
    }
    let req = Request::LoadCheckpoint {
        weights: Blob(weights),
        manifest: Some(manifest),
        signer: Some(signer),
    };
    let resp = call_enclave(net, own_slot, req).await?;
    let Response::Checkpoint { manifest, .. } = resp else {
        bail!("loading the checkpoint answered with something else");
    };
    let held = Signed::<CheckpointManifest>::decode_envelope(&manifest.0)
        .ok()
        .and_then(|env| CheckpointManifest::from_payload(&env.payload).ok())
        .context("the enclave's checkpoint manifest does not decode")?;
    if held.model_hash != model_hash {
        bail!("the enclave holds other weights than the checkpoint's");
    }
    let secs = t.elapsed().as_secs_f64();
    info!(
        "synced to round {round} (model {model_hash}) from {peer}: {size} bytes in {secs:.2} s \
         ({:.1} MB/s)",
        size as f64 / secs.max(1e-9) / 1e6
    );
    net.state.round = round;
    Ok((round, model_hash))
}
