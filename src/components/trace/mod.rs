//! The packet walk's kernel knowledge: the small nft table that marks only the probe for
//! tracing, the `nft monitor trace` text, the links of a namespace, and the hops decoded
//! from them. Pure: the simulator runs the commands and hands the text here.

pub mod links;
pub mod nft;
pub mod walk;

pub use links::Vxlan;
pub use walk::{Hop, NodeView, NodeWalk};

/// The table knetsim adds for a trace and removes afterwards.
pub const TABLE: &str = "knetsim-trace";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "icmp" => Some(Proto::Icmp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }

    /// The IP protocol number.
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        }
    }
}

/// The probe: its protocol and the source port (tcp, udp) or echo id (icmp) that makes it
/// a fresh flow and tells it apart from every other packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub proto: Proto,
    pub tag: u16,
}

/// Bits from the start of an outer VXLAN packet's UDP header to the inner packet's
/// transport header: UDP 8 + VXLAN 8 + Ethernet 14 + IPv4 20 bytes (no IP options).
const INNER_L4_BITS: u32 = (8 + 8 + 14 + 20) * 8;
const INNER_PROTO_BITS: u32 = (8 + 8 + 14 + 9) * 8;
/// The inner IPv4 header's DSCP: the top 6 bits of its second byte.
const INNER_DSCP_BITS: u32 = (8 + 8 + 14 + 1) * 8;

/// The match for the probe itself (the first packet of its flow only: for TCP the SYN).
fn inner_match(p: &Probe) -> String {
    match p.proto {
        Proto::Tcp => format!("tcp sport {} tcp flags & (syn | ack) == syn", p.tag),
        Proto::Udp => format!("udp sport {}", p.tag),
        Proto::Icmp => format!("icmp type echo-request icmp id {}", p.tag),
    }
}

/// The DSCP the probe carries (from the local-use pool, xxxx01). NAT rewrites addresses and
/// ports (masquerade fully-random picks a new source port) but never the DSCP, so this is
/// how the probe is still recognised after a NodePort's masquerade.
pub const PROBE_DSCP: u8 = 0x05;

/// The probe by its DSCP, whatever NAT did to its ports: only its first packet.
fn dscp_match(p: &Probe) -> String {
    let first = match p.proto {
        Proto::Tcp => "tcp flags & (syn | ack) == syn",
        Proto::Udp => "meta l4proto udp",
        Proto::Icmp => "icmp type echo-request",
    };
    format!("ip dscp {PROBE_DSCP:#04x} {first}")
}

/// The match for the probe inside a VXLAN packet: the outer UDP port, then the inner
/// headers read at fixed offsets (tracing does not survive encapsulation, so the outer
/// packet needs its own mark): the inner DSCP, protocol and, for TCP, SYN alone.
fn outer_match(p: &Probe, vx: &Vxlan) -> String {
    let l4 = INNER_L4_BITS;
    let tail = match p.proto {
        // tcp flags are byte 13 of the TCP header.
        Proto::Tcp => format!(" @th,{},8 0x02", l4 + 13 * 8),
        Proto::Udp => String::new(),
        Proto::Icmp => format!(" @th,{l4},8 8"),
    };
    format!(
        "udp dport {} @th,{INNER_DSCP_BITS},6 {PROBE_DSCP:#04x} @th,{INNER_PROTO_BITS},8 {}{tail}",
        vx.port,
        p.proto.number()
    )
}

/// The nft transaction that adds the trace table: chains at prerouting and output (before
/// conntrack, so they see the packet as it arrives) set `nftrace` for the probe only, and
/// empty chains at input, forward and postrouting (after NAT) make every hook report it.
/// It replaces a table left by an interrupted trace.
pub fn table_text(p: &Probe, vxlan: Option<&Vxlan>) -> String {
    table_with(p, vxlan, "")
}

/// The rule that makes a proxy's own upstream connection the probe: the first packet
/// (SYN) of a connection from this namespace to `daddr:dport` gets the probe's DSCP and is
/// traced, so every other namespace follows it as it follows the probe. Only for the
/// namespace the proxy (nginx, a router) runs in, and only for the length of one trace.
pub fn upstream_rule(daddr: std::net::Ipv4Addr, dport: u16) -> String {
    format!(
        "\t\tip daddr {daddr} tcp dport {dport} tcp flags & (syn | ack) == syn ip dscp set {PROBE_DSCP:#04x} meta nftrace set 1\n"
    )
}

