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
