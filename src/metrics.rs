//! The exporter's own metrics registry: [`Register`] creates and registers a
//! metric in one call (each subsystem builds its own struct of metrics with
//! it), and [`SelfMetrics`] holds what no subsystem owns (build info, the
//! process, the runtimes' tasks) and renders the whole registry after the
//! room families on every scrape. Imports nothing from the crate.

use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Creates a metric and registers it in one call. Names and help texts are
/// literals of this crate, so a clash is a programming error and panics at start.
pub trait Register {
    /// Registers `metric` and hands it back.
    fn add<C: Collector + Clone + 'static>(&self, metric: C) -> C;

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    /// A counter vector whose first label's `preset` values exist at 0 from the start.
    fn counter_vec(&self, name: &str, help: &str, labels: &[&str], preset: &[&str]) -> IntCounterVec {
        let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        for value in preset {
            vec.with_label_values(&[value]);
        }
        self.add(vec)
    }

    fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("valid metric"))
    }

    fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    fn histogram_vec(&self, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

impl Register for Registry {
    fn add<C: Collector + Clone + 'static>(&self, metric: C) -> C {
        self.register(Box::new(metric.clone()))
            .expect("unique metric names");
        metric
    }
}

/// Work done just before each scrape renders the registry (a gauge that
/// shows a value owned elsewhere, read when it is asked for).
type Refresh = Box<dyn Fn() + Send + Sync>;

/// The registry every subsystem registers into, and the metrics no
/// subsystem owns; cheap to share behind an `Arc`.
pub struct SelfMetrics {
    registry: Registry,
    runtime_tasks: IntGaugeVec,
    refreshes: Mutex<Vec<Refresh>>,
}

impl SelfMetrics {
    pub fn new() -> SelfMetrics {
        let registry = Registry::new();
        let build_info = IntGauge::with_opts(
            Opts::new(
                "roomengine_exporter_build_info",
                "Build of the exporter; always 1.",
            )
            .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid metric");
        registry.add(build_info).set(1);
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric names");
        let runtime_tasks = registry.int_gauge_vec(
            "roomengine_exporter_runtime_tasks",
            "Tasks alive on the exporter's runtimes (polling: polls in flight and timers; http: connections and the reload watcher). Steady under a steady room list; growth is a leak.",
            &["runtime"],
        );
        SelfMetrics {
            registry,
            runtime_tasks,
            refreshes: Mutex::new(Vec::new()),
        }
    }

    /// Where each subsystem registers its metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `refresh` before every render, to set a gauge from its source.
    pub fn refresh_on_scrape(&self, refresh: impl Fn() + Send + Sync + 'static) {
        self.lock_refreshes().push(Box::new(refresh));
    }

    /// Shows the alive tasks of `runtime` as `roomengine_exporter_runtime_tasks{runtime="<name>"}`.
    pub fn watch_runtime(&self, name: &'static str, runtime: tokio::runtime::Handle) {
        let gauge = self.runtime_tasks.with_label_values(&[name]);
        gauge.set(0);
        self.refresh_on_scrape(move || {
            let alive = runtime.metrics().num_alive_tasks();
            gauge.set(i64::try_from(alive).unwrap_or(i64::MAX));
        });
    }

    fn lock_refreshes(&self) -> std::sync::MutexGuard<'_, Vec<Refresh>> {
        self.refreshes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the text exposition of every self-metric to `out`.
    pub fn render_into(&self, out: &mut Vec<u8>) {
        for refresh in self.lock_refreshes().iter() {
            refresh();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_made_by_the_helper_is_rendered_with_its_preset_series() {
        let metrics = SelfMetrics::new();
        let hits =
            metrics
                .registry()
                .counter_vec("test_hits_total", "Hits, by kind.", &["kind"], &["a", "b"]);
        hits.with_label_values(&["b"]).inc();
        let gauge = metrics.registry().gauge("test_level", "A level.");
        metrics.refresh_on_scrape(move || gauge.set(2.5));
        let mut out = Vec::new();
        metrics.render_into(&mut out);
        let text = String::from_utf8(out).expect("utf-8");
        for line in [
            "# HELP test_hits_total Hits, by kind.",
            "# TYPE test_hits_total counter",
            "test_hits_total{kind=\"a\"} 0",
            "test_hits_total{kind=\"b\"} 1",
            "test_level 2.5",
            "roomengine_exporter_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
