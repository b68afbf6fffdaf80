//! `knetsim skrouterd`: a Skupper-style router configured like skupper-router.
//!
//! - [`config`]: skupper-router's JSON configuration (parse, validate, render).
//! - [`certs`]: per-site certificate authorities, router certificates and link tokens.
//! - [`link`]: inter-router links, AMQP 1.0 over mutual TLS (or plain).
//! - [`reload`]: SIGHUP applies a changed configuration without a restart.
//! - [`sasl`]: SASL ANONYMOUS and EXTERNAL, both ends.
//! - [`router`]: link-state routing and message forwarding; the addressing is described there.
//! - [`client`]: ordinary AMQP clients on `normal` listeners, routed by address.
//! - [`tcp`]: the TCP adaptor (tcpListener / tcpConnector).
//! - [`http`]: `/healthz` and `/metrics`.
//!
//! ## For the simulator
//!
//! 1. Per site, once: [`create_site_ca`]`(dir, "C0")`, then
//!    [`issue_router_cert`]`(ca_dir, out_dir, "C0", &["10.0.0.3"])` for the site router's
//!    own listener certificate (the hosts are the addresses peers dial).
//! 2. A token for another site to link with: [`create_token`]`(ca_dir, out_dir, "C1",
//!    host, 55671)`: CA certificate, a client certificate/key from this site's CA, host and
//!    port (also written as `token.json`).
//! 3. Build a [`RouterConfig`] (`RouterConfig::new(id, Mode::Interior)` and push
//!    `listeners`, `connectors`, `ssl_profiles`, `tcp_listeners`, `tcp_connectors`), write
//!    [`RouterConfig::render`] to `<run dir>/skupper/<site>.json`.
//! 4. Start `knetsim skrouterd -c FILE` inside the worker namespace with
//!    `netns::process::spawn_daemon`; it logs to stderr. It exits non-zero with a message
//!    on a bad config or a port it cannot bind; stop it by pid (SIGTERM).
//! 5. To change it, rewrite the file and send SIGHUP: tcpListeners, tcpConnectors,
//!    connectors, addresses and sslProfiles change in place (open connections stay); the
//!    log says `SIGHUP: configuration reloaded` or why not, and `/metrics` counts
//!    `skrouter_config_reloads_total`. A changed router entry or listener needs a restart.
//!
//! Readiness: the log says `link to router X up (...)` per link and
//! `address A: reachable at router R, next hop H, cost N` per service address;
//! `/healthz` answers `OK` once the listeners are bound.

use clap::Args;

pub mod certs;
pub mod client;
pub mod config;
pub mod http;
pub mod link;
mod listen;
pub mod reload;
pub mod router;
pub mod sasl;
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
    let id = ROUTER_ID.get().map(String::as_str).unwrap_or("-");
    eprintln!("{} skrouterd {id}: {s}", crate::ui::wall_clock());
}

#[derive(Debug, Clone, Args)]
pub struct SkrouterdArgs {
    /// Router configuration file (skupper-router's JSON format).
    #[arg(short = 'c', long = "config")]
    pub config: std::path::PathBuf,
}

pub fn run(args: SkrouterdArgs) -> anyhow::Result<()> {
    let cfg = RouterConfig::load(&args.config)?;
    keep_buffers_mapped();
    // One thread per router: on small machines several routers share few cores, and a
    // single-threaded runtime measured faster here than a multi-threaded one.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(cfg, &args.config))
}

/// Every message body is a fresh buffer above glibc's mmap threshold (128 KiB), so by
/// default each one is mapped, faulted in page by page, zeroed and unmapped again; perf put
/// that at over a tenth of a router's time under load. Serving them from the heap avoids it.
fn keep_buffers_mapped() {
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Runs a router until SIGTERM/SIGINT; on SIGHUP rereads `path` (see [`reload`]). Fails
/// early (with a clear message) when a listener cannot bind or an sslProfile cannot be
/// loaded.
pub async fn serve(cfg: RouterConfig, path: &std::path::Path) -> anyhow::Result<()> {
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
            client::run_listener(router.clone(), l.clone()).await?;
        }
    }
    if !http_started {
        if let Err(e) = http::run(router.clone(), "0.0.0.0", config::HTTP_PORT).await {
            log!("no HTTP listener configured and the default failed: {e}");
        }
    }
    let mut running = reload::Running::start(&router, &cfg).await?;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { log!("SIGTERM: stopping"); break }
            _ = tokio::signal::ctrl_c() => { log!("SIGINT: stopping"); break }
            _ = hup.recv() => match running.reload(&router, path).await {
                Ok(n) => log!("SIGHUP: configuration reloaded from {}: {n} changes", path.display()),
                Err(e) => log!("SIGHUP: reload of {} failed: {e:#}", path.display()),
            },
        }
    }
    Ok(())
}
