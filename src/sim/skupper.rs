//! Skupper sites: one `knetsim skrouterd` per cluster, on the cluster's first worker.
//!
//! This module owns the simulator's side of multi-cluster networking: each cluster's site
//! (its certificate authority, router certificate, tokens), the links between sites, the
//! services a site exposes, the router configuration generated from all of that, and the
//! router processes themselves (started, recorded for teardown, restarted on a change).
//!
//! Files, under the run directory: `skupper/<cluster>.json` (the router's configuration, in
//! skupper-router's format), `skupper/<cluster>.log` (its log), `skupper/<cluster>/` (the
//! site CA in `ca/`, the router's certificate in `router/`, tokens in `tokens/<n>-<nonce>/`).
//!
//! The model is the source of truth: every change (init, link, expose, delete) edits the
//! model, renders every site's configuration again, and restarts the routers whose
//! configuration changed (the router has no reload; a restarted router's peers reconnect,
//! its own connectors dial at once). It then waits until every affected router reports, on
//! its `/metrics`, the links and service addresses the model says it should have.
//!
//! Service ports: the first service exposed in a simulation listens on port 1028 in every
//! other linked site (as the original workshop's did on C1w1), the next on 1029, and so
//! on; a service keeps its port, and a site linked later gets listeners on the same ports.

use super::supervise::log_tail;
use super::{Cluster, DaemonId, DaemonKind, DaemonSpec, Sim};
use crate::components::skupper::certs::{create_private_dir, write_private};
use crate::components::skupper::config::{
    Connector, Listener, Mode, Role, SslProfile, TcpConnector, TcpListener, HTTP_PORT,
    INTER_ROUTER_PORT,
};
use crate::components::skupper::RouterConfig;
use crate::components::skupper::{create_site_ca, create_token, issue_router_cert, CertFiles};
use crate::netns;
use crate::wait::{Poll, Wait};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The tcpListener port of the first exposed service.
pub const FIRST_SERVICE_PORT: u16 = 1028;
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// How a site is created: `C0.skupper_init()` or `C0.skupper_init(#{ tls: false })`.
#[derive(Debug, Clone, Copy)]
pub struct SiteOptions {
    /// Inter-router links to this site use mutual TLS (Skupper's way). Without it the
    /// links are plain AMQP, readable on the wire with tshark.
    pub tls: bool,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions { tls: true }
    }
}

/// How a link is made: `C1.skupper_link(t)` or `C1.skupper_link(t, #{ cost: 5 })`.
#[derive(Debug, Clone, Copy)]
pub struct LinkOptions {
    pub cost: u32,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions { cost: 1 }
    }
}

/// A link this site dialed (its connector).
#[derive(Debug, Clone)]
pub(crate) struct LinkState {
    /// Cluster id of the site dialed.
    peer: String,
    host: String,
    port: u16,
    cost: u32,
    /// Token files (CA, client certificate, key) for a TLS link.
    files: Option<CertFiles>,
}

/// A service whose tcpConnector is in this site.
#[derive(Debug, Clone)]
pub(crate) struct Exposed {
    container: String,
    ip: String,
    target_port: u16,
    /// The tcpListener port in the other sites.
    port: u16,
}

/// One cluster's site.
#[derive(Debug, Clone)]
pub(crate) struct SiteState {
    worker: String,
    ns: String,
    host: Ipv4Addr,
    tls: bool,
    /// `<run>/skupper/<cluster>/`
    dir: PathBuf,
    router_files: Option<CertFiles>,
    /// The configuration the running router was started with.
    running: Option<RouterConfig>,
    /// The router daemon (the supervisor restarts it if it exits unasked).
    router: Option<DaemonId>,
    tokens: u32,
    links: Vec<LinkState>,
    exposed: BTreeMap<String, Exposed>,
    /// Configured by the original's list form (`create_conf`), not from the model: its
    /// configuration is written once and started by `start_skupper()`.
    manual: bool,
}

/// What a token file holds (`token.json` in the token's directory).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct TokenFile {
    instance: String,
    site: String,
    host: String,
    port: u16,
    tls: bool,
    #[serde(rename = "caCertFile", default)]
    ca_cert_file: Option<PathBuf>,
    #[serde(rename = "certFile", default)]
    cert_file: Option<PathBuf>,
    #[serde(rename = "privateKeyFile", default)]
    private_key_file: Option<PathBuf>,
}

fn skupper_dir(sim: &Sim) -> PathBuf {
    sim.run_dir().join("skupper")
}

fn config_path(sim: &Sim, name: &str) -> PathBuf {
    skupper_dir(sim).join(format!("{name}.json"))
}

fn log_path(sim: &Sim, name: &str) -> PathBuf {
    skupper_dir(sim).join(format!("{name}.log"))
}

fn cluster_name(id: &str) -> String {
    format!("C{id}")
}

/// Every site of the simulation, by cluster id (a snapshot).
fn sites(sim: &Sim) -> BTreeMap<String, SiteState> {
    sim.inner
        .skupper
        .snapshot()
        .into_iter()
        .filter_map(|(id, s)| s.map(|s| (id, s)))
        .collect()
}

fn with_site_mut<R>(sim: &Sim, id: &str, f: impl FnOnce(&mut Option<SiteState>) -> R) -> R {
    sim.inner.skupper.with(id, f)
}

