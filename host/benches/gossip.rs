//! Benchmark of the operator gossip network: time to gossip a 1 MB message from one publisher
//! to 8 receivers on loopback.
//!
//! Nine swarms in one process (one publisher, eight receivers), each built with
//! [`conclave_host::net::build_swarm`], so transport (TCP with nodelay, noise, yamux),
//! gossipsub configuration (strict signing, manual validation, `max_transmit_size` =
//! `gossip::MAX_MESSAGE` + 64 KiB, i.e. 16 MiB + 64 KiB, 500 ms heartbeat), peer scoring and
//! identify are exactly those of `conclave node`. The swarms listen on 127.0.0.1 and dial each
//! other in a full mesh, as operators do after the announces.
//!
//! What is *not* used is [`conclave_host::net::Net`] and its [`conclave_host::net::State`]
//! validation: accepting an update needs attested enclave evidence, an announce per operator
//! and a signed envelope per message. Instead every receiver reports `Accept` for every message
//! it gets on the job's `updates` topic as soon as it arrives (so it is forwarded at once). The
//! figures are therefore network + gossipsub cost (signing, framing, encryption, forwarding and
//! duplicate suppression), without the enclave signature check of a real update.
//!
//! Each message is 1 MB (1,000,000 bytes) of pseudo-random bytes with an 8-byte sequence
//! number in front. After warm-up messages, `MESSAGES` messages are published one at a time
//! with a pause between; for each, the time from the call to publish until the last of the 8
//! receivers got it is recorded. Printed: p50 and p99 of that time in ms, the same per single
//! receiver, and the throughput to one peer (1 MB / per-receiver latency, median). With 50
//! samples, p99 is the slowest message.
//!
//! Run: `cargo bench -p conclave-host --bench gossip`. Without `--bench` in its arguments
//! (as `cargo test --all-targets` runs it) it returns at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use conclave_host::net::{Behaviour, BehaviourEvent, build_swarm};
use conclave_protocol::gossip::Kind;
use futures::StreamExt;
use futures::channel::mpsc;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, identity};

const RECEIVERS: usize = 8;
const MESSAGE_BYTES: usize = 1_000_000;
const WARMUP: u64 = 3;
const MESSAGES: u64 = 50;
const PAUSE: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

/// Pseudo-random message body (splitmix64) with the sequence number in front.
fn message(seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(MESSAGE_BYTES);
    out.extend_from_slice(&seq.to_le_bytes());
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC0FF_EE00_D15E_A5E5;
    while out.len() < MESSAGE_BYTES {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let n = (MESSAGE_BYTES - out.len()).min(8);
        out.extend_from_slice(&z.to_le_bytes()[..n]);
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Polls `swarm` until it reports a listen address.
async fn listen(swarm: &mut Swarm<Behaviour>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .expect("listen_on");
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            return address;
        }
    }
}

/// Drives a swarm: accepts every message on the topic (reporting `(receiver, seq, arrival)`),
/// counts peers subscribed to the topic, and publishes what comes on `publish`.
async fn drive(
    index: usize,
    mut swarm: Swarm<Behaviour>,
    topic: IdentTopic,
    ready: Arc<AtomicUsize>,
    got: mpsc::UnboundedSender<(usize, u64, Instant)>,
    mut publish: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let hash = topic.hash();
    let mut subscribed = 0usize;
    loop {
        tokio::select! {
            Some(data) = publish.next() => {
                swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic.clone(), data)
                    .expect("publish");
            }
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                })) => {
                    let now = Instant::now();
                    swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Accept,
                        );
                    if message.topic == hash && message.data.len() == MESSAGE_BYTES {
                        let mut s = [0u8; 8];
                        s.copy_from_slice(&message.data[..8]);
                        let _ = got.unbounded_send((index, u64::from_le_bytes(s), now));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                    topic: t,
                    ..
                })) if t == hash => {
                    subscribed += 1;
                    if subscribed == RECEIVERS {
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                }
                _ => {}
            }
        }
    }
}

