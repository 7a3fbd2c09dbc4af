//! One view: the outcome of every poll a replica makes is published to the
//! group (a channel) and kept per room in Redis, and every replica applies
//! the others' to its store, so a scrape of any replica shows every room.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::Link;
use crate::api::model::{RoomInfo, SeatUsage};
use crate::store::PollSink;
use crate::store::Store;

/// A room's last outcome is kept this long: a replica that starts reads
/// those of rooms polled since.
const KEEP: Duration = Duration::from_secs(3600);
/// Keys per MGET (and per SCAN page) when reading every outcome.
const CHUNK: usize = 1000;
/// Outcomes sent per pipeline.
const BATCH: usize = 256;

/// One poll's outcome, as the owner recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub replica: String,
    pub room: String,
    /// `None`: the poll failed.
    pub info: Option<RoomInfo>,
    pub seats: Option<SeatUsage>,
    pub sent_ms: u64,
    pub at_unix: f64,
}

impl Outcome {
    /// Into `store`, as if polled here (nothing for a room it does not have).
    pub fn apply(self, store: &Store) -> bool {
        if !store.contains(&self.room) {
            return false;
        }
        match self.info {
            Some(info) => store.record_poll(&self.room, info, self.seats, self.sent_ms, self.at_unix),
            None => store.record_failure(&self.room),
        }
        true
    }
}

/// The poller's [`PollSink`]: queues outcomes for [`publish`].
pub struct Sink {
    replica: String,
    queue: mpsc::UnboundedSender<Outcome>,
}

impl PollSink for Sink {
    fn polled(&self, room: &str, info: &RoomInfo, seats: Option<&SeatUsage>, sent_ms: u64, at_unix: f64) {
        let _ = self.queue.send(Outcome {
            replica: self.replica.clone(),
            room: room.to_owned(),
            info: Some(info.clone()),
            seats: seats.copied(),
            sent_ms,
            at_unix,
        });
    }

    fn failed(&self, room: &str) {
        let _ = self.queue.send(Outcome {
            replica: self.replica.clone(),
            room: room.to_owned(),
            info: None,
            seats: None,
            sent_ms: crate::clock::unix_now_ms(),
            at_unix: crate::clock::unix_now_f64(),
        });
    }
}

pub fn sink(replica: &str) -> (Sink, mpsc::UnboundedReceiver<Outcome>) {
    let (queue, outcomes) = mpsc::unbounded_channel();
    (
        Sink {
            replica: replica.to_owned(),
            queue,
        },
        outcomes,
    )
}

fn channel(link: &Link) -> String {
    format!("{}polls", link.prefix)
}

fn key(link: &Link, room: &str) -> String {
    format!("{}poll:{room}", link.prefix)
}

/// Sends queued outcomes (a pipeline of SET and PUBLISH per batch) until
/// the queue closes. Redis away: the batch is dropped (the next poll of
/// those rooms sends them again); the other replicas keep what they had.
pub async fn publish(link: Arc<Link>, mut outcomes: mpsc::UnboundedReceiver<Outcome>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut down = false;
    while outcomes.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for outcome in batch.drain(..) {
            let Ok(text) = serde_json::to_string(&outcome) else {
                continue;
            };
            pipe.cmd("SET")
                .arg(key(&link, &outcome.room))
                .arg(&text)
                .arg("PX")
                .arg(KEEP.as_millis() as u64)
                .ignore();
            pipe.cmd("PUBLISH").arg(channel(&link)).arg(text).ignore();
        }
        match link
            .call(|mut con| async move { pipe.exec_async(&mut con).await })
            .await
        {
            Ok(()) => {
                if std::mem::take(&mut down) {
                    tracing::info!("poll results reach Redis again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut down, true) {
                    tracing::warn!(error = %e, "cannot share poll results through Redis; the other replicas show this replica's rooms as last shared until it answers");
                }
            }
        }
    }
}

/// Reads every kept outcome into `store`; how many applied.
pub async fn load(link: &Link, store: &Store) -> Result<usize, String> {
    let pattern = format!("{}poll:*", link.prefix);
    let keys: Vec<String> = link
        .call(|mut con| async move {
            let mut keys = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(CHUNK)
                    .query_async(&mut con)
                    .await?;
                keys.extend(page);
                if next == 0 {
                    return Ok(keys);
                }
                cursor = next;
            }
        })
        .await?;
    let mut applied = 0;
    for chunk in keys.chunks(CHUNK) {
        let chunk = chunk.to_vec();
        let texts: Vec<Option<String>> = link
            .call(|mut con| async move { redis::cmd("MGET").arg(&chunk).query_async(&mut con).await })
            .await?;
        for text in texts.into_iter().flatten() {
            if let Ok(outcome) = serde_json::from_str::<Outcome>(&text) {
                applied += usize::from(outcome.apply(store));
            }
        }
    }
    Ok(applied)
}

/// Applies the other replicas' outcomes as they come until `shutdown`;
/// after every (re)subscription reads every kept one (messages may have
/// been missed meanwhile), and tells `loaded` how many the first read applied.
pub async fn subscribe(
    link: Arc<Link>,
    me: String,
    store: Arc<Store>,
    mut loaded: Option<tokio::sync::oneshot::Sender<Result<usize, String>>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut down = false;
    while !shutdown.is_cancelled() {
        let subscribed = async {
            let mut pubsub = link
                .client()
                .get_async_pubsub()
                .await
                .map_err(|e| link.error(&e))?;
            pubsub
                .subscribe(channel(&link))
                .await
                .map_err(|e| link.error(&e))?;
            Ok::<_, String>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                backoff = Duration::from_millis(100);
                if std::mem::take(&mut down) {
                    tracing::info!("poll results subscription back; reading every room's");
                }
                let read = load(&link, &store).await;
                match loaded.take() {
                    Some(first) => {
                        let _ = first.send(read);
                    }
                    None => {
                        if let Err(e) = read {
                            tracing::warn!(error = %e, "cannot read the shared poll results");
                        }
                    }
                }
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = messages.next() => {
                            let Some(message) = message else {
                                tracing::warn!("poll results subscription lost; retrying");
                                down = true;
                                break;
                            };
                            match serde_json::from_slice::<Outcome>(message.get_payload_bytes()) {
                                Ok(outcome) if outcome.replica != me => {
                                    outcome.apply(&store);
                                }
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "unreadable message on the poll results channel; ignored"),
                            }
                        }
                    }
                }
            }
            Err(e) => {
                if let Some(first) = loaded.take() {
                    // Start goes on without them; the first subscription reads them.
                    let _ = first.send(Err(e));
                    down = true;
                } else if !std::mem::replace(&mut down, true) {
                    tracing::warn!(error = %e, "poll results subscription lost; retrying");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}
