//! The vxlan backend, on the netns netlink layer ([`crate::netns::netlink::overlay`]) in the
//! agent's own namespace: the external interface, the `flannel.<VNI>` device, and for every
//! remote lease a neighbour (ARP) entry, a bridge FDB entry and an onlink route.
//!
//! Equivalent commands, for a remote lease 11.13.0.0/20 of host 10.0.0.4:
//! ```text
//! ip neigh replace 11.13.0.0 lladdr <VtepMAC> dev flannel.100 nud permanent
//! bridge fdb replace <VtepMAC> dev flannel.100 dst 10.0.0.4 self permanent
//! ip route replace 11.13.0.0/20 via 11.13.0.0 dev flannel.100 onlink
//! ```

use super::config::VxlanConfig;
use super::log;
use super::subnet::{format_mac, Ip, Ipv4Net, Mac};
use crate::netns::netlink::overlay::{Entry, GatewayRoute, Link, NewVxlan, Route4};
use crate::netns::netlink::Netlink;
use anyhow::{anyhow, bail, Context, Result};
use std::net::Ipv4Addr;

/// The interface used for inter-host traffic (`--iface`).
#[derive(Debug, Clone)]
pub struct ExtIface {
    pub name: String,
    pub index: u32,
    pub ip: Ipv4Addr,
    pub mtu: u32,
}

/// The flannel VXLAN device as it is in the kernel.
#[derive(Debug, Clone)]
pub struct Device {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// This agent created it just now: it holds no entries left from an earlier run.
    pub created: bool,
}

/// Finds the external interface: `spec` is an IPv4 address on some link or a link name;
/// without it, the link of the default route (as flanneld does).
pub async fn find_iface(nl: &Netlink, spec: Option<&str>) -> Result<ExtIface> {
    let all = nl.links().await?;
    let names: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
    let by_index = |i: u32| all.iter().find(|l| l.index == i);
    let (link, ip) = match spec {
        Some(s) => {
            if let Ok(ip) = s.parse::<Ipv4Addr>() {
                let addrs = nl.ipv4_addrs(None).await?;
                let (idx, _, _) = addrs.iter().find(|(_, a, _)| *a == ip).ok_or_else(|| {
                    anyhow!("--iface {s}: no interface in this network namespace has address {ip} (links here: {})", names.join(", "))
                })?;
                (
                    by_index(*idx).ok_or_else(|| anyhow!("link {idx} vanished"))?,
                    ip,
                )
            } else {
                let l = all
                    .iter()
                    .find(|l| l.name == s)
                    .ok_or_else(|| {
                        anyhow!("--iface {s}: no such interface in this network namespace (links here: {}); give an interface name or one of its IPv4 addresses", names.join(", "))
                    })?;
                let ip = nl
                    .ipv4_addrs(Some(l.index))
                    .await?
                    .first()
                    .map(|a| a.1)
                    .ok_or_else(|| anyhow!("--iface {s}: the interface has no IPv4 address; add one (ip addr add ... dev {s})"))?;
                (l, ip)
            }
        }
        None => {
            let routes = nl.ipv4_routes().await?;
            let oif = routes
                .iter()
                .filter(|r| r.len == 0)
                .find_map(|r| r.oif)
                .ok_or_else(|| anyhow!("no --iface given and there is no default route to pick an interface from: pass --iface <address or name>"))?;
            let l = by_index(oif).ok_or_else(|| anyhow!("link {oif} vanished"))?;
            let ip = nl
                .ipv4_addrs(Some(oif))
                .await?
                .first()
                .map(|a| a.1)
                .ok_or_else(|| {
                    anyhow!("the default-route interface has no IPv4 address: pass --iface")
                })?;
            (l, ip)
        }
    };
    Ok(ExtIface {
        name: link.name.clone(),
        index: link.index,
        ip,
        mtu: link.mtu.unwrap_or(1500),
    })
}

