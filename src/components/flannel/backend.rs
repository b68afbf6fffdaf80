//! The backend as the agent drives it: what it programs for each remote lease. The kernel
//! work of each backend lives in its own file ([`super::vxlan`], [`super::hostgw`]).

use super::config::{Backend, NetConfig};
use super::hostgw;
use super::log;
use super::subnet::{Ip, Ipv4Net, Lease, LeaseAttrs, Mac};
use super::vxlan::{self, Device, ExtIface};
use crate::netns::netlink::overlay::GatewayRoute;
use crate::netns::netlink::Netlink;
use anyhow::{anyhow, bail, Result};
use std::net::Ipv4Addr;

/// A backend set up on this node.
pub enum Dataplane {
    Vxlan(Device),
    HostGw { ext: ExtIface, network: Ipv4Net },
}

/// What is programmed for one remote lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    Vxlan(vxlan::Remote),
    HostGw(hostgw::Route),
}

impl Remote {
    pub fn subnet(&self) -> Ipv4Net {
        match self {
            Remote::Vxlan(r) => r.subnet,
            Remote::HostGw(r) => r.subnet,
        }
    }

    pub fn public_ip(&self) -> Ipv4Addr {
        match self {
            Remote::Vxlan(r) => r.public_ip,
            Remote::HostGw(r) => r.public_ip,
        }
    }

    /// `PublicIP: 10.0.0.4 VtepMAC: ...` as flanneld logs a subnet (displayed into the
    /// log line, no text of its own).
    pub fn describe(&self) -> Described {
        Described(*self)
    }
}

/// [`Remote::describe`].
pub struct Described(Remote);

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Remote::Vxlan(r) => write!(f, "PublicIP: {} VtepMAC: {}", Ip(r.public_ip), Mac(r.mac)),
            Remote::HostGw(r) => write!(f, "PublicIP: {}", Ip(r.public_ip)),
        }
    }
}

impl Dataplane {
    /// Sets the backend up (the vxlan device; nothing for host-gw) and returns it with this
    /// node's lease attributes.
    pub async fn setup(
        nl: &Netlink,
        cfg: &NetConfig,
        ext: &ExtIface,
    ) -> Result<(Self, LeaseAttrs)> {
        Ok(match &cfg.backend {
            Backend::Vxlan(v) => {
                let dev = vxlan::ensure_device(nl, v, ext).await?;
                let attrs = LeaseAttrs::vxlan(ext.ip, v.vni, dev.mac);
                (Dataplane::Vxlan(dev), attrs)
            }
            Backend::HostGw => {
                log!("backend host-gw: no device; remote subnets are routed via their node's address on {}", ext.name);
                (
                    Dataplane::HostGw {
                        ext: ext.clone(),
                        network: cfg.network,
                    },
                    LeaseAttrs::host_gw(ext.ip),
                )
            }
        })
    }

    /// After the lease: the vxlan device gets `<subnet>.0/32` and is set up.
    pub async fn configure(&self, nl: &Netlink, own: &Ipv4Net, network: &Ipv4Net) -> Result<()> {
        match self {
            Dataplane::Vxlan(dev) => vxlan::configure(nl, dev, own, network).await,
            Dataplane::HostGw { .. } => Ok(()),
        }
    }

    /// What to program for a remote lease; an error for a lease of another backend.
    pub fn remote(&self, l: &Lease) -> Result<Remote> {
        let kind = match self {
            Dataplane::Vxlan(_) => "vxlan",
            Dataplane::HostGw { .. } => "host-gw",
        };
        if l.attrs.backend_type != kind {
            bail!(
                "its backend type is \"{}\", this node's is \"{kind}\"",
                l.attrs.backend_type
            );
        }
        Ok(match self {
            Dataplane::Vxlan(_) => Remote::Vxlan(vxlan::Remote {
                subnet: l.subnet,
                public_ip: l.attrs.public_ip,
                mac: l.attrs.vtep_mac()?,
            }),
            Dataplane::HostGw { .. } => Remote::HostGw(hostgw::Route {
                subnet: l.subnet,
                public_ip: l.attrs.public_ip,
            }),
        })
    }

    /// Programs the entries of remote `r`.
    pub async fn add(&self, nl: &Netlink, r: &Remote) -> Result<()> {
        self.program(nl, r, true).await
    }

    /// Programs the entries of every remote in `rs` and returns each one's result: for
    /// vxlan sent to the kernel together, for host-gw one route at a time.
    pub async fn add_all(&self, nl: &Netlink, rs: &[Remote]) -> Vec<Result<()>> {
        if let Dataplane::Vxlan(dev) = self {
            let vx: Vec<vxlan::Remote> = rs
                .iter()
                .filter_map(|r| match r {
                    Remote::Vxlan(v) => Some(*v),
                    Remote::HostGw(_) => None,
                })
                .collect();
            if vx.len() == rs.len() {
                return vxlan::add_remotes(nl, dev, &vx).await;
            }
        }
        futures::future::join_all(rs.iter().map(|r| self.add(nl, r))).await
    }

    /// Removes the entries of remote `r` (those already gone are fine).
    pub async fn del(&self, nl: &Netlink, r: &Remote) -> Result<()> {
        self.program(nl, r, false).await
    }

    async fn program(&self, nl: &Netlink, r: &Remote, add: bool) -> Result<()> {
        match (self, r) {
            (Dataplane::Vxlan(dev), Remote::Vxlan(r)) if add => vxlan::add_remote(nl, dev, r).await,
            (Dataplane::Vxlan(dev), Remote::Vxlan(r)) => vxlan::del_remote(nl, dev, r).await,
            (Dataplane::HostGw { ext, .. }, Remote::HostGw(r)) if add => {
                hostgw::add_route(nl, ext, r).await
            }
            (Dataplane::HostGw { ext, .. }, Remote::HostGw(r)) => {
                hostgw::del_route(nl, ext, r).await
            }
            _ => bail!("a remote of another backend"),
        }
    }

    /// Entries for subnets not in `keep`, left by leases that vanished meanwhile.
    pub async fn stale(&self, nl: &Netlink, keep: &[Ipv4Net]) -> Result<Vec<Remote>> {
        Ok(match self {
            Dataplane::Vxlan(dev) => vxlan::stale_remotes(nl, dev, keep)
                .await?
                .into_iter()
                .map(Remote::Vxlan)
                .collect(),
            Dataplane::HostGw { ext, network } => hostgw::stale_routes(nl, ext, network, keep)
                .await?
                .into_iter()
                .map(Remote::HostGw)
                .collect(),
        })
    }
}

/// Deletes `route` (whoever added it) and logs it as `ip route` shows it; one already gone
/// is what was wanted.
pub(super) async fn del_route(nl: &Netlink, route: &GatewayRoute, dev: &str) -> Result<()> {
    let subnet = Ipv4Net::new(route.dst, route.len);
    let removed = nl
        .route_del(route)
        .await
        .map_err(|e| anyhow!("deleting route {subnet}: {e}"))?;
    if removed {
        let onlink = if route.onlink { " onlink" } else { "" };
        log!(
            "deleted route {subnet} via {} dev {dev}{onlink}",
            route.gateway
        );
    }
    Ok(())
}
