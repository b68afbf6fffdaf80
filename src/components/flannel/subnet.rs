//! Subnet leases as flannel's etcd subnet manager stores them, and the choice of a subnet.
//!
//! - key: `<prefix>/subnets/<net>-<len>`, e.g. `/coreos.com/network/subnets/11.12.16.0-20`
//! - value: `{"PublicIP":"10.0.0.3","PublicIPv6":null,"BackendType":"vxlan",
//!   "BackendData":{"VNI":100,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}` (Go's field order, no spaces)
//!
//! Everything here is pure (no etcd, no netlink) so it is unit-tested.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network `ip/prefix_len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Net {
    pub fn new(ip: Ipv4Addr, prefix_len: u8) -> Self {
        Self { ip, prefix_len }
    }
    fn mask(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len)
        }
    }
    /// The same network with host bits cleared.
    pub fn normalized(&self) -> Self {
        Self::new(
            Ipv4Addr::from(u32::from(self.ip) & self.mask()),
            self.prefix_len,
        )
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.ip) & self.mask()
    }
    pub fn last_u32(&self) -> u32 {
        (u32::from(self.ip) & self.mask()) | !self.mask()
    }
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let a0 = u32::from(self.ip) & self.mask();
        let b0 = u32::from(other.ip) & other.mask();
        a0 <= other.last_u32() && b0 <= self.last_u32()
    }
    /// The address `n` after the network address (`.1` is the first host).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ip).wrapping_add(n))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Text::<19>::default();
        text.ip(self.ip);
        text.push(b'/');
        text.decimal(self.prefix_len);
        f.pad(text.as_str())
    }
}

/// Short text built on the stack: the agent logs four lines of addresses per remote node,
/// and std's formatting of each octet cost more than the rest of the line.
struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Text {
            bytes: [0; N],
            len: 0,
        }
    }
}