/// Undirected neighbours of `id` over links between existing sites.
fn neighbours(sites: &BTreeMap<String, SiteState>, id: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (sid, s) in sites {
        for l in &s.links {
            if !sites.contains_key(&l.peer) {
                continue;
            }
            if sid == id {
                out.insert(l.peer.clone());
            } else if l.peer == id {
                out.insert(sid.clone());
            }
        }
    }
    out
}

/// The sites reachable from `id` through links (including `id`).
fn component(sites: &BTreeMap<String, SiteState>, id: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![id.to_string()];
    while let Some(s) = todo.pop() {
        if seen.insert(s.clone()) {
            todo.extend(neighbours(sites, &s));
        }
    }
    seen
}

/// Number of link connections touching `id` (a router counts one per connection).
fn link_count(sites: &BTreeMap<String, SiteState>, id: &str) -> usize {
    let mut n = 0;
    for (sid, s) in sites {
        for l in &s.links {
            if sites.contains_key(&l.peer) && (sid == id || l.peer == id) {
                n += 1;
            }
        }
    }
    n
}

/// Service names exposed anywhere in `ids`, with the site exposing each.
fn services_in(
    sites: &BTreeMap<String, SiteState>,
    ids: &BTreeSet<String>,
) -> BTreeMap<String, (String, Exposed)> {
    let mut out = BTreeMap::new();
    for id in ids {
        if let Some(s) = sites.get(id) {
            for (name, e) in &s.exposed {
                out.insert(name.clone(), (id.clone(), e.clone()));
            }
        }
    }
    out
}

/// The configuration site `id` should run, from the model.
/// A site router's base configuration: the inter-router listener on 55671 (with the site's
/// sslProfile when links use TLS) and the HTTP listener for /healthz and /metrics.
fn site_router(name: &str, ssl_profile: Option<String>) -> RouterConfig {
    let mut cfg = RouterConfig::new(name, Mode::Interior);
    cfg.listeners.push(Listener {
        name: Some("inter-router".into()),
        host: "0.0.0.0".into(),
        port: INTER_ROUTER_PORT,
        role: Role::InterRouter,
        ssl_profile,
        cost: None,
        http: false,
    });
    cfg.listeners.push(Listener {
        name: Some("health".into()),
        host: "0.0.0.0".into(),
        port: HTTP_PORT,
        role: Role::Normal,
        ssl_profile: None,
        cost: None,
        http: true,
    });
    cfg
}

fn render(sites: &BTreeMap<String, SiteState>, id: &str) -> RouterConfig {
    let s = &sites[id];
    let mut cfg = site_router(
        &cluster_name(id),
        s.router_files.is_some().then(|| "site".into()),
    );
    if let Some(f) = &s.router_files {
        cfg.ssl_profiles.push(profile("site", f));
    }
    for l in s.links.iter().filter(|l| sites.contains_key(&l.peer)) {
        let name = format!("link-{}", cluster_name(&l.peer));
        let ssl = l.files.as_ref().map(|f| {
            cfg.ssl_profiles.push(profile(&name, f));
            name.clone()
        });
        cfg.connectors.push(Connector {
            name,
            role: Role::InterRouter,
            host: l.host.clone(),
            port: l.port,
            cost: l.cost,
            ssl_profile: ssl,
            verify_hostname: true,
        });
    }
    for (name, e) in &s.exposed {
        cfg.tcp_connectors.push(TcpConnector {
            name: name.clone(),
            address: name.clone(),
            host: e.ip.clone(),
            port: e.target_port,
        });
    }
    for (name, (owner, e)) in services_in(sites, &component(sites, id)) {
        if owner != id {
            cfg.tcp_listeners.push(TcpListener {
                name: name.clone(),
                address: name,
                host: "0.0.0.0".into(),
                port: e.port,
            });
        }
    }
    cfg
}

fn profile(name: &str, f: &CertFiles) -> SslProfile {
    SslProfile {
        name: name.to_string(),
        ca_cert_file: f.ca_cert.display().to_string(),
        cert_file: Some(f.cert.display().to_string()),
        private_key_file: Some(f.key.display().to_string()),
    }
}

/// `GET path` on a router's HTTP listener, from inside its namespace.
fn http_get(ns: &str, path: &str) -> Result<String> {
    let path = path.to_string();
    netns::run_in(ns, move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], HTTP_PORT));
        // Short: every readiness wait polls through here and must notice Ctrl-C soon.
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(250))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

/// A gauge's value from Prometheus text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
}

fn alive(sim: &Sim, router: Option<DaemonId>) -> bool {
    router.is_some_and(|id| sim.daemon_pid(id).is_some())
}

/// Stops a router on purpose (not restarted) and forgets it.
fn stop_router(sim: &Sim, router: Option<DaemonId>) -> Result<()> {
    match router {
        Some(id) => sim.stop_daemon(id),
        None => Ok(()),
    }
}

