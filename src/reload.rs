//! Configuration reload (SIGHUP and `POST /-/reload`): re-reads the file,
//! and only when all of it is valid hands each part its new settings: rooms
//! to the room set, intervals to the poller, rate limit to the budget,
//! credentials and timeout to the client. An invalid file changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::budget::Budget;
use crate::clock::unix_now_f64;
use crate::config::{self, CallbacksConfig, Config, RoomBounds, SecretSource};
use crate::metrics::Register;
use crate::probe::Prober;
use crate::roomset::{Limits, Reschedule, RoomSet};
use crate::store::Store;

/// The parts a reload reconfigures.
pub struct Parts {
    pub budget: Arc<Budget>,
    pub client: Arc<ApiClient>,
    pub room_set: RoomSet,
    pub metrics: ConfigMetrics,
    pub prober: Arc<Prober>,
    pub poller: mpsc::UnboundedSender<Reschedule>,
    /// Takes the `metrics:` section (series limit, family filters).
    pub store: Arc<Store>,
}

/// The configuration's metrics: whether the last load worked, when the
/// one in use was loaded, and how many rooms it lists.
#[derive(Clone)]
pub struct ConfigMetrics {
    reload_ok: prometheus::IntGauge,
    reload_success_time: prometheus::Gauge,
    rooms_configured: prometheus::IntGauge,
}

impl ConfigMetrics {
    pub fn new(registry: &prometheus::Registry) -> ConfigMetrics {
        ConfigMetrics {
            reload_ok: registry.int_gauge(
                "roomengine_config_last_reload_successful",
                "1 when the last configuration load (start or reload) succeeded; 0 when the last reload failed and the previous configuration is still in use.",
            ),
            reload_success_time: registry.gauge(
                "roomengine_config_last_reload_success_timestamp_seconds",
                "When the configuration in use was loaded (Unix seconds): start or last successful reload.",
            ),
            rooms_configured: registry.int_gauge(
                "roomengine_rooms_configured",
                "Rooms listed in the configuration.",
            ),
        }
    }

    /// `config` was loaded and is now in use.
    fn loaded(&self, config: &Config) {
        self.reload_ok.set(1);
        self.reload_success_time.set(unix_now_f64().floor());
        self.rooms_configured.set(config.rooms.len() as i64);
    }
}

pub struct Reloader {
    /// `None` when the configuration was built in memory (the demo).
    path: Option<PathBuf>,
    secrets: Box<dyn SecretSource + Send + Sync>,
    /// The configuration in use; the lock also makes reloads one at a time.
    current: Mutex<Config>,
    parts: Parts,
    /// The last reload attempted since the start (the status page shows it).
    last: std::sync::Mutex<Option<LastReload>>,
}

/// How the last reload ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LastReload {
    pub at_unix: f64,
    /// The summary, or every problem.
    pub result: Result<String, String>,
}

impl Reloader {
    /// A reloader for `current`, read from `path`; marks the load successful.
    pub fn new(
        path: Option<PathBuf>,
        secrets: Box<dyn SecretSource + Send + Sync>,
        current: Config,
        parts: Parts,
    ) -> Reloader {
        parts.metrics.loaded(&current);
        Reloader {
            path,
            secrets,
            current: Mutex::new(current),
            parts,
            last: std::sync::Mutex::new(None),
        }
    }

    /// The configuration in use (after a reload in progress).
    pub async fn config(&self) -> Config {
        self.current.lock().await.clone()
    }

    /// The file the configuration is read from (`None`: built in memory).
    pub fn file(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    pub fn last_reload(&self) -> Option<LastReload> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the file and applies it (see [`Reloader::reload_once`]), remembering the outcome.
    pub async fn reload(&self) -> Result<String, String> {
        let result = self.reload_once().await;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastReload {
            at_unix: unix_now_f64(),
            result: result.clone(),
        });
        result
    }

