//! A hand-written HTTP/1.1 POST over one kept-alive connection, for the
//! benches that flood the callback receiver: a general client costs more CPU
//! per request than the receiver, and on two cores the load generator would
//! be what the benchmark measures.

/// One kept-alive connection to `127.0.0.1:port`, opened again after an error.
pub struct RawSender {
    port: u16,
    stream: Option<tokio::net::TcpStream>,
}

impl RawSender {
    pub fn new(port: u16) -> RawSender {
        RawSender { port, stream: None }
    }

    /// POSTs `body` (JSON) to `path`; the answer's status, `None` when the
    /// connection failed (the next call opens a new one).
    pub async fn post(&mut self, path: &str, body: &str) -> Option<u16> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let status = self.exchange(request.as_bytes()).await;
        if status.is_none() {
            self.stream = None;
        }
        status
    }

    async fn exchange(&mut self, request: &[u8]) -> Option<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.is_none() {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .ok()?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut()?;
        stream.write_all(request).await.ok()?;
        let mut answer = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&chunk[..n]);
            let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = std::str::from_utf8(&answer[..end]).ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return head.split(' ').nth(1)?.parse().ok();
            }
        }
    }
}

/// What a flood of POSTs came to.
pub struct Flood {
    /// Answered 200.
    pub ok: u64,
    /// Answered otherwise, or not at all.
    pub failed: u64,
    /// Send to answer, of each 200.
    pub latencies: Vec<std::time::Duration>,
    /// From the first request to the last answer.
    pub elapsed: std::time::Duration,
}

/// POSTs `count` requests (`request(n)` gives the `n`th path and body) to
/// `127.0.0.1:port` from `senders` kept-alive connections, on a thread and
/// runtime of its own so the bench's other work does not pace it; with
/// `rate`, request `n` leaves no sooner than `n / rate` seconds after the start.
pub fn flood(
    port: u16,
    senders: usize,
    count: u64,
    rate: Option<f64>,
    request: impl Fn(u64) -> (String, String) + Send + Sync + 'static,
) -> std::thread::JoinHandle<Flood> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("flood runtime");
        let (next, request) = (Arc::new(AtomicU64::new(0)), Arc::new(request));
        let start = tokio::time::Instant::now();
        rt.block_on(async move {
            let tasks: Vec<_> = (0..senders)
                .map(|_| {
                    let (next, request) = (next.clone(), request.clone());
                    tokio::spawn(async move {
                        let mut sender = RawSender::new(port);
                        let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
                        loop {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            if n >= count {
                                return (ok, failed, latencies);
                            }
                            if let Some(rate) = rate {
                                tokio::time::sleep_until(
                                    start + std::time::Duration::from_secs_f64(n as f64 / rate),
                                )
                                .await;
                            }
                            let (path, body) = request(n);
                            let sent = std::time::Instant::now();
                            if sender.post(&path, &body).await == Some(200) {
                                ok += 1;
                                latencies.push(sent.elapsed());
                            } else {
                                failed += 1;
                            }
                        }
                    })
                })
                .collect();
            let mut all = Flood {
                ok: 0,
                failed: 0,
                latencies: Vec::new(),
                elapsed: Default::default(),
            };
            for task in tasks {
                if let Ok((ok, failed, latencies)) = task.await {
                    all.ok += ok;
                    all.failed += failed;
                    all.latencies.extend(latencies);
                }
            }
            all.elapsed = start.elapsed();
            all
        })
    })
}
