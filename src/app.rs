//! Wires the parts together for one exporter run: the budget, the API client,
//! the store, the poller task, the reloader and the HTTP server, all stopped
//! by one cancellation token (SIGINT/SIGTERM in the binary, the caller in the demo).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::budget::Budget;
use crate::config::{Config, ProcessSecrets};
use crate::metrics::SelfMetrics;
use crate::poller::Poller;
use crate::probe::Prober;
use crate::reload::{self, Reloader};
use crate::server::{router, AppState};
use crate::store::Store;
use crate::BoxError;

/// Where the HTTP side listens.
#[derive(Debug, Clone)]
pub struct WebOptions {
    pub listen_address: String,
    pub telemetry_path: String,
    /// `--web.config.file`: TLS and basic auth; None serves plain HTTP.
    pub web_config: Option<Arc<crate::web_config::WebConfigWatch>>,
}

/// Runs the exporter until `shutdown` is cancelled, then stops polling, lets
/// the responses in flight finish, and returns. `config_file` is where
/// `config` came from: a reload re-reads it (`None`: nothing to reload).
pub async fn run(
    config: Config,
    config_file: Option<PathBuf>,
    web: WebOptions,
    shutdown: CancellationToken,
) -> Result<(), BoxError> {
    if !web.telemetry_path.starts_with('/') || web.telemetry_path.len() < 2 {
        return Err(format!(
            "--web.telemetry-path {:?} must start with / and name a path",
            web.telemetry_path
        )
        .into());
    }
    let listener = tokio::net::TcpListener::bind(&web.listen_address)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", web.listen_address))?;
    let local = listener.local_addr()?;

    let metrics = Arc::new(SelfMetrics::new());
    metrics.watch_runtime("http", tokio::runtime::Handle::current());
    let budget = Arc::new(Budget::new(config.rate_limit));
    metrics.rate_limit.set(f64::from(config.rate_limit));
    metrics.rate_limit_effective.set(budget.effective());
    metrics.rooms_configured.set(config.rooms.len() as i64);
    let client = Arc::new(ApiClient::new(&config, budget.clone(), metrics.clone())?);
    let store = Arc::new(Store::new(&config.rooms));
    let ready = Arc::new(AtomicBool::new(false));
    let prober = Arc::new(Prober::new(
        client.clone(),
        config.probe_enabled,
        config.seat_usage,
    ));

    let (reschedule, reloads) = tokio::sync::mpsc::unbounded_channel();
    let poller = Poller {
        client: client.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        seat_usage: AtomicBool::new(config.seat_usage),
        ready: ready.clone(),
        watch: config.watch,
    };
    let polling = spawn_polling(
        poller.run(config.rooms.clone(), config.interval, reloads, shutdown.clone()),
        &metrics,
    )?;

    tracing::info!(
        address = %local,
        telemetry_path = %web.telemetry_path,
        rooms = config.rooms.len(),
        endpoint = %config.endpoint,
        rate_limit = config.rate_limit,
        interval = %humantime::format_duration(config.interval),
        "roomengine-exporter listening"
    );
    let timeout = config.timeout;
    let watch_sighup = config_file.is_some();
    let reloader = Arc::new(Reloader::new(
        config_file,
        Box::new(ProcessSecrets),
        config,
        reload::Parts {
            budget: budget.clone(),
            client,
            store: store.clone(),
            metrics: metrics.clone(),
            prober: prober.clone(),
            poller: reschedule,
        },
    ));
    if watch_sighup {
        tokio::spawn(reload::on_sighup(reloader.clone(), shutdown.clone()));
    }

    let state = AppState {
        store,
        metrics,
        budget,
        ready,
        telemetry_path: web.telemetry_path.clone(),
        prober,
        reloader,
    };
    crate::serve::serve(listener, router(state), web.web_config.clone(), shutdown.clone())
        .await
        .map_err(|e| format!("HTTP server failed: {e}"))?;

    // Polls in flight end within the request timeout (plus back-off, which shutdown cuts short).
    let grace = timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, polling).await.is_err() {
        tracing::warn!(
            "polls still in flight after {}; exiting anyway",
            humantime::format_duration(grace)
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Polling gets its own thread and runtime. Twenty scrapers can keep both
/// cores busy; on a shared runtime a poll's task then waits behind scrape
/// work between its permit and the socket, and calls bunch up at the server
/// beyond the budget (measured: 218 in one second at `rate_limit: 200`).
fn spawn_polling(
    polling: impl std::future::Future<Output = ()> + Send + 'static,
    metrics: &SelfMetrics,
) -> Result<tokio::sync::oneshot::Receiver<()>, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the polling runtime: {e}"))?;
    metrics.watch_runtime("polling", runtime.handle().clone());
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("poller".into())
        .spawn(move || {
            runtime.block_on(polling);
            let _ = done.send(());
        })
        .map_err(|e| format!("cannot start the polling thread: {e}"))?;
    Ok(finished)
}