/// Starts site `id`'s router with the configuration already written, and waits for
/// its `/healthz`.
fn start_router(sim: &Sim, id: &str, s: &SiteState) -> Result<DaemonId> {
    let name = cluster_name(id);
    let conf = config_path(sim, &name);
    let log = log_path(sim, &name);
    let args = vec![
        "skrouterd".to_string(),
        "-c".into(),
        conf.display().to_string(),
    ];
    let spawned = sim.spawn_daemon(DaemonSpec::new(
        DaemonKind::Router,
        &s.worker,
        &s.ns,
        &sim.knetsim_exe(),
        args,
        log.clone(),
        format!("skrouterd {name} on {}", s.worker),
    ))?;
    let router = Some(spawned.id);
    let ready = Wait::new(
        format!(
            "the Skupper router of {name} (on {}) to answer /healthz",
            s.worker
        ),
        READY_TIMEOUT,
    )
    .hint(|| {
        format!(
            "its log ({}) ends with:\n{}",
            log.display(),
            log_tail(&log, 5)
        )
    })
    .until(|| {
        // Another pid means it exited (and the supervisor started it again).
        if sim.daemon_pid(spawned.id) != Some(spawned.pid) {
            bail!(
                "the Skupper router of {name} (on {}) exited at start. Its log ({}) ends with:\n{}",
                s.worker,
                log.display(),
                log_tail(&log, 5)
            );
        }
        Ok(match http_get(&s.ns, "/healthz") {
            Ok(r) if r.contains("200 OK") => Poll::Ready(()),
            Ok(r) => Poll::Pending(format!(
                "/healthz answered {:?}",
                r.lines().next().unwrap_or("")
            )),
            Err(e) => Poll::Pending(format!("/healthz did not answer: {e:#}")),
        })
    });
    match ready {
        Ok(()) => Ok(spawned.id),
        Err(e) => {
            let _ = stop_router(sim, router);
            Err(e)
        }
    }
}

/// Renders every site's configuration and restarts the routers whose configuration
/// changed (or that are not running). Sites that dial fewer others start first, so their
/// peers find them listening. Returns the sites restarted.
fn apply(sim: &Sim) -> Result<Vec<String>> {
    let all = sites(sim);
    let mut changed: Vec<(usize, String, RouterConfig)> = Vec::new();
    for (id, s) in &all {
        if s.manual {
            continue;
        }
        let want = render(&all, id);
        if s.running.as_ref() != Some(&want) || !alive(sim, s.router) {
            changed.push((s.links.len(), id.clone(), want));
        }
    }
    changed.sort_by_key(|(n, id, _)| (*n, id.clone()));
    create_private_dir(&skupper_dir(sim))?;
    let mut restarted = Vec::new();
    for (_, id, cfg) in changed {
        let s = &all[&id];
        let path = config_path(sim, &cluster_name(&id));
        std::fs::write(&path, cfg.render())
            .with_context(|| format!("writing {}", path.display()))?;
        stop_router(sim, s.router)?;
        with_site_mut(sim, &id, |site| {
            if let Some(site) = site {
                site.router = None;
                site.running = None;
            }
        });
        let router = start_router(sim, &id, s)?;
        with_site_mut(sim, &id, |site| {
            if let Some(site) = site {
                site.router = Some(router);
                site.running = Some(cfg);
            }
        });
        restarted.push(id);
    }
    Ok(restarted)
}

/// Waits until every site linked (directly or not) to `id` reports on `/metrics` the
/// links and service addresses the model gives it.
fn wait_converged(sim: &Sim, id: &str) -> Result<()> {
    let all = sites(sim);
    let comp = component(&all, id);
    let want_addrs = services_in(&all, &comp).len() as u64;
    let targets = comp
        .iter()
        .map(|sid| Target {
            id: sid.clone(),
            ns: all[sid].ns.clone(),
            links: link_count(&all, sid) as u64,
            addrs: want_addrs,
        })
        .collect();
    wait_metrics(sim, targets)
}

/// What one router's `/metrics` should say once the network has settled.
struct Target {
    id: String,
    ns: String,
    links: u64,
    addrs: u64,
}

fn wait_metrics(sim: &Sim, mut pending: Vec<Target>) -> Result<()> {
    let names: Vec<String> = pending.iter().map(|g| cluster_name(&g.id)).collect();
    // The site the timeout message points at: the first one still unsettled.
    let first_pending = std::cell::RefCell::new(names.first().cloned().unwrap_or_default());
    Wait::new(
        format!(
            "the Skupper network of {} to settle (links up and service addresses known on /metrics)",
            names.join(", ")
        ),
        CONVERGE_TIMEOUT,
    )
    .every(Duration::from_millis(50))
    .hint(|| {
        let name = first_pending.borrow();
        let log = log_path(sim, &name);
        format!(
            "{name}'s log ({}) ends with:\n{}",
            log.display(),
            log_tail(&log, 6)
        )
    })
    .until(|| {
        // A router in a crash loop will not settle: say so now, not at the timeout.
        for g in &pending {
            sim.require_agents(&g.id)?;
        }
        let mut last = String::new();
        pending.retain(|g| match http_get(&g.ns, "/metrics") {
            Ok(text) => {
                let links = metric(&text, "skrouter_links").unwrap_or(0);
                let addrs = metric(&text, "skrouter_addresses_reachable").unwrap_or(0);
                let settled = links == g.links && addrs == g.addrs;
                if !settled && last.is_empty() {
                    last = format!(
                        "{} has {links} of {} links up and {addrs} of {} service addresses",
                        cluster_name(&g.id),
                        g.links,
                        g.addrs
                    );
                }
                !settled
            }
            Err(e) => {
                if last.is_empty() {
                    last = format!("{}: /metrics did not answer: {e:#}", cluster_name(&g.id));
                }
                true
            }
        });
        match pending.first() {
            None => Ok(Poll::Ready(())),
            Some(g) => {
                *first_pending.borrow_mut() = cluster_name(&g.id);
                Ok(Poll::Pending(last))
            }
        }
    })
}