/// [`upstream_rule`] for each address a proxy may pick (nginx balancing over a
/// Service's endpoints itself).
pub fn upstream_rules(targets: &[std::net::SocketAddrV4]) -> String {
    targets
        .iter()
        .map(|t| upstream_rule(*t.ip(), t.port()))
        .collect()
}

/// [`table_text`] with `upstream` (see [`upstream_rule`]) first in the output chain.
pub fn upstream_table_text(p: &Probe, vxlan: Option<&Vxlan>, upstream: &str) -> String {
    table_with(p, vxlan, upstream)
}

fn table_with(p: &Probe, vxlan: Option<&Vxlan>, extra_out: &str) -> String {
    let mut marks = format!(
        "\t\t{} meta nftrace set 1\n\t\t{} meta nftrace set 1\n",
        inner_match(p),
        dscp_match(p)
    );
    if let Some(vx) = vxlan {
        marks.push_str(&format!("\t\t{} meta nftrace set 1\n", outer_match(p, vx)));
    }
    format!(
        "table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain probe-pre {{\n\t\ttype filter hook prerouting priority -350; policy accept;\n{marks}\t}}\n\
         \tchain probe-out {{\n\t\ttype filter hook output priority -350; policy accept;\n{extra_out}{marks}\t}}\n\
         \tchain probe-in {{\n\t\ttype filter hook input priority 400; policy accept;\n\t}}\n\
         \tchain probe-fwd {{\n\t\ttype filter hook forward priority 400; policy accept;\n\t}}\n\
         \tchain probe-post {{\n\t\ttype filter hook postrouting priority 400; policy accept;\n\t}}\n\
         }}\n"
    )
}

/// Removes the trace table (a no-op when it is not there).
pub fn delete_text() -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_marks_only_the_probe() {
        let vx = Vxlan {
            dev: "flannel.7".into(),
            vni: 7,
            port: 4789,
        };
        let t = table_text(
            &Probe {
                proto: Proto::Tcp,
                tag: 61234,
            },
            Some(&vx),
        );
        assert!(t.contains("tcp sport 61234 tcp flags & (syn | ack) == syn meta nftrace set 1"));
        assert!(t.contains("ip dscp 0x05 tcp flags & (syn | ack) == syn meta nftrace set 1"));
        assert!(t.contains("udp dport 4789 @th,248,6 0x05 @th,312,8 6 @th,504,8 0x02 meta nftrace"));
        assert!(t.contains("hook prerouting priority -350"));
        assert!(t.starts_with("table ip knetsim-trace\ndelete table ip knetsim-trace\n"));
        let icmp = table_text(
            &Probe {
                proto: Proto::Icmp,
                tag: 77,
            },
            None,
        );
        assert!(icmp.contains("icmp type echo-request icmp id 77 meta nftrace set 1"));
        assert!(!icmp.contains("udp dport"), "no overlay, no outer match");
    }

    #[test]
    fn an_upstream_rule_comes_first_in_the_output_chain() {
        let p = Probe {
            proto: Proto::Tcp,
            tag: 61000,
        };
        let up = upstream_rule("100.64.11.1".parse().unwrap(), 8000);
        assert_eq!(
            up,
            "\t\tip daddr 100.64.11.1 tcp dport 8000 tcp flags & (syn | ack) == syn ip dscp set 0x05 meta nftrace set 1\n"
        );
        let t = upstream_table_text(&p, None, &up);
        let out = t.split("chain probe-out").nth(1).unwrap();
        assert!(
            out.find("ip dscp set").unwrap() < out.find("ip dscp 0x05").unwrap(),
            "{t}"
        );
        let pre = t
            .split("chain probe-pre")
            .nth(1)
            .unwrap()
            .split("chain probe-out")
            .next()
            .unwrap();
        assert!(
            !pre.contains("dscp set"),
            "only the output chain rewrites: {t}"
        );
        assert_eq!(table_text(&p, None), upstream_table_text(&p, None, ""));
        let two = upstream_rules(&[
            "11.10.0.2:8000".parse().unwrap(),
            "11.11.0.2:8000".parse().unwrap(),
        ]);
        assert_eq!(two.lines().count(), 2, "{two}");
        assert!(two.contains("ip daddr 11.11.0.2 tcp dport 8000"), "{two}");
    }

    #[test]
    fn protocols_by_name() {
        assert_eq!(Proto::parse("TCP"), Some(Proto::Tcp));
        assert_eq!(Proto::parse("icmp"), Some(Proto::Icmp));
        assert_eq!(Proto::parse("sctp"), None);
    }
}
