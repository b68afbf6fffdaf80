//! The kernel side of an overlay agent (the flannel agent's vxlan and host-gw backends):
//! links, addresses and routes read back as plain values, the VXLAN device, and per remote
//! node its neighbour (ARP), bridge FDB and route entries. The agent keeps the policy (what
//! to program, when, what to log); this keeps the how. Every call is one request on the
//! session's socket, so an agent awaiting many of them at once pipelines them.
//!
//! Equivalent commands, for a remote lease 11.13.0.0/20 of host 10.0.0.4:
//! ```text
//! ip neigh replace 11.13.0.0 lladdr <VtepMAC> dev flannel.100 nud permanent
//! bridge fdb replace <VtepMAC> dev flannel.100 dst 10.0.0.4 self permanent
//! ip route replace 11.13.0.0/20 via 11.13.0.0 dev flannel.100 onlink
//! ```

use super::Netlink;
use anyhow::{Context, Result};
use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::{LinkUnspec, LinkVxlan, RouteMessageBuilder};
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

/// Ok(true) when the entry was removed, Ok(false) when it was already gone.
fn removed(res: Result<(), rtnetlink::Error>) -> Result<bool> {
    match res {
        Ok(()) => Ok(true),
        Err(e) if matches!(errno(&e), Some(ENOENT | ESRCH | EADDRNOTAVAIL)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A link as the agent needs to see it.
#[derive(Debug, Clone)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    /// Its VXLAN settings; None when it is not a VXLAN link.
    pub vxlan: Option<VxlanSettings>,
}

/// The settings of an existing VXLAN link that decide whether it can be reused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanSettings {
    pub vni: Option<u32>,
    /// Index of the underlay link (0 or None: any).
    pub link: Option<u32>,
    pub local: Option<Ipv4Addr>,
    pub port: Option<u16>,
    pub l2miss: bool,
}

/// A VXLAN device to create (`ip link add NAME type vxlan id VNI dev DEV local LOCAL
/// dstport PORT [nolearning] [gbp] mtu MTU address MAC`).
#[derive(Debug, Clone)]
pub struct NewVxlan<'a> {
    pub name: &'a str,
    pub vni: u32,
    pub dev: u32,
    pub local: Ipv4Addr,
    pub port: u16,
    pub learning: bool,
    pub gbp: bool,
    pub mtu: u32,
    pub mac: [u8; 6],
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Addr,
    pub len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// `DST/LEN via GATEWAY dev OIF [onlink]`, as it is added or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayRoute {
    pub dst: Ipv4Addr,
    pub len: u8,
    pub gateway: Ipv4Addr,
    pub oif: u32,
    pub onlink: bool,
}

/// A neighbour (ARP) or FDB entry on one device: its IPv4 address (FDB: the remote VTEP)
/// and link-layer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neigh {
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
}

fn link_of(l: LinkMessage) -> Link {
    let mut link = Link {
        name: String::new(),
        index: l.header.index,
        mtu: None,
        mac: None,
        vxlan: None,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(m) => link.mtu = Some(m),
            LinkAttribute::Address(m) if m.len() == 6 => {
                link.mac = Some(<[u8; 6]>::try_from(&m[..]).expect("six bytes"))
            }
            LinkAttribute::LinkInfo(infos) => link.vxlan = vxlan_settings(&infos),
            _ => {}
        }
    }
    link
}

fn vxlan_settings(infos: &[LinkInfo]) -> Option<VxlanSettings> {
    if !infos
        .iter()
        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)))
    {
        return None;
    }
    let mut s = VxlanSettings::default();
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Vxlan(v)) => Some(v),
        _ => None,
    });
    for i in data.into_iter().flatten() {
        match i {
            InfoVxlan::Id(v) => s.vni = Some(*v),
            InfoVxlan::Link(v) => s.link = Some(*v),
            InfoVxlan::Local(v) => s.local = Some(*v),
            InfoVxlan::Port(v) => s.port = Some(*v),
            InfoVxlan::L2Miss(v) => s.l2miss = *v,
            _ => {}
        }
    }
    Some(s)
}

fn route_of(r: &RouteMessage) -> Route4 {
    let mut out = Route4 {
        dst: Ipv4Addr::UNSPECIFIED,
        len: r.header.destination_prefix_length,
        gateway: None,
        oif: None,
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => out.dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => out.gateway = Some(*ip),
            RouteAttribute::Oif(i) => out.oif = Some(*i),
            _ => {}
        }
    }
    out
}