async fn run() {
    let job_hex = "42".repeat(32);
    let topic = IdentTopic::new(Kind::Update.topic(&job_hex));

    // Build, listen, and dial a full mesh (node i dials every j < i).
    let mut swarms = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..=RECEIVERS {
        let mut s = build_swarm(identity::Keypair::generate_ed25519(), &job_hex).expect("swarm");
        addrs.push(listen(&mut s).await);
        swarms.push(s);
    }
    for (i, s) in swarms.iter_mut().enumerate() {
        for a in &addrs[..i] {
            s.dial(a.clone()).expect("dial");
        }
    }

    let ready = Arc::new(AtomicUsize::new(0));
    let (got_tx, mut got_rx) = mpsc::unbounded();
    let mut publisher = None;
    for (i, s) in swarms.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded();
        if i == 0 {
            publisher = Some(tx);
        }
        tokio::spawn(drive(
            i,
            s,
            topic.clone(),
            ready.clone(),
            got_tx.clone(),
            rx,
        ));
    }
    let publisher = publisher.unwrap();

    let t = Instant::now();
    while ready.load(Ordering::SeqCst) < RECEIVERS + 1 {
        assert!(t.elapsed() < TIMEOUT, "swarms not connected and subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{} swarms connected (full mesh) and subscribed in {:.2} s",
        RECEIVERS + 1,
        t.elapsed().as_secs_f64()
    );
    // A few heartbeats so that the meshes are grafted.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut all = Vec::new(); // per message: time until the last receiver got it (ms)
    let mut each = Vec::new(); // per message and receiver (ms)
    let mut total = Duration::ZERO;
    for seq in 0..WARMUP + MESSAGES {
        let data = message(seq);
        let start = Instant::now();
        publisher.unbounded_send(data).expect("publisher alive");
        let mut seen = [false; RECEIVERS + 1];
        let mut last = start;
        let mut lat = Vec::new();
        while lat.len() < RECEIVERS {
            let (i, s, at) = tokio::time::timeout(TIMEOUT, got_rx.next())
                .await
                .unwrap_or_else(|_| panic!("message {seq}: only {} receivers", lat.len()))
                .expect("receivers alive");
            if s != seq || i == 0 || seen[i] {
                continue;
            }
            seen[i] = true;
            lat.push(at.duration_since(start).as_secs_f64() * 1e3);
            last = last.max(at);
        }
        if seq >= WARMUP {
            total += last.duration_since(start);
            all.push(last.duration_since(start).as_secs_f64() * 1e3);
            each.extend(lat);
        }
        tokio::time::sleep(PAUSE).await;
    }
    all.sort_by(f64::total_cmp);
    each.sort_by(f64::total_cmp);

    let mb = MESSAGE_BYTES as f64 / 1e6;
    let p50_each = percentile(&each, 50.0);
    println!(
        "gossip: {MESSAGES} messages of {MESSAGE_BYTES} bytes, 1 publisher -> {RECEIVERS} \
         receivers, full mesh on 127.0.0.1/TCP ({WARMUP} warm-up messages not counted)"
    );
    println!(
        "  all {RECEIVERS} received: p50 {:.2} ms  p99 {:.2} ms  (min {:.2}, max {:.2}, mean {:.2})",
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all[0],
        all[all.len() - 1],
        total.as_secs_f64() * 1e3 / MESSAGES as f64
    );
    println!(
        "  per receiver:   p50 {:.2} ms  p99 {:.2} ms",
        p50_each,
        percentile(&each, 99.0)
    );
    println!(
        "  throughput to one peer: {:.1} MB/s (1 MB / per-receiver p50); fan-out to all \
         {RECEIVERS}: {:.1} MB/s delivered (8 MB / all-received p50)",
        mb / (p50_each / 1e3),
        mb * RECEIVERS as f64 / (percentile(&all, 50.0) / 1e3)
    );
}
