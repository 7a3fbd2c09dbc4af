//! A stand-in for the Room Engine server REST API, faithful enough that the
//! exporter cannot tell it from Tencent's: `roomengine-exporter simulate`, the
//! demo, and the tests all run it. This file holds its options and lifecycle;
//! `world` is the rooms, `handlers` the Tencent paths, `control` the `/sim/*`
//! API, `stats` its counters, `clock` its movable wall clock and `callbacks`
//! the callbacks it sends.

mod callbacks;
mod control;
mod handlers;
mod skewed_clock;
mod stats;
mod world;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SecretKey;
use crate::BoxError;

pub use crate::callbacks::command::NAMES as CALLBACK_COMMANDS;
pub use callbacks::{sign as callback_sign, CallbackStats};
use skewed_clock::Clock;
pub use stats::{CallRecord, Fill, PeriodStats, Spread};
pub use world::{room_id, RoomInfo, TICK_SECONDS};

/// Flags of `roomengine-exporter simulate`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Address to serve the simulated API (and /sim/*) on.
    #[arg(long, default_value = "127.0.0.1:39181")]
    pub listen: String,
    /// Rooms at start: room-0001 .. room-NNNN.
    #[arg(long, default_value_t = 50)]
    pub rooms: usize,
    /// Seed of the rooms' history: the same seed gives the same history.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The one SDKAppID the simulator knows.
    #[arg(long, default_value_t = 1_400_000_000)]
    pub sdkappid: u64,
    /// The app administrator account.
    #[arg(long, default_value = "administrator")]
    pub identifier: String,
    /// Environment variable holding the SecretKey; when it is unset, a key is
    /// generated and printed once.
    #[arg(long, default_value = crate::config::DEFAULT_SECRET_ENV)]
    pub secret_key_env: String,
    /// Calls per second (one-second sliding window) before 60011.
    #[arg(long, default_value_t = 200)]
    pub rate_limit: u32,
    /// Mean time to answer a call; each call waits 0.5x to 1.5x this.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Share of calls answered 100001 (internal error).
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub fault_rate: f64,
    /// Share of calls answered HTTP 502 with an HTML body.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub http_error_rate: f64,
    /// Share of calls answered with truncated JSON.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub malformed_rate: f64,
    /// Share of rooms destroyed and replaced by new ones per minute.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub churn: f64,
    /// Callback token: callbacks then carry Sign=sha256(token+RequestTime) and RequestTime.
    #[arg(long)]
    pub callback_token: Option<String>,
    /// Share of callbacks never sent (counted as dropped).
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub callback_loss: f64,
    /// Each callback waits a random 0 to D before it is sent, so some arrive out of order.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub callback_delay: Duration,
    /// Log up to N calls (arrival, source port, API, room, answer) for `/sim/calls`; 0: none.
    #[arg(long, default_value_t = 0)]
    pub call_log: usize,
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{text:?} is not a share between 0 and 1")),
    }
}

/// Everything a simulator is started with. [`SimOptions::new`] gives the
/// `simulate` defaults, except: port 0 (any free one) and no latency.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address to bind, e.g. `127.0.0.1:0`.
    pub listen: String,
    pub rooms: usize,
    pub seed: u64,
    pub sdkappid: u64,
    pub identifier: String,
    pub secret_key: SecretKey,
    pub rate_limit: u32,
    /// Mean answer delay (jittered 0.5x..1.5x); zero answers at once.
    pub latency: Duration,
    pub fault_rate: f64,
    pub http_error_rate: f64,
    pub malformed_rate: f64,
    /// Share of rooms replaced per simulated minute.
    pub churn: f64,
    /// Seconds added to the system clock when checking UserSig expiry.
    pub clock_offset_secs: i64,
    /// World time at tick 0 (Unix s); `None` takes the clock's now. Fix it to
    /// compare two simulators' histories.
    pub epoch: Option<u64>,
    /// Real time between ticks; `None` leaves ticking to [`SimHandle::step`].
    pub tick: Option<Duration>,
    /// Token for the callbacks' `Sign`; `None` sends them unsigned.
    pub callback_token: Option<String>,
    /// Share of callbacks dropped instead of sent.
    pub callback_loss: f64,
    /// Each callback is sent after a uniform random delay of 0 to this.
    pub callback_delay: Duration,
    /// Calls the call log holds at most until taken ([`SimHandle::take_call_log`]); 0: no log.
    pub call_log: usize,
}

