//! The exporter's own health metrics (requests, errors, latency, budget,
//! sweeps, the watch tier, UserSig expiry, callbacks, the room set's state,
//! tasks, the process), kept in a prometheus crate registry and rendered
//! after the room families on every scrape.

use std::sync::Mutex;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub const API_GET_ROOM_INFO: &str = "get_room_info";
pub const API_GET_SEAT_LIST: &str = "get_seat_list";

/// Handles to every self-metric; cheap to share behind an `Arc`.
pub struct SelfMetrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub errors: IntCounterVec,
    pub duration: HistogramVec,
    pub rate_limit: Gauge,
    pub rate_limit_effective: Gauge,
    pub rooms_configured: IntGauge,
    pub usersig_expiry: Gauge,
    pub config_reload_ok: IntGauge,
    pub config_reload_success_time: Gauge,
    pub rooms_discovered: IntGauge,
    pub callbacks: IntCounterVec,
    pub callbacks_rejected: IntCounterVec,
    pub callback_duration: prometheus::Histogram,
    pub state_up: IntGauge,
    pub state_errors: prometheus::IntCounter,
    pub state_commit_duration: prometheus::Histogram,
    runtime_tasks: IntGaugeVec,
    /// The tokio runtimes whose alive tasks `runtime_tasks` shows, by name.
    runtimes: Mutex<Vec<(&'static str, tokio::runtime::Handle)>>,
}

impl SelfMetrics {
    pub fn new() -> SelfMetrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "roomengine_api_requests_total",
                "Calls sent to the Room Engine API, retries included.",
            ),
            &["api"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "roomengine_api_request_errors_total",
                "Calls to the Room Engine API that failed, by ErrorCode (or timeout, connect, http_NNN, decode, body_too_large).",
            ),
            &["api", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "roomengine_api_request_duration_seconds",
                "Latency of calls to the Room Engine API, from send to decoded answer.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["api"],
        )
        .expect("valid metric");
        let rate_limit = Gauge::new(
            "roomengine_rate_limit_requests_per_second",
            "Configured call budget (polling.rate_limit): no one-second window holds more calls.",
        )
        .expect("valid metric");
        let rate_limit_effective = Gauge::new(
            "roomengine_rate_limit_effective_requests_per_second",
            "Call rate in use after back-off: halved on rate-limited answers (at most once a second, not below a quarter of the limit), restored gradually.",
        )
        .expect("valid metric");
        let rooms_configured = IntGauge::new(
            "roomengine_rooms_configured",
            "Rooms listed in the configuration.",
        )
        .expect("valid metric");
        let usersig_expiry = Gauge::new(
            "roomengine_usersig_expiry_timestamp_seconds",
            "When the UserSig in use expires (Unix seconds); it is renewed after 80% of its lifetime.",
        )
        .expect("valid metric");
        let build_info = IntGauge::with_opts(
            Opts::new(
                "roomengine_exporter_build_info",
                "Build of the exporter; always 1.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid metric");
        build_info.set(1);
        let config_reload_ok = IntGauge::new(
            "roomengine_config_last_reload_successful",
            "1 when the last configuration load (start or reload) succeeded; 0 when the last reload failed and the previous configuration is still in use.",
        )
        .expect("valid metric");
        let config_reload_success_time = Gauge::new(
            "roomengine_config_last_reload_success_timestamp_seconds",
            "When the configuration in use was loaded (Unix seconds): start or last successful reload.",
        )
        .expect("valid metric");
        let rooms_discovered = IntGauge::new(
            "roomengine_rooms_discovered",
            "Rooms known from Room Engine callbacks and not in the configuration (destroyed ones until callbacks.forget_after).",
        )
        .expect("valid metric");
        let callbacks = IntCounterVec::new(
            Opts::new(
                "roomengine_callbacks_total",
                "Callbacks accepted (answered OK), by CallbackCommand; commands the exporter does not handle count as other.",
            ),
            &["command"],
        )
        .expect("valid metric");
        for command in crate::callbacks::COMMANDS.iter().chain(&["other"]) {
            callbacks.with_label_values(&[command]);
        }
        let callbacks_rejected = IntCounterVec::new(
            Opts::new(
                "roomengine_callbacks_rejected_total",
                "Callback requests refused with a 4xx and not applied, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in crate::callbacks::REJECT_REASONS {
            callbacks_rejected.with_label_values(&[reason]);
        }
        let callback_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "roomengine_callback_duration_seconds",
                "Time from a callback request's headers to its answer (durable storage included).",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
        )
        .expect("valid metric");
        let state_up = IntGauge::new(
            "roomengine_state_up",
            "1 when the last write of the room set to its state backend succeeded; 0 while callbacks are answered 503.",
        )
        .expect("valid metric");
        let state_errors = prometheus::IntCounter::new(
            "roomengine_state_errors_total",
            "Batches of callbacks the state backend failed to store (each callback in them was answered 503).",
        )
        .expect("valid metric");
        let state_commit_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "roomengine_state_commit_duration_seconds",
                "Time to commit one batch of callbacks to the state backend.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        )
        .expect("valid metric");
        let runtime_tasks = IntGaugeVec::new(
            Opts::new(
                "roomengine_exporter_runtime_tasks",
                "Tasks alive on the exporter's runtimes (polling: polls in flight and timers; http: connections and the reload watcher). Steady under a steady room list; growth is a leak.",
            ),
            &["runtime"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(rate_limit.clone()),
            Box::new(rate_limit_effective.clone()),
            Box::new(rooms_configured.clone()),
            Box::new(usersig_expiry.clone()),
            Box::new(build_info),
            Box::new(config_reload_ok.clone()),
            Box::new(config_reload_success_time.clone()),
            Box::new(runtime_tasks.clone()),
            Box::new(rooms_discovered.clone()),
            Box::new(callbacks.clone()),
            Box::new(callbacks_rejected.clone()),
            Box::new(callback_duration.clone()),
            Box::new(state_up.clone()),
            Box::new(state_errors.clone()),
            Box::new(state_commit_duration.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        SelfMetrics {
            registry,
            requests,
            errors,
            duration,
            rate_limit,
            rate_limit_effective,
            rooms_configured,
            usersig_expiry,
            config_reload_ok,
            config_reload_success_time,
            rooms_discovered,
            callbacks,
            callbacks_rejected,
            callback_duration,
            state_up,
            state_errors,
            state_commit_duration,
            runtime_tasks,
            runtimes: Mutex::new(Vec::new()),
        }
    }

    /// The registry every self-metric is rendered from; subsystems that own
    /// their metrics (the poller's) register them here.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Shows the alive tasks of `runtime` as `roomengine_exporter_runtime_tasks{runtime="<name>"}`.
    pub fn watch_runtime(&self, name: &'static str, runtime: tokio::runtime::Handle) {
        self.runtime_tasks.with_label_values(&[name]).set(0);
        self.lock_runtimes().push((name, runtime));
    }

    fn lock_runtimes(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, tokio::runtime::Handle)>> {
        self.runtimes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the text exposition of every self-metric to `out`.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        for (name, runtime) in self.lock_runtimes().iter() {
            let alive = runtime.metrics().num_alive_tasks();
            self.runtime_tasks
                .with_label_values(&[name])
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        // Encoding into a Vec only fails on invalid metric families, which we never build.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), out) {
            tracing::error!(error = %e, "cannot encode self-metrics");
        }
    }
}

impl Default for SelfMetrics {
    fn default() -> Self {
        SelfMetrics::new()
    }
}