    /// Re-reads the file and applies it. `Ok` is a one-line summary of what
    /// changed; `Err` lists every problem, each naming its key.
    async fn reload_once(&self) -> Result<String, String> {
        let mut current = self.current.lock().await;
        let Some(path) = &self.path else {
            return Err("the configuration was built in memory (demo): there is no file to reload".into());
        };
        let new = match config::load(path, self.secrets.as_ref()) {
            Ok(new) => new,
            Err(problems) => {
                self.parts.metrics.reload_ok.set(0);
                tracing::error!(
                    config = %path.display(),
                    error = %problems.0.join("; "),
                    "reload failed: the previous configuration stays in use"
                );
                return Err(problems.to_string());
            }
        };
        let summary = self.apply(&current, &new).await;
        self.parts.metrics.loaded(&new);
        *current = new;
        tracing::info!(config = %path.display(), changes = %summary, "configuration reloaded");
        Ok(format!("configuration reloaded: {summary}"))
    }

    async fn apply(&self, old: &Config, new: &Config) -> String {
        let parts = &self.parts;
        parts.store.configure(&new.metrics, &new.rooms);
        let rooms = parts.room_set.set_configured(new.rooms.clone()).await;
        if old.room_bounds() != new.room_bounds() {
            match Limits::from_config(&new.room_bounds()) {
                Ok(limits) => parts.room_set.set_limits(limits),
                Err(e) => {
                    tracing::error!(error = %e, "cannot apply callbacks.room_ids; the previous filters stay")
                }
            }
        }
        parts.budget.set_rate_limit(new.rate_limit);
        parts.client.reconfigure(new);
        parts.prober.reconfigure(new.probe_enabled, new.seat_usage);

        let mut changed = Vec::new();
        if !rooms.added.is_empty() || !rooms.removed.is_empty() {
            changed.push(format!(
                "{} rooms added, {} removed",
                rooms.added.len(),
                rooms.removed.len()
            ));
        }
        let settings = [
            ("polling.interval", old.interval != new.interval),
            ("polling.rate_limit", old.rate_limit != new.rate_limit),
            ("polling.timeout", old.timeout != new.timeout),
            ("polling.seat_usage", old.seat_usage != new.seat_usage),
            ("polling.watch", old.watch != new.watch),
            ("probe.enabled", old.probe_enabled != new.probe_enabled),
            ("app.endpoint", old.endpoint != new.endpoint),
            ("metrics", old.metrics != new.metrics),
            (
                "callbacks (takes effect at the next start)",
                without_bounds(&old.callbacks) != without_bounds(&new.callbacks),
            ),
            (
                "ha (takes effect at the next start)",
                (old.ha.heartbeat, old.ha.dead_after) != (new.ha.heartbeat, new.ha.dead_after),
            ),
            (
                "callbacks.max_rooms/room_ids/max_clock_skew",
                old.room_bounds() != new.room_bounds(),
            ),
            (
                "app credentials",
                old.sdkappid != new.sdkappid
                    || old.identifier != new.identifier
                    || old.secret_key != new.secret_key
                    || old.usersig_ttl != new.usersig_ttl,
            ),
        ];
        changed.extend(
            settings
                .iter()
                .filter(|(_, c)| *c)
                .map(|(key, _)| format!("{key} changed")),
        );

        // The poller only stops listening when it stops; then there is nothing to reschedule.
        let _ = parts.poller.send(Reschedule::Settings {
            interval: new.interval,
            seat_usage: new.seat_usage,
            watch: new.watch,
            configured: new.rooms.clone(),
        });
        if changed.is_empty() {
            "nothing changed".to_owned()
        } else {
            changed.join(", ")
        }
    }
}

/// The receiver's settings a reload does not apply.
fn without_bounds(callbacks: &Option<CallbacksConfig>) -> Option<CallbacksConfig> {
    callbacks.clone().map(|c| CallbacksConfig {
        bounds: RoomBounds::default(),
        ..c
    })
}

/// Reloads on every SIGHUP until `shutdown`.
pub async fn on_sighup(reloader: Arc<Reloader>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; reload with POST /-/reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangups.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading the configuration");
                    // The outcome is logged and on /metrics; there is nobody to answer.
                    let _ = reloader.reload().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (reloader, shutdown);
    }
}