impl SimOptions {
    pub fn new(secret_key: SecretKey) -> Self {
        SimOptions {
            listen: "127.0.0.1:0".into(),
            rooms: 50,
            seed: 1,
            sdkappid: 1_400_000_000,
            identifier: "administrator".into(),
            secret_key,
            rate_limit: 200,
            latency: Duration::ZERO,
            fault_rate: 0.0,
            http_error_rate: 0.0,
            malformed_rate: 0.0,
            churn: 0.0,
            clock_offset_secs: 0,
            epoch: None,
            tick: Some(Duration::from_secs(TICK_SECONDS)),
            callback_token: None,
            callback_loss: 0.0,
            callback_delay: Duration::from_millis(50),
            call_log: 0,
        }
    }

    fn check(&self) -> Result<(), BoxError> {
        for (name, share) in [
            ("fault_rate", self.fault_rate),
            ("http_error_rate", self.http_error_rate),
            ("malformed_rate", self.malformed_rate),
            ("churn", self.churn),
            ("callback_loss", self.callback_loss),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("simulator option {name} must be between 0 and 1, not {share}").into());
            }
        }
        if self.tick.is_some_and(|t| t.is_zero()) {
            return Err("simulator option tick must be longer than zero".into());
        }
        Ok(())
    }
}

/// State shared by every request handler and the ticking task.
pub(crate) struct Shared {
    /// Locked only for short, synchronous reads and updates (never across `.await`).
    pub world: Mutex<world::World>,
    pub stats: stats::Stats,
    pub clock: Clock,
    pub auth: handlers::Auth,
    pub faults: handlers::Faults,
    pub rate_limit: u32,
    pub latency: Duration,
    pub callbacks: callbacks::Callbacks,
}

impl Shared {
    /// The world, locked; the events of whatever is changed through the guard
    /// are handed to the callback sender when it is dropped.
    pub fn world(&self) -> WorldGuard<'_> {
        WorldGuard {
            world: self.world.lock().unwrap_or_else(|p| p.into_inner()),
            shared: self,
        }
    }

    /// set_callback / update_callback: stores the registration, then the
    /// world records events for it.
    pub fn register_callback(
        &self,
        request: &serde_json::Map<String, serde_json::Value>,
        setting: callbacks::Setting,
    ) -> Result<(), String> {
        self.callbacks.set(request, setting)?;
        self.world().set_recording(true);
        Ok(())
    }

    fn set_callback(&self, registration: Option<(String, Vec<String>)>) -> Result<(), String> {
        match registration {
            Some((url, commands)) => {
                let request = serde_json::json!({ "Url": url, "CallbackCommandList": commands });
                let request = request.as_object().cloned().unwrap_or_default();
                self.register_callback(&request, callbacks::Setting::Set)
            }
            None => {
                self.callbacks.clear();
                self.world().set_recording(false);
                Ok(())
            }
        }
    }

    /// Advances the world `ticks` ticks under one lock and records the rooms
    /// each tick filled.
    fn step_world(&self, ticks: u64) {
        let mut filled = Vec::new();
        {
            let mut world = self.world();
            let full = |r: &&world::Room| r.info.member_count >= r.info.max_member_count;
            for _ in 0..ticks {
                let before: std::collections::HashSet<String> = world
                    .rooms()
                    .filter(full)
                    .map(|r| r.info.room_id.clone())
                    .collect();
                world.step();
                filled.extend(
                    world
                        .rooms()
                        .filter(full)
                        .filter(|r| !before.contains(&r.info.room_id))
                        .map(|r| r.info.room_id.clone()),
                );
            }
        }
        self.stats.record_fills(filled);
    }
}

