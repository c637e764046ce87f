//! The round, as a pure state machine (in the manner of rustls's connection state and
//! Psyche's `Coordinator::tick(…, now)`): the node tells the [`Barrier`] what it observed on
//! the network and the time, and gets back what to do ([`Action`]); the barrier does no IO
//! and reads no clock, so every path (everyone in, deadline with a quorum, no quorum, a quorum
//! of others closing the round without us) is tested below with no process or socket. The
//! node ([`crate::node`]) performs the actions.
//!
//! One round at a node: the enclave trains and the node publishes the signed update; then the
//! barrier waits for the whole active set, or, once the round's deadline has passed, for a
//! quorum; it re-publishes our update every few seconds for peers that missed it; once the set
//! is met it keeps listening a short settling time (an equivocation's second update, forwarded
//! by whoever saw it first, arrives before the set is fixed); then [`select_set`] keeps the
//! updates computed from our model and the enclave aggregates them. When a quorum of the
//! others reports (heartbeats) that they closed the round while we were still waiting, we are
//! behind and resync to a peer's checkpoint ([`sync_source`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use conclave_protocol::{Hash32, Signed, UpdatePayload};
use tokio::time::Instant;

/// The barrier's timing and quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundRules {
    /// Updates the round needs once its deadline passed.
    pub quorum: usize,
    /// From the start of the barrier until a quorum suffices.
    pub deadline: Duration,
    /// From the start of the barrier until the round fails without a quorum.
    pub hard_deadline: Duration,
    /// Listening time after the set is met, before it is fixed.
    pub settle: Duration,
    /// How often our update is re-published while waiting.
    pub republish: Duration,
}

impl RoundRules {
    /// The node's rules: the hard deadline is three round timeouts; re-publish every 2 s.
    pub fn new(quorum: usize, round_timeout: Duration, settle: Duration) -> Self {
        RoundRules {
            quorum,
            deadline: round_timeout,
            hard_deadline: 3 * round_timeout,
            settle,
            republish: Duration::from_secs(2),
        }
    }
}

/// What the node observed of the round on the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The active set (announced, not excluded), us included.
    pub active: BTreeSet<u32>,
    /// Operators of the active set whose valid update for the round arrived (ours included).
    pub got: BTreeSet<u32>,
    /// Operators that reported (heartbeat) the round closed.
    pub closed_by: BTreeSet<u32>,
}

impl Observed {
    fn everyone(&self) -> bool {
        self.active.iter().all(|o| self.got.contains(o))
    }
}

/// What the node does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run the network until `until`, or until something new arrives, then tick again.
    Wait { until: Instant },
    /// Publish our update again (peers ignore duplicates), then tick again.
    Republish,
    /// The set is met: listen until `until` without deciding (settling), then tick again.
    /// `by_deadline` is the number of updates when the deadline closed the round with a
    /// quorum rather than the whole active set.
    Settle {
        until: Instant,
        by_deadline: Option<usize>,
    },
    /// Fix the set and aggregate.
    Aggregate,
    /// A quorum of the others closed the round without us: sync to a peer's checkpoint.
    Resync,
    /// The round cannot close.
    Fail(RoundFailure),
}

/// Why a round failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoundFailure {
    #[error("round {round}: only {got} updates (quorum {quorum}) after the deadline")]
    NoQuorum {
        round: u64,
        got: usize,
        quorum: usize,
    },
    #[error("round {round}: {usable} usable updates, below the quorum of {quorum}")]
    TooFewUsable {
        round: u64,
        usable: usize,
        quorum: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Collecting,
    Settling { until: Instant },
    Done,
}

/// One round's barrier.
#[derive(Debug, Clone)]
pub struct Barrier {
    pub round: u64,
    rules: RoundRules,
    deadline: Instant,
    hard_deadline: Instant,
    next_republish: Instant,
    phase: Phase,
}

impl Barrier {
    /// A barrier for `round` starting at `now` (right after our update was published).
    pub fn new(round: u64, rules: RoundRules, now: Instant) -> Self {
        Barrier {
            round,
            rules,
            deadline: now + rules.deadline,
            hard_deadline: now + rules.hard_deadline,
            next_republish: now + rules.republish,
            phase: Phase::Collecting,
        }
    }

    /// The next action given what was observed at `now`.
    pub fn tick(&mut self, seen: &Observed, now: Instant) -> Action {
        match self.phase {
            Phase::Done => Action::Aggregate,
            Phase::Settling { until } if now >= until => {
                self.phase = Phase::Done;
                Action::Aggregate
            }
            Phase::Settling { until } => Action::Wait { until },
            Phase::Collecting => self.collecting(seen, now),
        }
    }

