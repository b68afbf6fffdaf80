//! The vxlan backend's kernel side, through rtnetlink in the agent's own namespace:
//! the external interface, the `flannel.<VNI>` device, and for every remote lease a
//! neighbour (ARP) entry, a bridge FDB entry and an onlink route.
//!
//! Equivalent commands, for a remote lease 11.13.0.0/20 of host 10.0.0.4:
//! ```text
//! ip neigh replace 11.13.0.0 lladdr <VtepMAC> dev flannel.100 nud permanent
//! bridge fdb replace <VtepMAC> dev flannel.100 dst 10.0.0.4 self permanent
//! ip route replace 11.13.0.0/20 via 11.13.0.0 dev flannel.100 onlink
//! ```

use super::config::VxlanConfig;
use super::log;
use super::subnet::{format_mac, Ipv4Net};
use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

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
}

fn link_name(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn link_mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

fn link_mac(l: &LinkMessage) -> Option<[u8; 6]> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) if m.len() == 6 => {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(m);
            Some(mac)
        }
        _ => None,
    })
}

async fn links(h: &Handle) -> Result<Vec<LinkMessage>> {
    h.link()
        .get()
        .execute()
        .try_collect()
        .await
        .context("listing links")
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    Ok(links(h)
        .await?
        .into_iter()
        .find(|l| link_name(l).as_deref() == Some(name)))
}

async fn ipv4_addrs(h: &Handle, index: Option<u32>) -> Result<Vec<(u32, Ipv4Addr, u8)>> {
    let mut req = h.address().get();
    if let Some(i) = index {
        req = req.set_link_index_filter(i);
    }
    let msgs: Vec<_> = req
        .execute()
        .try_collect()
        .await
        .context("listing addresses")?;
    let mut out = Vec::new();
    for m in msgs {
        for a in &m.attributes {
            if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                if index.is_none_or(|i| i == m.header.index) {
                    out.push((m.header.index, *ip, m.header.prefix_len));
                }
            }
        }
    }
    Ok(out)
}

/// Every IPv4 route of the main table (the backends look for their own among them).
pub(super) async fn ipv4_routes(h: &Handle) -> Result<Vec<RouteMessage>> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
    h.route()
        .get(msg)
        .execute()
        .try_collect()
        .await
        .context("listing routes")
}

/// Finds the external interface: `spec` is an IPv4 address on some link or a link name;
/// without it, the link of the default route (as flanneld does).
pub async fn find_iface(h: &Handle, spec: Option<&str>) -> Result<ExtIface> {
    let all = links(h).await?;
    let names: Vec<String> = all.iter().filter_map(link_name).collect();
    let by_index = |i: u32| all.iter().find(|l| l.header.index == i);
    let (link, ip) = match spec {
        Some(s) => {
            if let Ok(ip) = s.parse::<Ipv4Addr>() {
                let addrs = ipv4_addrs(h, None).await?;
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
                    .find(|l| link_name(l).as_deref() == Some(s))
                    .ok_or_else(|| {
                        anyhow!("--iface {s}: no such interface in this network namespace (links here: {}); give an interface name or one of its IPv4 addresses", names.join(", "))
                    })?;
                let ip = ipv4_addrs(h, Some(l.header.index))
                    .await?
                    .first()
                    .map(|a| a.1)
                    .ok_or_else(|| anyhow!("--iface {s}: the interface has no IPv4 address; add one (ip addr add ... dev {s})"))?;
                (l, ip)
            }
        }
        None => {
            let routes = ipv4_routes(h).await?;
            use netlink_packet_route::route::RouteAttribute;
            let oif = routes
                .iter()
                .filter(|r| r.header.destination_prefix_length == 0)
                .find_map(|r| {
                    r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    })
                })
                .ok_or_else(|| anyhow!("no --iface given and there is no default route to pick an interface from: pass --iface <address or name>"))?;
            let l = by_index(oif).ok_or_else(|| anyhow!("link {oif} vanished"))?;
            let ip = ipv4_addrs(h, Some(oif))
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
        name: link_name(link).unwrap_or_default(),
        index: link.header.index,
        ip,
        mtu: link_mtu(link).unwrap_or(1500),
    })
}

/// The VXLAN settings of an existing link, or None when it is not a VXLAN link.
fn vxlan_info(l: &LinkMessage) -> Option<Vec<InfoVxlan>> {
    let infos = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(i) => Some(i),
        _ => None,
    })?;
    if !infos
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)))
    {
        return None;
    }
    Some(
        infos
            .iter()
            .find_map(|i| match i {
                LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.clone()),
                _ => None,
            })
            .unwrap_or_default(),
    )
}