/// The locked world; see [`Shared::world`].
pub(crate) struct WorldGuard<'a> {
    world: std::sync::MutexGuard<'a, world::World>,
    shared: &'a Shared,
}

impl std::ops::Deref for WorldGuard<'_> {
    type Target = world::World;
    fn deref(&self) -> &world::World {
        &self.world
    }
}

impl std::ops::DerefMut for WorldGuard<'_> {
    fn deref_mut(&mut self) -> &mut world::World {
        &mut self.world
    }
}

impl Drop for WorldGuard<'_> {
    fn drop(&mut self) {
        let events = self.world.take_events();
        if !events.is_empty() {
            self.shared
                .callbacks
                .dispatch(events, &self.shared.auth.identifier);
        }
    }
}

/// Starts simulators.
pub struct Simulator;

impl Simulator {
    /// Binds `options.listen`, serves the API and `/sim/*`, and (with
    /// `options.tick`) advances the world in the background.
    pub async fn start(options: SimOptions) -> Result<SimHandle, BoxError> {
        options.check()?;
        let clock = Clock::with_offset(options.clock_offset_secs);
        let epoch = options.epoch.unwrap_or_else(|| clock.now_unix());
        let shared = Arc::new(Shared {
            world: Mutex::new(world::World::new(
                options.seed,
                options.rooms,
                epoch,
                options.churn,
            )),
            stats: stats::Stats::with_call_log(options.call_log),
            clock,
            auth: handlers::Auth {
                sdkappid: options.sdkappid,
                identifier: options.identifier.clone(),
                key: options.secret_key.clone(),
            },
            faults: handlers::Faults::new(&options),
            rate_limit: options.rate_limit,
            latency: options.latency,
            callbacks: callbacks::Callbacks::new(callbacks::SenderOptions {
                sdkappid: options.sdkappid,
                token: options.callback_token.clone(),
                delay: options.callback_delay,
                loss: options.callback_loss,
            })?,
        });
        let listener = tokio::net::TcpListener::bind(&options.listen)
            .await
            .map_err(|e| format!("simulator cannot listen on {}: {e}", options.listen))?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .merge(handlers::routes())
            .merge(control::routes())
            .with_state(shared.clone());
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let mut tasks = vec![tokio::spawn(async move {
            // With the client's address, for the call log's source ports.
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let server = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = server.await {
                tracing::error!(error = %e, "simulator server failed");
            }
        })];
        tasks.push(tokio::spawn(callbacks::run(shared.clone(), cancel.clone())));
        if let Some(period) = options.tick {
            tasks.push(tokio::spawn(tick_world(shared.clone(), period, cancel.clone())));
        }
        Ok(SimHandle {
            addr,
            shared,
            cancel,
            tasks,
        })
    }
}

/// Advances the world one tick per `period` until cancelled.
async fn tick_world(shared: Arc<Shared>, period: Duration, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => shared.step_world(1),
        }
    }
}