fn neigh_of(m: &NeighbourMessage) -> Neigh {
    let mut n = Neigh {
        ip: None,
        mac: None,
    };
    for a in &m.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                n.mac = Some(<[u8; 6]>::try_from(&l[..]).expect("six bytes"))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => n.ip = Some(*ip),
            // bridge (FDB) entries carry the address undecoded
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) if b.len() == 4 => {
                n.ip = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            _ => {}
        }
    }
    n
}

fn gateway_route_msg(r: &GatewayRoute) -> RouteMessage {
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst, r.len)
        .gateway(r.gateway)
        .output_interface(r.oif);
    if r.onlink {
        b.onlink().build()
    } else {
        b.build()
    }
}

fn fdb_msg(ifindex: u32, mac: &[u8; 6], dst: Ipv4Addr) -> NeighbourMessage {
    let mut fdb = NeighbourMessage::default();
    fdb.header.family = AddressFamily::Bridge;
    fdb.header.ifindex = ifindex;
    fdb.header.flags = NeighbourFlags::Own;
    fdb.header.state = NeighbourState::Permanent;
    fdb.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    fdb.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    fdb
}

impl Netlink {
    /// A session in this process's own namespace, served by a task of the caller's tokio
    /// runtime (an agent already runs inside its node's namespace: no thread of its own).
    pub async fn connect() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
        tokio::spawn(conn);
        Ok(Netlink {
            handle,
            batch: Some(Batch::open()?),
        })
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing links")?;
        Ok(msgs.into_iter().map(link_of).collect())
    }

    /// The link named `name`, or None.
    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        Ok(self.links().await?.into_iter().find(|l| l.name == name))
    }

    /// IPv4 addresses as (link index, address, prefix length), of one link or of all.
    pub async fn ipv4_addrs(&self, index: Option<u32>) -> Result<Vec<(u32, Ipv4Addr, u8)>> {
        let mut req = self.handle.address().get();
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

    /// `ip addr add IP/LEN dev #INDEX`.
    pub async fn addr_add(&self, index: u32, ip: Ipv4Addr, len: u8) -> Result<()> {
        Ok(self
            .handle
            .address()
            .add(index, IpAddr::V4(ip), len)
            .execute()
            .await?)
    }

    /// `ip addr del IP dev #INDEX` (every prefix length it carries).
    pub async fn addr_del(&self, index: u32, ip: Ipv4Addr) -> Result<()> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(ip))
            .execute()
            .try_collect()
            .await?;
        for m in msgs {
            self.handle.address().del(m).execute().await?;
        }
        Ok(())
    }

    /// `ip link set #INDEX up`.
    pub async fn link_up(&self, index: u32) -> Result<()> {
        Ok(self
            .handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await?)
    }

    /// `ip link del #INDEX`.
    pub async fn link_del(&self, index: u32) -> Result<()> {
        Ok(self.handle.link().del(index).execute().await?)
    }

    /// Creates a VXLAN device; Ok(false) when a link of that name already exists.
    pub async fn add_vxlan(&self, v: &NewVxlan<'_>) -> Result<bool> {
        let mut b = LinkVxlan::new(v.name, v.vni)
            .dev(v.dev)
            .local(v.local)
            .port(v.port)
            .learning(v.learning)
            .mtu(v.mtu)
            .address(v.mac.to_vec());
        if v.gbp {
            b = b.gbp();
        }
        match self.handle.link().add(b.build()).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(EEXIST) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every IPv4 route of the main table.
    pub async fn ipv4_routes(&self) -> Result<Vec<Route4>> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(msg)
            .execute()
            .try_collect()
            .await
            .context("listing routes")?;
        Ok(msgs.iter().map(route_of).collect())
    }

    /// `ip route replace DST/LEN via GW dev OIF [onlink]`.
    pub async fn route_replace(&self, r: &GatewayRoute) -> Result<()> {
        Ok(self
            .handle
            .route()
            .add(gateway_route_msg(r))
            .replace()
            .execute()
            .await?)
    }

    /// `ip route del DST/LEN via GW dev OIF`, whoever added it (any protocol); Ok(false)
    /// when it was already gone.
    pub async fn route_del(&self, r: &GatewayRoute) -> Result<bool> {
        let mut msg = gateway_route_msg(r);
        msg.header.protocol = RouteProtocol::Unspec;
        removed(self.handle.route().del(msg).execute().await)
    }

    /// `ip neigh replace IP lladdr MAC dev #IFINDEX nud permanent`.
    pub async fn neigh_replace(&self, ifindex: u32, ip: Ipv4Addr, mac: &[u8; 6]) -> Result<()> {
        Ok(self
            .handle
            .neighbours()
            .add(ifindex, IpAddr::V4(ip))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await?)
    }

    /// `ip neigh del IP dev #IFINDEX`; Ok(false) when it was already gone.
    pub async fn neigh_del(&self, ifindex: u32, ip: Ipv4Addr) -> Result<bool> {
        let mut arp = NeighbourMessage::default();
        arp.header.family = AddressFamily::Inet;
        arp.header.ifindex = ifindex;
        arp.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        removed(self.handle.neighbours().del(arp).execute().await)
    }

    /// `bridge fdb replace MAC dev #IFINDEX dst DST self permanent`.
    pub async fn fdb_replace(&self, ifindex: u32, mac: &[u8; 6], dst: Ipv4Addr) -> Result<()> {
        Ok(self
            .handle
            .neighbours()
            .add_bridge(ifindex, mac)
            .destination(IpAddr::V4(dst))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await?)
    }

    /// `bridge fdb del MAC dev #IFINDEX dst DST self`; Ok(false) when it was already gone.
    pub async fn fdb_del(&self, ifindex: u32, mac: &[u8; 6], dst: Ipv4Addr) -> Result<bool> {
        removed(
            self.handle
                .neighbours()
                .del(fdb_msg(ifindex, mac, dst))
                .execute()
                .await,
        )
    }

    /// The IPv4 neighbour entries of one device. The kernel filters the dump by device
    /// (NDA_IFINDEX) but still walks the neighbours of every namespace to do it, so callers
    /// ask only when they must.
    pub async fn neighbours_of(&self, ifindex: u32) -> Result<Vec<Neigh>> {
        self.entries_of(AddressFamily::Inet, ifindex)
            .await
            .context("listing neighbours")
    }

    /// The bridge FDB entries of one device (`bridge fdb show dev`).
    pub async fn fdb_of(&self, ifindex: u32) -> Result<Vec<Neigh>> {
        self.entries_of(AddressFamily::Bridge, ifindex)
            .await
            .context("listing fdb entries")
    }

    async fn entries_of(&self, family: AddressFamily, ifindex: u32) -> Result<Vec<Neigh>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family;
        if family == AddressFamily::Inet {
            // a bridge (FDB) dump reads its filters from another header layout
            msg.attributes.push(NeighbourAttribute::IfIndex(ifindex));
        }
        Ok(self
            .dump_neighbours(msg)
            .await?
            .iter()
            .filter(|m| m.header.ifindex == ifindex)
            .map(neigh_of)
            .collect())
    }

    /// A neighbour dump of `msg` (rtnetlink's request cannot carry attributes).
    async fn dump_neighbours(&self, msg: NeighbourMessage) -> Result<Vec<NeighbourMessage>> {
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut replies = self.handle.clone().request(req)?;
        let mut out = Vec::new();
        while let Some(reply) = futures::StreamExt::next(&mut replies).await {
            match reply.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => out.push(m),
                NetlinkPayload::Error(e) => return Err(rtnetlink::Error::NetlinkError(e).into()),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// An entry of a remote node to add, or to replace when it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `ip neigh replace IP lladdr MAC dev #IFINDEX nud permanent`
    Neigh {
        ifindex: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    },
    /// `bridge fdb replace MAC dev #IFINDEX dst DST self permanent`
    Fdb {
        ifindex: u32,
        mac: [u8; 6],
        dst: Ipv4Addr,
    },
    /// `ip route replace DST/LEN via GW dev OIF [onlink]`
    Route(GatewayRoute),
}

/// Message types and header values of the three entries, as `ip` and `bridge` send them.
const NLMSG_ERROR: u16 = 2;
const RTM_NEWNEIGH: u16 = 28;
const RTM_NEWROUTE: u16 = 24;
const AF_INET: u8 = 2;
const AF_BRIDGE: u8 = 7;
const NUD_PERMANENT: u16 = 0x80;
const NTF_SELF: u8 = 0x02;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

/// One route netlink attribute, padded to four bytes.
fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// An ndmsg header: family, padding, ifindex, state, flags, type.
fn put_ndmsg(out: &mut Vec<u8>, family: u8, ifindex: u32, flags: u8) {
    out.extend_from_slice(&[family, 0, 0, 0]);
    out.extend_from_slice(&ifindex.to_ne_bytes());
    out.extend_from_slice(&NUD_PERMANENT.to_ne_bytes());
    out.extend_from_slice(&[flags, 0]);
}

impl Entry {
    /// Appends this entry's request to `out`, written straight into the datagram (an
    /// agent sends hundreds of them per batch: no message objects built and dropped). The
    /// bytes are those netlink_packet_route writes for the same request (tested).
    fn encode(&self, out: &mut Vec<u8>, seq: u32, ack: bool) {
        let start = out.len();
        let kind = match self {
            Entry::Route(_) => RTM_NEWROUTE,
            Entry::Neigh { .. } | Entry::Fdb { .. } => RTM_NEWNEIGH,
        };
        let flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE | if ack { NLM_F_ACK } else { 0 };
        out.extend_from_slice(&0u32.to_ne_bytes()); // the length, known at the end
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        match self {
            Entry::Neigh { ifindex, ip, mac } => {
                put_ndmsg(out, AF_INET, *ifindex, 0);
                put_attr(out, NDA_DST, &ip.octets());
                put_attr(out, NDA_LLADDR, mac);
            }
            Entry::Fdb { ifindex, mac, dst } => {
                put_ndmsg(out, AF_BRIDGE, *ifindex, NTF_SELF);
                put_attr(out, NDA_LLADDR, mac);
                put_attr(out, NDA_DST, &dst.octets());
            }
            Entry::Route(r) => {
                out.extend_from_slice(&[AF_INET, r.len, 0, 0, RT_TABLE_MAIN]);
                out.extend_from_slice(&[RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST]);
                let rt_flags = if r.onlink { RTNH_F_ONLINK } else { 0 };
                out.extend_from_slice(&rt_flags.to_ne_bytes());
                put_attr(out, RTA_DST, &r.dst.octets());
                put_attr(out, RTA_GATEWAY, &r.gateway.octets());
                put_attr(out, RTA_OIF, &r.oif.to_ne_bytes());
            }
        }
        let len = (out.len() - start) as u32;
        out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// The same request as netlink_packet_route's objects: what [`Entry::encode`] is
    /// checked against.
    #[cfg(test)]
    fn message(&self) -> NetlinkMessage<RouteNetlinkMessage> {
        let inner = match self {
            Entry::Neigh { ifindex, ip, mac } => {
                let mut m = NeighbourMessage::default();
                m.header.family = AddressFamily::Inet;
                m.header.ifindex = *ifindex;
                m.header.state = NeighbourState::Permanent;
                m.header.kind = netlink_packet_route::route::RouteType::Unspec;
                m.attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(*ip)));
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
                RouteNetlinkMessage::NewNeighbour(m)
            }
            Entry::Fdb { ifindex, mac, dst } => {
                RouteNetlinkMessage::NewNeighbour(fdb_msg(*ifindex, mac, *dst))
            }
            Entry::Route(r) => RouteNetlinkMessage::NewRoute(gateway_route_msg(r)),
        };
        let mut msg = NetlinkMessage::from(inner);
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        msg
    }
}

