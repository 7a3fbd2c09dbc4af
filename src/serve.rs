//! Serves the router on the listener: plain `axum::serve` without a web
//! config; with one, basic auth in front of every route and, when the config
//! has `tls_server_config`, a rustls accept loop (hyper per connection) that
//! takes the current certificate for each new connection.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::basic_auth::{self, BasicAuth};
use crate::web_config::WebConfigWatch;
use crate::BoxError;

/// A client that has not finished its TLS handshake by then is dropped, so
/// idle half-open connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` until `shutdown` is cancelled, then lets the responses in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    web_config: Option<Arc<WebConfigWatch>>,
    shutdown: CancellationToken,
) -> Result<(), BoxError> {
    let Some(web) = web_config else {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        return Ok(());
    };
    // Every route, the landing page and /-/healthy included, as the exporter-toolkit does.
    let app = app.layer(axum::middleware::from_fn_with_state(
        BasicAuth::new(web.clone()),
        basic_auth::require,
    ));
    if web.current().tls.is_none() {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        return Ok(());
    }
    serve_tls(listener, app, web, shutdown).await;
    Ok(())
}

async fn serve_tls(
    listener: TcpListener,
    app: Router,
    web: Arc<WebConfigWatch>,
    shutdown: CancellationToken,
) {
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
        let _ = tcp.set_nodelay(true);
        // The TLS side always exists here: whether TLS is on never changes on a re-read.
        let Some(tls) = web.current().tls.clone() else {
            continue;
        };
        let acceptor = TlsAcceptor::from(tls);
        let service = TowerToHyperService::new(app.clone());
        let http = http.clone();
        let watcher = graceful.watcher();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stream = tokio::select! {
                s = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => s,
                () = shutdown.cancelled() => return,
            };
            let stream = match stream {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let connection = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
