//! The HA group's asynchronous connection to Redis: one multiplexed
//! connection shared by the heartbeat, the budget and the poll results,
//! dropped on any error and opened again on next use.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

use crate::config::RedisConfig;
use crate::roomset::{redis_client, scrub_password};

/// Short: a call waits on this when Redis is away, and the budget's
/// fallback must take over before the polls pile up.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Link {
    client: Client,
    con: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    url: String,
    password: Option<String>,
    /// `roomengine:{sdkappid}:`
    pub prefix: String,
}

impl Link {
    pub fn open(config: &RedisConfig, sdkappid: u64) -> Result<Link, String> {
        Ok(Link {
            client: redis_client(config)?,
            con: tokio::sync::Mutex::new(None),
            url: config.url.clone(),
            password: config.password.as_ref().map(|p| p.expose().to_owned()),
            prefix: format!("roomengine:{sdkappid}:"),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The shared connection, opened if need be.
    pub async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let mut con = self.con.lock().await;
        if let Some(con) = con.as_ref() {
            return Ok(con.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let opened = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| self.error(&e))?;
        *con = Some(opened.clone());
        Ok(opened)
    }

    /// A call on `con` failed: the next use connects again.
    pub async fn broken(&self) {
        *self.con.lock().await = None;
    }

    /// Runs `f` on the connection; an error drops it.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let con = self.connection().await?;
        match f(con).await {
            Ok(value) => Ok(value),
            Err(e) => {
                self.broken().await;
                Err(self.error(&e))
            }
        }
    }

    /// A Redis error as text that never holds the password.
    pub fn error(&self, e: &redis::RedisError) -> String {
        scrub_password(&format!("Redis {}: {e}", self.url), self.password.as_deref())
    }
}