/// Why an existing device cannot be reused (flannel's vxlanLinksIncompat), or None. The
/// checks go in the order the kernel reports the settings.
fn incompatibility(l: &Link, cfg: &VxlanConfig, ext: &ExtIface) -> Option<String> {
    let Some(v) = &l.vxlan else {
        return Some("it is not a vxlan device".into());
    };
    if let Some(vni) = v.vni.filter(|n| *n != cfg.vni) {
        return Some(format!("vni {vni} vs {}", cfg.vni));
    }
    if let Some(i) = v.link.filter(|i| *i > 0 && *i != ext.index) {
        return Some(format!("vtep interface index {i} vs {}", ext.index));
    }
    if let Some(ip) = v.local.filter(|ip| !ip.is_unspecified() && *ip != ext.ip) {
        return Some(format!("vtep IP {ip} vs {}", ext.ip));
    }
    if v.l2miss {
        return Some("l2miss is on".into());
    }
    if let Some(port) = v.port.filter(|p| *p > 0 && *p != cfg.port) {
        return Some(format!("port {port} vs {}", cfg.port));
    }
    None
}

/// Creates `flannel.<VNI>` (nolearning, dstport, local = iface IP, dev = iface, MTU =
/// iface MTU - 50, a random locally administered MAC), or reuses it when it already exists
/// with compatible settings, so the VtepMAC stays the same across restarts.
pub async fn ensure_device(nl: &Netlink, cfg: &VxlanConfig, ext: &ExtIface) -> Result<Device> {
    let name = cfg.device_name();
    if let Some(existing) = nl.link(&name).await? {
        match incompatibility(&existing, cfg, ext) {
            None => {
                let dev = Device {
                    name: name.clone(),
                    index: existing.index,
                    mac: existing
                        .mac
                        .ok_or_else(|| anyhow!("{name} has no MAC address"))?,
                    mtu: existing.mtu.unwrap_or(ext.mtu - 50),
                    created: false,
                };
                log!(
                    "reusing existing VXLAN device {name} (VtepMAC {}, MTU {})",
                    format_mac(&dev.mac),
                    dev.mtu
                );
                return Ok(dev);
            }
            Some(why) => {
                log!(
                    "{name} already exists with incompatible configuration ({why}); recreating it"
                );
                nl.link_del(existing.index)
                    .await
                    .with_context(|| format!("deleting the old {name}"))?;
            }
        }
    }
    let mac = super::subnet::random_mac();
    let mtu = ext.mtu.saturating_sub(50);
    let spec = NewVxlan {
        name: &name,
        vni: cfg.vni,
        dev: ext.index,
        local: ext.ip,
        port: cfg.port,
        learning: cfg.learning,
        gbp: cfg.gbp,
        mtu,
        mac,
    };
    match nl.add_vxlan(&spec).await {
        Ok(true) => {}
        Ok(false) => bail!("{name} appeared while it was being created; restart flanneld"),
        Err(e) => return Err(anyhow!("creating VXLAN device {name}: {e}")),
    }
    let created = nl
        .link(&name)
        .await?
        .ok_or_else(|| anyhow!("{name} was created but cannot be found"))?;
    let dev = Device {
        name: name.clone(),
        index: created.index,
        mac: created.mac.unwrap_or(mac),
        mtu: created.mtu.unwrap_or(mtu),
        created: true,
    };
    log!(
        "created VXLAN device {name}: vni {} dstport {} local {} dev {} nolearning={} mtu {} (VtepMAC {})",
        cfg.vni,
        cfg.port,
        ext.ip,
        ext.name,
        !cfg.learning,
        dev.mtu,
        format_mac(&dev.mac)
    );
    Ok(dev)
}

/// Gives the device `<subnet>.0/32` (removing other addresses of the flannel network it
/// still carries from an older lease) and sets it up.
pub async fn configure(
    nl: &Netlink,
    dev: &Device,
    subnet: &Ipv4Net,
    network: &Ipv4Net,
) -> Result<()> {
    let want = subnet.ip;
    let mut have = false;
    for (_, ip, len) in nl.ipv4_addrs(Some(dev.index)).await? {
        if ip == want && len == 32 {
            have = true;
        } else if network.contains(ip) {
            nl.addr_del(dev.index, ip).await.ok();
            log!("removed stale address {ip}/{len} from {}", dev.name);
        }
    }
    if !have {
        nl.addr_add(dev.index, want, 32)
            .await
            .with_context(|| format!("adding {want}/32 to {}", dev.name))?;
        log!("added address {want}/32 to {}", dev.name);
    }
    nl.link_up(dev.index)
        .await
        .with_context(|| format!("setting {} up", dev.name))?;
    log!("{} is up", dev.name);
    Ok(())
}

