//! The router's HTTP listener: `/healthz` and Prometheus `/metrics`, as skupper-router
//! serves them on a listener with `http: true` (port 9090 by default).

use super::log;
use super::router::Router;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Binds the HTTP listener and serves it in the background.
pub async fn run(router: Arc<Router>, host: &str, port: u16) -> anyhow::Result<()> {
    let sock = tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| anyhow::anyhow!("HTTP listener {host}:{port} cannot listen: {e}"))?;
    log!("health and metrics on http://{host}:{port}/healthz and /metrics");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = sock.accept().await {
            let router = router.clone();
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16384 {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&buf);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, ctype, body) = match path.as_str() {
                    "/healthz" => ("200 OK", "text/plain", "OK".to_string()),
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", router.metrics_text()),
                    _ => (
                        "404 Not Found",
                        "text/plain",
                        "not found: try /healthz or /metrics\n".to_string(),
                    ),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(())
}
