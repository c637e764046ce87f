//! `conclave node`: operators in separate processes, each with its own sim enclave, train a
//! tiny job over the libp2p operator network and agree on the model every round. A rogue peer
//! (garbage, an oversized message, an update signed by an unattested key, an equivocation, a
//! replay of an earlier round) is rejected or ignored with logged reasons, and the honest
//! operators still agree.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use conclave_attestation::{
    BindingContext, EnclaveKey, Envelope, JobId, Nonce, SimAttester, SimConfig,
};
use conclave_host::net::build_swarm;
use conclave_protocol::channel::Blob;
use conclave_protocol::gossip::{Announce, Kind, Message, Update};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, identity};

use common::{enclave_program, root};

const JOB: &str = "7e57000000000000000000000000000000000000000000000000000000000001";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    child: Child,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout.txt")).unwrap_or_default()
    }
    /// Its standard error, and that of a restart.
    fn stderr(&self) -> String {
        let first = std::fs::read_to_string(self.dir.join("stderr.txt")).unwrap_or_default();
        match std::fs::read_to_string(self.dir.join("stderr-2.txt")) {
            Ok(again) => format!("{first}\n--- restarted:\n{again}"),
            Err(_) => first,
        }
    }
    /// The model hash printed for each round.
    fn hashes(&self) -> Vec<String> {
        self.stdout()
            .lines()
            .filter(|l| l.starts_with("round "))
            .filter_map(|l| l.split("model ").nth(1))
            .filter_map(|s| s.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }
}

