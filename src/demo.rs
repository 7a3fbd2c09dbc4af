//! `roomengine-exporter demo`: the simulator and the exporter in one process,
//! wired together with a fresh key and a built-in config, so live metrics
//! need no Tencent account. Ctrl-C (or SIGTERM) stops both.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::{self, WebOptions};
use crate::config::Config;
use crate::sim::{self, SimHandle, SimOptions, Simulator};
use crate::BoxError;

/// Flags of `roomengine-exporter demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Rooms the simulator starts with; the exporter polls all of them.
    #[arg(long, default_value_t = 50)]
    pub rooms: usize,
    /// Address the exporter serves /metrics on.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = "127.0.0.1:39180"
    )]
    pub web_listen_address: String,
}

/// The demo's exporter settings: every simulator room, a pass every 5 s, 50
/// calls per second.
fn demo_config(sim: &SimHandle, options: &SimOptions) -> Config {
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
        probe_enabled: true,
        rooms: sim.room_ids(),
        callbacks: None,
    }
}

/// Runs until SIGINT or SIGTERM, or until the exporter fails.
pub async fn run(args: DemoArgs) -> Result<(), BoxError> {
    if args.rooms == 0 {
        return Err("demo needs at least one room (--rooms)".into());
    }
    let stop = CancellationToken::new();
    tokio::spawn(crate::shutdown::on_signal(stop.clone()));
    let options = SimOptions {
        rooms: args.rooms,
        latency: Duration::from_millis(20),
        ..SimOptions::new(sim::generate_secret_key())
    };
    let simulator = Simulator::start(options.clone()).await?;
    let config = demo_config(&simulator, &options);
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
            println!("{}", banner(&url, &simulator, args.rooms));
            exporter.await
        }
    };
    stop.cancel();
    simulator.shutdown().await;
    result.map_err(|e| format!("the exporter task failed: {e}"))?
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

fn banner(url: &str, simulator: &SimHandle, rooms: usize) -> String {
    let sim = simulator.base_url();
    format!(
        "\nroomengine-exporter demo: {rooms} simulated rooms, polled every 5s at up to 50 calls/s.\n\
         \n\
         \x20 metrics        http://{url}/metrics\n\
         \x20 landing page   http://{url}/\n\
         \x20 simulator      {sim}/sim/rooms   (its own counters: {sim}/sim/metrics)\n\
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
