//! The hop model, and how one namespace's trace lines become hops in Kubernetes terms:
//! routing decisions, the bridge, each nft chain and rule that matched (kube-proxy's chains
//! by name, the DNAT and its target), the VXLAN encapsulation and decapsulation, delivery.

use super::links::{self, Link, Vxlan};
use super::nft::{Event, Packet, TraceLine};
use super::TABLE;

/// One step of a packet's walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Where: a node (`C0w1`) or a pod (`c1@C0w1`).
    pub node: String,
    /// The device it concerns (`eth0`, `cni0`, `flannel.100`, a veth).
    pub dev: String,
    /// The kind of step: send, veth, bridge, receive, nft, dnat, snat, route, leave,
    /// encapsulate, vxlan-in, decapsulate, deliver, answer, drop, lost; through a proxy
    /// also proxy and amqp-link.
    pub what: String,
    /// The step in words, with the packet's addresses.
    pub detail: String,
}

impl Hop {
    pub fn new(node: &str, dev: &str, what: &str, detail: impl Into<String>) -> Hop {
        Hop {
            node: node.into(),
            dev: dev.into(),
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// An nft rule that only passes the packet on (a jump into a chain, a return out of
    /// one) without deciding anything: the summary view leaves these out.
    pub fn is_plumbing(&self) -> bool {
        self.what == "nft" && (self.detail.ends_with("→ return") || self.detail.contains("→ jump "))
    }
}

/// What one namespace needs to be decoded.
pub struct NodeView<'a> {
    pub node: &'a str,
    pub links: &'a [Link],
    /// The cluster's VXLAN settings (read from a worker's device), None for other backends.
    pub vxlan: Option<&'a Vxlan>,
}

/// Where the packet left a namespace (its last postrouting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub dev: String,
    pub daddr: String,
    /// Set when it left wrapped in VXLAN: the outer destination (a node's underlay IP).
    pub outer_daddr: Option<String>,
}

/// The hops in one namespace and how the packet left (or did not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeWalk {
    pub hops: Vec<Hop>,
    pub exit: Option<Exit>,
    pub delivered: bool,
    pub dropped: bool,
}

/// VXLAN's header from the bytes nft shows after the UDP header: flags, then the VNI.
pub fn vni_from_header(raw: &[u8]) -> Option<u32> {
    if raw.len() < 8 || raw[0] & 0x08 == 0 {
        return None;
    }
    Some(u32::from_be_bytes([0, raw[4], raw[5], raw[6]]))
}

/// A chain's meaning, for kube-proxy's and flannel's tables.
pub fn describe_chain(table: &str, chain: &str) -> String {
    let meaning = if let Some(rest) = chain.strip_prefix("service-") {
        // service-HASH-ns/name/proto/port
        let svc = rest.split_once('-').map_or(rest, |(_, s)| s);
        format!("the Service {svc}: picks an endpoint")
    } else if let Some(rest) = chain.strip_prefix("endpoint-") {
        let ep = rest.split_once('-').map_or(rest, |(_, s)| s);
        format!("an endpoint of {ep}")
    } else {
        match chain {
            "nat-prerouting" | "nat-output" => "kube-proxy's entry at the dstnat hook".to_string(),
            "services" => {
                "the Service map: ClusterIP . protocol . port → the Service's chain".into()
            }
            "nodeports" => "the NodePort map: a node's own address . protocol . port".into(),
            "nat-postrouting" | "masquerading" => "kube-proxy's source NAT".into(),
            "mark-for-masquerade" => "marks the packet for masquerade (0x4000)".into(),
            "filter-forward" | "filter-input" | "filter-output" => {
                "kube-proxy's filter (rejects Services without endpoints)".into()
            }
            c if c.starts_with("vip-") => "a static VIP (kp_vip_add): picks an endpoint".into(),
            _ => String::new(),
        }
    };
    if meaning.is_empty() {
        format!("table {table}, chain {chain}")
    } else {
        format!("table {table}, chain {chain} ({meaning})")
    }
}