/// Writes the job and starts `honest` nodes of a job of `operators`; returns them and the
/// first node's address.
fn start_nodes(
    d: &Path,
    honest: u32,
    operators: u32,
    rounds: u64,
    node_extra: &str,
) -> (Vec<Node>, Multiaddr) {
    std::fs::write(
        d.join("job.toml"),
        format!(
            "seed = 3\nreplicas = {operators}\ndevice = \"cpu\"\nthreads = 1\n\
             [model]\nlayers = 1\nheads = 2\nwidth = 32\ncontext = 32\n\
             [data]\nvocab = 400\nshards = 4\nsteps_per_epoch = 4\n\
             [train]\nsteps = 8\nbatch = 2\nwarmup = 1\neval_batches = 1\n\
             [optimizer]\nkind = \"sparseloco\"\ninner_steps = 2\ntopk = 32\n"
        ),
    )
    .unwrap();
    let corpus = root().join(".data/moby-dick/package");
    let quic = node_extra.contains("# quic");
    let ports: Vec<u16> = (0..honest)
        .map(|_| if quic { free_udp_port() } else { free_port() })
        .collect();
    let addr = |i: usize| {
        if quic {
            format!("/ip4/127.0.0.1/udp/{}/quic-v1", ports[i])
        } else {
            format!("/ip4/127.0.0.1/tcp/{}", ports[i])
        }
    };
    let mut nodes = Vec::new();
    for i in 0..honest as usize {
        let dir = d.join(format!("node-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let bootstrap = if i == 0 {
            String::new()
        } else {
            format!("{:?}", addr(0))
        };
        std::fs::write(
            dir.join("node.toml"),
            format!(
                "[job]\nconfig = \"../job.toml\"\noperators = {operators}\nrounds = {rounds}\n\
                 id = \"{JOB}\"\n\
                 [enclave]\nkind = \"sim\"\nprogram = {:?}\ncorpus = {:?}\ncache = {:?}\nthreads = 1\n\
                 [storage]\ndir = {:?}\n\
                 [node]\nindex = {i}\nlisten = {:?}\nbootstrap = [{bootstrap}]\n{node_extra}",
                enclave_program(),
                corpus,
                d.join("cache"),
                dir.join("store"),
                addr(i),
            ),
        )
        .unwrap();
        let child = spawn_node(&dir, "");
        nodes.push(Node { child, dir });
    }
    (nodes, addr(0).parse().unwrap())
}

/// Starts `conclave node` on `dir/node.toml` in a process group of its own (with its
/// enclave), its output in `dir/stdout{suffix}.txt` and `dir/stderr{suffix}.txt`.
fn spawn_node(dir: &Path, suffix: &str) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["node", "--config"])
        .arg(dir.join("node.toml"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("stdout{suffix}.txt"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("stderr{suffix}.txt"))).unwrap())
        .process_group(0)
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for every node to exit successfully (within `limit`).
fn wait_all(nodes: &mut [Node], limit: Duration) {
    let start = Instant::now();
    for i in 0..nodes.len() {
        loop {
            if let Some(st) = nodes[i].child.try_wait().unwrap() {
                if !st.success() {
                    let logs: Vec<String> = nodes
                        .iter()
                        .map(|n| format!("{}\n{}", n.stdout(), n.stderr()))
                        .collect();
                    panic!("node {i} failed: {st}\n{}", logs.join("\n---\n"));
                }
                break;
            }
            if start.elapsed() > limit {
                let logs: Vec<String> = nodes
                    .iter()
                    .map(|n| format!("{}\n{}", n.stdout(), n.stderr()))
                    .collect();
                panic!(
                    "the nodes did not finish in {limit:?}:\n{}",
                    logs.join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn assert_agreement(nodes: &[Node], rounds: usize) -> Vec<String> {
    let first = nodes[0].hashes();
    assert_eq!(first.len(), rounds, "{}", nodes[0].stdout());
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.hashes(), first, "node {i} disagrees:\n{}", n.stderr());
    }
    // Each round moved the model.
    for w in first.windows(2) {
        assert_ne!(w[0], w[1]);
    }
    first
}

#[test]
fn four_nodes_agree_on_the_model_every_round() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = Instant::now();
    let (mut nodes, _) = start_nodes(d, 4, 4, 3, "");
    wait_all(&mut nodes, Duration::from_secs(240));
    let hashes = assert_agreement(&nodes, 3);
    eprintln!("4 nodes, 3 rounds in {:.1} s", t.elapsed().as_secs_f64());
    for (i, n) in nodes.iter().enumerate() {
        let store = n.dir.join("store");
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.join("summary.json")).unwrap()).unwrap();
        assert_eq!(s["model_hashes"], serde_json::json!(hashes));
        assert_eq!(s["sets"][2], serde_json::json!([0, 1, 2, 3]));
        // The stored receipt names the printed model; all four updates were stored.
        let r: serde_json::Value = serde_json::from_slice(
            &std::fs::read(store.join(format!("rounds/000002/receipt-{i}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(r["model_hash_after"], hashes[2].as_str());
        for o in 0..4 {
            assert!(store.join(format!("rounds/000001/update-{o}.env")).exists());
            assert!(store.join(format!("evidence-{o}.bin")).exists());
        }
        assert!(!n.stderr().contains("rejected"), "{}", n.stderr());
    }
}

/// A rogue operator: announces valid sim evidence as operator 4, then misbehaves.
fn rogue(bootstrap: Multiaddr, spec: String, stop: Arc<AtomicBool>) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut done = Vec::new();
        let keypair = identity::Keypair::generate_ed25519();
        let me = keypair.public().to_peer_id();
        let mut swarm = build_swarm(keypair, JOB).unwrap();
        swarm
            .listen_on(format!("/ip4/127.0.0.1/tcp/{}", free_port()).parse().unwrap())
            .unwrap();
        let topic = |k: Kind| IdentTopic::new(k.topic(JOB));
        let job = JobId::from_hex(JOB).unwrap();
        let domain = format!("conclave/v1/job/{JOB}/spec/{spec}");
        let att = SimAttester::new(SimConfig::default()).unwrap();
        let identity_of = |seed: u8| {
            let key = EnclaveKey::generate();
            let nonce = Nonce([seed; 32]);
            let ctx = BindingContext {
                job_id: job,
                nonce,
            };
            let ev = att.evidence(&key.report_data(&ctx));
            (key, ev, nonce)
        };
        let (key, ev, nonce) = identity_of(4);
        let (stranger, stranger_ev, _) = identity_of(5);
        // Updates from the model the honest nodes train (its hash taken from their updates), so
        // that only the equivocation check keeps the rogue's out.
        let update = |k: &EnclaveKey,
                      e: &conclave_attestation::Evidence,
                      base: &[u8],
                      round: u64,
                      body: &[u8]| {
            let base = conclave_protocol::Hash32(base.try_into().unwrap());
            let p = conclave_protocol::UpdatePayload::encode(round, &base, body);
            let kind = conclave_protocol::StatementKind::Update.tag();
            let env = k.seal(&domain, kind, p, e.hash()).unwrap();
            Message::Update(Update {
                round,
                envelope: Blob(env.encode()),
                blob: None,
            })
            .encode()
            .unwrap()
        };
        let mut listen: Vec<String> = Vec::new();
        let mut captured: Option<Vec<u8>> = None;
        let mut round1_from = std::collections::BTreeSet::new();
        let mut attacked = false;
        let mut replayed = false;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        while !stop.load(Ordering::Relaxed) {
            tokio::select! {
                _ = tick.tick() => {
                    if swarm.connected_peers().next().is_none() {
                        let _ = swarm.dial(bootstrap.clone());
                    }
                    if !listen.is_empty() && !attacked {
                        let a = Message::Announce(Announce {
                            job_id: job,
                            operator: 4,
                            address: key.address(),
                            evidence: Blob(ev.encode()),
                            nonce,
                            peer_id: me.to_string(),
                            addrs: listen.clone(),
                            statement: Blob(
                                conclave_protocol::Signed::seal(
                                    &key,
                                    &domain,
                                    conclave_protocol::AnnounceStatement {
                                        job_id: job,
                                        operator: 4,
                                        peer_id: me.to_string(),
                                        account: None,
                                    },
                                    ev.hash(),
                                )
                                .unwrap()
                                .bytes,
                            ),
                        });
                        let _ = swarm.behaviour_mut().gossipsub.publish(topic(Kind::Announce), a.encode().unwrap());
                    }
                    let connected = swarm.connected_peers().count();
                    if captured.is_some() && !attacked && connected >= 4 {
                        attacked = true;
                        let base = captured
                            .as_ref()
                            .and_then(|c| match Message::decode(c) {
                                Ok(Message::Update(u)) => Envelope::decode(&u.envelope.0).ok(),
                                _ => None,
                            })
                            .map(|e| e.payload[16..48].to_vec())
                            .unwrap();
                        let gs = &mut swarm.behaviour_mut().gossipsub;
                        let mut pub_ = |k: Kind, b: Vec<u8>, what: &str| {
                            match gs.publish(topic(k), b) {
                                Ok(_) => done.push(what.to_string()),
                                Err(e) => done.push(format!("{what} failed: {e}")),
                            }
                        };
                        pub_(Kind::Update, b"\x00\x01 garbage, not gossip".to_vec(), "garbage");
                        let mut big = b"CNVGS\x01\x03".to_vec();
                        big.resize(conclave_protocol::gossip::MAX_HEARTBEAT + 1024, b' ');
                        pub_(Kind::Heartbeat, big, "oversize");
                        pub_(Kind::Update, update(&stranger, &stranger_ev, &base, 0, b"stranger"), "unattested");
                        pub_(Kind::Update, update(&key, &ev, &base, 0, b"one"), "equivocation a");
                        pub_(Kind::Update, update(&key, &ev, &base, 0, b"two"), "equivocation b");
                    }
                    if attacked
                        && !replayed
                        && round1_from.len() >= 4
                        && let Some(c) = captured.clone()
                    {
                        replayed = true;
                        match swarm.behaviour_mut().gossipsub.publish(topic(Kind::Update), c) {
                            Ok(_) => done.push("replay".into()),
                            Err(e) => done.push(format!("replay failed: {e}")),
                        }
                    }
                }
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::NewListenAddr { address, .. } => listen.push(address.to_string()),
                    SwarmEvent::Behaviour(conclave_host::net::BehaviourEvent::Gossipsub(
                        gossipsub::Event::Message { propagation_source, message_id, message },
                    )) => {
                        if let Ok(Message::Update(u)) = Message::decode(&message.data) {
                            if u.round == 0 && captured.is_none() && message.source != Some(me) {
                                captured = Some(message.data.clone());
                            }
                            if u.round == 1 {
                                round1_from.insert(message.source);
                            }
                        }
                        swarm.behaviour_mut().gossipsub.report_message_validation_result(
                            &message_id, &propagation_source, MessageAcceptance::Accept);
                    }
                    _ => {}
                }
            }
        }
        done
    })
}