/// What is programmed for one remote lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub mac: [u8; 6],
}

/// neighbour, then FDB, then route (all "replace"). When a later step fails the earlier
/// entries are removed again, as flannel does.
pub async fn add_remote(nl: &Netlink, dev: &Device, r: &Remote) -> Result<()> {
    add_remotes(nl, dev, std::slice::from_ref(r))
        .await
        .pop()
        .unwrap_or(Ok(()))
}

/// [`add_remote`] for many remotes, their entries sent to the kernel together (in order:
/// each remote's neighbour, FDB entry and route). A remote with a failed step has every
/// entry of its own that was made removed again, and its result names the first step that
/// failed.
pub async fn add_remotes(nl: &Netlink, dev: &Device, remotes: &[Remote]) -> Vec<Result<()>> {
    let entries: Vec<Entry> = remotes
        .iter()
        .flat_map(|r| {
            [
                Entry::Neigh {
                    ifindex: dev.index,
                    ip: r.subnet.ip,
                    mac: r.mac,
                },
                Entry::Fdb {
                    ifindex: dev.index,
                    mac: r.mac,
                    dst: r.public_ip,
                },
                Entry::Route(route(dev, r)),
            ]
        })
        .collect();
    let mut results = nl.replace_all(&entries).await.into_iter();
    let mut out = Vec::with_capacity(remotes.len());
    for r in remotes {
        let mut step = || {
            results
                .next()
                .unwrap_or_else(|| Err(anyhow!("no answer from the kernel")))
        };
        let (neigh, fdb, route) = (step(), step(), step());
        out.push(settle(nl, dev, r, neigh, fdb, route).await);
    }
    out
}

/// Logs what was added for `r` up to its first failed step; on a failure removes what was
/// made and returns the error of that step.
async fn settle(
    nl: &Netlink,
    dev: &Device,
    r: &Remote,
    neigh: Result<()>,
    fdb: Result<()>,
    route: Result<()>,
) -> Result<()> {
    let (gw, mac, public_ip) = (Ip(r.subnet.ip), Mac(r.mac), Ip(r.public_ip));
    let failed = match (&neigh, &fdb, &route) {
        (Err(e), _, _) => anyhow!("adding neighbour {gw} lladdr {mac} dev {}: {e}", dev.name),
        (Ok(()), Err(e), _) => {
            log!(
                "added neighbour {gw} lladdr {mac} dev {} nud permanent",
                dev.name
            );
            anyhow!(
                "adding fdb entry {mac} dev {} dst {public_ip}: {e}",
                dev.name
            )
        }
        (Ok(()), Ok(()), route) => {
            log!(
                "added neighbour {gw} lladdr {mac} dev {} nud permanent",
                dev.name
            );
            log!(
                "added fdb entry {mac} dev {} dst {public_ip} self permanent",
                dev.name
            );
            match route {
                Ok(()) => {
                    log!("added route {} via {gw} dev {} onlink", r.subnet, dev.name);
                    return Ok(());
                }
                Err(e) => anyhow!(
                    "adding route {} via {gw} dev {} onlink: {e}",
                    r.subnet,
                    dev.name
                ),
            }
        }
    };
    if route.is_ok() {
        let _ = del_route(nl, dev, r).await;
    }
    if neigh.is_ok() {
        let _ = del_neigh(nl, dev, r).await;
    }
    if fdb.is_ok() {
        let _ = del_fdb(nl, dev, r).await;
    }
    Err(failed)
}

fn route(dev: &Device, r: &Remote) -> GatewayRoute {
    GatewayRoute {
        dst: r.subnet.ip,
        len: r.subnet.prefix_len,
        gateway: r.subnet.ip,
        oif: dev.index,
        onlink: true,
    }
}

async fn del_route(nl: &Netlink, dev: &Device, r: &Remote) -> Result<()> {
    super::backend::del_route(nl, &route(dev, r), &dev.name).await
}

