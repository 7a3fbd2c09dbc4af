//! Wires the parts together for one exporter run: the budget, the API client,
//! the store, the room set, the poller task, the reloader, the HTTP server
//! and the callback receiver, all stopped by one cancellation token
//! (SIGINT/SIGTERM in the binary, the caller in the demo).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiMetrics};
use crate::budget::{Budget, BudgetMetrics};
use crate::callbacks::{self, CallbackMetrics, Receiver};
use crate::config::{Config, ProcessSecrets};
use crate::metrics::SelfMetrics;
use crate::poller::{Poller, PollerMetrics};
use crate::probe::Prober;
use crate::reload::{self, ConfigMetrics, Reloader};
use crate::roomset::{self, MemoryState, RoomSet, RoomSetMetrics, StateBackend};
use crate::serve::{serve, Serving};
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
    /// `--web.max-connections`: open connections on the metrics listener at most.
    pub max_connections: usize,
}

/// Default of `--web.max-connections`: room for hundreds of concurrent `/probe` scrapes.
pub const DEFAULT_WEB_CONNECTIONS: usize = 1024;

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
    let listener = crate::serve::bind(&web.listen_address)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", web.listen_address))?;
    let local = listener.local_addr()?;
    let callback_listener = match &config.callbacks {
        None => None,
        Some(c) => Some(crate::serve::bind(&c.listen_address).await.map_err(|e| {
            format!(
                "callbacks.listen_address: cannot listen on {}: {e}",
                c.listen_address
            )
        })?),
    };
    check_descriptors(
        web.max_connections,
        config.callbacks.as_ref().map_or(0, |c| c.max_connections),
    );

    // One registry; each part gets the metrics it owns, registered in it.
    let metrics = Arc::new(SelfMetrics::new());
    let registry = metrics.registry();
    metrics.watch_runtime("http", tokio::runtime::Handle::current());
    let budget = Arc::new(Budget::new(config.rate_limit));
    let budget_metrics = BudgetMetrics::new(registry);
    let shown = budget.clone();
    metrics.refresh_on_scrape(move || budget_metrics.show(&shown));
    let client = Arc::new(ApiClient::new(
        &config,
        budget.clone(),
        ApiMetrics::new(registry),
    )?);
    let store = Arc::new(Store::new::<String>(&[]));
    store.configure(&config.metrics, &config.rooms);
    let ready = Arc::new(AtomicBool::new(false));
    let prober = Arc::new(Prober::new(
        client.clone(),
        config.probe_enabled,
        config.seat_usage,
    ));

    // The room set and reloads tell the poller of changes; in an HA group
    // through the filter that keeps the rooms this replica owns.
    let (reschedule, reloads) = tokio::sync::mpsc::unbounded_channel();
    let callbacks = config.callbacks.as_ref();
    let backend: Box<dyn StateBackend> = match (
        callbacks.and_then(|c| c.redis.as_ref()),
        callbacks.and_then(|c| c.state_file.as_ref()),
    ) {
        (Some(redis), _) => roomset::open_redis(redis, config.sdkappid)?,
        (None, Some(path)) => roomset::open_sqlite(path)?,
        (None, None) => Box::new(MemoryState),
    };
    let journal = Arc::new(crate::journal::Journal::new());
    journal.set_backend(&backend.describe());
    let (room_set, polled) = RoomSet::start(
        roomset::Options {
            configured: config.rooms.clone(),
            forget_after: config
                .callbacks
                .as_ref()
                .map_or(Duration::from_secs(600), |c| c.forget_after),
            backend,
            limits: roomset::Limits::from_config(&config.room_bounds())?,
        },
        store.clone(),
        RoomSetMetrics::new(registry),
        reschedule.clone(),
    )?;
    let redis = config.callbacks.as_ref().and_then(|c| c.redis.as_ref());
    let (polled, configured, reloads, share) = match redis {
        Some(redis) => {
            let ha = crate::ha::start(
                &config.ha,
                redis,
                config.sdkappid,
                registry,
                &budget,
                store.clone(),
                shutdown.clone(),
            )
            .await?;
            let (polled, configured, reloads, sink) =
                ha.route(polled, &config.rooms, reloads, shutdown.clone());
            let sink: Box<dyn crate::store::PollSink> = Box::new(sink);
            (polled, configured, reloads, Some(sink))
        }
        None => (polled, config.rooms.clone(), reloads, None),
    };
    let gone_to = room_set.clone();
    let poller = Poller {
        client: client.clone(),
        store: store.clone(),
        metrics: PollerMetrics::new(metrics.registry()),
        seat_usage: AtomicBool::new(config.seat_usage),
        ready: ready.clone(),
        watch: config.watch,
        on_gone: Box::new(move |room, sent_ms| gone_to.report_gone(room, sent_ms)),
        journal: journal.clone(),
        configured,
        share,
    };
    let polling = spawn_polling(
        poller.run(polled, config.interval, reloads, shutdown.clone()),
        &metrics,
    )?;

    // Registered with the receiver off too: every command and reason shows
    // at 0, so dashboards and alerts need no `or vector(0)`.
    let callback_metrics = CallbackMetrics::new(registry);
    let receiver = match (&config.callbacks, callback_listener) {
        (Some(c), Some(listener)) => {
            tracing::info!(
                address = %listener.local_addr()?,
                path = %c.path,
                signed = c.token.is_some(),
                "receiving Room Engine callbacks"
            );
            let receiver = Arc::new(Receiver {
                sdkappid: config.sdkappid,
                token: c.token.clone(),
                room_set: room_set.clone(),
                metrics: callback_metrics,
                journal: journal.clone(),
            });
            let serving = Serving {
                listener,
                app: callbacks::router(receiver, &c.path),
                web_config: None,
                max_connections: c.max_connections,
            };
            Some(tokio::spawn(serve(serving, shutdown.clone())))
        }
        _ => None,
    };

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
            room_set,
            metrics: ConfigMetrics::new(registry),
            prober: prober.clone(),
            poller: reschedule,
            store: store.clone(),
        },
    ));
    tokio::spawn(crate::status::model::keep_journal(
        journal.clone(),
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
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
        journal,
    };
    let serving = Serving {
        listener,
        app: router(state),
        web_config: web.web_config.clone(),
        max_connections: web.max_connections,
    };
    serve(serving, shutdown.clone()).await;
    if let Some(receiver) = receiver {
        if let Err(e) = receiver.await {
            tracing::error!(error = %e, "callback server task failed");
        }
    }

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

/// Polling gets its own thread and runtime: on a runtime shared with busy
/// scrapers a poll's task waits between its permit and the socket, and calls
/// bunch up at the server beyond the budget.
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

/// Raises the open-files limit to its hard limit, as Go programs do at
/// start, and warns when the listeners' caps could still exhaust it.
fn check_descriptors(web: usize, callbacks: usize) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-files limit");
            return;
        }
    };
    // Connections to the API (polls and probes in flight), the state file, logs.
    let reserve = 256;
    if (web + callbacks + reserve) as u64 > limit {
        tracing::warn!(
            limit,
            web_max_connections = web,
            callbacks_max_connections = callbacks,
            "the listeners' connection caps plus {reserve} for the API could exceed the open-files limit: lower them or raise LimitNOFILE / ulimit -n"
        );
    }
}
