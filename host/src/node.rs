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

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use conclave_attestation::eip712::job_word;
use conclave_attestation::{JobId, Measurement};
use conclave_protocol::channel::{Blob, JobSpec, PeerEvidence, Request, Response};
use conclave_protocol::gossip::{Announce, Heartbeat, Kind, Message};
use conclave_protocol::receipt::RoundReceipt;
use libp2p::{Multiaddr, identity};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::chain::{Chain, ChainOptions, ContractError, Submitted, revert_of};
use crate::enclave::{Channel, Launch, launch_sim};
use crate::net::{JobView, Net, Offer, State, parse_update_payload};
use crate::run::{
    JobSection, Operator, PreparedJob, StorageSection, apply_env, appraise_peer, check_signed, now,
    prepare_job, write_atomic,
};
use conclave_protocol::sync::{MAX_CHECKPOINT, MAX_CHUNK, SyncRequest, SyncResponse};
use libp2p::PeerId;

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
    /// The job on chain: join, register the enclave key, commit checkpoints, withdraw.
    #[serde(default)]
    pub chain: Option<ChainSection>,
}

/// The `[chain]` section: the on-chain job this node works for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSection {
    /// JSON-RPC URL of the chain.
    pub rpc: String,
    /// The `ConclaveTraining` contract, `0x` + 40 hex digits.
    pub contract: String,
    /// The job's number on chain (`createJob`'s id). The network job id is this number as
    /// 32 bytes big-endian (the contract's convention); `job.id`, when set, must equal it.
    pub job: u64,
    /// The environment variable holding the operator account's private key (hex).
    #[serde(default = "default_key_env")]
    pub key_env: String,
    /// Blocks on top of a transaction's before it counts as landed.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Seconds to wait for the job to start (enough operators registered).
    #[serde(default = "default_start_timeout")]
    pub start_timeout_s: u64,
    /// After the last round: seconds to wait for the job to settle and the stake to unbond,
    /// then withdraw stake and payment. 0: request leave and exit (withdraw later).
    #[serde(default)]
    pub withdraw_wait_s: u64,
}

fn default_key_env() -> String {
    "CONCLAVE_OPERATOR_KEY".into()
}
fn default_confirmations() -> u64 {
    1
}
fn default_start_timeout() -> u64 {
    300
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
    /// Store a checkpoint (weights and the enclave's signed manifest) every this many rounds,
    /// and offer the latest to operators that join or restart (0: only on-chain checkpoint
    /// rounds).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// Updates whose gossip message would be larger than this many bytes travel by
    /// request-response (the gossip message names their hash; peers fetch them from us).
    #[serde(default = "default_inline_max")]
    pub update_inline_max: usize,
}

fn default_inline_max() -> usize {
    conclave_protocol::gossip::MAX_UPDATE
}

