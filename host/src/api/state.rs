//! What the API serves, shared between the HTTP handlers and the job worker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::auth::Token;
use super::{Job, JobRequest, JobState, OperatorStatus};
use crate::config::ApiSection;
use crate::run::Event;

/// The API's token and limits (from `[api]`, see [`ApiSection`]).
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// What state-changing requests must present; `None`: none is accepted.
    pub token: Option<Token>,
    pub max_queued: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
}

impl ApiOptions {
    /// The section's limits with `token` (the secret itself, as read from the token file).
    pub fn new(api: &ApiSection, token: Option<&str>) -> Self {
        ApiOptions {
            token: token.map(Token::new),
            max_queued: api.max_queued,
            max_connections: api.max_connections,
            max_in_flight: api.max_in_flight,
            request_timeout: Duration::from_secs(api.request_timeout_s),
            header_timeout: Duration::from_secs(api.header_timeout_s),
        }
    }
}

impl Default for ApiOptions {
    /// The default limits and no token.
    fn default() -> Self {
        ApiOptions::new(&ApiSection::default(), None)
    }
}

/// Connection counters for `/metrics`.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Idle connections closed to admit new ones at `api.max_connections`.
    pub evicted: AtomicU64,
    /// New connections closed because every open one had a request in progress.
    pub refused: AtomicU64,
}

impl NetStats {
    pub(super) fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

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

impl JobEntry {
    fn new(id: &str, operators: u32, rounds: u64, dir: PathBuf, state: JobState) -> Self {
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
                sealed: false,
                sealing: crate::operator::sealing_line(false).to_string(),
            },
            dir,
        }
    }
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
    pub(super) api: Arc<ApiOptions>,
    pub(super) net: Arc<NetStats>,
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a job was not queued.
pub(super) enum QueueError {
    Full(usize),
}

impl Shared {
    /// The state of an API with the default limits and no token: it serves what is public and
    /// accepts no state-changing request (`conclave run`'s API).
    pub fn new(root: PathBuf) -> Self {
        Self::with_options(root, ApiOptions::default())
    }

    /// The state of an API with these limits and token (`conclave serve`).
    pub fn with_options(root: PathBuf, api: ApiOptions) -> Self {
        Shared {
            inner: Arc::new(Mutex::new(Inner::default())),
            root,
            api: Arc::new(api),
            net: Arc::new(NetStats::default()),
        }
    }

    /// The API's limits and token.
    pub fn options(&self) -> &ApiOptions {
        &self.api
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a job (already running or queued) stored in `dir`.
    pub fn add_job(&self, id: &str, operators: u32, rounds: u64, dir: PathBuf, state: JobState) {
        self.lock().jobs.insert(
            id.to_string(),
            JobEntry::new(id, operators, rounds, dir, state),
        );
    }

    /// Queues a posted job unless `api.max_queued` jobs already wait; `make_id` names it from
    /// the number of jobs known (under the lock, so that two posts never share an id). Returns
    /// the job as registered.
    pub(super) fn enqueue(
        &self,
        req: JobRequest,
        make_id: impl FnOnce(usize) -> String,
    ) -> Result<Job, QueueError> {
        let mut g = self.lock();
        if g.queue.len() >= self.api.max_queued {
            return Err(QueueError::Full(g.queue.len()));
        }
        let id = make_id(g.jobs.len());
        let dir = self.root.join("jobs").join(&id);
        let entry = JobEntry::new(&id, req.operators, req.rounds, dir, JobState::Queued);
        let job = entry.job.clone();
        g.jobs.insert(id.clone(), entry);
        g.queue.push_back((id, req));
        Ok(job)
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
            Event::Prepared { sealed } => {
                if let Some(e) = g.jobs.get_mut(id) {
                    e.job.sealed = sealed;
                    e.job.sealing = crate::operator::sealing_line(sealed).to_string();
                }
            }
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