/// A running simulator. Dropping it stops the server too; [`SimHandle::shutdown`]
/// also waits until it has stopped.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the `endpoint` to give the exporter.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Advances the world `ticks` ticks now (deterministic; works with or
    /// without background ticking).
    pub fn step(&self, ticks: u64) {
        self.shared.step_world(ticks);
    }

    /// Every room that reached its MaxMemberCount in a tick, and when, oldest
    /// first (as `GET /sim/fills` shows them).
    pub fn fills(&self) -> Vec<Fill> {
        self.shared.stats.fills()
    }

    /// Opens `n` new rooms (numbered on from the last), announced by create
    /// callbacks once a callback URL is registered.
    pub fn open_rooms(&self, n: usize) {
        let mut world = self.shared.world();
        for _ in 0..n {
            world.open_room();
        }
    }

    /// Sets the clock UserSigs are checked against to `unix` (and on from there).
    pub fn set_clock(&self, unix: u64) {
        self.shared.clock.set_now(unix);
    }

    /// IDs of the rooms that exist now, sorted.
    pub fn room_ids(&self) -> Vec<String> {
        self.shared
            .world()
            .rooms()
            .map(|r| r.info.room_id.clone())
            .collect()
    }

    /// The most calls received in any one-second window so far.
    pub fn max_calls_per_second(&self) -> u64 {
        self.shared.stats.max_calls_per_second()
    }

    /// Calls received for `api` (e.g. `get_room_info`), rejected ones included.
    pub fn calls(&self, api: &str) -> u64 {
        self.shared.stats.calls(api)
    }

    /// The most calls in flight at once since the previous call: a client
    /// needs no more connections than that.
    pub fn take_peak_in_flight(&self) -> usize {
        self.shared.stats.take_peak_in_flight()
    }

    /// Calls received and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.shared.stats.in_flight()
    }

    /// Starts a new measurement period (see [`SimHandle::period`]).
    pub fn reset_period(&self) {
        self.shared.stats.reset_period();
    }

    /// Calls, the busiest second, answers and poll intervals since the last
    /// [`SimHandle::reset_period`], as `GET /sim/stats` shows them.
    pub fn period(&self) -> PeriodStats {
        self.shared.stats.period()
    }

    /// Every call logged since the last take, emptied: arrival (as an
    /// `Instant` and Unix seconds), the client's TCP source port, the API,
    /// the room and the answer; oldest answer first (sort by `at` for
    /// arrival order). Empty unless [`SimOptions::call_log`] is set.
    pub fn take_call_log(&self) -> Vec<CallRecord> {
        self.shared.stats.take_call_log()
    }

    /// Calls the log could not keep because it was full (since the start).
    pub fn call_log_dropped(&self) -> u64 {
        self.shared.stats.call_log_dropped()
    }

    /// What the callback sender did so far, as `GET /sim/callbacks` shows it.
    pub fn callback_stats(&self) -> CallbackStats {
        self.shared.callbacks.stats()
    }

    /// Registers (or with `None` removes) the callback URL, as set_callback
    /// does; the error is set_callback's ErrorInfo.
    pub fn set_callback_url(&self, url: Option<String>, commands: Vec<String>) -> Result<(), String> {
        self.shared.set_callback(url.map(|url| (url, commands)))
    }

    /// Stops serving and ticking and waits for both to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A fresh random SecretKey: 64 hex digits, like the console's.
pub fn generate_secret_key() -> SecretKey {
    let mut rng = rand::rng();
    SecretKey::new((0..32).map(|_| format!("{:02x}", rng.random::<u8>())).collect())
}

/// `roomengine-exporter simulate`: serves until SIGINT or SIGTERM.
pub async fn run(args: SimulateArgs) -> Result<(), BoxError> {
    let secret_key = match std::env::var(&args.secret_key_env) {
        Ok(value) if !value.is_empty() => SecretKey::new(value),
        _ => {
            let key = generate_secret_key();
            println!(
                "${} is not set; this run's generated SecretKey is {}",
                args.secret_key_env,
                key.expose()
            );
            key
        }
    };
    let options = SimOptions {
        listen: args.listen,
        rooms: args.rooms,
        seed: args.seed,
        sdkappid: args.sdkappid,
        identifier: args.identifier,
        rate_limit: args.rate_limit,
        latency: args.latency,
        fault_rate: args.fault_rate,
        http_error_rate: args.http_error_rate,
        malformed_rate: args.malformed_rate,
        churn: args.churn,
        callback_token: args.callback_token,
        callback_loss: args.callback_loss,
        callback_delay: args.callback_delay,
        call_log: args.call_log,
        ..SimOptions::new(secret_key)
    };
    let (sdkappid, identifier, rooms) = (options.sdkappid, options.identifier.clone(), options.rooms);
    let handle = Simulator::start(options).await?;
    println!(
        "Room Engine simulator on {url}: sdkappid {sdkappid}, identifier {identifier}, {rooms} rooms\n\
         rooms: {url}/sim/rooms   counters: {url}/sim/metrics",
        url = handle.base_url()
    );
    tracing::info!(address = %handle.addr(), "simulator listening");
    let stop = CancellationToken::new();
    tokio::spawn(crate::shutdown::on_signal(stop.clone()));
    stop.cancelled().await;
    handle.shutdown().await;
    Ok(())
}
