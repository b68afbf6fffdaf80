//! The host-gw backend's kernel side: no device of its own. Every remote node's pod subnet
//! is routed via that node's address on the external interface, so pod packets cross the
//! underlay as they are (no encapsulation, MTU unchanged). It needs the nodes on one L2
//! segment, as here: the gateway must be directly reachable.
//!
//! Equivalent command, for a remote lease 11.13.0.0/20 of host 10.0.0.4:
//! ```text
//! ip route replace 11.13.0.0/20 via 10.0.0.4 dev eth0
//! ```

use super::log;
use super::subnet::Ipv4Net;
use super::vxlan::ExtIface;
use crate::netns::netlink::overlay::GatewayRoute;
use crate::netns::netlink::Netlink;
use anyhow::{anyhow, Result};
use std::net::Ipv4Addr;

/// What is programmed for one remote lease: one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
}

fn gateway_route(ext: &ExtIface, r: &Route) -> GatewayRoute {
    GatewayRoute {
        dst: r.subnet.ip,
        len: r.subnet.prefix_len,
        gateway: r.public_ip,
        oif: ext.index,
        onlink: false,
    }
}

pub async fn add_route(nl: &Netlink, ext: &ExtIface, r: &Route) -> Result<()> {
    nl.route_replace(&gateway_route(ext, r))
        .await
        .map_err(|e| {
            anyhow!(
                "adding route {} via {} dev {}: {e} (host-gw needs every node on one L2 segment)",
                r.subnet,
                r.public_ip,
                ext.name
            )
        })?;
    log!(
        "added route {} via {} dev {}",
        r.subnet,
        r.public_ip,
        ext.name
    );
    Ok(())
}

/// Deletes the route whoever added it: a stale one may have been written by someone else
/// (proto boot).
pub async fn del_route(nl: &Netlink, ext: &ExtIface, r: &Route) -> Result<()> {
    super::backend::del_route(nl, &gateway_route(ext, r), &ext.name).await
}

/// Routes via the external interface to subnets of `network` not in `keep`: left over
/// from leases that vanished while the agent was not running.
pub async fn stale_routes(
    nl: &Netlink,
    ext: &ExtIface,
    network: &Ipv4Net,
    keep: &[Ipv4Net],
) -> Result<Vec<Route>> {
    Ok(nl
        .ipv4_routes()
        .await?
        .into_iter()
        .filter(|r| r.oif == Some(ext.index) && network.contains(r.dst))
        .filter_map(|r| {
            let subnet = Ipv4Net::new(r.dst, r.len);
            let public_ip = r.gateway?;
            (!keep.contains(&subnet)).then_some(Route { subnet, public_ip })
        })
        .collect())
}
