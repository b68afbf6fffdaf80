//! What a namespace's links are, from `ip -d -o link show`: which is the VXLAN device (and
//! its VNI and UDP port), which are bridges, which veth ends are bridge ports and where
//! their peers are. The walk reads these from the kernel instead of assuming flannel's
//! defaults, so another VNI, port or backend is shown as it is.

/// One link of a namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The peer's ifindex for `name@ifN` (a veth's other end, in another namespace).
    pub peer_index: Option<u32>,
    pub master: Option<String>,
    pub kind: Kind,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Kind {
    Vxlan {
        vni: u32,
        port: u16,
        local: Option<String>,
        dev: Option<String>,
    },
    Bridge,
    Veth,
    #[default]
    Other,
}

/// The VXLAN settings a walk shows (device name, VNI, UDP port), read from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub dev: String,
    pub vni: u32,
    pub port: u16,
}

fn word_after<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| *w == key)
        .and_then(|i| words.get(i + 1).copied())
}

/// Parses `ip -d -o link show` output.
pub fn parse(text: &str) -> Vec<Link> {
    text.lines().filter_map(parse_one).collect()
}

fn parse_one(line: &str) -> Option<Link> {
    let (index, rest) = line.split_once(": ")?;
    let index = index.trim().parse().ok()?;
    let (name, rest) = rest.split_once(": ")?;
    let (name, peer_index) = match name.split_once('@') {
        Some((n, p)) => (n, p.strip_prefix("if").and_then(|i| i.parse().ok())),
        None => (name, None),
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let kind = if let Some(i) = words.windows(2).position(|w| w == ["vxlan", "id"]) {
        let w = &words[i..];
        Kind::Vxlan {
            vni: w.get(2)?.parse().ok()?,
            // The kernel's default when no port is shown is the IANA one.
            port: word_after(w, "dstport")
                .and_then(|p| p.parse().ok())
                .unwrap_or(4789),
            local: word_after(w, "local").map(str::to_string),
            dev: word_after(w, "dev").map(str::to_string),
        }
    } else if words
        .windows(2)
        .any(|w| w[0] == "bridge" && w[1] == "forward_delay")
    {
        Kind::Bridge
    } else if words.contains(&"veth") {
        Kind::Veth
    } else {
        Kind::Other
    };
    Some(Link {
        index,
        name: name.to_string(),
        peer_index,
        master: word_after(&words, "master").map(str::to_string),
        kind,
    })
}

/// The first VXLAN device among `links`.
pub fn vxlan(links: &[Link]) -> Option<Vxlan> {
    links.iter().find_map(|l| match &l.kind {
        Kind::Vxlan { vni, port, .. } => Some(Vxlan {
            dev: l.name.clone(),
            vni: *vni,
            port: *port,
        }),
        _ => None,
    })
}

pub fn is_bridge(links: &[Link], name: &str) -> bool {
    links
        .iter()
        .any(|l| l.name == name && l.kind == Kind::Bridge)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Recorded on a knetsim worker (kernel 6.18, iproute2 6.1), shortened.
    const WORKER: &str = "\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00 promiscuity 0
3: eth0@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 2a:8e:76:d4:dd:ea brd ff:ff:ff:ff:ff:ff link-netns tr-exp-underlay promiscuity 0 \\    veth addrgenmode eui64
4: flannel.100: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/ether 6a:e3:ca:98:31:40 brd ff:ff:ff:ff:ff:ff promiscuity 0 \\    vxlan id 100 local 10.0.0.2 dev eth0 srcport 0 0 dstport 8472 nolearning ttl auto ageing 300 udpcsum
5: cni0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether f6:2c:49:ce:ee:bd brd ff:ff:ff:ff:ff:ff promiscuity 0 \\    bridge forward_delay 1500 hello_time 200
6: vetheec967ee@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450 qdisc noqueue master cni0 state UP mode DEFAULT group default \\    link/ether be:b8:41:ae:b1:6e brd ff:ff:ff:ff:ff:ff link-netns tr-exp-C0-c1 promiscuity 1 \\    veth \\    bridge_slave state forwarding
";

    #[test]
    fn reads_the_worker_links() {
        let links = parse(WORKER);
        assert_eq!(links.len(), 5);
        assert_eq!(
            vxlan(&links),
            Some(Vxlan {
                dev: "flannel.100".into(),
                vni: 100,
                port: 8472
            })
        );
        assert!(is_bridge(&links, "cni0"));
        assert!(!is_bridge(&links, "eth0"));
        let v = links.iter().find(|l| l.index == 6).unwrap();
        assert_eq!(v.name, "vetheec967ee");
        assert_eq!(v.peer_index, Some(2));
        assert_eq!(v.master.as_deref(), Some("cni0"));
        assert_eq!(v.kind, Kind::Veth);
        assert_eq!(links[1].name, "eth0");
        assert_eq!(links[1].peer_index, Some(4));
    }

    #[test]
    fn another_vni_and_port_are_read_not_assumed() {
        let l = parse("9: flannel.7: <UP> mtu 1450 \\    vxlan id 7 local 10.0.0.9 dev eth0 dstport 4789 nolearning\n");
        assert_eq!(
            vxlan(&l),
            Some(Vxlan {
                dev: "flannel.7".into(),
                vni: 7,
                port: 4789
            })
        );
        assert_eq!(vxlan(&parse(WORKER.lines().next().unwrap())), None);
    }
}