fn is_vxlan_outer(p: &Packet, vx: Option<&Vxlan>) -> bool {
    vx.is_some_and(|v| p.l4() == Some("udp") && p.dport() == Some(v.port))
}

fn outer_text(p: &Packet, vx: &Vxlan) -> String {
    let vni = p
        .raw_after_l4()
        .and_then(|r| vni_from_header(&r))
        .map_or_else(
            || format!("VNI {} (the device's)", vx.vni),
            |v| format!("VNI {v}"),
        );
    format!(
        "outer {} → {}, UDP {} → {}, {vni}",
        p.saddr().unwrap_or("?"),
        p.daddr().unwrap_or("?"),
        p.sport().map_or("?".into(), |s| s.to_string()),
        vx.port
    )
}

/// Decodes one namespace's trace lines (in the order its monitor printed them).
pub fn decode(view: &NodeView, lines: &[TraceLine]) -> NodeWalk {
    let node = view.node;
    let mut w = NodeWalk::default();
    let mut dev = String::new();
    let mut first_saddr: Option<String> = None;
    let mut seen_entries: Vec<(String, String, String)> = Vec::new();
    for l in lines {
        if l.family != "ip" {
            continue;
        }
        if l.table != TABLE {
            if let Some(h) = decode_other(node, &dev, l) {
                if h.what == "drop" {
                    w.dropped = true;
                }
                w.hops.push(h);
            }
            continue;
        }
        let Event::Packet(p) = &l.event else { continue };
        let iif = p.iif.clone().unwrap_or_default();
        let oif = p.oif.clone().unwrap_or_default();
        let summary = p.summary();
        if l.chain == "probe-pre" || l.chain == "probe-out" {
            // A second copy of the same packet (a retransmission) walks the same way.
            let key = (l.chain.clone(), format!("{iif}{oif}"), summary.clone());
            if seen_entries.contains(&key) {
                break;
            }
            seen_entries.push(key);
        }
        match l.chain.as_str() {
            "probe-pre" => {
                dev = iif.clone();
                if let (true, Some(vx)) = (is_vxlan_outer(p, view.vxlan), view.vxlan) {
                    w.hops.push(Hop::new(
                        node,
                        &iif,
                        "vxlan-in",
                        format!(
                            "a VXLAN packet arrives from the underlay on {iif}: {}",
                            outer_text(p, vx)
                        ),
                    ));
                } else if view.vxlan.is_some_and(|v| v.dev == iif) {
                    w.hops.push(Hop::new(
                        node,
                        &iif,
                        "decapsulate",
                        format!("{iif} strips the outer headers: inside is {summary}"),
                    ));
                } else if links::is_bridge(view.links, &iif) {
                    w.hops.push(Hop::new(
                        node,
                        &iif,
                        "bridge",
                        format!(
                            "the bridge {iif} takes it from the pod's veth; addressed to the gateway's MAC, it goes up to {node}'s IP stack: {summary}"
                        ),
                    ));
                } else {
                    w.hops.push(Hop::new(
                        node,
                        &iif,
                        "receive",
                        format!("arrives on {iif}: {summary}"),
                    ));
                }
                if !is_vxlan_outer(p, view.vxlan) {
                    first_saddr.get_or_insert_with(|| p.saddr().unwrap_or_default().to_string());
                }
            }
            "probe-out" => {
                dev = oif.clone();
                if let (true, Some(vx)) = (is_vxlan_outer(p, view.vxlan), view.vxlan) {
                    w.hops.push(Hop::new(
                        node,
                        &vx.dev,
                        "encapsulate",
                        format!(
                            "{} wraps it in VXLAN (the inner frame goes to the remote VTEP's MAC): {}; routed out of {oif}",
                            vx.dev,
                            outer_text(p, vx)
                        ),
                    ));
                } else {
                    w.hops.push(Hop::new(
                        node,
                        &oif,
                        "send",
                        format!("{node} sends {summary}; its routing table picks {oif}"),
                    ));
                    first_saddr.get_or_insert_with(|| p.saddr().unwrap_or_default().to_string());
                }
            }
            "probe-fwd" => {
                dev = oif.clone();
                let why = if view.vxlan.is_some_and(|v| v.dev == oif) {
                    format!(" (the destination's pod subnet is routed via {oif}, the overlay)")
                } else if links::is_bridge(view.links, &oif) {
                    format!(" (this node's own pod subnet, on the bridge {oif})")
                } else {
                    String::new()
                };
                w.hops.push(Hop::new(
                    node,
                    &oif,
                    "route",
                    format!("routing: forwarded from {iif} to {oif}{why}: {summary}"),
                ));
            }
            // The VXLAN packet itself is for the node's VXLAN socket: its arrival is shown
            // by the vxlan-in hop, and what is inside goes on.
            "probe-in" if is_vxlan_outer(p, view.vxlan) => {}
            "probe-in" => {
                w.delivered = true;
                w.hops.push(Hop::new(
                    node,
                    &iif,
                    "deliver",
                    format!("delivered to {node} itself (input hook): {summary}"),
                ));
            }
            "probe-post" => {
                dev = oif.clone();
                let outer = is_vxlan_outer(p, view.vxlan);
                let mut detail = format!("leaves through {oif}: {summary}");
                if let (Some(first), Some(now)) = (first_saddr.as_deref(), p.saddr()) {
                    if !outer && !first.is_empty() && first != now {
                        detail.push_str(&format!(" (source rewritten from {first}: masquerade)"));
                    }
                }
                if links::is_bridge(view.links, &oif) {
                    detail.push_str(&format!(" ({oif} bridges it to the pod's veth)"));
                }
                // The outer packet's postrouting is shown by its encapsulate hop.
                if !outer {
                    w.hops.push(Hop::new(node, &oif, "leave", detail));
                }
                let daddr = p.daddr().unwrap_or_default().to_string();
                w.exit = Some(match (outer, w.exit.take()) {
                    (true, Some(inner)) => Exit {
                        outer_daddr: Some(daddr),
                        ..inner
                    },
                    _ => Exit {
                        dev: oif,
                        daddr,
                        outer_daddr: None,
                    },
                });
            }
            _ => {}
        }
    }
    w
}

