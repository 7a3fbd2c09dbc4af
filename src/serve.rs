//! Serves a router on a listener, for `/metrics` and the callback receiver
//! alike: one accept loop (hyper per connection) that admits connections
//! through [`Connections`] (caps and timeouts), with basic auth and TLS from
//! the web config when given (the current certificate for each new connection).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::basic_auth::{self, BasicAuth};
use crate::connections::{Admitted, Connections, GuardedBody};
use crate::web_config::WebConfigWatch;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pending connections the kernel keeps for a listener: a flood of
/// half-open clients then waits there instead of being refused outright.
const BACKLOG: u32 = 4096;

/// Binds `address` (`host:port`, the first address it resolves to) with a deep backlog.
pub async fn bind(address: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the address resolves to nothing")))
}

/// How one listener serves.
pub struct Serving {
    pub listener: TcpListener,
    pub app: Router,
    /// `--web.config.file`: TLS and basic auth; `None` serves plain HTTP.
    pub web_config: Option<Arc<WebConfigWatch>>,
    pub max_connections: usize,
}

/// Serves until `shutdown` is cancelled, then lets the responses in flight finish.
pub async fn serve(serving: Serving, shutdown: CancellationToken) {
    let Serving {
        listener,
        app,
        web_config,
        max_connections,
    } = serving;
    // The only route that reads a body, the callback receiver, times it out itself.
    let mut app = app;
    if let Some(web) = &web_config {
        // Every route, the landing page and /-/healthy included, as the exporter-toolkit does.
        app = app.layer(axum::middleware::from_fn_with_state(
            BasicAuth::new(web.clone()),
            basic_auth::require,
        ));
    }
    let connections = Connections::new(max_connections, shutdown.clone());
    let graceful = GracefulShutdown::new();
    let http = auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // While every connection is busy, later clients wait in the backlog.
        let admitted = tokio::select! {
            admitted = connections.admit_when_free() => admitted,
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let tls = web_config.as_ref().and_then(|w| w.current().tls.clone());
        let connection = Connection {
            admitted: Arc::new(admitted),
            app: app.clone(),
            http: http.clone(),
            watcher: graceful.watcher(),
            peer,
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return connection.serve(tcp).await;
            };
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(tls).accept(tcp));
            let stream = tokio::select! {
                s = handshake => s,
                () = shutdown.cancelled() => return,
                () = connection.admitted.close.cancelled() => return,
            };
            match stream {
                Ok(Ok(stream)) => connection.serve(stream).await,
                Ok(Err(e)) => tracing::debug!(peer = %connection.peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %connection.peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One admitted connection and what serving it needs.
struct Connection {
    admitted: Arc<Admitted>,
    app: Router,
    http: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    peer: std::net::SocketAddr,
}

impl Connection {
    async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: I) {
        let admitted = self.admitted.clone();
        let peer = self.peer;
        let app = self.app;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            // Busy from the headers until the last byte of the answer is sent.
            let guard = admitted.track();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let answer = app.clone().oneshot(request);
            async move {
                let response = answer.await?;
                Ok::<_, std::convert::Infallible>(response.map(|b| Body::new(GuardedBody::new(b, guard))))
            }
        });
        let connection = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::select! {
            result = self.watcher.watch(connection.into_owned()) => {
                if let Err(e) = result {
                    tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                }
            }
            () = self.admitted.close.cancelled() => {
                tracing::debug!(peer = %self.peer, "connection closed (idle, too slow, or evicted by a newer one)");
            }
        }
    }
}
