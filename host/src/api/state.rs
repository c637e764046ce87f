//! What the API serves, shared between the HTTP handlers and the job worker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Job, JobRequest, JobState, OperatorStatus};
use crate::run::Event;

/// Counters and gauges for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub rounds_total: u64,
    pub round_seconds_sum: f64,
    pub last_round_seconds: f64,
    pub last_loss: f64,
    pub update_bytes_total: u64,
    pub jobs_failed_total: u64,
}

pub(super) struct JobEntry {
    pub(super) job: Job,
    pub(super) dir: PathBuf,
}

/// What the API serves, shared with the worker.
#[derive(Default)]
pub struct Inner {
    pub(super) jobs: BTreeMap<String, JobEntry>,
    pub(super) operators: Vec<OperatorStatus>,
    pub(super) metrics: Metrics,
    pub(super) queue: std::collections::VecDeque<(String, JobRequest)>,
}

/// The API's state.
#[derive(Clone)]
pub struct Shared {
    pub(super) inner: Arc<Mutex<Inner>>,
    /// Jobs' storage folders live under here.
    pub(super) root: PathBuf,
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shared {
    pub fn new(root: PathBuf) -> Self {
        Shared {
            inner: Arc::new(Mutex::new(Inner::default())),
            root,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a job (already running or queued) stored in `dir`.
    pub fn add_job(&self, id: &str, operators: u32, rounds: u64, dir: PathBuf, state: JobState) {
        self.lock().jobs.insert(
            id.to_string(),
            JobEntry {
                job: Job {
                    id: id.to_string(),
                    state,
                    operators,
                    rounds,
                    rounds_done: 0,
                    model_hash: None,
                    last_loss: None,
                    error: None,
                },
                dir,
            },
        );
    }

    pub fn set_state(&self, id: &str, state: JobState, error: Option<String>) {
        let mut g = self.lock();
        if state == JobState::Failed {
            g.metrics.jobs_failed_total += 1;
        }
        if let Some(e) = g.jobs.get_mut(id) {
            e.job.state = state;
            e.job.error = error;
        }
    }

    /// Follows a run's events.
    pub fn event(&self, id: &str, ev: Event) {
        let mut g = self.lock();
        match ev {
            Event::Attested {
                operator,
                address,
                tee,
            } => {
                g.operators
                    .retain(|o| !(o.job == id && o.operator == operator));
                g.operators.push(OperatorStatus {
                    operator,
                    job: id.to_string(),
                    address,
                    tee,
                    heartbeat: unix_now(),
                });
            }
            Event::Round {
                round,
                loss,
                seconds,
                model_hash,
                update_bytes,
            } => {
                g.metrics.rounds_total += 1;
                g.metrics.round_seconds_sum += seconds;
                g.metrics.last_round_seconds = seconds;
                g.metrics.last_loss = loss;
                g.metrics.update_bytes_total += update_bytes;
                let now = unix_now();
                for o in g.operators.iter_mut().filter(|o| o.job == id) {
                    o.heartbeat = now;
                }
                if let Some(e) = g.jobs.get_mut(id) {
                    e.job.rounds_done = round + 1;
                    e.job.model_hash = Some(model_hash.to_hex());
                    e.job.last_loss = Some(loss);
                }
            }
        }
    }

    /// The next queued job, marked running, with its storage folder.
    pub fn next_job(&self) -> Option<(String, JobRequest, PathBuf)> {
        let mut g = self.lock();
        let (id, req) = g.queue.pop_front()?;
        let e = g.jobs.get_mut(&id)?;
        e.job.state = JobState::Running;
        Some((id, req, e.dir.clone()))
    }

    pub(super) fn job_dir(&self, id: &str) -> Option<PathBuf> {
        self.lock().jobs.get(id).map(|e| e.dir.clone())
    }
}