/// A rule or policy line of another table (kube-proxy's, flannel's): one hop, or None for
/// lines that say nothing (policy accept, packet lines).
fn decode_other(node: &str, dev: &str, l: &TraceLine) -> Option<Hop> {
    let at = describe_chain(&l.table, &l.chain);
    match &l.event {
        Event::Rule { rule, verdict } => {
            let v = verdict.split_whitespace().next().unwrap_or("");
            if v == "drop" || v == "reject" || rule.contains(" reject") {
                return Some(Hop::new(
                    node,
                    dev,
                    "drop",
                    format!("{at}: `{rule}` → {verdict}: the packet is dropped here"),
                ));
            }
            if let Some(i) = rule.find("dnat to ") {
                let target = rule[i + 8..].split_whitespace().next().unwrap_or("?");
                return Some(Hop::new(
                    node,
                    dev,
                    "dnat",
                    format!("{at}: DNAT to {target} — the destination is rewritten to the chosen endpoint (`{rule}`)"),
                ));
            }
            let words: Vec<&str> = rule.split_whitespace().collect();
            if words.contains(&"masquerade") || words.contains(&"snat") {
                return Some(Hop::new(
                    node,
                    dev,
                    "snat",
                    format!("{at}: `{rule}` → {verdict} (source NAT)"),
                ));
            }
            Some(Hop::new(
                node,
                dev,
                "nft",
                format!("{at}: `{rule}` → {verdict}"),
            ))
        }
        Event::Policy(p) if p == "drop" => Some(Hop::new(
            node,
            dev,
            "drop",
            format!("{at}: policy drop: no rule accepted it, so it is dropped here"),
        )),
        _ => None,
    }
}