    fn collecting(&mut self, seen: &Observed, now: Instant) -> Action {
        let settle = |b: &mut Barrier, by_deadline| {
            let until = now + b.rules.settle;
            b.phase = Phase::Settling { until };
            Action::Settle { until, by_deadline }
        };
        if seen.everyone() {
            return settle(self, None);
        }
        if seen.closed_by.len() >= self.rules.quorum {
            self.phase = Phase::Done;
            return Action::Resync;
        }
        let got = seen.got.len();
        if now >= self.deadline && got >= self.rules.quorum {
            return settle(self, Some(got));
        }
        if now >= self.hard_deadline {
            return Action::Fail(RoundFailure::NoQuorum {
                round: self.round,
                got,
                quorum: self.rules.quorum,
            });
        }
        if now >= self.next_republish {
            self.next_republish = now + self.rules.republish;
            return Action::Republish;
        }
        let mut until = self.next_republish.min(self.hard_deadline);
        if now < self.deadline {
            until = until.min(self.deadline);
        }
        Action::Wait { until }
    }
}

/// Signed update envelopes by operator index.
pub type UpdateSet = BTreeMap<u32, Vec<u8>>;

/// The set to aggregate: the round's updates that were computed from `base` for `round`
/// (others are left out, and returned). Fails below the quorum.
pub fn select_set(
    round: u64,
    base: Hash32,
    updates: UpdateSet,
    quorum: usize,
) -> Result<(UpdateSet, Vec<u32>), RoundFailure> {
    let mut set = BTreeMap::new();
    let mut left_out = Vec::new();
    for (o, u) in updates {
        let ok = Signed::<UpdatePayload>::decode_envelope(&u)
            .ok()
            .and_then(|e| UpdatePayload::split(&e.payload).ok().map(|(h, _)| h))
            .is_some_and(|h| h.round == round && h.base_model == base);
        if ok {
            set.insert(o, u);
        } else {
            left_out.push(o);
        }
    }
    if set.len() < quorum {
        return Err(RoundFailure::TooFewUsable {
            round,
            usable: set.len(),
            quorum,
        });
    }
    Ok((set, left_out))
}

/// The operator to sync from after rounds `from..=to` closed: one (not `me`) that reported
/// the latest of those rounds closed (its checkpoint is stored before its heartbeat).
pub fn sync_source(
    heartbeats: &BTreeMap<u64, BTreeMap<u32, Hash32>>,
    from: u64,
    to: u64,
    me: u32,
) -> Option<u32> {
    heartbeats
        .range(from..=to)
        .rev()
        .find_map(|(_, h)| h.keys().find(|o| **o != me).copied())
}