#[test]
fn a_rogue_peer_is_rejected_and_the_honest_nodes_still_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Five operators: four honest nodes and the rogue (operator 4); a quorum of four.
    let (mut nodes, boot) = start_nodes(d, 4, 5, 3, "quorum = 4\nround_timeout_s = 8\n");
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    // The rogue signs in the job's domain (it names the job document's hash, which node 0
    // keeps in its folder).
    let doc = nodes[0].dir.join("store/job-document.json");
    wait_for("node 0's job document", Duration::from_secs(60), || {
        doc.exists()
    });
    let spec = conclave_protocol::Hash32::sha256(&std::fs::read(&doc).unwrap()).to_hex();
    let rogue = std::thread::spawn(move || rogue(boot, spec, s2));
    wait_all(&mut nodes, Duration::from_secs(240));
    stop.store(true, Ordering::Relaxed);
    let done = rogue.join().unwrap();
    assert_eq!(
        done,
        [
            "garbage",
            "oversize",
            "unattested",
            "equivocation a",
            "equivocation b",
            "replay"
        ],
        "the rogue's attacks"
    );
    assert_agreement(&nodes, 3);
    let mut replays = 0;
    for (i, n) in nodes.iter().enumerate() {
        let err = n.stderr();
        let has = |s: &str| err.lines().any(|l| l.contains(s));
        assert!(
            has("rejected update") && has("bad gossip magic"),
            "node {i}: garbage\n{err}"
        );
        assert!(
            has("rejected heartbeat") && has("exceeds the heartbeat limit"),
            "node {i}: oversize\n{err}"
        );
        assert!(has("unattested signer"), "node {i}: unattested\n{err}");
        assert!(has("peer score now -"), "node {i}: scoring\n{err}");
        assert!(has("EQUIVOCATION: operator 4"), "node {i}\n{err}");
        replays += usize::from(has("replay: operator"));
        let store = n.dir.join("store");
        assert!(
            store
                .join("equivocation/round-000000-operator-4-a.env")
                .exists()
        );
        assert!(
            store
                .join("equivocation/round-000000-operator-4-b.env")
                .exists()
        );
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.join("summary.json")).unwrap()).unwrap();
        assert_eq!(s["excluded"], serde_json::json!([4]));
        for r in 0..3 {
            assert_eq!(s["sets"][r], serde_json::json!([0, 1, 2, 3]));
        }
    }
    assert!(replays >= 1, "no node logged the replay");
    eprintln!("node 0's log:\n{}", nodes[0].stderr());
}