/// The likely cause when the packet was last seen in `last` and went no further.
pub fn likely_cause(node: &str, last: &NodeWalk, vxlan: Option<&Vxlan>) -> String {
    let Some(hop) = last.hops.last() else {
        return format!(
            "the probe never showed up in {node}'s hooks: has it a route (`ip route`)?"
        );
    };
    match (hop.what.as_str(), &last.exit) {
        ("encapsulate", Some(Exit { outer_daddr: Some(d), .. })) => format!(
            "the VXLAN packet left {node} for {d}, but no node on the path saw it arrive: is {d} up and on the underlay, and is its UDP port the same?"
        ),
        ("leave", Some(e)) if vxlan.is_some_and(|v| v.dev == e.dev) => {
            let dev = &e.dev;
            format!(
                "it left through {dev} but was never wrapped: {dev} has no neighbour entry for the next hop \
                 (`ip neigh show dev {dev}`) or no FDB entry for the remote VTEP (`bridge fdb show dev {dev}`); \
                 the flannel agent writes both from the remote node's lease"
            )
        }
        ("leave", Some(e)) => format!(
            "it left {node} through {} for {}, and nothing on the path received it: is that address there (and its interface up)?",
            e.dev, e.daddr
        ),
        ("receive" | "bridge" | "decapsulate" | "vxlan-in", _) | ("nft" | "dnat", None) => format!(
            "routing on {node} found no way on: no route to the destination, or forwarding is off \
             (`sysctl net.ipv4.ip_forward`), or reverse-path filtering dropped it"
        ),
        ("route", _) => format!("it was routed on {node} but never left it (a filter after forwarding?)"),
        ("send", _) => format!("{node} sent it but it never left: no route (`ip route get`)?"),
        _ => format!("last seen at {} on {node}", hop.what),
    }
}

#[cfg(test)]
mod tests {
    use super::super::nft::parse;
    use super::*;

    fn vx() -> Vxlan {
        Vxlan {
            dev: "flannel.100".into(),
            vni: 100,
            port: 8472,
        }
    }

    fn worker_links() -> Vec<Link> {
        links::parse(
            "4: flannel.100: <UP> mtu 1450 \\    vxlan id 100 local 10.0.0.3 dev eth0 dstport 8472\n\
             5: cni0: <UP> mtu 1450 \\    bridge forward_delay 1500\n",
        )
    }

    // Shaped like a real capture on the client's worker for pod → ClusterIP across workers.
    const CLIENT_WORKER: &str = r#"trace id 1 ip knetsim-trace probe-pre packet: iif "cni0" ether saddr 2a:25:b3:e9:da:2a ether daddr 32:7c:8f:3a:2a:70 ip saddr 11.10.0.2 ip daddr 100.64.0.1 ip protocol tcp tcp sport 61234 tcp dport 80 tcp flags == syn
trace id 1 ip knetsim-trace probe-pre rule tcp sport 61234 meta nftrace set 1 (verdict continue)
trace id 1 ip knetsim-trace probe-pre policy accept
trace id 1 ip kube-proxy nat-prerouting packet: iif "cni0" ip saddr 11.10.0.2 ip daddr 100.64.0.1 tcp sport 61234 tcp dport 80
trace id 1 ip kube-proxy nat-prerouting rule jump services (verdict jump services)
trace id 1 ip kube-proxy services rule ip daddr . meta l4proto . th dport vmap @service-ips (verdict goto service-ABCD1234-default/web/tcp/80)
trace id 1 ip kube-proxy service-ABCD1234-default/web/tcp/80 rule numgen random mod 1 vmap { 0 : goto endpoint-EFGH5678-default/web/tcp/80__11.11.0.2/8000 } (verdict goto endpoint-EFGH5678-default/web/tcp/80__11.11.0.2/8000)
trace id 1 ip kube-proxy endpoint-EFGH5678-default/web/tcp/80__11.11.0.2/8000 rule meta l4proto tcp dnat to 11.11.0.2:8000 (verdict accept)
trace id 1 ip knetsim-trace probe-fwd packet: iif "cni0" oif "flannel.100" ip saddr 11.10.0.2 ip daddr 11.11.0.2 tcp sport 61234 tcp dport 8000
trace id 1 ip knetsim-trace probe-fwd policy accept
trace id 1 ip knetsim-trace probe-post packet: oif "flannel.100" ip saddr 11.10.0.2 ip daddr 11.11.0.2 tcp sport 61234 tcp dport 8000
trace id 1 ip knetsim-trace probe-post policy accept
trace id 2 ip knetsim-trace probe-out packet: oif "eth0" ip saddr 10.0.0.3 ip daddr 10.0.0.4 ip protocol udp udp sport 40000 udp dport 8472 udp length 80 @th,64,96 0x08000000000064000a0b0c0d
trace id 2 ip knetsim-trace probe-out policy accept
trace id 2 ip knetsim-trace probe-post packet: oif "eth0" ip saddr 10.0.0.3 ip daddr 10.0.0.4 udp sport 40000 udp dport 8472 @th,64,96 0x08000000000064000a0b0c0d
trace id 2 ip knetsim-trace probe-post policy accept
"#;

