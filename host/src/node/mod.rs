//! `conclave node --config node.toml`: one operator per process on the operator network.
//!
//! The node is a thin driver: it brings up its enclave ([`crate::operator::launch_operator`]),
//! joins the on-chain job when there is one ([`onchain`]), joins the swarm ([`crate::net`]) by
//! dialing the bootstrap list, announces its evidence and waits until every operator of the
//! job has announced. Then, each round: the enclave trains its share, the node publishes the
//! signed update and runs the round's [`Barrier`] (the pure state machine of
//! [`crate::round`]) until it says to aggregate (or to resync, [`catchup`]); the enclave
//! aggregates the set with the signers' evidence; the node checks the signed receipt, stores
//! it ([`crate::store`]), stores a checkpoint when the round calls for one, publishes a
//! heartbeat, and commits the enclave's checkpoint statement on chain at the job's checkpoint
//! rounds.
//!
//! What the node reports per round goes to the caller as [`NodeEvent`]s (the `conclave`
//! binary prints them on stdout, one line each, which `conclave demo` reads); logs go through
//! `tracing`.

mod catchup;
mod keyshare;
mod onchain;
mod report;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use conclave_protocol::channel::{Blob, PeerEvidence, Request, Response};
use conclave_protocol::gossip::{Announce, Heartbeat, Kind, Message};
use conclave_protocol::receipt::RoundReceipt;
use conclave_protocol::{AnnounceStatement, CheckpointManifest, Hash32, Signed};
use libp2p::{Multiaddr, identity};
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

pub use onchain::{OnChain, Withdrawal};
pub use report::{NodeEvent, NodeSummary};

use crate::config::NodeConfig;
use crate::net::state::MAX_UPDATE_ENVELOPE;
use crate::net::{JobView, Net, Offer, State};
use crate::operator::{
    Operator, hello_operator, launch_operator, load_job, prepare_job, start_enclave,
};
use crate::round::{
    Action, Barrier, Observed, RoundRules, checkpoint_after, select_set, sync_source,
};
use crate::store::{CheckpointFiles, JobStore, write_atomic};

/// Runs a node to the end of the job.
pub fn run_node(cfg: &NodeConfig, events: &mut dyn FnMut(NodeEvent)) -> Result<NodeSummary> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let span = info_span!("node", operator = cfg.node.index);
    rt.block_on(run_node_async(cfg, events).instrument(span))
}

/// An enclave request run on a blocking thread while the swarm keeps running; the operator
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

/// An enclave request whose answer is a signed envelope (see [`call_enclave`]).
async fn call_signed(net: &mut Net, op: &mut Option<Operator>, req: Request) -> Result<Vec<u8>> {
    match call_enclave(net, op, req).await? {
        Response::Signed { envelope } => Ok(envelope.0),
        other => bail!("expected a signed envelope, got {other:?}"),
    }
}

/// The state of a node's run, as the rounds go.
struct Run<'a> {
    cfg: &'a NodeConfig,
    store: JobStore,
    domain: String,
    me: u32,
    net: Net,
    own: Option<Operator>,
    onchain: Option<OnChain>,
    rules: RoundRules,
    model_hash: Hash32,
    hashes: Vec<Option<Hash32>>,
    sets: Vec<Vec<u32>>,
    update_bytes: Vec<u64>,
    steps_per_round: u64,
    commits: Vec<(u64, bool)>,
}

/// How a round's barrier ended.
enum Closed {
    /// The set is fixed: aggregate.
    Aggregate,
    /// A quorum closed it without us; we synced to the model after round `.0` (exclusive).
    Synced(u64, Hash32),
}

