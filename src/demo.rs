//! `roomengine-exporter demo`: the simulator and the exporter in one process,
//! wired together with a fresh key and a built-in config, so live metrics
//! need no Tencent account. The exporter lists no room: it registers its
//! callback receiver with the simulator (set_callback, as against Tencent)
//! and learns the rooms from the callbacks. Ctrl-C (or SIGTERM) stops both.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::model::CallbackSetting;
use crate::api::{ApiClient, ApiMetrics};
use crate::app::{self, WebOptions};
use crate::budget::Budget;
use crate::config::{CallbacksConfig, Config, SecretKey, DEFAULT_CALLBACK_CONNECTIONS};
use crate::sim::{self, SimHandle, SimOptions, Simulator};
use crate::BoxError;

/// Flags of `roomengine-exporter demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Rooms the simulator starts with; the exporter learns them from callbacks.
    #[arg(long, default_value_t = 50)]
    pub rooms: usize,
    /// Address the exporter receives the simulator's callbacks on.
    #[arg(
        long = "callbacks.listen-address",
        value_name = "ADDR",
        default_value = "127.0.0.1:39182"
    )]
    pub callbacks_listen_address: String,
    /// Address the exporter serves /metrics on.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = "127.0.0.1:39180"
    )]
    pub web_listen_address: String,
}

/// The demo's exporter settings: no room listed, callbacks on (signed, the
/// room set in memory), a pass every 5 s, 50 calls per second.
fn demo_config(sim: &SimHandle, options: &SimOptions, callbacks_at: &str, token: &str) -> Config {
    Config {
        sdkappid: options.sdkappid,
        identifier: options.identifier.clone(),
        secret_key: options.secret_key.clone(),
        endpoint: sim.base_url(),
        usersig_ttl: Duration::from_secs(24 * 3600),
        interval: Duration::from_secs(5),
        rate_limit: 50,
        timeout: Duration::from_secs(5),
        seat_usage: true,
        watch: crate::watch::WatchSettings::default(),
        probe_enabled: true,
        rooms: Vec::new(),
        callbacks: Some(CallbacksConfig {
            listen_address: callbacks_at.to_owned(),
            path: "/callback".into(),
            state_file: None,
            redis: None,
            forget_after: Duration::from_secs(120),
            token: Some(SecretKey::new(token.to_owned())),
            max_connections: DEFAULT_CALLBACK_CONNECTIONS,
            bounds: Default::default(),
        }),
        metrics: Default::default(),
        ha: Default::default(),
    }
}

/// Runs until SIGINT or SIGTERM, or until the exporter fails.
pub async fn run(args: DemoArgs) -> Result<(), BoxError> {
    if args.rooms == 0 {
        return Err("demo needs at least one room (--rooms)".into());
    }
    let stop = CancellationToken::new();
    tokio::spawn(crate::shutdown::on_signal(stop.clone()));
    let token = sim::generate_secret_key().expose().to_owned();
    let options = SimOptions {
        // The rooms open once the exporter is registered, as meetings do.
        rooms: 0,
        latency: Duration::from_millis(20),
        // A room in twenty replaced per minute, so creates and destroys show too.
        churn: 0.05,
        callback_token: Some(token.clone()),
        ..SimOptions::new(sim::generate_secret_key())
    };
    let simulator = Simulator::start(options.clone()).await?;
    let callbacks_at = with_free_port(&args.callbacks_listen_address)?;
    let config = demo_config(&simulator, &options, &callbacks_at, &token);
    let callback_url = format!("http://{}/callback", browsable(&callbacks_at));
    let register_with = config.clone();
    let web = WebOptions {
        listen_address: args.web_listen_address.clone(),
        telemetry_path: "/metrics".into(),
        web_config: None,
        max_connections: app::DEFAULT_WEB_CONNECTIONS,
    };
    let mut exporter = tokio::spawn(app::run(config, None, web, stop.clone()));
    let url = browsable(&args.web_listen_address);
    let result = tokio::select! {
        finished = &mut exporter => finished,
        () = wait_listening(&url) => {
            register(&register_with, &callback_url).await?;
            simulator.open_rooms(args.rooms);
            println!("{}", banner(&url, &simulator, args.rooms, &callback_url));
            exporter.await
        }
    };
    stop.cancel();
    simulator.shutdown().await;
    result.map_err(|e| format!("the exporter task failed: {e}"))?
}

/// Registers the exporter's receiver with the simulator, as a user does with Tencent.
async fn register(config: &Config, url: &str) -> Result<(), BoxError> {
    let budget = std::sync::Arc::new(Budget::new(config.rate_limit));
    let client = ApiClient::new(config, budget, ApiMetrics::new(&prometheus::Registry::new()))?;
    crate::register::register(&client, &CallbackSetting::default(), url).await?;
    Ok(())
}

/// `addr` itself, or with a free port for port 0 (the URL to register needs the real one).
fn with_free_port(addr: &str) -> Result<String, BoxError> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|e| format!("--callbacks.listen-address {addr:?}: {e}"))?;
    if parsed.port() != 0 {
        return Ok(addr.to_owned());
    }
    let probe = std::net::TcpListener::bind(parsed).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(probe.local_addr()?.to_string())
}

/// `host:port` to put in a URL: a wildcard listen address becomes loopback.
fn browsable(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port())).to_string()
        }
        _ => listen.to_owned(),
    }
}

/// Resolves once something accepts connections on `addr`.
async fn wait_listening(addr: &str) {
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn banner(url: &str, simulator: &SimHandle, rooms: usize, callback_url: &str) -> String {
    let sim = simulator.base_url();
    format!(
        "\nroomengine-exporter demo: {rooms} simulated rooms, learnt from the simulator's callbacks\n\
         (registered at {callback_url}), polled every 5s at up to 50 calls/s.\n\
         \n\
         \x20 status page    http://{url}/\n\
         \x20 metrics        http://{url}/metrics\n\
         \x20 simulator      {sim}/sim/rooms   (its own counters: {sim}/sim/metrics, callbacks sent: {sim}/sim/callbacks)\n\
         \n\
         Change a room and watch the metrics follow:\n\
         \x20 curl -X PUT -d '{{\"MemberCount\": 300}}' {sim}/sim/rooms/room-0002\n\
         \x20 curl -X DELETE {sim}/sim/rooms/room-0003\n\
         \n\
         Point Prometheus at it (prometheus.yml):\n\
         \x20 scrape_configs:\n\
         \x20   - job_name: roomengine\n\
         \x20     static_configs:\n\
         \x20       - targets: [\"{url}\"]\n\
         \n\
         Grafana: import the dashboards in dashboards/*.json and choose that Prometheus.\n\
         Ctrl-C stops the demo.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_address_is_shown_as_loopback() {
        assert_eq!(browsable("0.0.0.0:39180"), "127.0.0.1:39180");
        assert_eq!(browsable("127.0.0.1:9"), "127.0.0.1:9");
        assert_eq!(browsable("localhost:39180"), "localhost:39180");
    }
}
