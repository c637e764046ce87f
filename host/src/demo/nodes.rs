//! The demo's operator processes: each `conclave node` in a process group of its own (killed
//! with its enclave when the demo ends or fails), its stdout lines followed for progress, and
//! the dev chain's clock moved on once the job completed and every operator asked to leave.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use super::DemoOptions;
use crate::chain::{Anvil, Chain, DeployParams, JobStatus, OperatorStatus};

/// Kills the nodes' process groups (node and enclave) when dropped.
pub(super) struct Nodes {
    pub(super) children: Vec<Child>,
}

impl Nodes {
    fn kill_all(&mut self) {
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                // The node was started as the leader of its own process group; its enclave
                // is in it too.
                let pgid = c.id() as i32;
                // SAFETY: kill(2) with a negative pid signals a process group; no memory is
                // touched.
                unsafe {
                    libc::kill(-pgid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for c in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(c.try_wait(), Ok(None)) {
                // SAFETY: as above.
                unsafe {
                    libc::kill(-(c.id() as i32), libc::SIGKILL);
                }
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        self.kill_all();
    }
}

pub(super) enum NodeEvent {
    Line(u32, String),
    Exited(u32),
}

/// Starts operator `i`'s node in a process group of its own; its stdout lines go to `tx`.
pub(super) fn start_node(
    opts: &DemoOptions,
    i: u32,
    cfg_path: &Path,
    key: &PrivateKeySigner,
    logs: &Path,
    tx: mpsc::UnboundedSender<NodeEvent>,
) -> Result<Child> {
    let stderr = std::fs::File::create(logs.join(format!("node-{i}.log")))?;
    let mut cmd = Command::new(&opts.conclave);
    cmd.arg("node")
        .arg("--config")
        .arg(cfg_path)
        .env("CONCLAVE_OPERATOR_KEY", hex::encode(key.to_bytes()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    // Variables that would override the generated configs.
    for (k, _) in std::env::vars() {
        if k.starts_with("CONCLAVE_") && k.contains("__") {
            cmd.env_remove(k);
        }
    }
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} node", opts.conclave.display()))?;
    let stdout = child.stdout.take().context("node stdout")?;
    let mut log = std::fs::File::create(logs.join(format!("node-{i}.out")))?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            let _ = tx.send(NodeEvent::Line(i, line));
        }
        let _ = tx.send(NodeEvent::Exited(i));
    });
    Ok(child)
}

/// Follows the nodes until every one has exited: progress bars (or lines), and, once the job
/// completed and every operator asked to leave, the dev chain's clock moved past the commit
/// grace and the unbonding delay.
#[allow(clippy::too_many_arguments)]
pub(super) async fn follow_nodes(
    opts: &DemoOptions,
    nodes: &mut Nodes,
    mut rx: mpsc::UnboundedReceiver<NodeEvent>,
    customer: &Chain,
    job: u64,
    keys: &[PrivateKeySigner],
    anvil: &Anvil,
    params: &DeployParams,
    logs: &Path,
    approver: &super::Approver,
) -> Result<()> {
    let say = |s: &str| tracing::info!("demo: {s}");
    let mp = if opts.progress {
        MultiProgress::new()
    } else {
        MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
    };
    let style = ProgressStyle::with_template("{prefix:>11} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bars: Vec<ProgressBar> = (0..opts.operators)
        .map(|i| {
            let b = mp.add(ProgressBar::new(opts.rounds));
            b.set_style(style.clone());
            b.set_prefix(format!("operator {i}"));
            b.set_message(if opts.vm.is_some() {
                "booting its guest"
            } else {
                "starting its enclave"
            });
            b
        })
        .collect();
    let mut exited = vec![false; opts.operators as usize];
    let mut advanced = false;
    let deadline = Instant::now() + Duration::from_secs(opts.timeout_s);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while exited.iter().any(|e| !e) {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(NodeEvent::Line(i, line)) => {
                    let b = &bars[i as usize];
                    if let Some(rest) = line.strip_prefix("round ") {
                        b.inc(1);
                        let loss = rest
                            .split("loss ")
                            .nth(1)
                            .map(|x| x.trim_end_matches(')'))
                            .unwrap_or("?");
                        b.set_message(format!("loss {loss}"));
                        if !opts.progress && i == 0 {
                            say(&format!("operator 0: {line}"));
                        }
                    } else if let Some(rest) = line.strip_prefix("enclave attested after ") {
                        let secs = rest.split(' ').next().unwrap_or("?");
                        b.set_message(format!("enclave attested ({secs} s); joining"));
                        if !opts.progress {
                            say(&format!("operator {i}: {line}"));
                        }
                    } else if let Some(rest) = line.strip_prefix("approval requested: ") {
                        // The customer appraises the operator's evidence and approves its key.
                        let path = rest.split(" (").next().unwrap_or(rest);
                        approver.approve_file(Path::new(path))?;
                        b.set_message("approved");
                        say(&format!("operator {i}: enclave evidence appraised and approved"));
                    } else if line.starts_with("checkpoint ") && !opts.progress && i == 0 {
                        say(&format!("operator 0: {line}"));
                    } else if line.starts_with("withdrew") {
                        b.set_message(line.clone());
                    }
                }
                Some(NodeEvent::Exited(i)) => {
                    let c = &mut nodes.children[i as usize];
                    let status = c.wait()?;
                    exited[i as usize] = true;
                    bars[i as usize].finish();
                    if !status.success() {
                        let log = logs.join(format!("node-{i}.log"));
                        let tail = std::fs::read_to_string(&log).unwrap_or_default();
                        let tail: Vec<&str> = tail.lines().rev().take(8).collect();
                        bail!(
                            "operator {i} failed ({status}); the end of {}:\n{}",
                            log.display(),
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        );
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                if Instant::now() > deadline {
                    bail!("the job did not finish within {} s", opts.timeout_s);
                }
                if !advanced {
                    // Once the job completed and every operator asked to leave, move the dev
                    // chain's clock past the commit grace and the unbonding delay.
                    let j = customer.job(job).await?;
                    if j.state() == JobStatus::Completed {
                        let mut leaving = 0;
                        for k in keys {
                            if customer.operator(job, k.address()).await?.state() == OperatorStatus::Leaving {
                                leaving += 1;
                            }
                        }
                        if leaving == keys.len() {
                            anvil.advance_time(params.commit_grace.max(params.unbonding_delay) + 1).await?;
                            advanced = true;
                        }
                    }
                }
            }
        }
    }
    mp.clear().ok();
    Ok(())
}
