//! Skupper sites: one `knetsim skrouterd` per cluster, on the cluster's first worker.
//!
//! This module owns the simulator's side of multi-cluster networking: each cluster's site
//! (its certificate authority, router certificate, tokens), the links between sites, the
//! services a site exposes, the router configuration generated from all of that, and the
//! router processes themselves (started, recorded for teardown, reloaded on a change).
//!
//! Files, under the run directory: `skupper/<cluster>.json` (the router's configuration, in
//! skupper-router's format), `skupper/<cluster>.log` (its log), `skupper/<cluster>/` (the
//! site CA in `ca/`, the router's certificate in `router/`, tokens in `tokens/<n>-<nonce>/`).
//!
//! The model is the source of truth: every change (init, link, expose, delete) edits the
//! model, renders every site's configuration again, and rewrites the file of every router
//! whose configuration changed and sends it SIGHUP: the router applies the difference in
//! place, so connections it carries stay open. Only a router that is not running, or whose
//! identity or listeners changed, is (re)started; a restarted router's peers reconnect. It
//! then waits until every affected router reports, on its `/metrics`, the links and service
//! addresses the model says it should have.
//!
//! Service ports: the first service exposed in a simulation listens on port 1028 in every
//! other linked site (as the original workshop's did on C1w1), the next on 1029, and so
//! on; a service keeps its port, and a site linked later gets listeners on the same ports.

mod list;
mod model;
mod router;
mod site;
mod tokens;

pub use list::ListService;
use model::*;
use router::*;

use super::supervise::log_tail;
use super::{Cluster, DaemonId, DaemonKind, DaemonSpec, Sim};
use crate::components::skupper::certs::{create_private_dir, write_private};
use crate::components::skupper::config::{
    Connector, Listener, Mode, Role, SslProfile, TcpConnector, TcpListener, HTTP_PORT,
    INTER_ROUTER_PORT,
};
use crate::components::skupper::{create_site_ca, create_token, issue_router_cert, CertFiles};
use crate::components::skupper::{reload, RouterConfig};
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

    /// The worker this cluster's Skupper router runs on, while it runs.
    pub fn skupper_router_worker(&self) -> Option<String> {
        self.skupper_router_pid()?;
        self.site().map(|s| s.worker)
    }

    /// While its router runs: the worker it runs on, its underlay address, and the
    /// configuration it was started with (for the packet walk through the routers).
    pub(crate) fn skupper_running(&self) -> Option<(String, Ipv4Addr, RouterConfig)> {
        self.skupper_router_pid()?;
        let s = self.site()?;
        Some((s.worker, s.host, s.running?))
    }

    /// Services exposed by this site: name and the tcpListener port in the other sites.
    pub fn skupper_services(&self) -> Vec<(String, u16)> {
        self.site()
            .map(|s| s.exposed.iter().map(|(n, e)| (n.clone(), e.port)).collect())
            .unwrap_or_default()
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