/// Waits for this router's log (after `offset`) to say the link to `peer` is up. A refused
/// certificate does not heal by retrying, so it ends the wait at once with the log's words;
/// a handshake cut short (the peer restarting in the same change) is retried by the router.
fn wait_link(log: &Path, offset: u64, peer: &str) -> Result<()> {
    let up = format!("link to router {peer} up");
    let connector = format!("connector link-{peer}: ");
    Wait::new(format!("the link to {peer} to come up"), CONVERGE_TIMEOUT)
        .every(Duration::from_millis(50))
        .hint(|| format!("the log ({}) ends with:\n{}", log.display(), log_tail(log, 5)))
        .until(|| {
            let text = std::fs::read(log).unwrap_or_default();
            let new =
                String::from_utf8_lossy(&text[(offset as usize).min(text.len())..]).into_owned();
            if new.contains(&up) {
                return Ok(Poll::Ready(()));
            }
            if let Some(line) = new
                .lines()
                .find(|l| l.contains(&connector) && is_certificate_refusal(l))
            {
                bail!(
                    "the link to {peer} was refused: {}. The token does not match {peer}'s certificate authority: issue a new one with {peer}.skupper_token()",
                    line.split_once(&connector)
                        .map(|x| x.1)
                        .unwrap_or(line)
                        .split("; retrying")
                        .next()
                        .unwrap_or(line)
                );
            }
            let seen = new
                .lines()
                .rev()
                .find(|l| l.contains(&connector))
                .map(|l| l.split_once(&connector).map(|x| x.1).unwrap_or(l).to_string())
                .unwrap_or_else(|| "no word of the link in the router's log yet".into());
            Ok(Poll::Pending(seen))
        })
}

/// A TLS handshake that failed over a certificate (ours refused, or the peer's alert),
/// not over a reset or an early end of stream.
fn is_certificate_refusal(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("tls handshake") && (l.contains("certificate") || l.contains("alert"))
}

fn valid_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !s.starts_with("_")
}

fn read_token(token: &str) -> Result<TokenFile> {
    let path = Path::new(token);
    let how = "a token is the value skupper_token() returns, e.g. `let t = C0.skupper_token(); C1.skupper_link(t);`";
    if !path.is_absolute() || !path.is_file() {
        // A token of ours whose site was deleted since: .../skupper/C0/tokens/1/token.json
        let site = path
            .ancestors()
            .nth(3)
            .filter(|_| path.ends_with("token.json"))
            .filter(|d| d.parent().is_some_and(|p| p.ends_with("skupper")))
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        if let Some(site) = site {
            bail!(
                "the token is from a Skupper site of {site} that was deleted (its tokens went with it): \
                 issue a new one with {site}.skupper_token(), after {site}.skupper_init() if {site} has no site now"
            );
        }
        bail!("\"{token}\" is not a Skupper token (no such token file): {how}");
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read token {token}: {e}; {how}"))?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{token} is not a Skupper token ({e}); {how}"))
}

impl Cluster {
    fn site(&self) -> Option<SiteState> {
        with_site_mut(&self.sim, &self.id, |s| s.clone())
    }

    fn require_site(&self) -> Result<SiteState> {
        let s = self.site().ok_or_else(|| {
            anyhow!(
                "{} has no Skupper site yet: call {}.skupper_init() first",
                self.name(),
                self.name()
            )
        })?;
        if s.manual {
            bail!(
                "{}'s router was configured with create_conf(); skupper_token/link/expose work on sites made \
                 with skupper_init(). Use one form or the other ({}.skupper_delete() starts over)",
                self.name(),
                self.name()
            );
        }
        Ok(s)
    }

    /// Path of this cluster's router configuration (`<run>/skupper/C0.json`).
    pub fn skupper_config_path(&self) -> PathBuf {
        config_path(&self.sim, &self.name())
    }

    /// Path of this cluster's router log (`<run>/skupper/C0.log`).
    pub fn skupper_log_path(&self) -> PathBuf {
        log_path(&self.sim, &self.name())
    }

    /// The router's pid, if this cluster has a site.
    pub fn skupper_router_pid(&self) -> Option<u32> {
        self.site()
            .and_then(|s| s.router)
            .and_then(|id| self.sim.daemon_pid(id))
    }

    /// Services exposed by this site: name and the tcpListener port in the other sites.
    pub fn skupper_services(&self) -> Vec<(String, u16)> {
        self.site()
            .map(|s| s.exposed.iter().map(|(n, e)| (n.clone(), e.port)).collect())
            .unwrap_or_default()
    }