    #[test]
    fn client_worker_of_a_service_probe() {
        let links = worker_links();
        let v = vx();
        let view = NodeView {
            node: "C0w1",
            links: &links,
            vxlan: Some(&v),
        };
        let w = decode(&view, &parse(CLIENT_WORKER));
        let whats: Vec<&str> = w.hops.iter().map(|h| h.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "bridge",
                "nft",
                "nft",
                "nft",
                "dnat",
                "route",
                "leave",
                "encapsulate"
            ]
        );
        assert!(w.hops[0].detail.contains("cni0"));
        assert!(w.hops[3].detail.contains("the Service default/web/tcp/80"));
        assert!(w.hops[4].detail.contains("DNAT to 11.11.0.2:8000"));
        assert_eq!(w.hops[5].dev, "flannel.100");
        let enc = &w.hops[7].detail;
        assert!(
            enc.contains("outer 10.0.0.3 → 10.0.0.4, UDP 40000 → 8472, VNI 100"),
            "{enc}"
        );
        assert_eq!(
            w.exit,
            Some(Exit {
                dev: "flannel.100".into(),
                daddr: "11.11.0.2".into(),
                outer_daddr: Some("10.0.0.4".into())
            })
        );
        assert!(!w.delivered && !w.dropped);
    }

    #[test]
    fn far_worker_decapsulates() {
        let text = r#"trace id 3 ip knetsim-trace probe-pre packet: iif "eth0" ip saddr 10.0.0.3 ip daddr 10.0.0.4 udp sport 40000 udp dport 8472 @th,64,96 0x08000000000065000a0b0c0d
trace id 3 ip knetsim-trace probe-in packet: iif "eth0" ip saddr 10.0.0.3 ip daddr 10.0.0.4 udp sport 40000 udp dport 8472
trace id 4 ip knetsim-trace probe-pre packet: iif "flannel.100" ip saddr 11.10.0.2 ip daddr 11.11.0.2 tcp sport 61234 tcp dport 8000
trace id 4 ip knetsim-trace probe-fwd packet: iif "flannel.100" oif "cni0" ip saddr 11.10.0.2 ip daddr 11.11.0.2 tcp sport 61234 tcp dport 8000
trace id 4 ip knetsim-trace probe-post packet: oif "cni0" ip saddr 11.10.0.2 ip daddr 11.11.0.2 tcp sport 61234 tcp dport 8000
"#;
        let links = worker_links();
        let v = vx();
        let view = NodeView {
            node: "C0w2",
            links: &links,
            vxlan: Some(&v),
        };
        let w = decode(&view, &parse(text));
        let whats: Vec<&str> = w.hops.iter().map(|h| h.what.as_str()).collect();
        assert_eq!(whats, ["vxlan-in", "decapsulate", "route", "leave"]);
        assert!(
            !w.delivered,
            "the VXLAN packet reaching the node is not the probe delivered"
        );
        // The VNI comes from the header on the wire (0x65 here), not from the device.
        assert!(w.hops[0].detail.contains("VNI 101"), "{}", w.hops[0].detail);
        assert_eq!(w.exit.as_ref().unwrap().dev, "cni0");
        assert_eq!(w.exit.as_ref().unwrap().outer_daddr, None);
    }

    #[test]
    fn a_drop_verdict_ends_the_walk_with_its_rule() {
        let text = r#"trace id 5 ip knetsim-trace probe-pre packet: iif "cni0" ip saddr 11.10.0.2 ip daddr 100.64.0.9 tcp sport 61000 tcp dport 80
trace id 5 ip kube-proxy filter-forward rule ip daddr . meta l4proto . th dport vmap @no-endpoint-services (verdict goto reject-chain)
trace id 5 ip kube-proxy reject-chain rule reject (verdict drop)
"#;
        let view = NodeView {
            node: "C0w1",
            links: &[],
            vxlan: None,
        };
        let w = decode(&view, &parse(text));
        assert!(w.dropped);
        assert_eq!(w.hops.last().unwrap().what, "drop");
        assert!(w.hops.last().unwrap().detail.contains("reject-chain"));
    }

    #[test]
    fn a_retransmission_is_not_walked_twice() {
        let one = "trace id 6 ip knetsim-trace probe-out packet: oif \"eth0\" ip saddr 11.10.0.2 ip daddr 11.11.0.9 tcp sport 61000 tcp dport 80\n";
        let view = NodeView {
            node: "c1@C0w1",
            links: &[],
            vxlan: None,
        };
        let w = decode(&view, &parse(&format!("{one}{one}")));
        assert_eq!(w.hops.len(), 1);
        assert_eq!(w.hops[0].what, "send");
    }

    #[test]
    fn causes_name_the_place_and_the_tool() {
        let v = vx();
        let mut w = NodeWalk::default();
        w.hops.push(Hop::new("C0w1", "flannel.100", "leave", "x"));
        w.exit = Some(Exit {
            dev: "flannel.100".into(),
            daddr: "11.11.0.2".into(),
            outer_daddr: None,
        });
        let c = likely_cause("C0w1", &w, Some(&v));
        assert!(c.contains("bridge fdb show dev flannel.100"), "{c}");
        let mut w = NodeWalk::default();
        w.hops.push(Hop::new("C0w2", "eth0", "receive", "x"));
        assert!(likely_cause("C0w2", &w, None).contains("ip_forward"));
        assert!(likely_cause("c1", &NodeWalk::default(), None).contains("never showed up"));
    }

    #[test]
    fn vni_needs_the_valid_flag() {
        assert_eq!(vni_from_header(&[8, 0, 0, 0, 0, 0, 100, 0]), Some(100));
        assert_eq!(vni_from_header(&[0, 0, 0, 0, 0, 0, 100, 0]), None);
        assert_eq!(vni_from_header(&[8, 0]), None);
    }

    #[test]
    fn jumps_and_returns_are_plumbing_verdicts_are_not() {
        let nft = |d: &str| Hop::new("C0w1", "cni0", "nft", d);
        assert!(
            nft("table kube-proxy, chain nat-prerouting: `jump services` → jump services")
                .is_plumbing()
        );
        assert!(
            nft("chain masquerading: `meta mark & 0x00004000 == 0x00000000 return` → return")
                .is_plumbing()
        );
        assert!(!nft("chain services: `ip daddr . meta l4proto . th dport vmap @service-ips` → goto service-X").is_plumbing());
        assert!(!nft("chain forward: `ip saddr 11.0.0.0/8 accept` → accept").is_plumbing());
        assert!(!Hop::new("C0w1", "cni0", "dnat", "→ jump x").is_plumbing());
    }
}
