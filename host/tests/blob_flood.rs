//! A peer that floods updates by reference: an announced operator gossips 1,000 distinct
//! references (and some oversize ones, and some for rounds beyond the window) over real
//! libp2p on loopback, and serves its two fetched ones wrong (an answer four times what the
//! request asked for; an envelope whose head passes but whose bytes hash otherwise). The
//! node fetches exactly one reference per round of the window, refuses the rest as
//! misbehaviour, cuts both bad fetches off, and its peak memory grows by less than
//! 64 MiB + the job's largest update. No enclave: the node is a [`Net`] driven directly, the
//! attacker a raw swarm with sim evidence.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use conclave_attestation::sim::default_sim_measurement;
use conclave_attestation::{
    BindingContext, EnclaveKey, JobId, Nonce, Policy, SimAttester, SimConfig,
};
use conclave_host::net::{BehaviourEvent, JobView, Net, State, build_swarm};
use conclave_protocol::channel::Blob;
use conclave_protocol::gossip::{Announce, BlobRef, Kind, MAX_BLOB, Message, Update};
use conclave_protocol::sync::{SyncRequest, SyncResponse};
use conclave_protocol::{AnnounceStatement, Hash32, Signed, job_domain};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity;
use libp2p::request_response;
use libp2p::swarm::SwarmEvent;
use tokio::time::Instant;

/// The job's largest update, as the node is configured.
const MAX_UPDATE: u64 = 8 << 20;
/// What the attacker's references declare.
const SIZE: u64 = 6 << 20;
/// Distinct references in the flood.
const FLOOD: u64 = 1000;

/// Peak resident memory of this process (kB).
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn hash_of(seed: u64) -> Hash32 {
    let mut h = [0x77u8; 32];
    h[..8].copy_from_slice(&seed.to_le_bytes());
    Hash32(h)
}

fn reference(round: u64, sha256: Hash32, size: u64) -> Vec<u8> {
    Message::Update(Update {
        round,
        envelope: Blob(Vec::new()),
        blob: Some(BlobRef { sha256, size }),
    })
    .encode()
    .unwrap()
}

/// `len` bytes from `offset` of an envelope of `SIZE` bytes whose head is right (magic, the
/// job's domain, kind `update`, the payload length) and whose body is noise.
fn bad_envelope(domain: &str, offset: u64, len: u32) -> Vec<u8> {
    let mut head = b"CNVENV01".to_vec();
    for tag in [domain, "update"] {
        head.extend_from_slice(&(tag.len() as u16).to_le_bytes());
        head.extend_from_slice(tag.as_bytes());
    }
    let payload = SIZE - head.len() as u64 - 4 - (20 + 32 + 65);
    head.extend_from_slice(&(payload as u32).to_le_bytes());
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ offset;
    (offset..offset + len as u64)
        .map(|i| match head.get(i as usize) {
            Some(b) => *b,
            None => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        })
        .collect()
}

#[derive(Default)]
struct Seen {
    peers: AtomicU64,
    rejected: AtomicU64,
    ignored: AtomicU64,
    blamed: AtomicU64,
    stop: AtomicBool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_references_is_cut_off_at_one_fetch_per_round() {
    let started = std::time::Instant::now();
    let job = JobId([0x5a; 32]);
    let job_hex = job.to_string();
    let domain = job_domain(&job, &Hash32::ZERO);
    let mut policy = Policy {
        allow_sim: true,
        ..Policy::default()
    };
    policy.measurements = vec![default_sim_measurement()];
    let view = JobView {
        job,
        domain: domain.clone(),
        policy,
        operators: 2,
    };
    let dir = tempfile::tempdir().unwrap();

    // The node under attack.
    let mut node = Net::new(
        identity::Keypair::generate_ed25519(),
        State::new(view).with_max_update_bytes(MAX_UPDATE),
        dir.path().join("equivocations"),
    )
    .unwrap();
    node.listen("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    let node_addr = node.listen_addrs[0].clone();
    let seen = Arc::new(Seen::default());
    let watch = seen.clone();
    let node_task = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        node.pump_while(deadline, move |s| {
            watch.peers.store(s.peers.len() as u64, Ordering::Relaxed);
            watch.rejected.store(s.rejected, Ordering::Relaxed);
            watch.ignored.store(s.ignored, Ordering::Relaxed);
            let blamed = s.blame.values().sum();
            watch.blamed.store(blamed, Ordering::Relaxed);
            watch.stop.load(Ordering::Relaxed)
        })
        .await;
        node
    });

