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
use anyhow::{anyhow, Result};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::net::Ipv4Addr;

/// What is programmed for one remote lease: one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
}

fn route_msg(ext: &ExtIface, r: &Route) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.subnet.ip, r.subnet.prefix_len)
        .gateway(r.public_ip)
        .output_interface(ext.index)
        .build()
}

pub async fn add_route(h: &Handle, ext: &ExtIface, r: &Route) -> Result<()> {
    h.route()
        .add(route_msg(ext, r))
        .replace()
        .execute()
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

pub async fn del_route(h: &Handle, ext: &ExtIface, r: &Route) -> Result<()> {
    // Any protocol: a stale route may have been written by someone else (proto boot).
    let mut msg = route_msg(ext, r);
    msg.header.protocol = RouteProtocol::Unspec;
    match h.route().del(msg).execute().await {
        Ok(()) => {
            log!(
                "deleted route {} via {} dev {}",
                r.subnet,
                r.public_ip,
                ext.name
            );
            Ok(())
        }
        // ESRCH: already gone, which is what was wanted
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == 3 => Ok(()),
        Err(e) => Err(anyhow!("deleting route {}: {e}", r.subnet)),
    }
}

/// Routes via the external interface to subnets of `network` not in `keep`: left over
/// from leases that vanished while the agent was not running.
pub async fn stale_routes(
    h: &Handle,
    ext: &ExtIface,
    network: &Ipv4Net,
    keep: &[Ipv4Net],
) -> Result<Vec<Route>> {
    let routes = super::vxlan::ipv4_routes(h).await?;
    let mut out = Vec::new();
    for r in &routes {
        let attr =
            |want: fn(&RouteAttribute) -> Option<Ipv4Addr>| r.attributes.iter().find_map(want);
        let gw = attr(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        let dst = attr(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        let oif = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        let (Some(gw), Some(dst), Some(oif)) = (gw, dst, oif) else {
            continue;
        };
        let subnet = Ipv4Net::new(dst, r.header.destination_prefix_length);
        if oif == ext.index && network.contains(dst) && !keep.contains(&subnet) {
            out.push(Route {
                subnet,
                public_ip: gw,
            });
        }
    }
    Ok(out)
}