/// How many entries go into one system call. Only the last asks for an acknowledgement;
/// the others are answered only when they fail, and every answer is queued on the socket
/// before any is read: this many fit in its receive buffer with room to spare.
const ENTRIES_PER_SEND: usize = 96;

/// The largest answer read at once: a refusal carries only the request's header back
/// (NETLINK_CAP_ACK), so this holds the answers to a whole datagram many times over.
const ANSWERS_BUFFER: usize = 64 * 1024;

/// A netlink socket of an agent's own for many requests in one datagram, used without the
/// runtime: the kernel handles route netlink requests while the sending call runs, so when
/// it returns every answer is already queued and is read at once, with no wait for the
/// socket and no task between. Per datagram that is one send and, when nothing fails, one
/// receive.
#[derive(Clone)]
pub(super) struct Batch(std::sync::Arc<std::sync::Mutex<BatchSocket>>);

struct BatchSocket {
    socket: rtnetlink::sys::Socket,
    /// The sequence number of the last request sent.
    seq: u32,
    /// The requests of one send, reused from one batch to the next.
    datagram: Vec<u8>,
    answers: Vec<u8>,
}

impl Batch {
    fn open() -> Result<Batch> {
        use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};
        let mut socket = Socket::new(NETLINK_ROUTE).context("opening netlink")?;
        socket.bind_auto().context("binding a netlink socket")?;
        // Without it an answer to a refused request copies the whole request back.
        socket
            .set_cap_ack(true)
            .context("setting NETLINK_CAP_ACK")?;
        Ok(Batch(std::sync::Arc::new(std::sync::Mutex::new(
            BatchSocket {
                socket,
                seq: 0,
                datagram: Vec::with_capacity(ENTRIES_PER_SEND * 64),
                answers: Vec::with_capacity(ANSWERS_BUFFER),
            },
        ))))
    }

    /// Sends `entries` in one datagram and returns each one's result.
    fn send(&self, entries: &[Entry]) -> Vec<Result<()>> {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.send(entries)
    }
}

