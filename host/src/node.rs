//! `conclave node --config node.toml`: one operator per process on the operator network.
//!
//! The node launches its own enclave (a `sim` process here), gets and appraises its evidence,
//! loads the job, joins the swarm ([`crate::net`]) by dialing the bootstrap list, announces its
//! evidence and waits until every operator of the job has announced. Then, each round: the
//! enclave trains its share, the node publishes the signed update, waits at the round barrier
//! (updates from the whole active set, or a quorum once the round's deadline has passed),
//! has its enclave aggregate the collected set with the signers' evidence, checks the signed
//! receipt, stores it (atomic writes, as `conclave run` does), prints the round's model hash
//! and publishes it in a heartbeat.
//!
//! The config is `conclave run`'s ([`crate::run::OperatorConfig`] sections `[job]`,
//! `[enclave]`, `[storage]`) plus a `[node]` section; `CONCLAVE_<SECTION>__<KEY>` variables
//! override it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use conclave_attestation::{JobId, Measurement};
use conclave_protocol::channel::{Blob, JobSpec, PeerEvidence, Request, Response};
use conclave_protocol::gossip::{Announce, Heartbeat, Kind, Message, Update};
use conclave_protocol::receipt::RoundReceipt;
use libp2p::{Multiaddr, identity};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::enclave::{Channel, Launch, launch_sim};
use crate::net::{JobView, Net, State, parse_update_payload};
use crate::run::{
    JobSection, Operator, PreparedJob, StorageSection, apply_env, appraise_peer, check_signed, now,
    prepare_job, write_atomic,
};

/// A node's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub job: JobSection,
    #[serde(default = "default_launch")]
    pub enclave: Launch,
    #[serde(default)]
    pub storage: StorageSection,
    pub node: NodeSection,
}

fn default_launch() -> Launch {
    Launch::Sim {
        program: None,
        corpus: PathBuf::from(".data/moby-dick/package"),
        cache: PathBuf::from(".data/cache"),
        threads: 1,
    }
}

/// The `[node]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This operator's index in the active set (`0..job.operators`).
    pub index: u32,
    /// The libp2p listen address, e.g. `/ip4/127.0.0.1/tcp/4001`.
    pub listen: String,
    /// Multiaddrs to dial at start.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Updates a round needs once its deadline passed (default: all operators).
    #[serde(default)]
    pub quorum: Option<u32>,
    /// Seconds a round's barrier waits for the whole active set before a quorum suffices.
    #[serde(default = "default_round_timeout")]
    pub round_timeout_s: u64,
    /// Milliseconds the barrier keeps listening after it is met, so that an equivocation's
    /// proof reaches every operator before the set is fixed.
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
    /// Seconds to wait for every operator's announce.
    #[serde(default = "default_announce_timeout")]
    pub announce_timeout_s: u64,
}

fn default_round_timeout() -> u64 {
    60
}
fn default_settle() -> u64 {
    500
}
fn default_announce_timeout() -> u64 {
    120
}

