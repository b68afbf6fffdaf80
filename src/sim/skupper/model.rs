//! The site model: who links to whom, which services each site exposes, and the router
//! configuration every site should run, rendered from all of that.

use super::*;

/// Undirected neighbours of `id` over links between existing sites.
pub(super) fn neighbours(sites: &BTreeMap<String, SiteState>, id: &str) -> BTreeSet<String> {
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
pub(super) fn component(sites: &BTreeMap<String, SiteState>, id: &str) -> BTreeSet<String> {
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
pub(super) fn link_count(sites: &BTreeMap<String, SiteState>, id: &str) -> usize {
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
pub(super) fn services_in(
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
pub(super) fn site_router(name: &str, ssl_profile: Option<String>) -> RouterConfig {
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

pub(super) fn render(sites: &BTreeMap<String, SiteState>, id: &str) -> RouterConfig {
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

pub(super) fn profile(name: &str, f: &CertFiles) -> SslProfile {
    SslProfile {
        name: name.to_string(),
        ca_cert_file: f.ca_cert.display().to_string(),
        cert_file: Some(f.cert.display().to_string()),
        private_key_file: Some(f.key.display().to_string()),
    }
}

pub(super) fn valid_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && !s.starts_with("_")
}