impl BatchSocket {
    fn send(&mut self, entries: &[Entry]) -> Vec<Result<()>> {
        if entries.is_empty() {
            return Vec::new();
        }
        let first = self.seq.wrapping_add(1);
        self.seq = self.seq.wrapping_add(entries.len() as u32);
        self.datagram.clear();
        for (i, e) in entries.iter().enumerate() {
            e.encode(
                &mut self.datagram,
                first.wrapping_add(i as u32),
                i + 1 == entries.len(),
            );
        }
        if let Err(e) = self.socket.send(&self.datagram, 0) {
            return entries
                .iter()
                .map(|_| Err(anyhow::anyhow!("sending to netlink: {e}")))
                .collect();
        }
        // The last request's answer comes after every other one: until it is read the
        // results are not known.
        let last = first.wrapping_add(entries.len() as u32 - 1);
        let mut got = Vec::new();
        while !got.iter().any(|(seq, _)| *seq == last) {
            self.answers.clear();
            if self
                .socket
                .recv(&mut self.answers, libc::MSG_DONTWAIT)
                .is_err()
            {
                break;
            }
            got.extend(answers(&self.answers));
        }
        results(entries.len(), first, got)
    }
}

/// Each request's result from the answers read: a refusal is that request's error, and
/// when the last request's answer is missing, none of those not refused is known to have
/// worked.
fn results(
    n: usize,
    first: u32,
    got: Vec<(u32, Option<rtnetlink::packet_core::ErrorMessage>)>,
) -> Vec<Result<()>> {
    let mut out: Vec<Result<()>> = (0..n).map(|_| Ok(())).collect();
    let mut last_answered = false;
    for (seq, err) in got {
        let i = seq.wrapping_sub(first) as usize;
        if i >= n {
            continue;
        }
        if let Some(e) = err {
            out[i] = Err(rtnetlink::Error::NetlinkError(e).into());
        }
        last_answered |= i + 1 == n;
    }
    if !last_answered {
        for r in out.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(anyhow::anyhow!(
                "no answer from the kernel (netlink messages lost)"
            ));
        }
    }
    out
}