impl NodeConfig {
    /// Reads the file, applies the environment's overrides and checks the result.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the node config {}", path.display()))?;
        let mut table: toml::Table =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        apply_env(&mut table, env)?;
        let mut cfg: NodeConfig = toml::Value::Table(table)
            .try_into()
            .with_context(|| format!("in {} (with CONCLAVE_* overrides)", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.job.config.is_relative() {
            cfg.job.config = base.join(&cfg.job.config);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let j = &self.job;
        if j.operators == 0 || j.operators > 64 {
            bail!("job.operators must be 1 to 64");
        }
        if j.rounds == 0 {
            bail!("job.rounds must be at least 1");
        }
        if let Some(id) = &j.id {
            JobId::from_hex(id).map_err(|e| anyhow::anyhow!("job.id: {e}"))?;
        }
        for m in &j.measurements {
            Measurement::from_hex(m).map_err(|e| anyhow::anyhow!("job.measurements: {m}: {e}"))?;
        }
        let n = &self.node;
        if n.index >= j.operators {
            bail!("node.index must be below job.operators ({})", j.operators);
        }
        n.listen
            .parse::<Multiaddr>()
            .map_err(|e| anyhow::anyhow!("node.listen: {:?}: {e}", n.listen))?;
        for b in &n.bootstrap {
            b.parse::<Multiaddr>()
                .map_err(|e| anyhow::anyhow!("node.bootstrap: {b:?}: {e}"))?;
        }
        if let Some(q) = n.quorum
            && (q == 0 || q > j.operators)
        {
            bail!("node.quorum must be 1 to job.operators ({})", j.operators);
        }
        if n.round_timeout_s == 0 || n.announce_timeout_s == 0 {
            bail!("node.round_timeout_s and node.announce_timeout_s must be at least 1");
        }
        Ok(())
    }
}

/// What a node run ends with.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    pub job_id: String,
    pub operator: u32,
    pub rounds: u64,
    pub model_hashes: Vec<String>,
    /// Per round: the operators whose updates were aggregated.
    pub sets: Vec<Vec<u32>>,
    pub excluded: Vec<u32>,
}

fn random_nonce() -> String {
    let mut b = [0u8; 32];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    b.copy_from_slice(&Sha256::digest(format!("node/{t}/{}", std::process::id())));
    hex::encode(b)
}

/// Runs an enclave request on a blocking thread while the swarm keeps running.
async fn call_signed(
    net: &mut Net,
    op: &mut Option<Operator>,
    req: Request,
) -> Result<(Vec<u8>, Operator)> {
    let mut o = op.take().context("the enclave channel is gone")?;
    let h = tokio::task::spawn_blocking(move || {
        let r = o.channel.signed(&req);
        (r, o)
    });
    let (r, o) = net
        .pump_until(h)
        .await
        .map_err(|e| anyhow::anyhow!("an enclave call panicked: {e}"))?;
    Ok((r?, o))
}

/// Runs a node to the end of the job.
pub fn run_node(cfg: &NodeConfig) -> Result<NodeSummary> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_node_async(cfg))
}

