//! The demo: a batch of payments through the local stack under faults.

pub async fn run(_payments: usize, _port: u16) -> anyhow::Result<()> {
    anyhow::bail!("demo not written yet")
}
