//! Retries of one API call: a retryable failure is tried again after a
//! jittered exponential back-off, at most [`MAX_RETRIES`] times; every other
//! outcome is final. Shutdown cuts a back-off short.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::{CallError, ErrorClass};

/// Retries after the first attempt, for retryable failures only.
pub const MAX_RETRIES: u32 = 2;
/// The back-off before the first retry; it doubles for each retry after it.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Each back-off is scaled by a factor drawn from this range, so rooms that
/// failed together do not retry together.
pub const JITTER: std::ops::Range<f64> = 0.5..1.5;

/// The back-off before retry `attempt` (0 for the first retry) with `jitter`
/// drawn from [`JITTER`]: `BACKOFF_BASE × 2^attempt × jitter`.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    BACKOFF_BASE.mul_f64(f64::from(1u32 << attempt) * jitter)
}

/// Runs `call` once, and again after a jittered exponential back-off while it
/// fails with a retryable error, at most [`MAX_RETRIES`] more times.
pub async fn with_retries<T, F, Fut>(shutdown: &CancellationToken, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e)
                if e.class == ErrorClass::Retryable && attempt < MAX_RETRIES && !shutdown.is_cancelled() =>
            {
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(e),
                    _ = tokio::time::sleep(backoff(attempt, rand::random_range(JITTER))) => {}
                }
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::time::Instant;

    fn failure(class: ErrorClass) -> CallError {
        CallError::transport("test", class, "scripted failure")
    }

    /// Calls `with_retries` with a call that always fails with `class`;
    /// returns the instants of the attempts, relative to the start.
    async fn attempts_when_failing(class: ErrorClass, shutdown: &CancellationToken) -> Vec<Duration> {
        let start = Instant::now();
        let at = Mutex::new(Vec::new());
        let result: Result<(), CallError> = with_retries(shutdown, || async {
            at.lock().expect("not poisoned").push(start.elapsed());
            Err(failure(class))
        })
        .await;
        assert_eq!(result, Err(failure(class)), "the last error is returned");
        at.into_inner().expect("not poisoned")
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_failure_is_retried_with_doubling_jittered_backoff() {
        let shutdown = CancellationToken::new();
        for _ in 0..20 {
            let at = attempts_when_failing(ErrorClass::Retryable, &shutdown).await;
            assert_eq!(at.len(), 1 + MAX_RETRIES as usize, "{at:?}");
            for (retry, pair) in at.windows(2).enumerate() {
                let gap = pair[1] - pair[0];
                let (low, high) = (
                    backoff(retry as u32, JITTER.start),
                    backoff(retry as u32, JITTER.end),
                );
                // Timers fire on whole milliseconds: a sleep of 374.6 ms ends at 375.
                let high = high + Duration::from_millis(1);
                assert!(
                    low <= gap && gap < high,
                    "retry {retry} after {gap:?}, not in [{low:?}, {high:?})"
                );
            }
        }
        // The documented bounds: 125..375 ms before the first retry, 250..750 ms before the second.
        assert_eq!(
            (backoff(0, 0.5), backoff(0, 1.5), backoff(1, 0.5), backoff(1, 1.5)),
            (
                Duration::from_millis(125),
                Duration::from_millis(375),
                Duration::from_millis(250),
                Duration::from_millis(750)
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_are_not_retried() {
        let shutdown = CancellationToken::new();
        for class in [
            ErrorClass::RoomGone,
            ErrorClass::RateLimited,
            ErrorClass::Auth,
            ErrorClass::NoSeats,
            ErrorClass::BadRequest,
        ] {
            let at = attempts_when_failing(class, &shutdown).await;
            assert_eq!(at, vec![Duration::ZERO], "{class:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cuts_the_backoff_short() {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.cancel();
        });
        let start = Instant::now();
        let at = attempts_when_failing(ErrorClass::Retryable, &shutdown).await;
        assert_eq!(at, vec![Duration::ZERO]);
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_after_a_retry_is_returned() {
        let shutdown = CancellationToken::new();
        let calls = Mutex::new(0);
        let result = with_retries(&shutdown, || async {
            let mut n = calls.lock().expect("not poisoned");
            *n += 1;
            if *n == 1 {
                Err(failure(ErrorClass::Retryable))
            } else {
                Ok(*n)
            }
        })
        .await;
        assert_eq!(result, Ok(2));
    }
}