    // The attacker: operator 1, with valid sim evidence.
    let keypair = identity::Keypair::generate_ed25519();
    let me = keypair.public().to_peer_id();
    let mut swarm = build_swarm(keypair, &job_hex).unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    swarm.dial(node_addr).unwrap();
    let att = SimAttester::new(SimConfig::default()).unwrap();
    let key = EnclaveKey::generate();
    let nonce = Nonce([1; 32]);
    let evidence = att.evidence(&key.report_data(&BindingContext { job_id: job, nonce }));
    let topic = |k: Kind| IdentTopic::new(k.topic(&job_hex));

    // The flood: the first reference of round 0 (served oversize) and of round 1 (served as
    // noise under a right head), then oversize references, references beyond the window, and
    // 1,000 more distinct references for rounds 0 and 1.
    let (first0, first1) = (hash_of(0), hash_of(1));
    let mut flood = vec![reference(0, first0, SIZE), reference(1, first1, SIZE)];
    for i in 0..10 {
        flood.push(reference(0, hash_of(10_000 + i), MAX_BLOB));
        flood.push(reference(0, hash_of(20_000 + i), MAX_UPDATE + 1));
        flood.push(reference(5 + i, hash_of(30_000 + i), SIZE));
    }
    for i in 0..FLOOD {
        flood.push(reference(i % 2, hash_of(100 + i), SIZE));
    }
    let total = flood.len();
    let mut flood = flood.into_iter();