/// The answers in one datagram read from a netlink socket: each one's sequence number and,
/// for a refusal, the kernel's error.
fn answers(datagram: &[u8]) -> Vec<(u32, Option<rtnetlink::packet_core::ErrorMessage>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while datagram.len() >= at + 16 {
        let len = u32::from_ne_bytes(datagram[at..at + 4].try_into().expect("four bytes")) as usize;
        if len < 16 || at + len > datagram.len() {
            break;
        }
        let field = |from: usize| {
            let bytes = datagram.get(at + from..at + from + 4)?;
            Some(u32::from_ne_bytes(bytes.try_into().expect("four bytes")))
        };
        let is_error = field(4).is_some_and(|t| t as u16 == NLMSG_ERROR);
        match (is_error, field(8), field(16)) {
            // an acknowledgement (error code 0) needs no parsing
            (true, Some(seq), Some(0)) => out.push((seq, None)),
            _ => {
                let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[at..at + len]);
                if let Ok(NetlinkPayload::Error(e)) = m.map(|m| m.payload) {
                    out.push((field(8).unwrap_or(0), e.code.is_some().then_some(e)));
                }
            }
        }
        at += len.next_multiple_of(4);
    }
    out
}

impl Netlink {
    /// Adds (or replaces) every entry, in order, and returns each one's result. An agent's
    /// session sends them many to a system call; the simulator's sends them one by one.
    pub async fn replace_all(&self, entries: &[Entry]) -> Vec<Result<()>> {
        let Some(batch) = &self.batch else {
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                out.push(self.replace(e).await);
            }
            return out;
        };
        let mut out = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(ENTRIES_PER_SEND) {
            out.extend(batch.send(chunk));
        }
        out
    }

    async fn replace(&self, e: &Entry) -> Result<()> {
        match e {
            Entry::Neigh { ifindex, ip, mac } => self.neigh_replace(*ifindex, *ip, mac).await,
            Entry::Fdb { ifindex, mac, dst } => self.fdb_replace(*ifindex, mac, *dst).await,
            Entry::Route(r) => self.route_replace(r).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::{ErrorMessage, NetlinkHeader};

    fn answer(seq: u32, code: i32) -> Vec<u8> {
        let mut e = ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(code);
        e.header = vec![0; 16];
        let mut h = NetlinkHeader::default();
        h.sequence_number = seq;
        let mut m = NetlinkMessage::<RouteNetlinkMessage>::new(h, NetlinkPayload::Error(e));
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    #[test]
    fn entries_are_written_as_netlink_packet_route_writes_them() {
        let (gw, host, mac) = (
            Ipv4Addr::new(11, 13, 0, 0),
            Ipv4Addr::new(10, 0, 0, 4),
            [0xaa, 1, 2, 3, 4, 5],
        );
        let route = |gateway, onlink| GatewayRoute {
            dst: gw,
            len: 20,
            gateway,
            oif: 7,
            onlink,
        };
        let entries = [
            Entry::Neigh {
                ifindex: 7,
                ip: gw,
                mac,
            },
            Entry::Fdb {
                ifindex: 7,
                mac,
                dst: host,
            },
            Entry::Route(route(gw, true)),
            Entry::Route(route(host, false)),
        ];
        for (i, e) in entries.iter().enumerate() {
            for ack in [false, true] {
                let seq = (u32::MAX - 1).wrapping_add(i as u32);
                let mut want = e.message();
                want.header.sequence_number = seq;
                if !ack {
                    want.header.flags &= !NLM_F_ACK;
                }
                want.finalize();
                let mut bytes = vec![0; want.buffer_len()];
                want.serialize(&mut bytes);
                // written after another message, as in a datagram
                let mut got = vec![9; 8];
                e.encode(&mut got, seq, ack);
                assert_eq!(got[8..], bytes[..], "{e:?} ack {ack}");
            }
        }
    }

    #[test]
    fn answers_are_read_in_order_with_the_kernels_errors() {
        let mut datagram = answer(7, -17);
        datagram.extend(answer(9, 0));
        let got: Vec<(u32, Option<i32>)> = answers(&datagram)
            .into_iter()
            .map(|(seq, e)| (seq, e.map(|e| e.raw_code())))
            .collect();
        assert_eq!(got, vec![(7, Some(-17)), (9, None)]);
        // a cut-off answer ends the reading without inventing one
        assert_eq!(answers(&datagram[..datagram.len() - 4]).len(), 1);
        assert!(answers(&[]).is_empty());
    }

    #[test]
    fn results_name_refusals_and_without_the_last_answer_nothing_is_known() {
        let refused = |seq| {
            let mut e = ErrorMessage::default();
            e.code = std::num::NonZeroI32::new(-17);
            (seq, Some(e))
        };
        let text = |r: &[Result<()>]| -> Vec<String> {
            r.iter()
                .map(|r| match r {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("{e:#}"),
                })
                .collect()
        };
        // sequence numbers wrap around
        let first = u32::MAX;
        let all = text(&results(3, first, vec![refused(0), (1, None)]));
        assert_eq!(all[0], "ok");
        assert!(all[1].contains("File exists"), "{all:?}");
        assert_eq!(all[2], "ok");
        // the last answer lost: the refusal stays, the others are not known to have worked
        let lost = text(&results(3, first, vec![refused(0)]));
        assert!(lost[1].contains("File exists"), "{lost:?}");
        for i in [0, 2] {
            assert!(lost[i].contains("no answer from the kernel"), "{lost:?}");
        }
        // answers to other requests are not ours
        assert_eq!(text(&results(1, 5, vec![(4, None), (5, None)])), ["ok"]);
    }
}