async fn del_fdb(nl: &Netlink, dev: &Device, r: &Remote) -> Result<()> {
    let mac = format_mac(&r.mac);
    if nl
        .fdb_del(dev.index, &r.mac, r.public_ip)
        .await
        .map_err(|e| anyhow!("deleting fdb entry {mac}: {e}"))?
    {
        log!(
            "deleted fdb entry {mac} dev {} dst {}",
            dev.name,
            r.public_ip
        );
    }
    Ok(())
}

async fn del_neigh(nl: &Netlink, dev: &Device, r: &Remote) -> Result<()> {
    let gw = r.subnet.ip;
    if nl
        .neigh_del(dev.index, gw)
        .await
        .map_err(|e| anyhow!("deleting neighbour {gw}: {e}"))?
    {
        log!(
            "deleted neighbour {gw} lladdr {} dev {}",
            format_mac(&r.mac),
            dev.name
        );
    }
    Ok(())
}

/// route, then FDB, then neighbour (the reverse of [`add_remote`]); entries already gone
/// are fine, and a failing step does not stop the others.
pub async fn del_remote(nl: &Netlink, dev: &Device, r: &Remote) -> Result<()> {
    let a = del_route(nl, dev, r).await;
    let b = del_fdb(nl, dev, r).await;
    let c = del_neigh(nl, dev, r).await;
    a.and(b).and(c)
}

/// Routes on the device for subnets not in `keep`.
fn stale_routes(routes: &[Route4], dev: &Device, keep: &[Ipv4Net]) -> Vec<Ipv4Net> {
    routes
        .iter()
        .filter(|r| r.oif == Some(dev.index) && r.gateway == Some(r.dst))
        .map(|r| Ipv4Net::new(r.dst, r.len))
        .filter(|sn| !keep.contains(sn))
        .collect()
}

/// Entries on the device for subnets not in `keep`: left over from leases that vanished
/// while the agent was not running (a restart would otherwise keep routing into a dead
/// VTEP). Each is returned with the MAC and public IP its neighbour and FDB entries carry.
/// A device this agent just created holds none, and the neighbour table is read only when
/// some route is stale (the kernel walks every namespace's neighbours to list one device's).
pub async fn stale_remotes(nl: &Netlink, dev: &Device, keep: &[Ipv4Net]) -> Result<Vec<Remote>> {
    if dev.created {
        return Ok(Vec::new());
    }
    let stale = stale_routes(&nl.ipv4_routes().await?, dev, keep);
    if stale.is_empty() {
        return Ok(Vec::new());
    }
    let neighs = nl.neighbours_of(dev.index).await?;
    let fdb = nl.fdb_of(dev.index).await?;
    let mut out = Vec::new();
    for sn in stale {
        let Some(mac) = neighs
            .iter()
            .filter(|n| n.ip == Some(sn.ip))
            .find_map(|n| n.mac)
        else {
            continue;
        };
        let public_ip = fdb
            .iter()
            .filter(|n| n.mac == Some(mac))
            .find_map(|n| n.ip)
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        out.push(Remote {
            subnet: sn,
            public_ip,
            mac,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Device {
        Device {
            name: "flannel.100".into(),
            index: 7,
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1450,
            created: false,
        }
    }

    #[test]
    fn stale_routes_are_this_devices_onlink_routes_outside_keep() {
        let sn = |a: u8| Ipv4Net::new(Ipv4Addr::new(11, a, 0, 0), 20);
        let onlink = |a: u8, oif: u32| Route4 {
            dst: sn(a).ip,
            len: 20,
            gateway: Some(sn(a).ip),
            oif: Some(oif),
        };
        let routes = [
            onlink(12, 7),
            onlink(13, 7),
            onlink(14, 9), // another device
            Route4 {
                dst: Ipv4Addr::UNSPECIFIED,
                len: 0,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                oif: Some(7),
            },
        ];
        assert_eq!(stale_routes(&routes, &dev(), &[sn(13)]), vec![sn(12)]);
        assert!(stale_routes(&routes, &dev(), &[sn(12), sn(13)]).is_empty());
    }
}
