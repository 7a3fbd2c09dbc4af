//! Placeholder: the Room Engine API simulator (issue 3) lands here.

/// Flags of `roomengine-exporter simulate`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {}

pub async fn run(_args: SimulateArgs) -> Result<(), crate::BoxError> {
    Err("the simulator is not built yet".into())
}