async fn run_node_async(
    cfg: &NodeConfig,
    events: &mut dyn FnMut(NodeEvent),
) -> Result<NodeSummary> {
    let jobcfg = cfg.effective_job();
    let me = cfg.node.index;
    let store = JobStore::create(&cfg.storage.dir)?;
    let job = prepare_job(&jobcfg, &cfg.enclave)?;
    // The document every enclave of the job obeys, kept for auditors (its hash is the spec
    // hash the enclaves' statements name).
    crate::store::write_atomic(&store.document(), &job.document)?;
    let started = std::time::Instant::now();
    let mut own = if job.doc.sealing.is_some() && job.key_broker.is_none() {
        // A sealed job without a broker here: the key comes from a peer enclave.
        let started = start_enclave(&job, me, &store, None).context("our own enclave")?;
        let mut op = hello_operator(&job, started).context("our own enclave")?;
        let bootstrap: Vec<Multiaddr> = cfg
            .node
            .bootstrap
            .iter()
            .map(|b| b.parse())
            .collect::<Result<_, _>>()?;
        keyshare::key_from_network(
            &job,
            &mut op,
            &bootstrap,
            store.equivocation_dir(),
            Duration::from_secs(cfg.node.announce_timeout_s),
        )
        .await?;
        load_job(&job, &mut op)?;
        op
    } else {
        launch_operator(&job, me, &store, None).context("our own enclave")?
    };
    events(NodeEvent::Attested {
        tee: own.tee.clone(),
        measurement: own.accepted.measurement().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    });

    // The network.
    let view = JobView {
        job: job.job,
        domain: job.domain.clone(),
        policy: job.policy.clone(),
        operators: jobcfg.operators,
    };
    let (keypair, restarted) = node_identity(&store)?;
    // No update of the job can be larger than its parameters as f32 values with u32 indices,
    // plus the envelope: a reference to a larger blob is refused before any byte is fetched.
    let max_update = 8 * job.published.params.max(1) + (1 << 20);
    let state = State::new(view).with_max_update_bytes(max_update.min(MAX_UPDATE_ENVELOPE));
    let mut net = Net::new(keypair, state, store.equivocation_dir())?;
    info!("operator {me}: peer id {}", net.local_peer_id());
    net.listen(cfg.node.listen.parse()?).await?;
    let onchain = match &cfg.chain {
        Some(c) => {
            Some(onchain::join_chain(c, &jobcfg, &job, &mut own, &store, &mut net, events).await?)
        }
        None => None,
    };
    let account = onchain.as_ref().map(|oc| oc.chain.account.to_string());
    announce_and_wait(&mut net, cfg, &mut own, account).await?;
    // With a chain, every peer's enclave key must be registered on chain by the account its
    // announce names; a peer that is not is left out of every round.
    if let Some(oc) = &onchain {
        onchain::check_registrations(oc, &mut net.state).await?;
    }
    for p in net.state.peers.values() {
        let rec = crate::store::OperatorRecord {
            operator: p.operator,
            address: p.address,
            job_id: job.job,
            nonce: p.evidence.nonce,
            peer_id: Some(p.peer_id.to_string()),
            evidence: JobStore::evidence_name(p.operator),
        };
        store.write_operator(&rec, &p.evidence.evidence.0)?;
    }

    let quorum = cfg.node.quorum.unwrap_or(jobcfg.operators) as usize;
    let round_timeout = Duration::from_secs(cfg.node.round_timeout_s);
    let mut run = Run {
        cfg,
        store,
        domain: job.domain.clone(),
        me,
        net,
        own: Some(own),
        onchain,
        rules: RoundRules::new(
            quorum,
            round_timeout,
            Duration::from_millis(cfg.node.settle_ms),
        ),
        model_hash: job.published.initial_model_hash,
        hashes: vec![None; jobcfg.rounds as usize],
        sets: vec![Vec::new(); jobcfg.rounds as usize],
        update_bytes: Vec::new(),
        steps_per_round: 0,
        commits: Vec::new(),
    };
    // A job already under way (this node restarted, or joins late): start from a peer's
    // latest checkpoint, fetched right after a round closes.
    let sync_timeout = 3 * round_timeout + Duration::from_secs(cfg.node.announce_timeout_s);
    let mut round = 0;
    if let Some((r, h)) =
        catchup::catch_up(&mut run.net, &mut run.own, me, restarted, sync_timeout).await?
    {
        round = r;
        run.synced_to(r, h);
    }
    while round < jobcfg.rounds {
        let span = info_span!("round", round);
        round = run.round(round, events).instrument(span).await?;
    }
    run.finish(jobcfg.rounds, job.job.to_string(), events).await
}

