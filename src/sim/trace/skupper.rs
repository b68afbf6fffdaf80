//! Across clusters through the Skupper routers: the client's TCP connection ends at its
//! own cluster's router (a tcpListener); the router carries the bytes as AMQP messages to
//! the service's address over its link to the other cluster's router; that router's
//! tcpConnector opens its own TCP connection to the pod. Three pieces, as in Skupper: the
//! client's flow (traced), the AMQP link (an established TCP connection between the
//! routers, whose byte counters the kernel reports before and after the request), and the
//! far router's flow (traced, its SYN marked as the probe in the router's namespace).

use super::probe::http_get;
use super::{client_leg, places, proxy_leg, render, Place, Walk};
use crate::components::skupper::config::INTER_ROUTER_PORT;
use crate::components::trace::Hop;
use crate::netns::process;
use crate::sim::{Cluster, Sim};
use anyhow::{anyhow, Result};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// Where a connection to a router's tcpListener goes.
pub(super) struct Route {
    /// The listening router: its cluster, worker and the service address.
    near: (Cluster, String, String),
    /// The router whose tcpConnector serves the address, and the connector's target.
    far: (Cluster, String, Ipv4Addr, Ipv4Addr, u16),
}

/// The route when `ip:port` is a tcpListener of the router of `cluster` and another
/// cluster's router has a tcpConnector for its address; None otherwise.
pub(super) fn route(sim: &Sim, cluster: &str, ip: Ipv4Addr, port: u16) -> Option<Route> {
    let near = Cluster::handle(sim, cluster);
    let (near_worker, near_host, cfg) = near.skupper_running()?;
    if near_host != ip {
        return None;
    }
    let address = cfg
        .tcp_listeners
        .iter()
        .find(|l| l.port == port)?
        .address
        .clone();
    for far in sim.clusters() {
        if far.id == near.id {
            continue;
        }
        let Some((far_worker, far_host, far_cfg)) = far.skupper_running() else {
            continue;
        };
        let Some(conn) = far_cfg.tcp_connectors.iter().find(|c| c.address == address) else {
            continue;
        };
        let Ok(target) = conn.host.parse::<Ipv4Addr>() else {
            continue;
        };
        return Some(Route {
            near: (near, near_worker, address),
            far: (far, far_worker, far_host, target, conn.port),
        });
    }
    None
}

/// Bytes sent and received so far on the routers' link, from the near router's socket
/// table: (local, peer, bytes_sent, bytes_received).
fn link_counters(ns: &str, peer: Ipv4Addr) -> Option<(String, String, u64, u64)> {
    let cmd = format!(
        "ss -Htni state established '( dport = :{INTER_ROUTER_PORT} or sport = :{INTER_ROUTER_PORT} )'"
    );
    let out = process::run_shell(Some(ns), &cmd, &[], Duration::from_secs(5), None).ok()?;
    let lines: Vec<&str> = out.text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let cols: Vec<&str> = l.split_whitespace().collect();
        let (Some(local), Some(remote)) = (cols.get(2), cols.get(3)) else {
            continue;
        };
        if !remote.starts_with(&format!("{peer}:")) {
            continue;
        }
        let info = lines.get(i + 1).copied().unwrap_or("");
        let field = |k: &str| -> u64 {
            info.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        return Some((
            local.to_string(),
            remote.to_string(),
            field("bytes_sent:"),
            field("bytes_received:"),
        ));
    }
    None
}

pub(super) fn walk(
    sim: &Sim,
    src: &Place,
    ip: Ipv4Addr,
    port: u16,
    r: Route,
    full: bool,
) -> Result<Walk> {
    let (near, near_worker, address) = r.near;
    let (far, far_worker, far_host, target, target_port) = r.far;
    let near_places = places(sim, &near.id);
    let far_places = places(sim, &far.id);
    let near_router = near_places
        .iter()
        .find(|p| p.label == near_worker)
        .ok_or_else(|| anyhow!("{near_worker} is not in the simulation's state"))?;
    let far_router = far_places
        .iter()
        .find(|p| p.label == far_worker)
        .ok_or_else(|| anyhow!("{far_worker} is not in the simulation's state"))?
        .clone();
    let (leg1, tag1) = client_leg(&near_places, src, ip, port)?;
    let mut link = (None, None);
    let target = SocketAddrV4::new(target, target_port);
    let leg3 = proxy_leg(&far_places, &far_router, &[target], || {
        link.0 = link_counters(&near_router.ns, far_host);
        let a = http_get(&src.ns, ip, port, "/");
        link.1 = link_counters(&near_router.ns, far_host);
        a
    })?;
    let mut hops = leg1.hops;
    hops.push(Hop::new(
        &near_router.label,
        "",
        "proxy",
        format!(
            "{}'s Skupper router (skrouterd on {}) accepts the connection on its tcpListener :{port} for the address {address}, and carries its bytes as AMQP messages to that address",
            near.name(),
            near_router.label
        ),
    ));
    let detail = match link {
        (Some((local, peer, s0, r0)), Some((_, _, s1, r1))) => format!(
            "the AMQP link between the routers, an established TCP connection {local} → {peer} (inter-router port {INTER_ROUTER_PORT}): during the request it sent {} bytes and received {} (the kernel's counters)",
            s1.saturating_sub(s0),
            r1.saturating_sub(r0)
        ),
        _ => format!(
            "no direct link from {} to {} ({far_host}:{INTER_ROUTER_PORT}) in {}'s socket table: the messages crossed other routers",
            near.name(),
            far.name(),
            near_router.label
        ),
    };
    hops.push(Hop::new(&near_router.label, "eth0", "amqp-link", detail));
    hops.push(Hop::new(
        &far_router.label,
        "",
        "proxy",
        format!(
            "{}'s router (skrouterd on {}) receives the messages for {address} and, for its tcpConnector, opens its own TCP connection to {target}",
            far.name(),
            far_router.label
        ),
    ));
    let second = hops.len();
    hops.extend(leg3.hops);
    let mut raw = leg1.raw;
    for (k, v) in leg3.raw {
        raw.insert(format!("{k} ({})", far.name()), v);
    }
    let text = format!(
        "Packet walk through Skupper: {ip}:{port} (address {address}) from {} ({}) to {target} in {}\n  \
         TCP flow 1: the client to {}'s router (source port {tag1}), hops 1-{}; the AMQP link, hop {}; \
         TCP flow 2: {}'s router to the pod, from hop {}\n{}",
        src.label,
        src.ip,
        far.name(),
        near.name(),
        second - 3,
        second - 1,
        far.name(),
        second + 1,
        render(&hops, full)
    );
    Ok(Walk {
        hops,
        answered: leg3.answered,
        text,
        raw,
    })
}