fn default_checkpoint_every() -> u64 {
    1
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
        if let Some(c) = &self.chain {
            c.contract
                .parse::<alloy::primitives::Address>()
                .map_err(|e| anyhow::anyhow!("chain.contract: {:?}: {e}", c.contract))?;
            if c.job == 0 {
                bail!("chain.job must be at least 1 (on-chain job ids start at 1)");
            }
            let want = hex::encode(job_word(c.job));
            if let Some(id) = &j.id
                && id.trim_start_matches("0x").to_ascii_lowercase() != want
            {
                bail!(
                    "job.id must be the on-chain job {} as 32 bytes ({want})",
                    c.job
                );
            }
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
    /// Per round: the mean training loss the operators' receipts state (ours when we lack
    /// a peer's).
    pub losses: Vec<f64>,
    /// Per round: bytes of our signed update (what we published).
    pub update_bytes: Vec<u64>,
    /// Optimizer steps per round (from our receipts).
    pub steps_per_round: u64,
    /// On-chain rounds whose checkpoint we committed, with whether ours fixed the round.
    pub commits: Vec<(u64, bool)>,
    /// Stake and payment withdrawn (wei), when the node waited for settlement.
    pub withdrawn: Option<String>,
}

/// An enclave request whose answer is a signed envelope (see [`call_enclave`]).
async fn call_signed(net: &mut Net, op: &mut Option<Operator>, req: Request) -> Result<Vec<u8>> {
    match call_enclave(net, op, req).await? {
        Response::Signed { envelope } => Ok(envelope.0),
        other => bail!("expected a signed envelope, got {other:?}"),
    }
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
    let mut jobcfg = cfg.job.clone();
    if let Some(c) = &cfg.chain {
        jobcfg.id = Some(hex::encode(job_word(c.job)));
    }
    let jobcfg = &jobcfg;
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
    let nonce = crate::run::random_nonce("node");
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
    let onchain = match &cfg.chain {
        Some(c) => Some(join_chain(c, jobcfg, &published, &mut own).await?),
        None => None,
    };

    // The network.
    let view = JobView {
        job_hex: job_hex.clone(),
        job,
        domain: domain.clone(),
        policy,
        operators: jobcfg.operators,
    };
    let (keypair, restarted) = node_identity(&dir)?;
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
    let mut hashes = vec![String::new(); jobcfg.rounds as usize];
    let mut sets = vec![Vec::new(); jobcfg.rounds as usize];
    let mut update_bytes = Vec::new();
    let mut steps_per_round = 0;
    let mut commits = Vec::new();
    let mut own_slot = Some(own);
    let sync_timeout = 3 * round_timeout + Duration::from_secs(cfg.node.announce_timeout_s);
    // A job already under way (this node restarted, or joins late): start from a peer's
    // latest checkpoint, fetched right after a round closes.
    let mut round = 0;
    if let Some((r, h)) = catch_up(&mut net, &mut own_slot, me, restarted, sync_timeout).await? {
        round = r;
        model_hash = h;
        if let Some(slot) = hashes.get_mut(r as usize - 1) {
            slot.clone_from(&model_hash);
        }
    }
    while round < jobcfg.rounds {
        net.state.round = round;
        let update = call_signed(&mut net, &mut own_slot, Request::TrainRound { round }).await?;
        let own = own_slot.as_ref().context("the enclave channel is gone")?;
        check_signed(&update, &domain, "update", own)?;
        update_bytes.push(update.len() as u64);
        let msg = net.publish_update(round, update.clone(), cfg.node.update_inline_max)?;

        // The round barrier.
        let round_deadline = Instant::now() + round_timeout;
        let hard_deadline = round_deadline + 2 * round_timeout;
        let mut behind = false;
        loop {
            let step = (Instant::now() + Duration::from_secs(2)).min(hard_deadline);
            let everyone = |s: &State| {
                let active = s.active();
                let got = s.round_updates(round);
                active.iter().all(|o| got.contains_key(o))
            };
            // A quorum of the others closed this round without us: we are behind.
            let closed_without_us =
                |s: &State| s.heartbeats.get(&round).map_or(0, |h| h.len()) >= quorum;
            if net
                .pump_while(step, |s| everyone(s) || closed_without_us(s))
                .await
            {
                if everyone(&net.state) {
                    break;
                }
                behind = true;
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
            net.publish(Kind::Update, msg.clone())?;
        }

        if behind {
            eprintln!(
                "round {round}: the others closed it without us; syncing to their checkpoint"
            );
            let peer = net
                .state
                .heartbeats
                .get(&round)
                .and_then(|h| h.keys().find(|o| **o != me).copied())
                .and_then(|o| net.state.peers.get(&o).map(|p| p.peer_id))
                .context("no peer to sync from")?;
            let (r, h) = sync_from(&mut net, &mut own_slot, peer).await?;
            if r <= round {
                bail!(
                    "round {round}: the peers' latest checkpoint is after round {r}; they must \
                     store one every round (node.checkpoint_every = 1) for us to catch up"
                );
            }
            if let Some(slot) = hashes.get_mut(r as usize - 1) {
                slot.clone_from(&h);
            }
            round = r;
            model_hash = h;
            continue;
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
        let receipt_env = call_signed(&mut net, &mut own_slot, req).await?;
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
        steps_per_round = receipt.step_after - receipt.step_before;
        let members: Vec<u32> = set.keys().copied().collect();
        println!(
            "round {round}: model {model_hash} (operators {members:?}, loss {:.4})",
            receipt.loss
        );
        hashes[round as usize].clone_from(&model_hash);
        sets[round as usize] = members;

        // Checkpoints: stored (and offered to joiners) every `checkpoint_every` rounds and at
        // the on-chain job's checkpoint rounds, before the heartbeat tells peers the round
        // closed.
        let chain_round = onchain
            .as_ref()
            .is_some_and(|oc| (round + 1) % oc.interval == 0);
        let every = cfg.node.checkpoint_every;
        if chain_round || (every > 0 && (round + 1) % every == 0) {
            let resp = call_enclave(&mut net, &mut own_slot, Request::Checkpoint).await?;
            let own = own_slot.as_ref().context("the enclave channel is gone")?;
            let (step, weights, manifest) =
                store_checkpoint(&dir, resp, &domain, own, &model_hash)?;
            net.offer = Some(Offer {
                round: round + 1,
                step,
                model_hash: model_hash.clone(),
                size: std::fs::metadata(&weights)?.len(),
                weights,
                manifest,
                signer: own.peer.clone(),
            });
        }
        let hb = Message::Heartbeat(Heartbeat {
            operator: me,
            round,
            model_hash: model_hash.clone(),
            receipt: Some(Blob(receipt_env.clone())),
        });
        net.publish_own(&hb)?;

        // A checkpoint round of the on-chain job: commit the enclave's signed statement.
        if let Some(oc) = &onchain
            && chain_round
        {
            let accepted = commit_round(
                &mut net,
                &mut own_slot,
                oc,
                round + 1,
                &model_hash,
                &payload,
            )
            .await?;
            commits.push((round + 1, accepted));
        }
        // Peers' heartbeats of the previous round that disagree with ours.
        report_disagreement(&net.state, round.saturating_sub(1), &hashes);
        round += 1;
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
    // Every operator's receipts, as their heartbeats brought them (verified on arrival).
    let mut losses = Vec::new();
    for round in 0..jobcfg.rounds {
        let rdir = dir.join("rounds").join(format!("{round:06}"));
        let mut sum = 0.0;
        let mut n = 0;
        if let Some(got) = net.state.receipts.get(&round) {
            for (o, (env, payload)) in got {
                if *o != me {
                    write_atomic(&rdir.join(format!("receipt-{o}.env")), env)?;
                    write_atomic(&rdir.join(format!("receipt-{o}.json")), payload)?;
                }
            }
        }
        for entry in std::fs::read_dir(&rdir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("receipt-") && name.ends_with(".json") {
                let r = RoundReceipt::from_json(&std::fs::read(entry.path())?)?;
                sum += r.loss;
                n += 1;
            }
        }
        losses.push(if n > 0 { sum / n as f64 } else { f64::NAN });
    }
    let mut own = own_slot.context("the enclave channel is gone")?;
    let _ = own.channel.call(&Request::Shutdown);
    drop(own);
    let withdrawn = match (&onchain, &cfg.chain) {
        (Some(oc), Some(c)) => leave_chain(oc, c.withdraw_wait_s).await?,
        _ => None,
    };
    let summary = NodeSummary {
        job_id: job_hex,
        operator: me,
        rounds: jobcfg.rounds,
        model_hashes: hashes,
        sets,
        excluded: net.state.banned.keys().copied().collect(),
        losses,
        update_bytes,
        steps_per_round,
        commits,
        withdrawn,
    };
    write_atomic(
        &dir.join("summary.json"),
        &serde_json::to_vec_pretty(&summary)?,
    )?;
    Ok(summary)
}

/// Runs an enclave request on a blocking thread while the swarm keeps running; the operator
/// goes back into its slot when the call returns.
async fn call_enclave(net: &mut Net, op: &mut Option<Operator>, req: Request) -> Result<Response> {
    let mut o = op.take().context("the enclave channel is gone")?;
    let h = tokio::task::spawn_blocking(move || {
        let r = o.channel.call(&req);
        (r, o)
    });
    let (r, o) = net
        .pump_until(h)
        .await
        .map_err(|e| anyhow::anyhow!("an enclave call panicked: {e}"))?;
    *op = Some(o);
    r
}

/// The on-chain job as a node works for it.
pub struct OnChain {
    pub chain: Chain,
    pub job: u64,
    pub interval: u64,
}

fn b256(what: &str, hex_text: &str) -> Result<B256> {
    hex_text
        .parse::<B256>()
        .or_else(|_| format!("0x{hex_text}").parse::<B256>())
        .with_context(|| format!("{what}: {hex_text:?} is not 32 bytes of hex"))
}

/// Joins the on-chain job (stake), registers the enclave key with the enclave's consent, and
/// waits until the job runs (starting it once enough operators registered).
async fn join_chain(
    c: &ChainSection,
    jobcfg: &JobSection,
    published: &crate::run::PublishedSpec,
    own: &mut Operator,
) -> Result<OnChain> {
    let key_hex = std::env::var(&c.key_env).with_context(|| {
        format!(
            "chain.key_env: ${} is not set (the operator account's private key, hex)",
            c.key_env
        )
    })?;
    let signer: PrivateKeySigner = key_hex
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("${}: not a private key: {e}", c.key_env))?;
    let contract: Address = c.contract.parse()?;
    let options = ChainOptions {
        confirmations: c.confirmations,
        ..ChainOptions::default()
    };
    let chain = Chain::connect(&c.rpc, &signer, contract, options).await?;
    let id = c.job;
    let job = chain.job(id).await?;
    if job.customer == Address::ZERO {
        bail!("there is no job {id} on contract {contract}");
    }
    // The terms on chain must be those of the job this node was configured with.
    if job.specHash != b256("config hash", &published.config_hash)? {
        bail!(
            "job {id}'s spec hash on chain is {}, the configured job's config hash is {}",
            job.specHash,
            published.config_hash
        );
    }
    if job.datasetRoot != b256("data root", &published.data_root)? {
        bail!(
            "job {id}'s dataset root on chain is {}, the corpus here gives {}",
            job.datasetRoot,
            published.data_root
        );
    }
    if job.totalRounds != jobcfg.rounds {
        bail!(
            "job {id} has {} rounds on chain, job.rounds is {}",
            job.totalRounds,
            jobcfg.rounds
        );
    }
    if job.minOperators > jobcfg.operators {
        bail!(
            "job {id} needs {} operators, job.operators is {}",
            job.minOperators,
            jobcfg.operators
        );
    }
    let me = chain.operator(id, chain.account).await?;
    let enclave: Address = own.address.parse().context("the enclave address")?;
    if me.status == 0 {
        chain.join(id).await.context("joining the job")?;
        eprintln!(
            "operator {}: joined job {id} as {}",
            own.index, chain.account
        );
    }
    if me.enclaveKey == Address::ZERO {
        let resp = own.channel.call(&Request::ChainRegistration {
            chain_id: chain.chain_id,
            contract: contract.to_string(),
            job: id,
            operator: chain.account.to_string(),
        })?;
        let Response::Registration {
            evidence_hash,
            measurement,
            signature,
        } = resp
        else {
            bail!("the registration request answered with something else");
        };
        if evidence_hash != hex::encode(own.accepted.evidence_hash().0) {
            bail!("the enclave consents for other evidence than it presented");
        }
        let sig: [u8; 65] = hex::decode(&signature)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("the registration signature is not 65 bytes"))?;
        chain
            .register_enclave(
                id,
                enclave,
                b256("evidence hash", &evidence_hash)?,
                b256("measurement", &measurement)?,
                &sig,
            )
            .await
            .context("registering the enclave key")?;
        eprintln!(
            "operator {}: enclave key {enclave} registered on chain",
            own.index
        );
    } else if me.enclaveKey != enclave {
        bail!(
            "{} registered enclave key {} for job {id}; this enclave's key is {enclave} (a \
             restarted enclave has a new key, and the contract takes one key per operator)",
            chain.account,
            me.enclaveKey
        );
    }
    let deadline = Instant::now() + Duration::from_secs(c.start_timeout_s);
    loop {
        let job = chain.job(id).await?;
        match job.status {
            2 => break,
            1 if job.activeOperators >= job.minOperators => {
                match chain.start_job(id).await {
                    Ok(()) => eprintln!("operator {}: started job {id}", own.index),
                    // Another operator started it first.
                    Err(e) if matches!(revert_of(&e), Some(ContractError::WrongJobStatus(_))) => {}
                    Err(e) => return Err(e.context("starting the job")),
                }
            }
            1 => {}
            s => bail!("job {id} is no longer running (status {s})"),
        }
        if Instant::now() >= deadline {
            bail!(
                "job {id} did not start within {} s ({} of {} operators registered)",
                c.start_timeout_s,
                job.activeOperators,
                job.minOperators
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(OnChain {
        chain,
        job: id,
        interval: job.checkpointInterval.max(1),
    })
}

/// Checks a `Checkpoint` answer (weights hash = manifest = the round's model) and stores it
/// as `checkpoints/step-NNNNNN.{safetensors,json,manifest.env}`.
fn store_checkpoint(
    dir: &Path,
    resp: Response,
    domain: &str,
    own: &Operator,
    model_hash: &str,
) -> Result<(u64, PathBuf, Vec<u8>)> {
    let Response::Checkpoint { weights, manifest } = resp else {
        bail!("checkpoint answered with something else");
    };
    let payload = check_signed(&manifest.0, domain, "checkpoint-manifest", own)?;
    let m: serde_json::Value = serde_json::from_slice(&payload)?;
    let wh = hex::encode(Sha256::digest(&weights.0));
    if m["model_hash"].as_str() != Some(wh.as_str()) || wh != model_hash {
        bail!("the checkpoint's weights hash {wh}, the manifest and round say otherwise");
    }
    let cdir = dir.join("checkpoints");
    let step = m["step"].as_u64().unwrap_or(0);
    let stem = format!("step-{step:06}");
    let path = cdir.join(format!("{stem}.safetensors"));
    write_atomic(&path, &weights.0)?;
    write_atomic(&cdir.join(format!("{stem}.json")), &payload)?;
    write_atomic(&cdir.join(format!("{stem}.manifest.env")), &manifest.0)?;
    Ok((step, path, manifest.0))
}

/// The node's libp2p identity, kept in `node.key` in its folder so that a restarted node is
/// the same peer (its re-announce with a new enclave replaces the old one). Returns whether
/// the key existed (the node ran before).
fn node_identity(dir: &Path) -> Result<(identity::Keypair, bool)> {
    let path = dir.join("node.key");
    if let Ok(bytes) = std::fs::read(&path) {
        let k = identity::Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("{} is not a libp2p key", path.display()))?;
        return Ok((k, true));
    }
    let k = identity::Keypair::generate_ed25519();
    write_atomic(&path, &k.to_protobuf_encoding()?)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((k, false))
}

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
            job_id: net.state.view.job_hex.clone(),
        };
        match net.request(peer, req).await {
            Ok(r @ SyncResponse::Latest { .. }) => return Ok(Some((peer, r))),
            Ok(_) => {}
            Err(e) => eprintln!("asking {peer} for its checkpoint: {e:#}"),
        }
    }
    Ok(None)
}

/// Joins a job under way: when a peer has a checkpoint (rounds have closed), waits for the
/// next round to close (a heartbeat, or right away when this node did not run before), then
/// fetches that peer's latest checkpoint and loads it. `None`: the job has not started.
async fn catch_up(
    net: &mut Net,
    own_slot: &mut Option<Operator>,
    me: u32,
    restarted: bool,
    timeout: Duration,
) -> Result<Option<(u64, String)>> {
    let Some((_, info)) = latest_from_peers(net, me).await? else {
        return Ok(None);
    };
    let SyncResponse::Latest { round, .. } = info else {
        return Ok(None);
    };
    eprintln!(
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
    let peer = net
        .state
        .heartbeats
        .range(round..)
        .next_back()
        .and_then(|(_, h)| h.keys().find(|o| **o != me).copied())
        .and_then(|o| net.state.peers.get(&o).map(|p| p.peer_id))
        .context("no peer to sync from")?;
    sync_from(net, own_slot, peer).await.map(Some)
}

/// Fetches `peer`'s latest checkpoint in chunks, checks the weights against the signed
/// manifest's hash, and has the enclave load it (the enclave verifies the manifest against
/// the signer's evidence). Returns the round the model is after and its hash.
async fn sync_from(
    net: &mut Net,
    own_slot: &mut Option<Operator>,
    peer: PeerId,
) -> Result<(u64, String)> {
    let t = Instant::now();
    let job_id = net.state.view.job_hex.clone();
    let info = net
        .request(
            peer,
            SyncRequest::Latest {
                job_id: job_id.clone(),
            },
        )
        .await?;
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
            job_id: job_id.clone(),
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
    let got = hex::encode(Sha256::digest(&weights));
    if got != model_hash {
        bail!("{peer}'s checkpoint hashes to {got}, it announced {model_hash}");
    }
    let req = Request::LoadCheckpoint {
        weights: Blob(weights),
        manifest: Some(manifest),
        signer: Some(signer),
    };
    let resp = call_enclave(net, own_slot, req).await?;
    let Response::Checkpoint { weights, .. } = resp else {
        bail!("loading the checkpoint answered with something else");
    };
    if hex::encode(Sha256::digest(&weights.0)) != model_hash {
        bail!("the enclave holds other weights than the checkpoint's");
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "synced to round {round} (model {model_hash}) from {peer}: {size} bytes in {secs:.2} s \
         ({:.1} MB/s)",
        size as f64 / secs.max(1e-9) / 1e6
    );
    net.state.round = round;
    Ok((round, model_hash))
}

/// Has the enclave sign the checkpoint statement of on-chain round `round` and submits it;
/// returns whether ours fixed the round.
async fn commit_round(
    net: &mut Net,
    own_slot: &mut Option<Operator>,
    oc: &OnChain,
    round: u64,
    model_hash: &str,
    receipt_payload: &[u8],
) -> Result<bool> {
    let req = Request::ChainCheckpoint {
        chain_id: oc.chain.chain_id,
        contract: oc.chain.address().to_string(),
        job: oc.job,
        round,
    };
    let resp = call_enclave(net, own_slot, req).await?;
    let Response::Commitment {
        round: r,
        model_hash: mh,
        receipt_hash,
        signature,
    } = resp
    else {
        bail!("the checkpoint statement request answered with something else");
    };
    if r != round || mh != model_hash {
        bail!("the enclave's statement is of round {r}, model {mh}");
    }
    if receipt_hash != hex::encode(Sha256::digest(receipt_payload)) {
        bail!("the enclave's statement names another receipt than the round's");
    }
    let sig: [u8; 65] = hex::decode(&signature)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("the checkpoint signature is not 65 bytes"))?;
    let submit = oc.chain.submit_checkpoint(
        oc.job,
        round,
        b256("model hash", &mh)?,
        b256("receipt hash", &receipt_hash)?,
        &sig,
    );
    let accepted = match net.pump_until(submit).await? {
        Submitted::Landed { accepted, .. } => accepted,
        Submitted::Already => false,
    };
    println!(
        "checkpoint {round}: committed on chain ({})",
        if accepted {
            "fixed the round"
        } else {
            "agrees"
        }
    );
    Ok(accepted)
}

/// After the last round: requests leave and, when `wait_s` > 0, waits for the job to settle
/// and the stake to unbond, then withdraws stake and payment. Returns the wei withdrawn.
async fn leave_chain(oc: &OnChain, wait_s: u64) -> Result<Option<String>> {
    let me = oc.chain.operator(oc.job, oc.chain.account).await?;
    if me.status == 1 {
        oc.chain
            .request_leave(oc.job)
            .await
            .context("requesting leave")?;
    }
    if wait_s == 0 {
        eprintln!(
            "left job {}: stake and payment can be withdrawn once it settles and the stake unbonds",
            oc.job
        );
        return Ok(None);
    }
    let deadline = Instant::now() + Duration::from_secs(wait_s);
    loop {
        let op = oc.chain.operator(oc.job, oc.chain.account).await?;
        let now = oc.chain.now().await?;
        if oc.chain.is_settled(oc.job).await? && now >= op.unbondsAt {
            let before = oc.chain.balance(oc.chain.account).await?;
            let due = op.stake + oc.chain.payment_of(oc.job, oc.chain.account).await?;
            oc.chain.withdraw(oc.job).await.context("withdrawing")?;
            let after = oc.chain.balance(oc.chain.account).await?;
            println!("withdrew {due} wei (stake and payment; balance {before} -> {after})");
            return Ok(Some(due.to_string()));
        }
        if Instant::now() >= deadline {
            bail!(
                "job {} did not settle (or the stake did not unbond) within {wait_s} s",
                oc.job
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn report_disagreement(state: &State, round: u64, hashes: &[String]) {
    let Some(ours) = hashes.get(round as usize).filter(|h| !h.is_empty()) else {
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