/// Publishes our announce until every operator of the job has announced.
async fn announce_and_wait(
    net: &mut Net,
    cfg: &NodeConfig,
    own: &mut Operator,
    account: Option<String>,
) -> Result<()> {
    let bootstrap: Vec<Multiaddr> = cfg
        .node
        .bootstrap
        .iter()
        .map(|b| b.parse())
        .collect::<Result<_, _>>()?;
    // The enclave's word that this peer id (and, with a chain, this account) speaks for it.
    let statement: Signed<AnnounceStatement> = own.signed(
        &Request::SignAnnounce {
            peer_id: net.local_peer_id().to_string(),
            account,
        },
        &net.state.view.domain.clone(),
    )?;
    let announce = Message::Announce(Announce {
        job_id: net.state.view.job,
        operator: own.index,
        address: own.address,
        evidence: own.peer.evidence.clone(),
        nonce: own.peer.nonce,
        peer_id: net.local_peer_id().to_string(),
        addrs: net.listen_addrs.iter().map(|a| a.to_string()).collect(),
        statement: Blob(statement.bytes),
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
        let all = net.pump_while(step, |s| s.all_announced()).await;
        // Peers still waiting for a sealed job's key ask our enclave meanwhile.
        keyshare::serve_key_requests(net, own);
        if all {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "only operators {:?} of {} announced within {} s",
                net.state.peers.keys().collect::<Vec<_>>(),
                net.state.view.operators,
                cfg.node.announce_timeout_s
            );
        }
    }
    // Let the last announces reach the others before the first updates.
    net.publish_own(&announce)?;
    info!(
        "operator {}: all {} operators announced",
        own.index, net.state.view.operators
    );
    Ok(())
}

/// What the barrier needs to know about `round` from the validator's state.
fn observe(s: &State, round: u64) -> Observed {
    Observed {
        active: s.active(),
        got: s.round_updates(round).keys().copied().collect(),
        closed_by: s
            .heartbeats
            .get(&round)
            .map(|h| h.keys().copied().collect())
            .unwrap_or_default(),
    }
}