async fn run_node_async(cfg: &NodeConfig) -> Result<NodeSummary> {
    let jobcfg = &cfg.job;
    let me = cfg.node.index;
    let dir = cfg.storage.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let PreparedJob {
        config_text,
        published,
        job_hex,
        job,
        policy,
        domain,
        launch,
    } = prepare_job(jobcfg, &cfg.enclave)?;

    // Our enclave: launch, hello, appraise, load the job.
    let socket = dir.join("enclave.sock");
    let launched = launch_sim(
        &launch,
        &socket,
        &dir.join("enclave"),
        &dir.join("enclave.log"),
    )?;
    let mut channel = Channel::connect(&socket, Duration::from_secs(jobcfg.request_timeout_s))?;
    let nonce = random_nonce();
    let Response::Hello {
        address,
        evidence,
        tee,
        ..
    } = channel.call(&Request::Hello {
        job_id: job_hex.clone(),
        nonce: nonce.clone(),
    })?
    else {
        bail!("hello answered with something else");
    };
    let peer = PeerEvidence { evidence, nonce };
    let (accepted, ctx) = appraise_peer(&peer, job, &policy, now()).context("our own enclave")?;
    let mut own = Operator {
        index: me,
        launched: Some(launched),
        channel,
        address: format!("0x{address}"),
        peer: peer.clone(),
        accepted,
        ctx,
    };
    eprintln!("operator {me}: enclave {} attested ({tee})", own.address);
    let spec = JobSpec {
        job_id: job_hex.clone(),
        config: config_text,
        config_hash: published.config_hash.clone(),
        data_root: published.data_root.clone(),
        operator: me,
        operators: jobcfg.operators,
        policy: policy.to_toml(),
        initial_model_hash: Some(published.initial_model_hash.clone()),
    };
    let env = own.channel.signed(&Request::LoadJob { spec })?;
    let payload = check_signed(&env, &domain, "job-accepted", &own)?;
    let v: serde_json::Value = serde_json::from_slice(&payload)?;
    if v["model_hash"].as_str() != Some(published.initial_model_hash.as_str()) {
        bail!("the enclave starts from another model than the job's initial one");
    }

    // The network.
    let view = JobView {
        job_hex: job_hex.clone(),
        job,
        domain: domain.clone(),
        policy,
        operators: jobcfg.operators,
    };
    let keypair = identity::Keypair::generate_ed25519();
    let mut net = Net::new(keypair, State::new(view, dir.join("equivocation")))?;
    eprintln!("operator {me}: peer id {}", net.local_peer_id());
    let listen: Multiaddr = cfg.node.listen.parse()?;
    net.listen(listen).await?;
    let bootstrap: Vec<Multiaddr> = cfg
        .node
        .bootstrap
        .iter()
        .map(|b| b.parse())
        .collect::<Result<_, _>>()?;
    let announce = Message::Announce(Announce {
        job_id: job_hex.clone(),
        operator: me,
        address: own.address.clone(),
        evidence: peer.evidence.clone(),
        nonce: peer.nonce.clone(),
        peer_id: net.local_peer_id().to_string(),
        addrs: net.listen_addrs.iter().map(|a| a.to_string()).collect(),
    });
    let deadline = Instant::now() + Duration::from_secs(cfg.node.announce_timeout_s);
    loop {
        // (Re-)dial the bootstrap list while we know no peer (it may not be up yet).
        if net.swarm.connected_peers().next().is_none() {
            for a in &bootstrap {
                net.dial(a.clone());
            }
        }
        net.publish_own(&announce)?;
        let step = (Instant::now() + Duration::from_secs(1)).min(deadline);
        if net.pump_while(step, |s| s.all_announced()).await {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "only operators {:?} of {} announced within {} s",
                net.state.peers.keys().collect::<Vec<_>>(),
                jobcfg.operators,
                cfg.node.announce_timeout_s
            );
        }
    }
    // Let the last announces reach the others before the first updates.
    net.publish_own(&announce)?;
    eprintln!(
        "operator {me}: all {} operators announced",
        jobcfg.operators
    );
    for (i, p) in &net.state.peers {
        write_atomic(
            &dir.join(format!("evidence-{i}.bin")),
            &p.evidence.evidence.0,
        )?;
        write_atomic(
            &dir.join(format!("operator-{i}.json")),
            &serde_json::to_vec_pretty(&serde_json::json!({
                "operator": i,
                "address": p.address,
                "job_id": job_hex,
                "nonce": p.evidence.nonce,
                "peer_id": p.peer_id.to_string(),
                "evidence": format!("evidence-{i}.bin"),
            }))?,
        )?;
    }

    let quorum = cfg.node.quorum.unwrap_or(jobcfg.operators) as usize;
    let round_timeout = Duration::from_secs(cfg.node.round_timeout_s);
    let mut model_hash = published.initial_model_hash.clone();
    let mut hashes = Vec::new();
    let mut sets = Vec::new();
    let mut own_slot = Some(own);
    for round in 0..jobcfg.rounds {
        net.state.round = round;
        let (update, o) =
            call_signed(&mut net, &mut own_slot, Request::TrainRound { round }).await?;
        own_slot = Some(o);
        let own = own_slot.as_ref().context("the enclave channel is gone")?;
        check_signed(&update, &domain, "update", own)?;
        let msg = Message::Update(Update {
            round,
            envelope: Blob(update.clone()),
        });
        net.publish_own(&msg)?;

        // The round barrier.
        let round_deadline = Instant::now() + round_timeout;
        let hard_deadline = round_deadline + 2 * round_timeout;
        loop {
            let step = (Instant::now() + Duration::from_secs(2)).min(hard_deadline);
            let everyone = |s: &State| {
                let active = s.active();
                let got = s.round_updates(round);
                active.iter().all(|o| got.contains_key(o))
            };
            if net.pump_while(step, everyone).await {
                break;
            }
            let got = net.state.round_updates(round).len();
            if Instant::now() >= round_deadline && got >= quorum {
                eprintln!(
                    "round {round}: deadline passed, closing with {got} updates (quorum {quorum})"
                );
                break;
            }
            if Instant::now() >= hard_deadline {
                bail!("round {round}: only {got} updates (quorum {quorum}) after the deadline");
            }
            // Re-publish ours for peers that may have missed it (they ignore duplicates).
            net.publish(Kind::Update, msg.encode()?)?;
        }

        // A short settling time: an equivocation's second update, forwarded by the operators
        // that saw it first, reaches us before we fix the set.
        let settle = Instant::now() + Duration::from_millis(cfg.node.settle_ms);
        net.pump_while(settle, |_| false).await;

        // Aggregate the collected set: updates from the active set computed from our model.
        let mut base = [0u8; 32];
        hex::decode_to_slice(&model_hash, &mut base).context("model hash")?;
        let mut set: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (o, u) in net.state.round_updates(round) {
            let ok = conclave_attestation::Envelope::decode(&u)
                .ok()
                .and_then(|e| parse_update_payload(&e.payload).ok())
                .is_some_and(|(r, b)| r == round && b == base);
            if ok {
                set.insert(o, u);
            } else {
                eprintln!("round {round}: operator {o}'s update is from another model; left out");
            }
        }
        if set.len() < quorum {
            bail!(
                "round {round}: {} usable updates, below the quorum of {quorum}",
                set.len()
            );
        }
        let peers: Vec<PeerEvidence> = set
            .keys()
            .filter_map(|o| net.state.peers.get(o).map(|p| p.evidence.clone()))
            .collect();
        let req = Request::Aggregate {
            round,
            updates: set.values().map(|u| Blob(u.clone())).collect(),
            peers,
        };
        let (receipt_env, o) = call_signed(&mut net, &mut own_slot, req).await?;
        own_slot = Some(o);
        let own = own_slot.as_ref().context("the enclave channel is gone")?;
        let payload = check_signed(&receipt_env, &domain, "round-receipt", own)?;
        let receipt = RoundReceipt::from_json(&payload).context("our receipt")?;
        if receipt.round != round || receipt.model_hash_before != model_hash {
            bail!(
                "our receipt is for round {} from {}",
                receipt.round,
                receipt.model_hash_before
            );
        }
        if receipt.updates.len() != set.len() {
            bail!(
                "the receipt aggregates {} updates, we sent {}",
                receipt.updates.len(),
                set.len()
            );
        }
        let rdir = dir.join("rounds").join(format!("{round:06}"));
        write_atomic(&rdir.join(format!("receipt-{me}.env")), &receipt_env)?;
        write_atomic(&rdir.join(format!("receipt-{me}.json")), &payload)?;
        for (o, u) in &set {
            write_atomic(&rdir.join(format!("update-{o}.env")), u)?;
        }
        model_hash = receipt.model_hash_after.clone();
        let members: Vec<u32> = set.keys().copied().collect();
        println!(
            "round {round}: model {model_hash} (operators {members:?}, loss {:.4})",
            receipt.loss
        );
        hashes.push(model_hash.clone());
        sets.push(members);
        let hb = Message::Heartbeat(Heartbeat {
            operator: me,
            round,
            model_hash: model_hash.clone(),
        });
        net.publish_own(&hb)?;
        // Peers' heartbeats of the previous round that disagree with ours.
        report_disagreement(&net.state, round.saturating_sub(1), &hashes);
    }

    // Linger until the active set's heartbeats for the last round arrived (or a few seconds),
    // so that slower peers get our last messages.
    let last = jobcfg.rounds - 1;
    let deadline = Instant::now() + Duration::from_secs(10);
    net.pump_while(deadline, |s| {
        let got = s.heartbeats.get(&last);
        s.active()
            .iter()
            .all(|o| got.is_some_and(|g| g.contains_key(o)))
    })
    .await;
    report_disagreement(&net.state, last, &hashes);
    let mut own = own_slot.context("the enclave channel is gone")?;
    let _ = own.channel.call(&Request::Shutdown);
    let summary = NodeSummary {
        job_id: job_hex,
        operator: me,
        rounds: jobcfg.rounds,
        model_hashes: hashes,
        sets,
        excluded: net.state.banned.keys().copied().collect(),
    };
    write_atomic(
        &dir.join("summary.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    Ok(summary)
}

fn report_disagreement(state: &State, round: u64, hashes: &[String]) {
    let Some(ours) = hashes.get(round as usize) else {
        return;
    };
    if let Some(hb) = state.heartbeats.get(&round) {
        for (o, h) in hb {
            if h != ours {
                eprintln!("round {round}: operator {o} reports model {h}, ours is {ours}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_config_keys_are_checked_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.toml");
        let base = "[job]\nconfig = \"j.toml\"\noperators = 4\n[node]\nindex = 1\n\
                    listen = \"/ip4/127.0.0.1/tcp/0\"\n";
        std::fs::write(&p, base).unwrap();
        let cfg = NodeConfig::load(&p, []).unwrap();
        assert_eq!(cfg.node.round_timeout_s, 60);
        assert_eq!(cfg.job.config, dir.path().join("j.toml"));
        let e =
            |env: Vec<(String, String)>| format!("{:#}", NodeConfig::load(&p, env).unwrap_err());
        assert!(e(vec![("CONCLAVE_NODE__INDEX".into(), "4".into())]).contains("node.index"));
        assert!(e(vec![("CONCLAVE_NODE__LISTEN".into(), "nope".into())]).contains("node.listen"));
        assert!(e(vec![("CONCLAVE_NODE__QUORUM".into(), "5".into())]).contains("node.quorum"));
        assert!(
            e(vec![("CONCLAVE_NODE__BOOTSTRAP".into(), "[\"x\"]".into())])
                .contains("node.bootstrap")
        );
        std::fs::write(&p, format!("{base}lisen = 1\n")).unwrap();
        assert!(e(vec![]).contains("lisen"));
    }
}
