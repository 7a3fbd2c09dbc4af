//! Command line of roomengine-exporter: flags in the Prometheus style for the
//! exporter itself, plus the `simulate`, `demo` and `callbacks` subcommands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use roomengine_exporter::logging::{self, LogFormat, LogLevel};
use roomengine_exporter::{app, config, demo, register, shutdown, sim, web_config};

/// Prometheus exporter for Tencent Cloud Room Engine (Conference) rooms.
///
/// Polls get_room_info for the configured rooms in the background, under a
/// hard call budget, and serves the latest snapshot of every room on /metrics.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Path to the configuration file.
    #[arg(
        long = "config.file",
        value_name = "PATH",
        default_value = "exporter.yaml",
        global = true
    )]
    config_file: PathBuf,
    /// Address to listen on for the web interface and telemetry.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = "0.0.0.0:39180"
    )]
    listen_address: String,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", value_name = "PATH", default_value = "/metrics")]
    telemetry_path: String,
    /// Open connections on the web listener at most; a new one evicts the longest idle.
    #[arg(long = "web.max-connections", value_name = "N", default_value_t = app::DEFAULT_WEB_CONNECTIONS as u32, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Web config file (exporter-toolkit format) enabling TLS and/or basic auth on every endpoint.
    #[arg(long = "web.config.file", value_name = "PATH")]
    web_config_file: Option<PathBuf>,
    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value = "info", global = true)]
    log_level: LogLevel,
    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value = "logfmt", global = true)]
    log_format: LogFormat,
    /// This replica's ID in an HA group (overrides ha.replica_id; default: the host name).
    #[arg(long = "ha.replica-id", value_name = "ID")]
    ha_replica_id: Option<String>,
    /// Validate the configuration file (SecretKey included) and exit: 0 when valid, 1 listing every problem.
    #[arg(long = "config.check")]
    config_check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a stand-in for the Room Engine API (for demos and tests; no credentials needed).
    Simulate(sim::SimulateArgs),
    /// Run the simulator and the exporter together: live metrics with no account.
    Demo(demo::DemoArgs),
    /// Show or set the app's Room Engine callback URL (with --config.file's credentials).
    Callbacks {
        #[command(subcommand)]
        action: register::CallbacksCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.config_check {
        let loaded = config::load(&cli.config_file, &config::ProcessSecrets)
            .and_then(|c| with_replica_id(c, &cli).map_err(|e| config::ConfigErrors(vec![e])));
        let mut ok = match loaded {
            Ok(c) => {
                println!("{}: {}", cli.config_file.display(), c.summary());
                true
            }
            Err(errors) => {
                eprintln!("{errors}");
                false
            }
        };
        if let Some(path) = &cli.web_config_file {
            match web_config::load(path) {
                Ok(w) => println!("{}: {}", path.display(), w.summary()),
                Err(errors) => {
                    eprintln!("{errors}");
                    ok = false;
                }
            }
        }
        return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    logging::init(cli.log_level, cli.log_format);
    roomengine_exporter::priority::remember_base();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(roomengine_exporter::priority::serve_at_lower_priority)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Callbacks { action }) = cli.command {
        return match runtime.block_on(register::run(&cli.config_file, action)) {
            Ok(register::Outcome::Done) => ExitCode::SUCCESS,
            // Not an API or config error: the change awaits confirmation.
            Ok(register::Outcome::NotConfirmed) => ExitCode::from(2),
            Err(e) => {
                eprintln!("roomengine-exporter: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Simulate(args)) => sim::run(args).await,
            Some(Command::Demo(args)) => demo::run(args).await,
            // Callbacks returned above.
            Some(Command::Callbacks { .. }) | None => run_exporter(cli).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("roomengine-exporter: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `config` with `--ha.replica-id`, when given, as its `ha.replica_id`.
fn with_replica_id(mut config: config::Config, cli: &Cli) -> Result<config::Config, String> {
    if let Some(id) = &cli.ha_replica_id {
        config::check_replica_id(id).map_err(|e| format!("--ha.replica-id: {e}"))?;
        config.ha.replica_id = id.clone();
    }
    Ok(config)
}

async fn run_exporter(cli: Cli) -> Result<(), roomengine_exporter::BoxError> {
    let config = with_replica_id(config::load(&cli.config_file, &config::ProcessSecrets)?, &cli)?;
    let web_config = match &cli.web_config_file {
        None => None,
        Some(path) => {
            let watch = web_config::WebConfigWatch::load(path)?;
            tracing::info!(file = %path.display(), summary = %watch.current().summary(), "web config loaded");
            Some(watch)
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %cli.config_file.display(), "starting");
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown::on_signal(shutdown.clone()));
    app::run(
        config,
        Some(cli.config_file),
        app::WebOptions {
            listen_address: cli.listen_address,
            telemetry_path: cli.telemetry_path,
            web_config,
            max_connections: cli.max_connections as usize,
        },
        shutdown,
    )
    .await
}