/// Whether the round that just closed (`round`, 0-based) stores a checkpoint, and whether it
/// is a checkpoint round of the on-chain job (`chain_interval`).
pub fn checkpoint_after(round: u64, every: u64, chain_interval: Option<u64>) -> (bool, bool) {
    let closed = round + 1;
    let chain = chain_interval.is_some_and(|i| closed.is_multiple_of(i.max(1)));
    (chain || (every > 0 && closed.is_multiple_of(every)), chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_attestation::sim::default_sim_measurement;
    use conclave_attestation::{BindingContext, EnclaveKey, JobId, Nonce, SimAttester, SimConfig};
    use conclave_protocol::job_domain;

    fn rules() -> RoundRules {
        RoundRules {
            quorum: 2,
            deadline: Duration::from_secs(10),
            hard_deadline: Duration::from_secs(30),
            settle: Duration::from_millis(500),
            republish: Duration::from_secs(2),
        }
    }

    fn seen(active: &[u32], got: &[u32], closed_by: &[u32]) -> Observed {
        Observed {
            active: active.iter().copied().collect(),
            got: got.iter().copied().collect(),
            closed_by: closed_by.iter().copied().collect(),
        }
    }

    #[test]
    fn everyone_in_settles_then_aggregates() {
        let t0 = Instant::now();
        let mut b = Barrier::new(0, rules(), t0);
        let s = seen(&[0, 1, 2], &[0, 1, 2], &[]);
        let until = t0 + Duration::from_millis(500);
        assert_eq!(
            b.tick(&s, t0),
            Action::Settle {
                until,
                by_deadline: None
            }
        );
        // Still settling: whatever arrives, the set is not fixed before `until`.
        assert_eq!(
            b.tick(&s, t0 + Duration::from_millis(100)),
            Action::Wait { until }
        );
        assert_eq!(b.tick(&s, until), Action::Aggregate);
        assert_eq!(b.tick(&s, until), Action::Aggregate);
    }

    #[test]
    fn waiting_republishes_and_wakes_at_the_deadline() {
        let t0 = Instant::now();
        let mut b = Barrier::new(0, rules(), t0);
        let s = seen(&[0, 1, 2], &[0], &[]);
        assert_eq!(
            b.tick(&s, t0),
            Action::Wait {
                until: t0 + Duration::from_secs(2)
            }
        );
        let t = t0 + Duration::from_secs(2);
        assert_eq!(b.tick(&s, t), Action::Republish);
        assert_eq!(
            b.tick(&s, t),
            Action::Wait {
                until: t + Duration::from_secs(2)
            }
        );
        // Near the deadline the wake-up is the deadline itself.
        let t = t0 + Duration::from_secs(9);
        assert_eq!(b.tick(&s, t), Action::Republish);
        assert_eq!(
            b.tick(&s, t),
            Action::Wait {
                until: t0 + Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn after_the_deadline_a_quorum_closes_the_round() {
        let t0 = Instant::now();
        let mut b = Barrier::new(3, rules(), t0);
        let before = t0 + Duration::from_secs(5);
        // A quorum before the deadline is not enough: the whole set may still come.
        assert!(matches!(
            b.tick(&seen(&[0, 1, 2], &[0, 1], &[]), before),
            Action::Wait { .. } | Action::Republish
        ));
        let at = t0 + Duration::from_secs(10);
        assert_eq!(
            b.tick(&seen(&[0, 1, 2], &[0, 1], &[]), at),
            Action::Settle {
                until: at + Duration::from_millis(500),
                by_deadline: Some(2)
            }
        );
    }

    #[test]
    fn without_a_quorum_the_round_fails_at_the_hard_deadline() {
        let t0 = Instant::now();
        let mut b = Barrier::new(4, rules(), t0);
        let s = seen(&[0, 1, 2], &[0], &[]);
        assert!(matches!(
            b.tick(&s, t0 + Duration::from_secs(10)),
            Action::Republish | Action::Wait { .. }
        ));
        assert_eq!(
            b.tick(&s, t0 + Duration::from_secs(30)),
            Action::Fail(RoundFailure::NoQuorum {
                round: 4,
                got: 1,
                quorum: 2
            })
        );
    }

    #[test]
    fn a_quorum_closing_without_us_means_resync() {
        let t0 = Instant::now();
        let mut b = Barrier::new(1, rules(), t0);
        assert_eq!(b.tick(&seen(&[0, 1, 2], &[0], &[1, 2]), t0), Action::Resync);
        // One heartbeat is not a quorum.
        let mut b = Barrier::new(1, rules(), t0);
        assert!(matches!(
            b.tick(&seen(&[0, 1, 2], &[0], &[1]), t0),
            Action::Wait { .. }
        ));
        // An excluded operator shrinks the active set: the rest is everyone.
        assert!(matches!(
            b.tick(&seen(&[0, 2], &[0, 2], &[1]), t0),
            Action::Settle { .. }
        ));
    }

    fn signed_update(round: u64, base: Hash32) -> Vec<u8> {
        let job = JobId([7; 32]);
        let key = EnclaveKey::generate();
        let ctx = BindingContext {
            job_id: job,
            nonce: Nonce([1; 32]),
        };
        let ev = SimAttester::new(SimConfig::default())
            .unwrap()
            .evidence(&key.report_data(&ctx));
        let _ = default_sim_measurement();
        let stmt = UpdatePayload {
            round,
            base_model: base,
            body: b"body".to_vec(),
        };
        Signed::seal(&key, &job_domain(&job, &Hash32::ZERO), stmt, ev.hash())
            .unwrap()
            .bytes
    }

    #[test]
    fn the_set_keeps_updates_from_our_model_and_needs_a_quorum() {
        let base = Hash32::sha256(b"ours");
        let other = Hash32::sha256(b"theirs");
        let updates = BTreeMap::from([
            (0, signed_update(5, base)),
            (1, signed_update(5, other)),
            (2, signed_update(4, base)),
            (3, signed_update(5, base)),
            (4, b"garbage".to_vec()),
        ]);
        let (set, left) = select_set(5, base, updates.clone(), 2).unwrap();
        assert_eq!(set.keys().copied().collect::<Vec<_>>(), vec![0, 3]);
        assert_eq!(left, vec![1, 2, 4]);
        assert_eq!(
            select_set(5, base, updates, 3).unwrap_err(),
            RoundFailure::TooFewUsable {
                round: 5,
                usable: 2,
                quorum: 3
            }
        );
    }

    #[test]
    fn catch_up_syncs_from_whoever_closed_the_latest_round() {
        let h = Hash32::ZERO;
        let hb = BTreeMap::from([
            (2, BTreeMap::from([(0, h), (1, h)])),
            (3, BTreeMap::from([(1, h), (2, h)])),
        ]);
        assert_eq!(sync_source(&hb, 2, u64::MAX, 1), Some(2));
        assert_eq!(sync_source(&hb, 2, 2, 0), Some(1));
        assert_eq!(sync_source(&hb, 4, 9, 0), None);
        assert_eq!(
            sync_source(&BTreeMap::from([(3, BTreeMap::from([(1, h)]))]), 3, 3, 1),
            None
        );
    }

    #[test]
    fn checkpoints_follow_the_interval_and_the_chain() {
        assert_eq!(checkpoint_after(0, 1, None), (true, false));
        assert_eq!(checkpoint_after(0, 2, None), (false, false));
        assert_eq!(checkpoint_after(1, 2, None), (true, false));
        assert_eq!(checkpoint_after(1, 0, Some(2)), (true, true));
        assert_eq!(checkpoint_after(2, 0, Some(2)), (false, false));
    }
}