/// Updates larger than the inline limit (here every one: 1 KiB) travel by request-response:
/// the gossip message names the envelope's hash and size, every peer fetches it from the
/// publisher in chunks, checks the hash and judges it like an inline update.
#[test]
fn updates_by_reference_are_fetched_and_agreed_on() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, _) = start_nodes(dir.path(), 3, 3, 2, "update_inline_max = 1024\n");
    wait_all(&mut nodes, Duration::from_secs(240));
    assert_agreement(&nodes, 2);
    for n in &nodes {
        let fetched = n
            .stderr()
            .lines()
            .filter(|l| l.contains("fetched update of round"))
            .count();
        // Two peers' updates in each of two rounds.
        assert!(fetched >= 4, "{}", n.stderr());
    }
}

/// The same over QUIC: every node listens and dials on `/udp/…/quic-v1` only.
#[test]
fn nodes_agree_over_quic() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, first) = start_nodes(dir.path(), 3, 3, 2, "# quic\n");
    assert!(first.to_string().contains("/quic-v1"));
    wait_all(&mut nodes, Duration::from_secs(240));
    assert_agreement(&nodes, 2);
    for n in &nodes {
        assert!(n.stderr().contains("quic-v1"), "{}", n.stderr());
    }
}

/// An operator killed with SIGKILL during a round: the round closes at the deadline with the
/// remaining quorum; the operator restarts (same folder, so the same peer identity, and a new
/// enclave), fetches the latest checkpoint from a peer in chunks, has its enclave verify and
/// load it, and rejoins at the next round with the same model hash as the others.
#[test]
fn a_killed_operator_restarts_fetches_the_checkpoint_and_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rounds = 6;
    let (mut nodes, _) = start_nodes(d, 4, 4, rounds, "quorum = 3\nround_timeout_s = 4\n");
    // Kill operator 3 (node and enclave) as soon as it closed round 0: it is training round 1.
    wait_for(
        "operator 3 closes round 0",
        Duration::from_secs(240),
        || nodes[3].stdout().contains("round 0:"),
    );
    // SAFETY: kill(2) on the process group of a child we started.
    unsafe {
        libc::kill(-(nodes[3].child.id() as i32), libc::SIGKILL);
    }
    let _ = nodes[3].child.wait();
    // The others close round 1 at its deadline without it, and go on.
    wait_for(
        "round 1 closes without operator 3",
        Duration::from_secs(60),
        || nodes[0].stdout().contains("round 1:"),
    );
    let restarted = Instant::now();
    nodes[3].child = spawn_node(&nodes[3].dir, "-2");
    wait_all(&mut nodes, Duration::from_secs(300));

    let others = nodes[0].hashes();
    assert_eq!(others.len(), rounds as usize, "{}", nodes[0].stdout());
    for n in &nodes[1..3] {
        assert_eq!(n.hashes(), others, "{}", n.stderr());
    }
    let e0 = nodes[0].stderr();
    assert!(
        e0.contains("round 1: deadline passed, closing with 3 updates"),
        "{e0}"
    );
    let summary = |i: usize| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(nodes[i].dir.join("store/summary.json")).unwrap())
            .unwrap()
    };
    let s0 = summary(0);
    assert_eq!(s0["sets"][1], serde_json::json!([0, 1, 2]));
    assert_eq!(
        s0["sets"][rounds as usize - 1],
        serde_json::json!([0, 1, 2, 3]),
        "operator 3 is back in the last round"
    );
    // The restarted operator synced from a checkpoint and ends on the others' model.
    let err3 = std::fs::read_to_string(nodes[3].dir.join("stderr-2.txt")).unwrap();
    assert!(err3.contains("rejoining"), "{err3}");
    let synced = err3
        .lines()
        .find(|l| l.contains("synced to round "))
        .unwrap_or_else(|| panic!("{err3}"));
    eprintln!(
        "operator 3 back {:.1} s after its restart; {synced}",
        restarted.elapsed().as_secs_f64()
    );
    let s3 = summary(3);
    let h3: Vec<String> = serde_json::from_value(s3["model_hashes"].clone()).unwrap();
    assert_eq!(h3.last(), others.last(), "{err3}");
    // It trained the rounds after its sync, with the same hashes as the others.
    let out3 = std::fs::read_to_string(nodes[3].dir.join("stdout-2.txt")).unwrap();
    let trained: Vec<&str> = out3.lines().filter(|l| l.starts_with("round ")).collect();
    assert!(
        !trained.is_empty() && trained.len() < rounds as usize,
        "{out3}"
    );
    for l in trained {
        let r: usize = l[6..].split(':').next().unwrap().parse().unwrap();
        assert!(l.contains(&others[r]), "{l} vs {}", others[r]);
    }
}
