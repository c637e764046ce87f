//! Enclave-to-enclave key release over the operator network, for sealed jobs: a node whose
//! enclave holds the job's secret answers key requests (a challenge from its enclave, then the
//! secret wrapped by its enclave to the requester's attested key); a node whose enclave has no
//! key yet asks the peers it can reach. The host on either side only relays: the requester's
//! enclave binds its key and the giver's challenge in its evidence, the giver's enclave
//! appraises it under the job's policy ([`crate::operator::key_from_peer`] is the same exchange
//! within one host).

use std::time::Duration;

use anyhow::{Result, bail};
use conclave_protocol::channel::{Blob, Request, Response};
use conclave_protocol::sync::{SyncRequest, SyncResponse};
use libp2p::{Multiaddr, identity};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::net::{JobView, Net, State};
use crate::operator::{Operator, PreparedJob, key_release, key_request, sealing_id};

/// Puts the queued key requests to our enclave and answers them.
pub(super) fn serve_key_requests(net: &mut Net, own: &mut Operator) {
    for (peer, req, channel) in net.take_key_requests() {
        let resp = match req {
            SyncRequest::KeyChallenge { .. } => match own.channel.call(&Request::KeyChallenge) {
                Ok(Response::Challenge { nonce, .. }) => SyncResponse::KeyChallenge { nonce },
                Ok(other) => SyncResponse::Refused {
                    reason: format!("the enclave answered {other:?}"),
                },
                Err(e) => SyncResponse::Refused {
                    reason: format!("{e:#}"),
                },
            },
            SyncRequest::KeyRelease { request, .. } => {
                match own.channel.call(&Request::ReleaseKey { request }) {
                    Ok(Response::Wrapped { wrapped }) => {
                        info!(%peer, "our enclave released the job's key to a peer enclave");
                        SyncResponse::KeyReleased { wrapped }
                    }
                    Ok(other) => SyncResponse::Refused {
                        reason: format!("the enclave answered {other:?}"),
                    },
                    Err(e) => {
                        warn!(%peer, "our enclave refused a key request: {e:#}");
                        SyncResponse::Refused {
                            reason: format!("{e:#}"),
                        }
                    }
                }
            }
            _ => SyncResponse::Refused {
                reason: "not a key request".into(),
            },
        };
        net.respond(channel, resp);
    }
}

/// Gets the sealed job's key for `op`'s enclave from a peer enclave reached through
/// `bootstrap`, on a network connection of its own (before the enclave has loaded the job, the
/// node has nothing to announce). Tries every connected peer until one's enclave releases the
/// key or `timeout` passes.
pub(super) async fn key_from_network(
    job: &PreparedJob,
    op: &mut Operator,
    bootstrap: &[Multiaddr],
    evidence_dir: std::path::PathBuf,
    timeout: Duration,
) -> Result<()> {
    let id = sealing_id(job)?;
    let view = JobView {
        job: job.job,
        domain: job.domain.clone(),
        policy: job.policy.clone(),
        operators: job.operators,
    };
    let mut net = Net::new(
        identity::Keypair::generate_ed25519(),
        State::new(view),
        evidence_dir,
    )?;
    if bootstrap.is_empty() {
        bail!(
            "operator {}: the job is sealed, no key broker is set and no bootstrap peer to ask \
             for the key ([job] key_broker, or [node] bootstrap)",
            op.index
        );
    }
    let deadline = Instant::now() + timeout;
    loop {
        if net.swarm.connected_peers().next().is_none() {
            for a in bootstrap {
                net.dial(a.clone());
            }
        }
        net.pump_while(Instant::now() + Duration::from_millis(500), |_| false)
            .await;
        let peers: Vec<_> = net.swarm.connected_peers().copied().collect();
        for peer in peers {
            let nonce = match net
                .request(peer, SyncRequest::KeyChallenge { job_id: job.job })
                .await
            {
                Ok(SyncResponse::KeyChallenge { nonce }) => nonce,
                Ok(other) => {
                    debug!(%peer, "no key challenge: {other:?}");
                    continue;
                }
                Err(e) => {
                    debug!(%peer, "no key challenge: {e:#}");
                    continue;
                }
            };
            let request = key_request(op, id, nonce)?;
            match net
                .request(
                    peer,
                    SyncRequest::KeyRelease {
                        job_id: job.job,
                        request: Blob(request),
                    },
                )
                .await
            {
                Ok(SyncResponse::KeyReleased { wrapped }) => {
                    key_release(op, wrapped.0)?;
                    info!(
                        operator = op.index,
                        %peer,
                        "the enclave holds the job's key (released by a peer enclave over the network)"
                    );
                    return Ok(());
                }
                Ok(other) => warn!(%peer, "the peer did not release the key: {other:?}"),
                Err(e) => warn!(%peer, "the key request failed: {e:#}"),
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "operator {}: no peer enclave released the job's key within {} s",
                op.index,
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
