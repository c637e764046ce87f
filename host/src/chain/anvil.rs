//! A local anvil (Foundry's dev node) on loopback, for `conclave chain up`, the demo and the
//! tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A local anvil dev node on loopback, stopped when dropped.
pub struct Anvil {
    child: tokio::process::Child,
    pub port: u16,
    /// A wallet-less provider for the node's own RPC methods.
    rpc: DynProvider,
}

/// The anvil binary: `$CONCLAVE_ANVIL`, the project's `.tools/bin/anvil`, or `anvil` on PATH.
pub fn anvil_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CONCLAVE_ANVIL") {
        return PathBuf::from(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/anvil");
    if local.exists() {
        return local;
    }
    PathBuf::from("anvil")
}

impl Anvil {
    /// Starts anvil on `127.0.0.1:port` (a free port when 0) and waits until it listens.
    pub async fn start(port: u16) -> Result<Self> {
        let port = if port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port()
        } else {
            port
        };
        let bin = anvil_binary();
        let mut child = tokio::process::Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (run `bash scripts/setup-foundry.sh`, or set CONCLAVE_ANVIL)",
                    bin.display()
                )
            })?;
        let out = child.stdout.take().context("anvil has no stdout")?;
        let mut lines = BufReader::new(out).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("Listening on") {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        match ready {
            Ok(Ok(true)) => {}
            _ => bail!("anvil did not start listening on 127.0.0.1:{port}"),
        }
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let rpc = ProviderBuilder::new()
            .connect_http(format!("http://127.0.0.1:{port}").parse()?)
            .erased();
        Ok(Anvil { child, port, rpc })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Gives `who` a balance (anvil's `anvil_setBalance`).
    pub async fn fund(&self, who: Address, wei: U256) -> Result<()> {
        self.rpc
            .raw_request::<_, ()>("anvil_setBalance".into(), (who, wei))
            .await
            .context("anvil_setBalance")?;
        Ok(())
    }

    /// Moves the node's clock forward and mines a block.
    pub async fn advance_time(&self, seconds: u64) -> Result<()> {
        self.rpc
            .raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (seconds,))
            .await
            .context("evm_increaseTime")?;
        self.rpc
            .raw_request::<_, serde_json::Value>("evm_mine".into(), ())
            .await
            .context("evm_mine")?;
        Ok(())
    }

    /// The node's latest block timestamp.
    pub async fn now(&self) -> Result<u64> {
        let block = self
            .rpc
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await?
            .context("no latest block")?;
        Ok(block.header.timestamp)
    }

    /// Stops the node.
    pub async fn stop(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
