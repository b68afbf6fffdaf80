//! Listening sockets shared by inter-router links and AMQP clients: bind with the
//! listener's TLS profile, then accept connections until the router exits.

use super::config::Listener;
use super::router::Router;
use super::{certs, log};
use anyhow::{anyhow, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Binds listener `l`; its TLS server configuration when it names an sslProfile.
pub async fn bind(
    router: &Router,
    l: &Listener,
) -> Result<(Option<Arc<rustls::ServerConfig>>, TcpListener)> {
    let tls = match &l.ssl_profile {
        Some(p) => {
            let prof = router.ssl_profile(p)?;
            Some(certs::server_config(&prof)?)
        }
        None => None,
    };
    let sock = TcpListener::bind((l.host.as_str(), l.port))
        .await
        .map_err(|e| {
            anyhow!(
                "listener {}:{} ({}) cannot listen: {e}; choose a free port",
                l.host,
                l.port,
                l.role.as_str()
            )
        })?;
    Ok((tls, sock))
}

/// Hands every connection accepted on `sock` (listener port `port`) to `serve`, on a task
/// of its own; a failed accept is logged and retried shortly after.
pub fn accept_each(
    sock: TcpListener,
    port: u16,
    serve: impl Fn(TcpStream, SocketAddr) + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            match sock.accept().await {
                Ok((s, from)) => serve(s, from),
                Err(e) => {
                    log!("listener {port}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}
