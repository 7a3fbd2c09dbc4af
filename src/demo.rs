//! Placeholder: `roomengine-exporter demo` (issue 3) lands here.

/// Flags of `roomengine-exporter demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {}

pub async fn run(_args: DemoArgs) -> Result<(), crate::BoxError> {
    Err("the demo is not built yet".into())
}
