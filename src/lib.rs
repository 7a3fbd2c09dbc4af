//! roomengine-exporter: a Prometheus exporter for Tencent Cloud Room Engine rooms.
//! Data flow: config → poller → api → store → exposition → server; `sim` and
//! `demo` are the stand-in API server and the credential-free demo.

pub mod config;
pub mod demo;
pub mod sim;
pub mod usersig;

/// Error type for the top-level entry points (`run`, `simulate`, `demo`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