    /// Creates this cluster's Skupper site: a CA, a router certificate for the first
    /// worker's underlay address, the configuration, and the router on that worker.
    /// Calling it again with the same options does nothing.
    pub fn skupper_init(&self, opts: SiteOptions) -> Result<()> {
        if !self.is_started() {
            bail!(
                "{} is not running yet: call start() before {}.skupper_init()",
                self.name(),
                self.name()
            );
        }
        if let Some(s) = self.site() {
            if s.manual {
                bail!(
                    "{} already has a router configured with create_conf(); delete it first with {}.skupper_delete()",
                    self.name(),
                    self.name()
                );
            }
            if s.tls == opts.tls {
                return Ok(());
            }
            bail!(
                "{} already has a Skupper site with {} links; delete it first with {}.skupper_delete()",
                self.name(),
                if s.tls { "mutual TLS" } else { "plain" },
                self.name()
            );
        }
        let name = self.name();
        let w = self
            .workers()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{name} has no worker to run its router on"))?;
        let host = w.ip();
        let dir = skupper_dir(&self.sim).join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        let router_files = if opts.tls {
            let ca = dir.join("ca");
            create_site_ca(&ca, &name)?;
            Some(issue_router_cert(
                &ca,
                &dir.join("router"),
                &name,
                &[&host.to_string()],
            )?)
        } else {
            create_private_dir(&dir)?;
            None
        };
        let site = SiteState {
            worker: w.name(),
            ns: w.ns(),
            host,
            tls: opts.tls,
            dir: dir.clone(),
            router_files,
            running: None,
            router: None,
            tokens: 0,
            links: Vec::new(),
            exposed: BTreeMap::new(),
            manual: false,
        };
        with_site_mut(&self.sim, &self.id, |s| *s = Some(site));
        if let Err(e) = apply(&self.sim) {
            let old = with_site_mut(&self.sim, &self.id, |s| s.take());
            if let Some(old) = old {
                let _ = stop_router(&self.sim, old.router);
            }
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(self.skupper_config_path());
            return Err(e.context(format!("creating {name}'s Skupper site")));
        }
        Ok(())
    }

    /// Issues a token another site can link with; returns the token file's path.
    pub fn skupper_token(&self) -> Result<String> {
        let s = self.require_site()?;
        let n = s.tokens + 1;
        let name = self.name();
        // A per-issue suffix keeps a deleted site's token from naming a later site's token.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = s.dir.join("tokens").join(format!("{n}-{nonce:08x}"));
        let (ca, cert, key) = if s.tls {
            let t = create_token(
                &s.dir.join("ca"),
                &dir,
                &format!("{name}-token-{n}"),
                &s.host.to_string(),
                INTER_ROUTER_PORT,
            )?;
            (Some(t.files.ca_cert), Some(t.files.cert), Some(t.files.key))
        } else {
            create_private_dir(&dir)?;
            (None, None, None)
        };
        let tok = TokenFile {
            instance: self.sim.instance().to_string(),
            site: name,
            host: s.host.to_string(),
            port: INTER_ROUTER_PORT,
            tls: s.tls,
            ca_cert_file: ca,
            cert_file: cert,
            private_key_file: key,
        };
        let path = dir.join("token.json");
        write_private(&path, &(serde_json::to_string_pretty(&tok)? + "\n"))?;
        with_site_mut(&self.sim, &self.id, |site| {
            if let Some(site) = site {
                site.tokens = n;
            }
        });
        Ok(path.display().to_string())
    }

    /// Links this site to the site that issued `token`: a connector (with the token's
    /// certificates as its sslProfile) dialing that site's router on 55671. Returns once
    /// the link is up and every service of either side is reachable from the other.
    pub fn skupper_link(&self, token: &str, opts: LinkOptions) -> Result<()> {
        let me = self.require_site()?;
        let name = self.name();
        let tok = read_token(token)?;
        if tok.instance != self.sim.instance() {
            bail!(
                "this token was issued by instance '{}', not by this simulation ('{}'): issue one here with {}.skupper_token()",
                tok.instance,
                self.sim.instance(),
                tok.site
            );
        }
        let peer = tok.site.strip_prefix('C').unwrap_or(&tok.site).to_string();
        if peer == self.id {
            bail!("{name} cannot link to itself: pass {name}'s token to another cluster, e.g. C1.skupper_link(t)");
        }
        let peer_cluster = self
            .sim
            .get_cluster(&peer)
            .map_err(|e| anyhow!("the token names site {} but {e}", tok.site))?;
        if peer_cluster.site().is_none() {
            bail!(
                "the token's site {} is not running (its Skupper site was deleted or never created): \
                 call {}.skupper_init() and issue a new token with {}.skupper_token()",
                tok.site,
                tok.site,
                tok.site
            );
        }
        let files = if tok.tls {
            let f = CertFiles {
                ca_cert: tok.ca_cert_file.clone().unwrap_or_default(),
                cert: tok.cert_file.clone().unwrap_or_default(),
                key: tok.private_key_file.clone().unwrap_or_default(),
            };
            if !(f.ca_cert.is_file() && f.cert.is_file() && f.key.is_file()) {
                bail!(
                    "this token's certificate files are missing ({}): issue a new token with {}.skupper_token()",
                    f.ca_cert.parent().unwrap_or(&f.ca_cert).display(),
                    tok.site
                );
            }
            Some(f)
        } else {
            None
        };
        let all = sites(&self.sim);
        if neighbours(&all, &self.id).contains(&peer) {
            bail!("{name} and {} are already linked", tok.site);
        }
        // Is anything listening there? A stopped router fails here, at once.
        let (host, port) = (tok.host.clone(), tok.port);
        let target: SocketAddr = format!("{host}:{port}")
            .parse()
            .map_err(|_| anyhow!("the token's address {host}:{port} is not valid"))?;
        let dial = netns::run_in(&me.ns, move || {
            TcpStream::connect_timeout(&target, DIAL_TIMEOUT).map_err(anyhow::Error::from)
        });
        if let Err(e) = dial {
            bail!(
                "{name} cannot reach {}'s router at {host}:{port} ({e:#}): is it running? \
                 Check `ps aux | grep skrouterd` and {}; if it was stopped, call {}.skupper_delete(), \
                 {}.skupper_init() and issue a new token",
                tok.site,
                log_path(&self.sim, &tok.site).display(),
                tok.site,
                tok.site
            );
        }
        let link = LinkState {
            peer: peer.clone(),
            host,
            port,
            cost: opts.cost.max(1),
            files,
        };
        with_site_mut(&self.sim, &self.id, |s| {
            if let Some(s) = s {
                s.links.push(link);
            }
        });
        let log = self.skupper_log_path();
        let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let res = apply(&self.sim)
            .and_then(|_| wait_link(&log, offset, &tok.site))
            .and_then(|_| wait_converged(&self.sim, &self.id));
        if let Err(e) = res {
            with_site_mut(&self.sim, &self.id, |s| {
                if let Some(s) = s {
                    s.links.retain(|l| l.peer != peer);
                }
            });
            let _ = apply(&self.sim);
            return Err(e.context(format!("linking {name} to {}", tok.site)));
        }
        Ok(())
    }