impl<const N: usize> Text<N> {
    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }
    fn decimal(&mut self, n: u8) {
        if n >= 100 {
            self.push(b'0' + n / 100);
        }
        if n >= 10 {
            self.push(b'0' + n / 10 % 10);
        }
        self.push(b'0' + n % 10);
    }
    fn ip(&mut self, ip: Ipv4Addr) {
        for (i, o) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                self.push(b'.');
            }
            self.decimal(o);
        }
    }
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// An IPv4 address displayed as std displays it, without its per-octet formatting.
#[derive(Debug, Clone, Copy)]
pub struct Ip(pub Ipv4Addr);

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = Text::<15>::default();
        text.ip(self.0);
        f.pad(text.as_str())
    }
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`, displayed without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = Text::<17>::default();
        for (i, b) in self.0.into_iter().enumerate() {
            if i > 0 {
                text.push(b':');
            }
            text.push(HEX[usize::from(b >> 4)]);
            text.push(HEX[usize::from(b & 15)]);
        }
        f.pad(text.as_str())
    }
}

impl FromStr for Ipv4Net {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("\"{s}\" is not an IPv4 network (expected A.B.C.D/LEN)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| anyhow!("\"{s}\" is not an IPv4 network: bad address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| anyhow!("\"{s}\" is not an IPv4 network: bad prefix length"))?;
        Ok(Self::new(ip, len))
    }
}

/// etcd key of the lease for `sn`: `<prefix>/subnets/11.12.16.0-20`.
pub fn lease_key(prefix: &str, sn: &Ipv4Net) -> String {
    format!("{}{}-{}", subnets_prefix(prefix), sn.ip, sn.prefix_len)
}

/// The key prefix every lease lives under: `<prefix>/subnets/`.
pub fn subnets_prefix(prefix: &str) -> String {
    format!("{}/subnets/", prefix.trim_end_matches('/'))
}

/// The subnet a lease key names, or None for keys that are not leases.
pub fn parse_lease_key(prefix: &str, key: &str) -> Option<Ipv4Net> {
    let rest = key.strip_prefix(&subnets_prefix(prefix))?;
    let (ip, len) = rest.split_once('-')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some(Ipv4Net::new(ip, len))
}

/// The value of a lease key, in flannel's field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<String>,
    #[serde(
        rename = "BackendType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_type: String,
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<VxlanLeaseData>,
}

/// The vxlan backend's part of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanLeaseData {
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

impl LeaseAttrs {
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, mac: [u8; 6]) -> Self {
        Self {
            public_ip,
            public_ipv6: None,
            backend_type: "vxlan".into(),
            backend_data: Some(VxlanLeaseData {
                vni,
                vtep_mac: format_mac(&mac),
            }),
        }
    }
    /// A host-gw lease: the node's address is all the others need.
    pub fn host_gw(public_ip: Ipv4Addr) -> Self {
        Self {
            public_ip,
            public_ipv6: None,
            backend_type: "host-gw".into(),
            backend_data: None,
        }
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("lease attributes always serialize")
    }
    pub fn from_json(text: &[u8]) -> Result<Self> {
        serde_json::from_slice(text).context("lease value is not flannel lease JSON")
    }
    /// The remote VTEP MAC of a vxlan lease.
    pub fn vtep_mac(&self) -> Result<[u8; 6]> {
        if self.backend_type != "vxlan" {
            bail!("backend type is \"{}\", not vxlan", self.backend_type);
        }
        let d = self
            .backend_data
            .as_ref()
            .ok_or_else(|| anyhow!("vxlan lease without BackendData"))?;
        parse_mac(&d.vtep_mac)
    }
}

/// One lease as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub subnet: Ipv4Net,
    pub attrs: LeaseAttrs,
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    Mac(*mac).to_string()
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("\"{s}\" is not a MAC address");
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| anyhow!("\"{s}\" is not a MAC address"))?;
    }
    Ok(mac)
}

/// A random locally administered unicast MAC, as flannel generates for its VTEP.
pub fn random_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] | 0x02) & 0xfe;
    mac
}

/// The subnet range a config allows, as the compatibility check uses it.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub min: Ipv4Addr,
    pub max: Ipv4Addr,
    pub len: u8,
}

impl Range {
    pub fn from_config(c: &super::config::NetConfig) -> Self {
        Self {
            min: c.subnet_min,
            max: c.subnet_max,
            len: c.subnet_len,
        }
    }
    /// flannel's isSubnetConfigCompat: inside [SubnetMin, SubnetMax] and of SubnetLen.
    pub fn compatible(&self, sn: &Ipv4Net) -> bool {
        sn.ip >= self.min && sn.ip <= self.max && sn.prefix_len == self.len
    }
}

/// What to do to get a lease, decided from the current leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// A lease with our PublicIP exists and fits the config: take it over (re-put it).
    Reuse(Ipv4Net),
    /// A lease with our PublicIP exists but does not fit: delete it, then choose again.
    DeleteIncompatible(Ipv4Net),
    /// Create this subnet's key (it was free when we looked).
    Create { subnet: Ipv4Net, previous: bool },
}

/// flannel's order: our own lease by PublicIP, else the previous subnet from subnet.env if
/// nobody holds it and it fits, else a random one among the first 100 free subnets.
pub fn choose(
    range: &Range,
    leases: &[Lease],
    public_ip: Ipv4Addr,
    previous: Option<Ipv4Net>,
    pick: impl FnOnce(usize) -> usize,
) -> Result<Choice> {
    if let Some(l) = leases.iter().find(|l| l.attrs.public_ip == public_ip) {
        return Ok(if range.compatible(&l.subnet) {
            Choice::Reuse(l.subnet)
        } else {
            Choice::DeleteIncompatible(l.subnet)
        });
    }
    if let Some(prev) = previous {
        if !leases.iter().any(|l| l.subnet == prev) && range.compatible(&prev) {
            return Ok(Choice::Create {
                subnet: prev,
                previous: true,
            });
        }
    }
    let free = free_subnets(range, leases, 100);
    if free.is_empty() {
        bail!(
            "out of subnets: every /{} between {} and {} is leased",
            range.len,
            range.min,
            range.max
        );
    }
    let i = pick(free.len()).min(free.len() - 1);
    Ok(Choice::Create {
        subnet: free[i],
        previous: false,
    })
}

/// Up to `limit` subnets in [min, max] that overlap no lease, in address order.
pub fn free_subnets(range: &Range, leases: &[Lease], limit: usize) -> Vec<Ipv4Net> {
    let step = 1u64 << (32 - range.len);
    let mut out = Vec::new();
    let mut ip = u32::from(range.min) as u64;
    while ip <= u32::from(range.max) as u64 && out.len() < limit {
        let sn = Ipv4Net::new(Ipv4Addr::from(ip as u32), range.len);
        if !leases.iter().any(|l| sn.overlaps(&l.subnet)) {
            out.push(sn);
        }
        ip += step;
    }
    out
}

/// The text of subnet.env.
pub fn render_subnet_env(network: &Ipv4Net, subnet: &Ipv4Net, mtu: u32, ip_masq: bool) -> String {
    format!(
        "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ip_masq}\n",
        subnet.nth(1),
        subnet.prefix_len
    )
}

/// The subnet recorded in a previous subnet.env (FLANNEL_SUBNET=11.12.16.1/20 -> 11.12.16.0/20).
pub fn previous_subnet(env_text: &str) -> Option<Ipv4Net> {
    env_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("FLANNEL_SUBNET="))
        .and_then(|v| v.trim().parse::<Ipv4Net>().ok())
        .map(|n| n.normalized())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_display_as_std_displays_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "10.0.0.4",
            "11.13.0.0",
        ] {
            let ip: Ipv4Addr = ip.parse().unwrap();
            assert_eq!(Ip(ip).to_string(), ip.to_string());
            assert_eq!(format!("[{:>17}]", Ip(ip)), format!("[{ip:>17}]"));
            for len in [0, 8, 20, 32] {
                let n = Ipv4Net::new(ip, len);
                assert_eq!(n.to_string(), format!("{ip}/{len}"));
            }
        }
        assert_eq!(
            Ipv4Net::new(Ipv4Addr::BROADCAST, 255).to_string(),
            "255.255.255.255/255"
        );
        let mac = [0x0a, 0xbc, 0, 0xff, 0x10, 0x01];
        let want: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(format_mac(&mac), want.join(":"));
        assert_eq!(Mac(mac).to_string(), "0a:bc:00:ff:10:01");
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn lease(sn: &str, ip: [u8; 4]) -> Lease {
        Lease {
            subnet: net(sn),
            attrs: LeaseAttrs::vxlan(Ipv4Addr::from(ip), 100, [2, 0, 0, 0, 0, 1]),
        }
    }
    fn sim_range() -> Range {
        Range {
            min: Ipv4Addr::new(11, 10, 0, 0),
            max: Ipv4Addr::new(11, 99, 0, 0),
            len: 20,
        }
    }

    #[test]
    fn key_format_round_trips() {
        let sn = net("11.12.16.0/20");
        let k = lease_key("/coreos.com/network", &sn);
        assert_eq!(k, "/coreos.com/network/subnets/11.12.16.0-20");
        assert_eq!(lease_key("/coreos.com/network/", &sn), k);
        assert_eq!(parse_lease_key("/coreos.com/network", &k), Some(sn));
        assert_eq!(
            parse_lease_key("/coreos.com/network", "/coreos.com/network/config"),
            None
        );
        assert_eq!(
            parse_lease_key("/coreos.com/network", "/coreos.com/network/subnets/x-1"),
            None
        );
    }

    #[test]
    fn lease_value_matches_flannel_json_exactly() {
        let a = LeaseAttrs::vxlan(
            Ipv4Addr::new(10, 0, 0, 3),
            100,
            [0x9a, 0x0b, 0xc1, 0x2d, 0xe3, 0xf4],
        );
        assert_eq!(
            a.to_json(),
            r#"{"PublicIP":"10.0.0.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":100,"VtepMAC":"9a:0b:c1:2d:e3:f4"}}"#
        );
        let back = LeaseAttrs::from_json(a.to_json().as_bytes()).unwrap();
        assert_eq!(back, a);
        assert_eq!(
            back.vtep_mac().unwrap(),
            [0x9a, 0x0b, 0xc1, 0x2d, 0xe3, 0xf4]
        );
        // a lease written by real flannel without PublicIPv6 still parses
        let old = LeaseAttrs::from_json(br#"{"PublicIP":"10.0.0.4","BackendType":"vxlan","BackendData":{"VtepMAC":"aa:bb:cc:dd:ee:ff","VNI":1}}"#).unwrap();
        assert_eq!(old.public_ip, Ipv4Addr::new(10, 0, 0, 4));
        assert!(LeaseAttrs::from_json(b"{}").is_err());
        let hostgw =
            LeaseAttrs::from_json(br#"{"PublicIP":"10.0.0.5","BackendType":"host-gw"}"#).unwrap();
        assert!(hostgw.vtep_mac().is_err());
    }

    #[test]
    fn mac_helpers() {
        assert!(parse_mac("aa:bb").is_err());
        assert!(parse_mac("zz:bb:cc:dd:ee:ff").is_err());
        for _ in 0..50 {
            let m = random_mac();
            assert_eq!(m[0] & 0x03, 0x02, "locally administered unicast");
        }
    }

    #[test]
    fn reuses_own_lease_by_public_ip() {
        let leases = vec![
            lease("11.20.0.0/20", [10, 0, 0, 4]),
            lease("11.12.16.0/20", [10, 0, 0, 3]),
        ];
        let c = choose(
            &sim_range(),
            &leases,
            Ipv4Addr::new(10, 0, 0, 3),
            Some(net("11.30.0.0/20")),
            |_| 0,
        )
        .unwrap();
        assert_eq!(c, Choice::Reuse(net("11.12.16.0/20")));
    }

    #[test]
    fn own_lease_outside_range_is_deleted() {
        // Outside the network, and inside it with another subnet length.
        for stale in ["11.2.0.0/20", "11.12.0.0/24"] {
            let leases = vec![lease(stale, [10, 0, 0, 3])];
            let c = choose(
                &sim_range(),
                &leases,
                Ipv4Addr::new(10, 0, 0, 3),
                None,
                |_| 0,
            );
            assert_eq!(
                c.unwrap(),
                Choice::DeleteIncompatible(net(stale)),
                "{stale}"
            );
        }
    }

    #[test]
    fn previous_subnet_used_when_free_and_compatible() {
        let leases = vec![lease("11.20.0.0/20", [10, 0, 0, 4])];
        let me = Ipv4Addr::new(10, 0, 0, 3);
        let c = choose(&sim_range(), &leases, me, Some(net("11.30.0.0/20")), |_| 0).unwrap();
        assert_eq!(
            c,
            Choice::Create {
                subnet: net("11.30.0.0/20"),
                previous: true
            }
        );
        // taken by someone else: pick a free one instead
        let c = choose(&sim_range(), &leases, me, Some(net("11.20.0.0/20")), |_| 0).unwrap();
        assert_eq!(
            c,
            Choice::Create {
                subnet: net("11.10.0.0/20"),
                previous: false
            }
        );
        // outside the range: ignored
        let c = choose(&sim_range(), &leases, me, Some(net("11.2.0.0/20")), |_| 0).unwrap();
        assert_eq!(
            c,
            Choice::Create {
                subnet: net("11.10.0.0/20"),
                previous: false
            }
        );
    }

    #[test]
    fn random_pick_among_first_hundred_free() {
        let r = sim_range();
        let leases = vec![
            lease("11.10.0.0/20", [10, 0, 0, 4]),
            lease("11.10.32.0/20", [10, 0, 0, 5]),
        ];
        let free = free_subnets(&r, &leases, 100);
        assert_eq!(free.len(), 100);
        assert_eq!(free[0], net("11.10.16.0/20"));
        assert_eq!(free[1], net("11.10.48.0/20"));
        assert!(free.iter().all(|f| r.compatible(f)));
        let mut seen = None;
        let c = choose(&r, &leases, Ipv4Addr::new(10, 0, 0, 3), None, |n| {
            seen = Some(n);
            7
        })
        .unwrap();
        assert_eq!(seen, Some(100));
        assert_eq!(
            c,
            Choice::Create {
                subnet: free[7],
                previous: false
            }
        );
        // whole range: 11.10.0.0 .. 11.99.0.0 in /20 steps
        assert_eq!(free_subnets(&r, &[], usize::MAX).len(), (99 - 10) * 16 + 1);
    }

    #[test]
    fn out_of_subnets_is_an_error() {
        let r = Range {
            min: Ipv4Addr::new(11, 10, 0, 0),
            max: Ipv4Addr::new(11, 10, 16, 0),
            len: 20,
        };
        let leases = vec![
            lease("11.10.0.0/20", [10, 0, 0, 4]),
            lease("11.10.16.0/20", [10, 0, 0, 5]),
        ];
        let e = choose(&r, &leases, Ipv4Addr::new(10, 0, 0, 3), None, |_| 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of subnets"), "{e}");
    }

    #[test]
    fn subnet_env_round_trip() {
        let t = render_subnet_env(&net("11.0.0.0/8"), &net("11.12.16.0/20"), 1450, false);
        assert_eq!(
            t,
            "FLANNEL_NETWORK=11.0.0.0/8\nFLANNEL_SUBNET=11.12.16.1/20\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(previous_subnet(&t), Some(net("11.12.16.0/20")));
        assert_eq!(previous_subnet("garbage"), None);
        assert!(
            render_subnet_env(&net("11.0.0.0/8"), &net("11.12.16.0/20"), 1450, true)
                .contains("FLANNEL_IPMASQ=true\n")
        );
    }

    #[test]
    fn net_helpers() {
        let n = net("11.0.0.0/8");
        assert!(n.contains(Ipv4Addr::new(11, 200, 1, 1)));
        assert!(!n.contains(Ipv4Addr::new(12, 0, 0, 0)));
        assert!(net("11.12.0.0/16").overlaps(&net("11.12.16.0/20")));
        assert!(!net("11.12.0.0/20").overlaps(&net("11.12.16.0/20")));
        assert_eq!(net("11.12.17.5/20").normalized(), net("11.12.16.0/20"));
        assert!("11.0.0.0".parse::<Ipv4Net>().is_err());
        assert!("11.0.0.0/33".parse::<Ipv4Net>().is_err());
    }
}
