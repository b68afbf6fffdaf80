//! Configuration changes without dropping traffic. skupper-router takes them through its
//! management interface; here the router rereads its JSON file on SIGHUP and applies the
//! difference: tcpListeners, tcpConnectors and connectors added or removed, addresses and
//! sslProfiles replaced. Connections already carried are separate tasks, so closing a
//! tcpListener or adding a service leaves them running.
//!
//! The router's identity and its AMQP/HTTP listeners are bound once: a change there is
//! refused with a message, and the old configuration stays in force.

use super::config::{Connector, RouterConfig, TcpConnector, TcpListener};
use super::router::Router;
use super::{link, log, tcp};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// What a configuration started: tasks that a reload may stop.
#[derive(Default)]
pub struct Running {
    tcp_listeners: BTreeMap<String, (TcpListener, JoinHandle<()>)>,
    connectors: BTreeMap<String, (Connector, JoinHandle<()>)>,
}

/// Why `new` cannot be applied to a router running `old`, if it cannot.
pub fn needs_restart(old: &RouterConfig, new: &RouterConfig) -> Option<String> {
    if old.router != new.router {
        return Some(format!(
            "the router entry changed (id {} mode {} -> id {} mode {})",
            old.router.id,
            old.router.mode.as_str(),
            new.router.id,
            new.router.mode.as_str()
        ));
    }
    if old.listeners != new.listeners {
        return Some("the listeners changed".into());
    }
    None
}

/// Logs where tcpConnector `t` sends its address's connections, after `prefix`.
fn announce(t: &TcpConnector, prefix: &str) {
    log!(
        "{prefix}tcpConnector {}: address {} -> {}:{}",
        t.name,
        t.address,
        t.host,
        t.port
    );
}

/// Stops the task of every entry of `running` that `wanted` no longer holds as it is;
/// returns those entries.
async fn stop_unwanted<T: PartialEq>(
    running: &mut BTreeMap<String, (T, JoinHandle<()>)>,
    wanted: &[T],
) -> Vec<T> {
    let gone: Vec<String> = running
        .iter()
        .filter(|(_, (t, _))| !wanted.contains(t))
        .map(|(n, _)| n.clone())
        .collect();
    let mut stopped = vec![];
    for n in gone {
        if let Some((t, h)) = running.remove(&n) {
            h.abort();
            let _ = h.await;
            stopped.push(t);
        }
    }
    stopped
}

impl Running {
    /// Starts the tcpListeners and connectors of `cfg`.
    pub async fn start(router: &Arc<Router>, cfg: &RouterConfig) -> anyhow::Result<Running> {
        let mut r = Running::default();
        for t in &cfg.tcp_listeners {
            let h = tcp::run_listener(router.clone(), t.clone()).await?;
            r.tcp_listeners.insert(t.name.clone(), (t.clone(), h));
        }
        for t in &cfg.tcp_connectors {
            announce(t, "");
        }
        for c in &cfg.connectors {
            r.start_connector(router, c);
        }
        Ok(r)
    }

    fn start_connector(&mut self, router: &Arc<Router>, c: &Connector) {
        let h = tokio::spawn(link::run_connector(router.clone(), c.clone()));
        self.connectors.insert(c.name.clone(), (c.clone(), h));
    }

    /// Rereads `path` and applies what changed. Returns the number of changes; on an error
    /// the configuration in force is kept.
    pub async fn reload(&mut self, router: &Arc<Router>, path: &Path) -> anyhow::Result<usize> {
        let new = RouterConfig::load(path)?;
        let old = router.cfg().clone();
        if let Some(why) = needs_restart(&old, &new) {
            anyhow::bail!(
                "{why}; that takes a restart of the router, the old configuration stays in force"
            );
        }
        let mut changes = 0;
        // Stop first, so a tcpListener moved to another port frees its old one, and one
        // keeping its port can bind it again.
        for t in stop_unwanted(&mut self.tcp_listeners, &new.tcp_listeners).await {
            log!(
                "reload: tcpListener {} on port {} closed (its connections go on)",
                t.name,
                t.port
            );
            changes += 1;
        }
        for c in stop_unwanted(&mut self.connectors, &new.connectors).await {
            log!("reload: connector {} removed", c.name);
            changes += 1;
        }
        for t in old
            .tcp_connectors
            .iter()
            .filter(|t| !new.tcp_connectors.contains(t))
        {
            log!(
                "reload: tcpConnector {} (address {}) removed",
                t.name,
                t.address
            );
            changes += 1;
        }
        for t in new
            .tcp_connectors
            .iter()
            .filter(|t| !old.tcp_connectors.contains(t))
        {
            announce(t, "reload: ");
            changes += 1;
        }
        if old.addresses != new.addresses || old.ssl_profiles != new.ssl_profiles {
            changes += 1;
        }
        // New connectors may name new sslProfiles, and new tcpConnectors are advertised:
        // the configuration is replaced before anything new starts.
        router.set_cfg(new.clone());
        let mut failed = vec![];
        for t in &new.tcp_listeners {
            if self.tcp_listeners.contains_key(&t.name) {
                continue;
            }
            match tcp::run_listener(router.clone(), t.clone()).await {
                Ok(h) => {
                    self.tcp_listeners.insert(t.name.clone(), (t.clone(), h));
                    changes += 1;
                }
                Err(e) => failed.push(format!("{e:#}")),
            }
        }
        for c in &new.connectors {
            if !self.connectors.contains_key(&c.name) {
                self.start_connector(router, c);
                log!("reload: connector {} added", c.name);
                changes += 1;
            }
        }
        router
            .metrics
            .config_reloads
            .fetch_add(1, Ordering::Relaxed);
        if !failed.is_empty() {
            anyhow::bail!("{}", failed.join("; "));
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::skupper::config::Mode;

    #[test]
    fn identity_and_listener_changes_need_a_restart() {
        let a = RouterConfig::new("A", Mode::Interior);
        let mut b = a.clone();
        assert_eq!(needs_restart(&a, &b), None);
        b.router.mode = Mode::Edge;
        assert!(needs_restart(&a, &b).unwrap().contains("router entry"));
        let mut c = a.clone();
        c.listeners
            .push(crate::components::skupper::config::Listener {
                name: None,
                host: "0.0.0.0".into(),
                port: 1,
                role: crate::components::skupper::config::Role::Normal,
                ssl_profile: None,
                cost: None,
                http: false,
            });
        assert!(needs_restart(&a, &c).unwrap().contains("listeners"));
        let mut d = a.clone();
        d.tcp_listeners.push(TcpListener {
            name: "svc".into(),
            address: "svc".into(),
            host: "0.0.0.0".into(),
            port: 1028,
        });
        assert_eq!(needs_restart(&a, &d), None, "tcpListeners are reloadable");
    }
}
