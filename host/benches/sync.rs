//! Benchmark of checkpoint transfer between operators: a 64 MiB weights file fetched by
//! request-response in 1 MiB chunks (`conclave_protocol::sync`), over the swarm of
//! `conclave node` ([`conclave_host::net::build_swarm`]: TCP, noise, yamux) on loopback, the
//! serving side answering with [`conclave_host::net::Offer::answer`] (reads from the file, as a
//! node does), the fetching side issuing one request after another as `sync_from` does.
//!
//! Reference in the same run: the same bytes sent over a plain loopback TCP socket (no
//! encryption, no framing), so the figure is the ratio of our throughput to the machine's.
//! Both are hashed (SHA-256) on arrival, as the joiner checks the manifest's hash.
//!
//! Run: `cargo bench -p conclave-host --bench sync`. Without `--bench` in its arguments (as
//! `cargo test --all-targets` runs it) it returns at once.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use conclave_host::net::{BehaviourEvent, Offer, build_swarm};
use conclave_protocol::channel::{Blob, PeerEvidence};
use conclave_protocol::sync::{MAX_CHUNK, SyncRequest, SyncResponse};
use futures::StreamExt;
use libp2p::request_response::{Event, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, identity};
use sha2::{Digest, Sha256};

const SIZE: usize = 64 << 20;
const RUNS: usize = 3;
const JOB: &str = "5e5e000000000000000000000000000000000000000000000000000000000001";

fn job_id() -> conclave_attestation::JobId {
    conclave_attestation::JobId::from_hex(JOB).expect("job id")
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let weights = dir.path().join("weights.safetensors");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&weights, &bytes).expect("write");
    let want = Sha256::digest(&bytes);

    let mut ours = Vec::new();
    let mut reference = Vec::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    for _ in 0..RUNS {
        reference.push(plain_tcp(&bytes, &want));
        ours.push(rt.block_on(sync(weights.clone(), &want)));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, r) = (med(&mut ours), med(&mut reference));
    let mb = SIZE as f64 / 1e6;
    println!(
        "checkpoint transfer, {} MiB in {} KiB chunks (median of {RUNS}): \
         request-response {:.1} MB/s ({:.2} s), plain loopback TCP {:.1} MB/s ({:.2} s): {:.2}x of the reference",
        SIZE >> 20,
        MAX_CHUNK >> 10,
        mb / o,
        o,
        mb / r,
        r,
        r / o
    );
}

/// The bytes over a plain loopback socket, hashed on arrival; seconds.
fn plain_tcp(bytes: &[u8], want: &[u8]) -> f64 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let data = bytes.to_vec();
    let t = Instant::now();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(&data).expect("send");
    });
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    let mut got = Vec::with_capacity(bytes.len());
    c.read_to_end(&mut got).expect("read");
    assert_eq!(&Sha256::digest(&got)[..], want);
    let s = t.elapsed().as_secs_f64();
    h.join().expect("sender");
    s
}

/// The file fetched chunk by chunk from a serving swarm; seconds.
async fn sync(weights: std::path::PathBuf, want: &[u8]) -> f64 {
    let mut server = build_swarm(identity::Keypair::generate_ed25519(), JOB).expect("swarm");
    let mut client = build_swarm(identity::Keypair::generate_ed25519(), JOB).expect("swarm");
    server
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    let addr: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_id = *server.local_peer_id();
    let offer = Offer {
        round: 1,
        step: 1,
        model_hash: conclave_protocol::Hash32(<[u8; 32]>::try_from(want).expect("32 bytes")),
        weights,
        size: SIZE as u64,
        manifest: Vec::new(),
        signer: PeerEvidence {
            evidence: Blob(Vec::new()),
            nonce: conclave_attestation::Nonce([0; 32]),
        },
    };
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(BehaviourEvent::Sync(Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            })) = server.select_next_some().await
            {
                let resp = Offer::answer(Some(&offer), &job_id(), &request);
                let _ = server.behaviour_mut().sync.send_response(channel, resp);
            }
        }
    });
    client.dial(addr.clone()).expect("dial");
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = client.select_next_some().await {
            break;
        }
    }
    let t = Instant::now();
    let mut got: Vec<u8> = Vec::with_capacity(SIZE);
    while got.len() < SIZE {
        let req = SyncRequest::Chunk {
            job_id: job_id(),
            step: 1,
            offset: got.len() as u64,
            len: MAX_CHUNK,
        };
        client.behaviour_mut().sync.send_request_with_addresses(
            &server_id,
            req,
            vec![addr.clone()],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no chunk in 30 s");
            match client.select_next_some().await {
                SwarmEvent::Behaviour(BehaviourEvent::Sync(Event::Message {
                    message: Message::Response { response, .. },
                    ..
                })) => {
                    match response {
                        SyncResponse::Chunk { bytes, .. } => got.extend_from_slice(&bytes.0),
                        other => panic!("{other:?}"),
                    }
                    break;
                }
                SwarmEvent::Behaviour(BehaviourEvent::Sync(Event::OutboundFailure {
                    error,
                    ..
                })) => panic!("chunk request failed: {error}"),
                _ => {}
            }
        }
    }
    assert_eq!(&Sha256::digest(&got)[..], want);
    t.elapsed().as_secs_f64()
}