/// Why an existing device cannot be reused (flannel's vxlanLinksIncompat), or None.
fn incompatibility(l: &LinkMessage, cfg: &VxlanConfig, ext: &ExtIface) -> Option<String> {
    let Some(info) = vxlan_info(l) else {
        return Some("it is not a vxlan device".into());
    };
    for i in &info {
        match i {
            InfoVxlan::Id(v) if *v != cfg.vni => return Some(format!("vni {v} vs {}", cfg.vni)),
            InfoVxlan::Link(v) if *v > 0 && *v != ext.index => {
                return Some(format!("vtep interface index {v} vs {}", ext.index))
            }
            InfoVxlan::Local(v) if !v.is_unspecified() && *v != ext.ip => {
                return Some(format!("vtep IP {v} vs {}", ext.ip))
            }
            InfoVxlan::Port(v) if *v > 0 && *v != cfg.port => {
                return Some(format!("port {v} vs {}", cfg.port))
            }
            InfoVxlan::L2Miss(true) => return Some("l2miss is on".into()),
            _ => {}
        }
    }
    None
}

/// Creates `flannel.<VNI>` (nolearning, dstport, local = iface IP, dev = iface, MTU =
/// iface MTU - 50, a random locally administered MAC), or reuses it when it already exists
/// with compatible settings, so the VtepMAC stays the same across restarts.
pub async fn ensure_device(h: &Handle, cfg: &VxlanConfig, ext: &ExtIface) -> Result<Device> {
    let name = cfg.device_name();
    if let Some(existing) = link_by_name(h, &name).await? {
        match incompatibility(&existing, cfg, ext) {
            None => {
                let dev = Device {
                    name: name.clone(),
                    index: existing.header.index,
                    mac: link_mac(&existing).ok_or_else(|| anyhow!("{name} has no MAC address"))?,
                    mtu: link_mtu(&existing).unwrap_or(ext.mtu - 50),
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
                h.link()
                    .del(existing.header.index)
                    .execute()
                    .await
                    .with_context(|| format!("deleting the old {name}"))?;
            }
        }
    }
    let mac = super::subnet::random_mac();
    let mtu = ext.mtu.saturating_sub(50);
    let mut b = LinkVxlan::new(&name, cfg.vni)
        .dev(ext.index)
        .local(ext.ip)
        .port(cfg.port)
        .learning(cfg.learning)
        .mtu(mtu)
        .address(mac.to_vec());
    if cfg.gbp {
        b = b.gbp();
    }
    match h.link().add(b.build()).execute().await {
        Ok(()) => {}
        Err(e) if errno(&e) == Some(EEXIST) => {
            bail!("{name} appeared while it was being created; restart flanneld")
        }
        Err(e) => return Err(anyhow!("creating VXLAN device {name}: {e}")),
    }
    let created = link_by_name(h, &name)
        .await?
        .ok_or_else(|| anyhow!("{name} was created but cannot be found"))?;
    let dev = Device {
        name: name.clone(),
        index: created.header.index,
        mac: link_mac(&created).unwrap_or(mac),
        mtu: link_mtu(&created).unwrap_or(mtu),
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
    h: &Handle,
    dev: &Device,
    subnet: &Ipv4Net,
    network: &Ipv4Net,
) -> Result<()> {
    let want = subnet.ip;
    let mut have = false;
    for (_, ip, len) in ipv4_addrs(h, Some(dev.index)).await? {
        if ip == want && len == 32 {
            have = true;
        } else if network.contains(ip) {
            let msgs: Vec<_> = h
                .address()
                .get()
                .set_link_index_filter(dev.index)
                .set_address_filter(IpAddr::V4(ip))
                .execute()
                .try_collect()
                .await?;
            for m in msgs {
                h.address().del(m).execute().await.ok();
            }
            log!("removed stale address {ip}/{len} from {}", dev.name);
        }
    }
    if !have {
        h.address()
            .add(dev.index, IpAddr::V4(want), 32)
            .execute()
            .await
            .with_context(|| format!("adding {want}/32 to {}", dev.name))?;
        log!("added address {want}/32 to {}", dev.name);
    }
    h.link()
        .set(LinkUnspec::new_with_index(dev.index).up().build())
        .execute()
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
pub async fn add_remote(h: &Handle, dev: &Device, r: &Remote) -> Result<()> {
    let gw = r.subnet.ip;
    let mac = format_mac(&r.mac);
    h.neighbours()
        .add(dev.index, IpAddr::V4(gw))
        .link_layer_address(&r.mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(|e| anyhow!("adding neighbour {gw} lladdr {mac} dev {}: {e}", dev.name))?;
    log!(
        "added neighbour {gw} lladdr {mac} dev {} nud permanent",
        dev.name
    );

    let fdb = h
        .neighbours()
        .add_bridge(dev.index, &r.mac)
        .destination(IpAddr::V4(r.public_ip))
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await;
    if let Err(e) = fdb {
        let _ = del_neigh(h, dev, r).await;
        bail!(
            "adding fdb entry {mac} dev {} dst {}: {e}",
            dev.name,
            r.public_ip
        );
    }
    log!(
        "added fdb entry {mac} dev {} dst {} self permanent",
        dev.name,
        r.public_ip
    );

    let route = h.route().add(route_msg(dev, r)).replace().execute().await;
    if let Err(e) = route {
        let _ = del_neigh(h, dev, r).await;
        let _ = del_fdb(h, dev, r).await;
        bail!(
            "adding route {} via {gw} dev {} onlink: {e}",
            r.subnet,
            dev.name
        );
    }
    log!("added route {} via {gw} dev {} onlink", r.subnet, dev.name);
    Ok(())
}

fn route_msg(dev: &Device, r: &Remote) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.subnet.ip, r.subnet.prefix_len)
        .gateway(r.subnet.ip)
        .output_interface(dev.index)
        .onlink()
        .build()
}

fn ignore_missing(res: Result<(), rtnetlink::Error>) -> Result<bool, rtnetlink::Error> {
    match res {
        Ok(()) => Ok(true),
        Err(e) if matches!(errno(&e), Some(ENOENT) | Some(ESRCH) | Some(EADDRNOTAVAIL)) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

async fn del_route(h: &Handle, dev: &Device, r: &Remote) -> Result<()> {
    if ignore_missing(h.route().del(route_msg(dev, r)).execute().await)
        .map_err(|e| anyhow!("deleting route {}: {e}", r.subnet))?
    {
        log!(
            "deleted route {} via {} dev {} onlink",
            r.subnet,
            r.subnet.ip,
            dev.name
        );
    }
    Ok(())
}

async fn del_fdb(h: &Handle, dev: &Device, r: &Remote) -> Result<()> {
    let mac = format_mac(&r.mac);
    let mut fdb = NeighbourMessage::default();
    fdb.header.family = AddressFamily::Bridge;
    fdb.header.ifindex = dev.index;
    fdb.header.flags = NeighbourFlags::Own;
    fdb.header.state = NeighbourState::Permanent;
    fdb.attributes
        .push(NeighbourAttribute::LinkLayerAddress(r.mac.to_vec()));
    fdb.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            r.public_ip,
        )));
    if ignore_missing(h.neighbours().del(fdb).execute().await)
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

async fn del_neigh(h: &Handle, dev: &Device, r: &Remote) -> Result<()> {
    let gw = r.subnet.ip;
    let mut arp = NeighbourMessage::default();
    arp.header.family = AddressFamily::Inet;
    arp.header.ifindex = dev.index;
    arp.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(gw)));
    if ignore_missing(h.neighbours().del(arp).execute().await)
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
pub async fn del_remote(h: &Handle, dev: &Device, r: &Remote) -> Result<()> {
    let a = del_route(h, dev, r).await;
    let b = del_fdb(h, dev, r).await;
    let c = del_neigh(h, dev, r).await;
    a.and(b).and(c)
}

/// Entries on the device for subnets not in `keep`: left over from leases that vanished
/// while the agent was not running (a restart would otherwise keep routing into a dead
/// VTEP). Each is returned with the MAC and public IP its neighbour and FDB entries carry.
pub async fn stale_remotes(h: &Handle, dev: &Device, keep: &[Ipv4Net]) -> Result<Vec<Remote>> {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute};
    let routes = ipv4_routes(h).await?;
    let neighs: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .context("listing neighbours")?;
    let fdb: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .context("listing fdb entries")?;
    let lladdr = |m: &NeighbourMessage| {
        m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(l);
                Some(mac)
            }
            _ => None,
        })
    };
    let dst = |m: &NeighbourMessage| {
        m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            // bridge (FDB) entries carry the address undecoded
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            _ => None,
        })
    };
    let mut out = Vec::new();
    for r in &routes {
        let oif = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        let gw = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        let dst_ip = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        let (Some(oif), Some(gw), Some(dst_ip)) = (oif, gw, dst_ip) else {
            continue;
        };
        let sn = Ipv4Net::new(dst_ip, r.header.destination_prefix_length);
        if oif != dev.index || gw != dst_ip || keep.contains(&sn) {
            continue;
        }
        let mac = neighs
            .iter()
            .filter(|n| n.header.ifindex == dev.index && dst(n) == Some(gw))
            .find_map(lladdr);
        let Some(mac) = mac else { continue };
        let public_ip = fdb
            .iter()
            .filter(|n| n.header.ifindex == dev.index && lladdr(n) == Some(mac))
            .find_map(dst)
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        out.push(Remote {
            subnet: sn,
            public_ip,
            mac,
        });
    }
    Ok(out)
}