impl Run<'_> {
    fn own(&self) -> Result<&Operator> {
        self.own.as_ref().context("the enclave channel is gone")
    }

    /// The model after `round` closed rounds is `hash` (from a peer's checkpoint).
    fn synced_to(&mut self, round: u64, hash: Hash32) {
        if let Some(slot) = round
            .checked_sub(1)
            .and_then(|r| self.hashes.get_mut(r as usize))
        {
            *slot = Some(hash);
        }
        self.model_hash = hash;
    }

    /// Runs `round`; returns the next round to run.
    async fn round(&mut self, round: u64, events: &mut dyn FnMut(NodeEvent)) -> Result<u64> {
        self.net.state.round = round;
        if let Some(own) = self.own.as_mut() {
            keyshare::serve_key_requests(&mut self.net, own);
        }
        let update =
            call_signed(&mut self.net, &mut self.own, Request::TrainRound { round }).await?;
        self.own()?
            .verify::<conclave_protocol::UpdatePayload>(&update, &self.domain)?;
        self.update_bytes.push(update.len() as u64);
        let msg = self
            .net
            .publish_update(round, update, self.cfg.node.update_inline_max)?;
        match self.barrier(round, msg).await? {
            Closed::Synced(r, h) => {
                self.synced_to(r, h);
                Ok(r)
            }
            Closed::Aggregate => {
                self.close(round, events).await?;
                Ok(round + 1)
            }
        }
    }

    /// Drives the round's barrier until it says to aggregate or to resync.
    async fn barrier(&mut self, round: u64, msg: Vec<u8>) -> Result<Closed> {
        let mut b = Barrier::new(round, self.rules, Instant::now());
        loop {
            let seen = observe(&self.net.state, round);
            match b.tick(&seen, Instant::now()) {
                Action::Wait { until } => {
                    let v = self.net.state.accepted;
                    self.net.pump_while(until, |s| s.accepted != v).await;
                }
                // Peers that missed ours ignore the duplicate.
                Action::Republish => self.net.publish(Kind::Update, msg.clone())?,
                Action::Settle { until, by_deadline } => {
                    if let Some(got) = by_deadline {
                        info!(
                            "round {round}: deadline passed, closing with {got} updates (quorum {})",
                            self.rules.quorum
                        );
                    }
                    // An equivocation's second update, forwarded by the operators that saw it
                    // first, reaches us before we fix the set.
                    self.net.pump_while(until, |_| false).await;
                }
                Action::Aggregate => return Ok(Closed::Aggregate),
                Action::Resync => return self.resync(round).await,
                Action::Fail(f) => bail!(f),
            }
        }
    }

    /// A quorum of the others closed `round` without us: sync to their checkpoint.
    async fn resync(&mut self, round: u64) -> Result<Closed> {
        warn!("round {round}: the others closed it without us; syncing to their checkpoint");
        let peer = sync_source(&self.net.state.heartbeats, round, round, self.me)
            .and_then(|o| self.net.state.peers.get(&o).map(|p| p.peer_id))
            .context("no peer to sync from")?;
        let (r, h) = catchup::sync_from(&mut self.net, &mut self.own, peer).await?;
        if r <= round {
            bail!(
                "round {round}: the peers' latest checkpoint is after round {r}; they must \
                 store one every round (node.checkpoint_every = 1) for us to catch up"
            );
        }
        Ok(Closed::Synced(r, h))
    }

    /// Aggregates the round's set, stores the receipt (and a checkpoint when due), tells the
    /// peers with a heartbeat, and commits on chain at checkpoint rounds.
    async fn close(&mut self, round: u64, events: &mut dyn FnMut(NodeEvent)) -> Result<()> {
        let (set, left_out) = select_set(
            round,
            self.model_hash,
            self.net.state.round_updates(round),
            self.rules.quorum,
        )?;
        for o in left_out {
            warn!("round {round}: operator {o}'s update is from another model; left out");
        }
        let peers: Vec<PeerEvidence> = set
            .keys()
            .filter_map(|o| self.net.state.peers.get(o).map(|p| p.evidence.clone()))
            .collect();
        let req = Request::Aggregate {
            round,
            updates: set.values().map(|u| Blob(u.clone())).collect(),
            peers,
        };
        let env = call_signed(&mut self.net, &mut self.own, req).await?;
        let receipt: Signed<RoundReceipt> = self.own()?.verify(&env, &self.domain)?;
        let r = &receipt.statement;
        if r.round != round || r.model_hash_before != self.model_hash {
            bail!(
                "our receipt is for round {} from {}",
                r.round,
                r.model_hash_before
            );
        }
        if r.updates.len() != set.len() {
            bail!(
                "the receipt aggregates {} updates, we sent {}",
                r.updates.len(),
                set.len()
            );
        }
        self.store.write_receipt(round, self.me, &receipt)?;
        for (o, u) in &set {
            self.store.write_update(round, *o, u)?;
        }
        self.model_hash = r.model_hash_after;
        self.steps_per_round = r.step_after - r.step_before;
        let members: Vec<u32> = set.keys().copied().collect();
        events(NodeEvent::Round {
            round,
            model_hash: self.model_hash,
            operators: members.clone(),
            loss: r.loss,
        });
        self.hashes[round as usize] = Some(self.model_hash);
        self.sets[round as usize] = members;

        // Checkpoints: stored (and offered to joiners) every `checkpoint_every` rounds and at
        // the on-chain job's checkpoint rounds, before the heartbeat tells peers the round
        // closed.
        let interval = self.onchain.as_ref().map(|oc| oc.interval);
        let (store_it, chain_round) =
            checkpoint_after(round, self.cfg.node.checkpoint_every, interval);
        if store_it {
            self.checkpoint(round).await?;
        }
        // At an on-chain checkpoint round the enclave's statement rides on the heartbeat, so
        // that peers gather a certificate from the heartbeats.
        let commitment = match &self.onchain {
            Some(oc) if chain_round => Some(
                onchain::commitment(
                    &mut self.net,
                    &mut self.own,
                    oc,
                    round + 1,
                    &self.model_hash,
                    &r.outcome_hash(),
                )
                .await?,
            ),
            _ => None,
        };
        let hb = Message::Heartbeat(Heartbeat {
            operator: self.me,
            round,
            model_hash: self.model_hash,
            receipt: Some(Blob(receipt.bytes.clone())),
            commitment: commitment.clone(),
        });
        self.net.publish_own(&hb)?;
        if let (Some(oc), Some(c)) = (&self.onchain, &commitment) {
            let me = self.own()?.address;
            let certified = onchain::certify(
                &mut self.net,
                oc,
                &self.store,
                c,
                me,
                Duration::from_millis(self.cfg.node.settle_ms.max(500)),
                Duration::from_secs(self.cfg.node.round_timeout_s),
            )
            .await?;
            events(NodeEvent::Certified {
                round: round + 1,
                signers: certified.signers,
                submitted: certified.submitted,
            });
            self.commits.push((round + 1, certified.submitted));
        }
        // Peers' heartbeats of the previous round that disagree with ours.
        self.report_disagreement(round.saturating_sub(1));
        Ok(())
    }

    /// Stores the enclave's checkpoint after `round` and offers it to joiners.
    async fn checkpoint(&mut self, round: u64) -> Result<()> {
        let resp = call_enclave(&mut self.net, &mut self.own, Request::Checkpoint).await?;
        let own = self.own()?;
        let (manifest, files) =
            store_checkpoint(&self.store, resp, &self.domain, own, &self.model_hash)?;
        self.net.offer = Some(Offer {
            round: round + 1,
            step: manifest.statement.step,
            model_hash: self.model_hash,
            size: std::fs::metadata(&files.weights)?.len(),
            weights: files.weights,
            manifest: manifest.bytes,
            signer: own.peer.clone(),
        });
        Ok(())
    }

    fn report_disagreement(&self, round: u64) {
        let Some(Some(ours)) = self.hashes.get(round as usize) else {
            return;
        };
        if let Some(hb) = self.net.state.heartbeats.get(&round) {
            for (o, h) in hb {
                if h != ours {
                    warn!("round {round}: operator {o} reports model {h}, ours is {ours}");
                }
            }
        }
    }

    /// After the last round: linger for the last heartbeats, store every operator's
    /// receipts, shut the enclave down, leave the chain, write the summary.
    async fn finish(
        mut self,
        rounds: u64,
        job_id: String,
        events: &mut dyn FnMut(NodeEvent),
    ) -> Result<NodeSummary> {
        // Linger until the active set's heartbeats for the last round arrived (or a few
        // seconds), so that slower peers get our last messages.
        let last = rounds - 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        self.net
            .pump_while(deadline, |s| {
                let got = s.heartbeats.get(&last);
                s.active()
                    .iter()
                    .all(|o| got.is_some_and(|g| g.contains_key(o)))
            })
            .await;
        self.report_disagreement(last);
        let losses = self.store_peer_receipts(rounds)?;
        let mut own = self.own.take().context("the enclave channel is gone")?;
        let _ = own.channel.call(&Request::Shutdown);
        drop(own);
        let withdrawn = match (&self.onchain, &self.cfg.chain) {
            (Some(oc), Some(c)) => onchain::leave_chain(oc, c.withdraw_wait_s).await?,
            _ => None,
        };
        let wei = withdrawn.as_ref().map(|w| w.wei.clone());
        if let Some(w) = withdrawn {
            events(NodeEvent::Withdrew(w));
        }
        let summary = NodeSummary {
            job_id,
            operator: self.me,
            rounds,
            model_hashes: self
                .hashes
                .iter()
                .map(|h| h.map(|h| h.to_hex()).unwrap_or_default())
                .collect(),
            sets: self.sets,
            excluded: self.net.state.banned.keys().copied().collect(),
            losses,
            update_bytes: self.update_bytes,
            steps_per_round: self.steps_per_round,
            commits: self.commits,
            withdrawn: wei,
        };
        self.store.write_summary(&summary)?;
        Ok(summary)
    }

    /// Every operator's receipts, as their heartbeats brought them (verified on arrival);
    /// returns the mean loss per round over the receipts stored.
    fn store_peer_receipts(&self, rounds: u64) -> Result<Vec<f64>> {
        let mut losses = Vec::new();
        for round in 0..rounds {
            if let Some(got) = self.net.state.receipts.get(&round) {
                for (o, (env, payload)) in got {
                    if *o != self.me {
                        self.store.write_receipt_bytes(round, *o, env, payload)?;
                    }
                }
            }
            let mut sum = 0.0;
            let mut n = 0;
            for o in self.store.receipt_operators(round) {
                let bytes = std::fs::read(self.store.receipt_json(round, o))?;
                sum += RoundReceipt::from_json(&bytes)?.loss;
                n += 1;
            }
            losses.push(if n > 0 { sum / n as f64 } else { f64::NAN });
        }
        Ok(losses)
    }
}

/// Checks a `Checkpoint` answer (weights hash = manifest = the round's model) and stores it.
fn store_checkpoint(
    store: &JobStore,
    resp: Response,
    domain: &str,
    own: &Operator,
    model_hash: &Hash32,
) -> Result<(Signed<CheckpointManifest>, CheckpointFiles)> {
    let Response::Checkpoint { weights, manifest } = resp else {
        bail!("checkpoint answered with something else");
    };
    let m: Signed<CheckpointManifest> = own.verify(&manifest.0, domain)?;
    let wh = Hash32::sha256(&weights.0);
    if m.statement.file_hash() != wh || m.statement.model_hash != *model_hash {
        bail!("the checkpoint's weights hash {wh}, the manifest and round say otherwise");
    }
    let files = store.write_checkpoint(&weights.0, &m)?;
    Ok((m, files))
}

/// The node's libp2p identity, kept in `node.key` in its folder so that a restarted node is
/// the same peer (its re-announce with a new enclave replaces the old one). Returns whether
/// the key existed (the node ran before).
fn node_identity(store: &JobStore) -> Result<(identity::Keypair, bool)> {
    let path = store.node_key();
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