    /// Exposes `container`'s TCP `port` as service `service`: a tcpConnector in this site
    /// and a tcpListener in every linked site, on the port returned (1028 for the first
    /// service of the simulation, then 1029, ...). Returns once the address is reachable
    /// in every linked site.
    pub fn skupper_expose(&self, service: &str, container: &str, port: i64) -> Result<u16> {
        let name = self.name();
        self.require_site()?;
        if !valid_service_name(service) {
            bail!("'{service}' is not a valid service name: use letters, digits, '-', '_' or '.', starting with a letter (at most 63)");
        }
        if !(1..=65535).contains(&port) {
            bail!("skupper_expose(\"{service}\", \"{container}\", {port}): the port must be between 1 and 65535");
        }
        let w = self.find_container(container).ok_or_else(|| {
            let known: Vec<String> = self.containers().into_iter().map(|(c, _)| c).collect();
            anyhow!(
                "{name} has no container '{container}' to expose (its containers: {}); create it first, e.g. {name}.get(\"w1\").create_container(\"{container}\")",
                super::listed(&known, "none")
            )
        })?;
        let ip = w.container_ip(container)?;
        let all = sites(&self.sim);
        if let Some((owner, s)) = all
            .iter()
            .find_map(|(id, s)| s.exposed.get(service).map(|e| (id, e)))
        {
            bail!(
                "service '{service}' is already exposed by {} (container {}, port {}); pick another name",
                cluster_name(owner),
                s.container,
                s.port
            );
        }
        let used: BTreeSet<u16> = all
            .values()
            .flat_map(|s| s.exposed.values().map(|e| e.port))
            .collect();
        let listen = (FIRST_SERVICE_PORT..u16::MAX)
            .find(|p| !used.contains(p))
            .ok_or_else(|| anyhow!("no free service port left"))?;
        with_site_mut(&self.sim, &self.id, |s| {
            if let Some(s) = s {
                s.exposed.insert(
                    service.to_string(),
                    Exposed {
                        container: container.to_string(),
                        ip,
                        target_port: port as u16,
                        port: listen,
                    },
                );
            }
        });
        let res = apply(&self.sim).and_then(|_| wait_converged(&self.sim, &self.id));
        if let Err(e) = res {
            with_site_mut(&self.sim, &self.id, |s| {
                if let Some(s) = s {
                    s.exposed.remove(service);
                }
            });
            let _ = apply(&self.sim);
            return Err(e.context(format!("exposing {service} from {name}")));
        }
        Ok(listen)
    }

    /// Deletes this cluster's site (as `skupper delete` does): stops its router, removes
    /// its CA and tokens, and removes the links and listeners other sites had for it.
    pub fn skupper_delete(&self) -> Result<()> {
        let s = self
            .site()
            .ok_or_else(|| anyhow!("{} has no Skupper site to delete", self.name()))?;
        stop_router(&self.sim, s.router)?;
        with_site_mut(&self.sim, &self.id, |site| *site = None);
        let _ = std::fs::remove_dir_all(&s.dir);
        let _ = std::fs::remove_file(self.skupper_config_path());
        // Other sites drop their connectors to it and the listeners of its services.
        let ids: Vec<String> = sites(&self.sim).keys().cloned().collect();
        for id in &ids {
            with_site_mut(&self.sim, id, |site| {
                if let Some(site) = site {
                    site.links.retain(|l| l.peer != self.id);
                }
            });
        }
        apply(&self.sim)?;
        Ok(())
    }
}

/// One service of the original's list form:
/// `{"name": "svc1", "cluster": "0", "host": ip, "port": "80", "lport": 1028}` — a
/// tcpConnector to `host:port` in cluster `cluster`, a tcpListener on `lport` elsewhere.
#[derive(Debug, Clone)]
pub struct ListService {
    pub name: String,
    pub cluster: String,
    pub host: String,
    pub port: u16,
    pub lport: u16,
}

