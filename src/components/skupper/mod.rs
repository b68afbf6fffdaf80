//! `knetsim skrouterd`: a Skupper-style router configured like skupper-router.
//!
//! - [`config`]: skupper-router's JSON configuration (parse, validate, render).
//! - [`certs`]: per-site certificate authorities, router certificates and link tokens.
//! - [`link`]: inter-router links, AMQP 1.0 over mutual TLS (or plain).
//! - [`router`]: link-state routing and message forwarding; the addressing is described there.
//! - [`tcp`]: the TCP adaptor (tcpListener / tcpConnector).
//! - [`http`]: `/healthz` and `/metrics`.
//!
//! The simulator starts a router as `knetsim skrouterd -c FILE` inside a worker namespace.

use clap::Args;

pub mod certs;
pub mod config;
pub mod http;
pub mod link;
pub mod router;
pub mod tcp;

pub use certs::{create_site_ca, create_token, issue_router_cert, CertFiles, Token};
pub use config::RouterConfig;

/// Writes one timestamped log line (UTC) to stderr, prefixed with the router's id.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::components::skupper::log_line(&format!($($arg)*))
    };
}
pub(crate) use log;

static ROUTER_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[doc(hidden)]
pub fn log_line(s: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86400;
    let id = ROUTER_ID.get().map(String::as_str).unwrap_or("-");
    eprintln!(
        "{:02}:{:02}:{:02}.{:03} skrouterd {id}: {s}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    );
}

#[derive(Debug, Clone, Args)]
pub struct SkrouterdArgs {
    /// Router configuration file (skupper-router's JSON format).
    #[arg(short = 'c', long = "config")]
    pub config: std::path::PathBuf,
}

pub fn run(args: SkrouterdArgs) -> anyhow::Result<()> {
    let cfg = RouterConfig::load(&args.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(cfg))
}

/// Runs a router until SIGTERM/SIGINT. Fails early (with a clear message) when a listener
/// cannot bind or an sslProfile cannot be loaded.
pub async fn serve(cfg: RouterConfig) -> anyhow::Result<()> {
    let _ = ROUTER_ID.set(cfg.router.id.clone());
    log!(
        "router {} starting (mode {}), pid {}",
        cfg.router.id,
        cfg.router.mode.as_str(),
        std::process::id()
    );
    let router = router::Router::new(cfg.clone());
    let mut http_started = false;
    for l in &cfg.listeners {
        if l.http {
            http::run(router.clone(), &l.host, l.port).await?;
            http_started = true;
        } else if link::serves(l.role) {
            link::run_listener(router.clone(), l.clone()).await?;
        } else {
            log!(
                "listener {}:{} role normal: AMQP clients are not served by this router; ignored",
                l.host,
                l.port
            );
        }
    }
    if !http_started {
        if let Err(e) = http::run(router.clone(), "0.0.0.0", config::HTTP_PORT).await {
            log!("no HTTP listener configured and the default failed: {e}");
        }
    }
    for t in &cfg.tcp_listeners {
        tcp::run_listener(router.clone(), t.clone()).await?;
    }
    for t in &cfg.tcp_connectors {
        log!(
            "tcpConnector {}: address {} -> {}:{}",
            t.name,
            t.address,
            t.host,
            t.port
        );
    }
    for c in &cfg.connectors {
        tokio::spawn(link::run_connector(router.clone(), c.clone()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => log!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => log!("SIGINT: stopping"),
    }
    Ok(())
}