    let mut listen: Vec<String> = Vec::new();
    let mut subscribed = BTreeSet::new();
    let mut published = 0usize;
    let mut publish_errors = 0usize;
    let mut requested: Vec<(Hash32, u64, u32)> = Vec::new();
    let mut hwm_before = None;
    let mut quiet_since: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(50);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        assert!(
            Instant::now() < deadline,
            "stalled: peers {}, published {published}/{total}, requested {}, blamed {}",
            seen.peers.load(Ordering::Relaxed),
            requested.len(),
            seen.blamed.load(Ordering::Relaxed)
        );
        tokio::select! {
            _ = tick.tick() => {
                let announced = seen.peers.load(Ordering::Relaxed) == 1;
                if !announced && !listen.is_empty() && subscribed.len() >= 3 {
                    let a = Message::Announce(Announce {
                        job_id: job,
                        operator: 1,
                        address: key.address(),
                        evidence: Blob(evidence.encode()),
                        nonce,
                        peer_id: me.to_string(),
                        addrs: listen.clone(),
                        statement: Blob(
                            Signed::seal(
                                &key,
                                &domain,
                                AnnounceStatement {
                                    job_id: job,
                                    operator: 1,
                                    peer_id: me.to_string(),
                                    account: None,
                                },
                                evidence.hash(),
                            )
                            .unwrap()
                            .bytes,
                        ),
                    });
                    let _ = swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic(Kind::Announce), a.encode().unwrap());
                }
                if announced {
                    if hwm_before.is_none() {
                        hwm_before = Some(vm_hwm_kib());
                    }
                    // In batches, so that the send queue drains between them.
                    for m in flood.by_ref().take(100) {
                        match swarm.behaviour_mut().gossipsub.publish(topic(Kind::Update), m) {
                            Ok(_) => published += 1,
                            Err(_) => publish_errors += 1,
                        }
                    }
                }
                let done = published + publish_errors == total
                    && seen.blamed.load(Ordering::Relaxed) >= 2;
                match quiet_since {
                    None if done => quiet_since = Some(Instant::now()),
                    // A while longer, to see that nothing else is fetched.
                    Some(t) if t.elapsed() > Duration::from_secs(2) => break,
                    _ => {}
                }
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => listen.push(address.to_string()),
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                    topic: t,
                    ..
                })) => {
                    subscribed.insert(t);
                }
                SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                    message: request_response::Message::Request { request, channel, .. },
                    ..
                })) => {
                    let resp = match request {
                        SyncRequest::Blob { sha256, offset, len, .. } => {
                            requested.push((sha256, offset, len));
                            let bytes = if sha256 == first0 {
                                // Four times what was asked for.
                                vec![0x55; 4 * len as usize]
                            } else {
                                bad_envelope(&domain, offset, len)
                            };
                            SyncResponse::Chunk { offset, bytes: Blob(bytes) }
                        }
                        _ => SyncResponse::NoCheckpoint,
                    };
                    let _ = swarm.behaviour_mut().sync.send_response(channel, resp);
                }
                _ => {}
            }
        }
    }
    // Stop the node: the flag, then a disconnection so that it looks at the flag.
    seen.stop.store(true, Ordering::Relaxed);
    drop(swarm);
    let node = node_task.await.unwrap();
    let hwm_after = vm_hwm_kib();
    let hwm_before = hwm_before.unwrap();

    let fetched: BTreeSet<Hash32> = requested.iter().map(|(h, _, _)| *h).collect();
    let st = &node.fetch_stats;
    let s = &node.state;
    let growth_mib = (hwm_after.saturating_sub(hwm_before)) as f64 / 1024.0;
    let bound_mib = 64.0 + (MAX_UPDATE >> 20) as f64;
    eprintln!(
        "flood of {total} references ({published} published) in {:.1} s: fetched {:?}, \
         {} chunk requests, fetch stats {st:?}; verdicts: {} rejected, {} ignored; blame {:?}; \
         attacker's peer score {:?}; wanted {} (bound {}); peak RSS {:.1} MiB before, {:.1} \
         MiB after: growth {growth_mib:.1} MiB (bound {bound_mib} MiB)",
        started.elapsed().as_secs_f64(),
        fetched,
        requested.len(),
        s.rejected,
        s.ignored,
        s.blame,
        node.swarm.behaviour().gossipsub.peer_score(&me),
        s.wanted_len(),
        s.wanted_bound(),
        hwm_before as f64 / 1024.0,
        hwm_after as f64 / 1024.0,
    );

    // Only the first reference of each round of the window was fetched.
    assert_eq!(fetched, BTreeSet::from([first0, first1]));
    assert_eq!(st.started, 2);
    assert_eq!(st.completed, 0);
    // The oversize answer was cut off at its first chunk; the noise at its end (its head
    // passed), having held no more than the declared size.
    assert_eq!(st.refused, 2);
    assert_eq!(s.blame.get(&1), Some(&2));
    assert!(
        requested.iter().filter(|(h, _, _)| *h == first0).count() == 1,
        "{requested:?}"
    );
    let chunks1: Vec<_> = requested.iter().filter(|(h, _, _)| *h == first1).collect();
    assert_eq!(chunks1.len() as u64, SIZE.div_ceil(1 << 20), "{chunks1:?}");
    assert!(st.peak_bytes_in_flight <= SIZE, "{st:?}");
    assert_eq!(st.bytes_in_flight, 0);
    // Everything else was refused or ignored without a fetch (until gossipsub's scoring cut
    // the peer off altogether), and what is wanted stays within its bound.
    assert!(
        s.rejected >= 1 && s.rejected + s.ignored <= total as u64,
        "{} {}",
        s.rejected,
        s.ignored
    );
    assert!(s.wanted_len() <= s.wanted_bound() && s.wanted_bound() == 2);
    assert!(
        growth_mib < bound_mib,
        "peak memory grew by {growth_mib:.1} MiB (bound {bound_mib} MiB)"
    );
}