impl Cluster {
    /// The original's `create_conf(C, remotes, svcs)`: writes this cluster's router
    /// configuration with a (plain) connector to each remote cluster's router and the
    /// services' tcpConnectors (in their own cluster) or tcpListeners (elsewhere). The
    /// router starts with [`Cluster::start_skupper`]. Returns the configuration's path.
    pub fn create_conf(&self, remotes: &[Cluster], svcs: &[ListService]) -> Result<PathBuf> {
        let name = self.name();
        if !self.is_started() {
            bail!("{name} is not running yet: call start() before create_conf({name}, ...)");
        }
        if let Some(s) = self.site() {
            if !s.manual {
                bail!(
                    "{name} already has a Skupper site made with skupper_init(); create_conf() and skupper_init() do not mix (delete it first with {name}.skupper_delete())"
                );
            }
            if alive(&self.sim, s.router) {
                bail!("{name}'s router is already running: call create_conf({name}, ...) before {name}.start_skupper(), or {name}.skupper_delete() first");
            }
        }
        let mut cfg = site_router(&name, None);
        for r in remotes {
            if r.sim.instance() != self.sim.instance() {
                bail!(
                    "create_conf({name}, ...): remote {} belongs to another simulation",
                    r.name()
                );
            }
            if r.id == self.id {
                bail!("create_conf({name}, [{name}], ...): a cluster cannot be its own remote; list the other clusters, e.g. create_conf(C1, [C0], svcs)");
            }
            let host = r
                .workers()
                .first()
                .map(|w| w.ip().to_string())
                .ok_or_else(|| anyhow!("{} has no worker", r.name()))?;
            cfg.connectors.push(Connector {
                name: r.name(),
                role: Role::InterRouter,
                host,
                port: INTER_ROUTER_PORT,
                cost: 1,
                ssl_profile: None,
                verify_hostname: true,
            });
        }
        let mut seen = BTreeSet::new();
        for (i, sv) in svcs.iter().enumerate() {
            let ctx = format!("create_conf({name}, ...): service {i} ({})", sv.name);
            if !valid_service_name(&sv.name) {
                bail!("{ctx}: 'name' must be letters, digits, '-', '_' or '.', starting with a letter");
            }
            if !seen.insert(sv.name.clone()) {
                bail!("{ctx}: the name '{}' is used twice", sv.name);
            }
            if self.sim.get_cluster(&sv.cluster).is_err() {
                bail!(
                    "{ctx}: 'cluster' is \"{}\", which is not a cluster here; give the id of the cluster running the service, e.g. \"0\"",
                    sv.cluster
                );
            }
            if sv.host.parse::<Ipv4Addr>().is_err() {
                bail!(
                    "{ctx}: 'host' \"{}\" is not an IPv4 address; give the container's IP",
                    sv.host
                );
            }
            if sv.port == 0 || sv.lport == 0 {
                bail!("{ctx}: 'port' and 'lport' must be between 1 and 65535");
            }
            let owner = sv.cluster.strip_prefix('C').unwrap_or(&sv.cluster);
            if owner == self.id {
                cfg.tcp_connectors.push(TcpConnector {
                    name: sv.name.clone(),
                    address: sv.name.clone(),
                    host: sv.host.clone(),
                    port: sv.port,
                });
            } else {
                cfg.tcp_listeners.push(TcpListener {
                    name: sv.name.clone(),
                    address: sv.name.clone(),
                    host: "0.0.0.0".into(),
                    port: sv.lport,
                });
            }
        }
        let w = self
            .workers()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{name} has no worker to run its router on"))?;
        create_private_dir(&skupper_dir(&self.sim))?;
        let path = self.skupper_config_path();
        std::fs::write(&path, cfg.render())
            .with_context(|| format!("writing {}", path.display()))?;
        let site = SiteState {
            worker: w.name(),
            ns: w.ns(),
            host: w.ip(),
            tls: false,
            dir: skupper_dir(&self.sim).join(&name),
            router_files: None,
            running: Some(cfg),
            router: None,
            tokens: 0,
            links: Vec::new(),
            exposed: BTreeMap::new(),
            manual: true,
        };
        with_site_mut(&self.sim, &self.id, |s| *s = Some(site));
        Ok(path)
    }

