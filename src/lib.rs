//! roomengine-exporter: a Prometheus exporter for Tencent Cloud Room Engine rooms.
//! Data flow: config → poller → budget → api → store → exposition → server,
//! wired by `app`; `sim` and `demo` are the stand-in API server and the demo,
//! `register` the `callbacks show|set` command.

pub mod api;
pub mod app;
pub mod basic_auth;
pub mod budget;
pub mod callbacks;
pub mod clock;
pub mod config;
pub mod connections;
pub mod demo;
pub mod exposition;
pub mod ha;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod poller;
pub mod priority;
pub mod probe;
pub mod register;
pub mod reload;
pub mod room;
pub mod roomset;
pub mod serve;
pub mod server;
pub mod shutdown;
pub mod sim;
pub mod status;
pub mod store;
pub mod usersig;
pub mod watch;
pub mod web_config;

/// Error type for the top-level entry points (`run`, `simulate`, `demo`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