    /// The original's `C0.start_skupper()`: starts the router configured by
    /// [`Cluster::create_conf`] and waits until every running router of that form has the
    /// links and service addresses its configuration gives it (instead of the original's
    /// fixed 5 s sleep).
    pub fn start_skupper(&self) -> Result<()> {
        let name = self.name();
        let s = self.site().ok_or_else(|| {
            anyhow!(
                "{name} has no router configuration: call create_conf({name}, remotes, svcs) first"
            )
        })?;
        if !s.manual {
            bail!("{name}'s router was started by skupper_init() already");
        }
        if alive(&self.sim, s.router) {
            return Ok(());
        }
        // A router stopped earlier (stop_agent) is replaced, not kept beside the new one.
        stop_router(&self.sim, s.router)?;
        let router = start_router(&self.sim, &self.id, &s)?;
        with_site_mut(&self.sim, &self.id, |site| {
            if let Some(site) = site {
                site.router = Some(router);
            }
        });
        // What each running router of this form should report.
        let all: Vec<(String, SiteState)> = sites(&self.sim)
            .into_iter()
            .filter(|(_, s)| s.manual && alive(&self.sim, s.router))
            .collect();
        let host_of: BTreeMap<String, String> = all
            .iter()
            .map(|(id, s)| (s.host.to_string(), id.clone()))
            .collect();
        let served: BTreeSet<String> = all
            .iter()
            .flat_map(|(_, s)| s.running.iter().flat_map(|c| c.tcp_connectors.iter()))
            .map(|t| t.address.clone())
            .collect();
        let mut targets = Vec::new();
        for (id, s) in &all {
            let Some(cfg) = &s.running else { continue };
            let out = cfg
                .connectors
                .iter()
                .filter(|c| host_of.contains_key(&c.host))
                .count();
            let inbound = all
                .iter()
                .filter(|(other, _)| other != id)
                .flat_map(|(_, o)| o.running.iter().flat_map(|c| c.connectors.iter()))
                .filter(|c| c.host == s.host.to_string())
                .count();
            let addrs: BTreeSet<&String> = cfg
                .tcp_connectors
                .iter()
                .map(|t| &t.address)
                .chain(
                    cfg.tcp_listeners
                        .iter()
                        .map(|t| &t.address)
                        .filter(|a| served.contains(*a)),
                )
                .collect();
            targets.push(Target {
                id: id.clone(),
                ns: s.ns.clone(),
                links: (out + inbound) as u64,
                addrs: addrs.len() as u64,
            });
        }
        wait_metrics(&self.sim, targets).with_context(|| format!("starting {name}'s router"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_certificate_failure_ends_the_wait_for_a_link() {
        assert!(is_certificate_refusal(
            "connector link-C0: TLS handshake with 10.0.0.3:55671 failed: invalid peer certificate: UnknownIssuer; retrying in 1s"
        ));
        assert!(is_certificate_refusal(
            "connector link-C0: TLS handshake with 10.0.0.3:55671 failed: received fatal alert: UnknownCA"
        ));
        assert!(!is_certificate_refusal(
            "connector link-C0: TLS handshake with 10.0.0.3:55671 failed: Connection reset by peer (os error 104)"
        ));
        assert!(!is_certificate_refusal(
            "connector link-C0: TLS handshake with 10.0.0.3:55671 failed: unexpected end of file"
        ));
    }

    fn site(links: &[&str], exposed: &[(&str, u16)]) -> SiteState {
        SiteState {
            worker: "w".into(),
            ns: "ns".into(),
            host: Ipv4Addr::new(10, 0, 0, 3),
            tls: false,
            dir: PathBuf::from("/x"),
            router_files: None,
            running: None,
            router: None,
            tokens: 0,
            links: links
                .iter()
                .map(|p| LinkState {
                    peer: p.to_string(),
                    host: "10.0.0.3".into(),
                    port: INTER_ROUTER_PORT,
                    cost: 1,
                    files: None,
                })
                .collect(),
            manual: false,
            exposed: exposed
                .iter()
                .map(|(n, p)| {
                    (
                        n.to_string(),
                        Exposed {
                            container: "c4".into(),
                            ip: "11.10.0.2".into(),
                            target_port: 80,
                            port: *p,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn listeners_follow_the_component_and_connectors_the_links() {
        // C2 -> C1 -> C0 (a chain), C3 alone; C0 exposes svc1 on 1028.
        let mut all = BTreeMap::new();
        all.insert("0".to_string(), site(&[], &[("svc1", 1028)]));
        all.insert("1".to_string(), site(&["0"], &[]));
        all.insert("2".to_string(), site(&["1"], &[("svc2", 1029)]));
        all.insert("3".to_string(), site(&[], &[]));
        let c0 = render(&all, "0");
        assert!(c0.connectors.is_empty());
        assert_eq!(c0.tcp_connectors.len(), 1);
        assert_eq!(c0.tcp_connectors[0].host, "11.10.0.2");
        assert_eq!(c0.tcp_listeners.len(), 1);
        assert_eq!(c0.tcp_listeners[0].address, "svc2");
        let c2 = render(&all, "2");
        assert_eq!(c2.connectors.len(), 1);
        assert_eq!(c2.connectors[0].name, "link-C1");
        assert_eq!(c2.tcp_listeners[0].port, 1028);
        let c3 = render(&all, "3");
        assert!(c3.tcp_listeners.is_empty());
        assert_eq!(link_count(&all, "1"), 2);
        assert_eq!(link_count(&all, "3"), 0);
        assert_eq!(component(&all, "0").len(), 3);
        // The rendered config is one the router accepts.
        RouterConfig::parse(&c2.render()).unwrap();
        // A link to a deleted site is dropped from the config.
        all.remove("1");
        assert!(render(&all, "2").connectors.is_empty());
    }

    #[test]
    fn metrics_are_read_by_name() {
        let t = "# HELP skrouter_links x\nskrouter_links{router=\"C0\"} 2\nskrouter_links_up_total{router=\"C0\"} 5\n";
        assert_eq!(metric(t, "skrouter_links"), Some(2));
        assert_eq!(metric(t, "skrouter_links_up_total"), Some(5));
        assert_eq!(metric(t, "skrouter_nope"), None);
    }

    #[test]
    fn service_names() {
        assert!(valid_service_name("svc1"));
        assert!(valid_service_name("web-v2.prod"));
        assert!(!valid_service_name("1svc"));
        assert!(!valid_service_name("a b"));
        assert!(!valid_service_name(""));
    }
}
