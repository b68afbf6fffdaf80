//! `nft monitor trace` text, one line at a time. nft 1.0.6 prints the same text with `-j`,
//! so the text is what is parsed. A line looks like
//! `trace id f001f3b8 ip kube-proxy services rule ip daddr 100.64.10.1 jump svc-x (verdict jump svc-x)`.

use std::collections::BTreeMap;

/// One line of `nft monitor trace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    pub id: String,
    pub family: String,
    pub table: String,
    pub chain: String,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The packet as the chain saw it (printed once per base chain it enters).
    Packet(Packet),
    /// A rule that matched, and its verdict (`continue`, `accept`, `jump services`, `drop`...).
    Rule { rule: String, verdict: String },
    /// The chain's policy applied (`accept` or `drop`).
    Policy(String),
}

/// The `packet:` part: interfaces and header fields by name (`ip saddr`, `tcp dport`, `@th,64,96`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packet {
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub fields: BTreeMap<String, String>,
}

impl Packet {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    pub fn saddr(&self) -> Option<&str> {
        self.get("ip saddr")
    }

    pub fn daddr(&self) -> Option<&str> {
        self.get("ip daddr")
    }

    /// The transport protocol nft decoded (`tcp`, `udp`, `icmp`), if any.
    pub fn l4(&self) -> Option<&'static str> {
        ["tcp", "udp", "icmp"]
            .into_iter()
            .find(|p| self.fields.keys().any(|k| k.starts_with(&format!("{p} "))))
    }

    pub fn sport(&self) -> Option<u16> {
        let p = self.l4()?;
        self.get(&format!("{p} sport"))?.parse().ok()
    }

    pub fn dport(&self) -> Option<u16> {
        let p = self.l4()?;
        self.get(&format!("{p} dport"))?.parse().ok()
    }

    /// `11.10.0.2:41000 → 100.64.10.1:80 tcp` or `11.10.0.2 → 11.11.0.2 icmp id 7`.
    pub fn summary(&self) -> String {
        let s = self.saddr().unwrap_or("?");
        let d = self.daddr().unwrap_or("?");
        match (self.l4(), self.sport(), self.dport()) {
            (Some(p), Some(sp), Some(dp)) => format!("{s}:{sp} → {d}:{dp} {p}"),
            (Some("icmp"), _, _) => {
                let ty = self.get("icmp type").unwrap_or("icmp");
                match self.get("icmp id") {
                    Some(id) => format!("{s} → {d} icmp {ty} id {id}"),
                    None => format!("{s} → {d} icmp {ty}"),
                }
            }
            (Some(p), _, _) => format!("{s} → {d} {p}"),
            _ => format!("{s} → {d}"),
        }
    }

    /// The bytes nft could not decode after the transport header it knows, from the
    /// `@th,OFF,LEN 0xHEX` field: for a VXLAN packet (UDP), the VXLAN header itself.
    pub fn raw_after_l4(&self) -> Option<Vec<u8>> {
        let (k, v) = self.fields.iter().find(|(k, _)| k.starts_with("@th,"))?;
        // nft prints the value as a number: leading zero digits are dropped, so pad it
        // back to the field's length in bits (`@th,64,96`: 96 bits, 24 digits).
        let bits: usize = k.rsplit(',').next()?.parse().ok()?;
        let digits = v.strip_prefix("0x")?;
        hex_bytes(&format!("{digits:0>width$}", width = bits / 4))
    }
}

fn hex_bytes(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
        .collect()
}

/// Header words nft prints as `<proto> <field> <value>`.
const PROTOS: &[&str] = &[
    "ether", "ip", "ip6", "tcp", "udp", "icmp", "vlan", "arp", "meta", "ct", "sctp",
];

/// Parses one line; None for anything that is not a trace line (nft's own notices).
pub fn parse_line(line: &str) -> Option<TraceLine> {
    let rest = line.trim().strip_prefix("trace id ")?;
    let mut it = rest.splitn(5, ' ');
    let id = it.next()?.to_string();
    let family = it.next()?.to_string();
    let table = it.next()?.to_string();
    let chain = it.next()?.to_string();
    let body = it.next()?.trim();
    let event = if let Some(p) = body.strip_prefix("packet:") {
        Event::Packet(parse_packet(p))
    } else if let Some(r) = body.strip_prefix("rule ") {
        let (rule, verdict) = match r.rfind(" (verdict ") {
            Some(i) => (
                r[..i].trim().to_string(),
                r[i + " (verdict ".len()..]
                    .trim_end()
                    .trim_end_matches(')')
                    .to_string(),
            ),
            None => (r.trim().to_string(), String::new()),
        };
        Event::Rule { rule, verdict }
    } else if let Some(p) = body.strip_prefix("policy ") {
        Event::Policy(p.trim().to_string())
    } else {
        return None;
    };
    Some(TraceLine {
        id,
        family,
        table,
        chain,
        event,
    })
}

fn parse_packet(text: &str) -> Packet {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut p = Packet::default();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let next = words.get(i + 1).map(|s| s.trim_matches('"').to_string());
        if (w == "iif" || w == "oif") && next.is_some() {
            if w == "iif" {
                p.iif = next;
            } else {
                p.oif = next;
            }
            i += 2;
        } else if w.starts_with("@th,") || w.starts_with("@nh,") || w.starts_with("@ll,") {
            if let Some(v) = next {
                p.fields.insert(w.to_string(), v);
            }
            i += 2;
        } else if PROTOS.contains(&w) && i + 2 < words.len() + 1 && words.get(i + 2).is_some() {
            let key = format!("{w} {}", words[i + 1]);
            let mut j = i + 2;
            // `tcp flags == syn`: the value follows the operator.
            if words[j] == "==" && j + 1 < words.len() {
                j += 1;
            }
            p.fields
                .insert(key, words[j].trim_matches('"').trim_end_matches(',').into());
            i = j + 1;
        } else {
            i += 1;
        }
    }
    p
}

/// Parses every trace line of a monitor's output, skipping anything else.
pub fn parse(text: &str) -> Vec<TraceLine> {
    text.lines().filter_map(parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("samples/nft-trace-sample.txt");

    #[test]
    fn parses_the_recorded_sample() {
        let lines = parse(SAMPLE);
        assert_eq!(lines.len(), 8);
        let Event::Packet(p) = &lines[0].event else {
            panic!("first line is a packet: {:?}", lines[0]);
        };
        assert_eq!(lines[0].table, "knetsim-trace");
        assert_eq!(lines[0].chain, "pre");
        assert_eq!(p.iif.as_deref(), Some("veth1"));
        assert_eq!(p.saddr(), Some("192.0.2.1"));
        assert_eq!(p.daddr(), Some("100.64.10.1"));
        assert_eq!(p.l4(), Some("icmp"));
        assert_eq!(p.get("icmp id"), Some("546"));
        assert_eq!(p.get("icmp type"), Some("echo-request"));
        assert_eq!(
            p.summary(),
            "192.0.2.1 → 100.64.10.1 icmp echo-request id 546"
        );
        assert_eq!(
            lines[2].event,
            Event::Policy("accept".into()),
            "policy line"
        );
        assert_eq!(
            lines[7].event,
            Event::Rule {
                rule: "meta l4proto icmp dnat to 192.0.2.2".into(),
                verdict: "accept".into()
            }
        );
        assert_eq!(lines[6].chain, "svc-x");
        assert!(matches!(&lines[6].event, Event::Rule { verdict, .. } if verdict == "goto ep-1"));
    }

    #[test]
    fn tcp_ports_and_raw_bytes() {
        // Recorded: nft drops the leading zero of the VXLAN flags byte (0x08).
        let rec = parse_line("trace id c4f2ede2 ip knetsim-trace probe-pre packet: iif \"eth0\" ip saddr 10.0.0.2 \
             ip daddr 10.0.0.3 udp sport 35987 udp dport 8472 udp length 77 @th,64,96 0x8000000000064006ebc8f8c ")
        .unwrap();
        let Event::Packet(rp) = rec.event else {
            panic!()
        };
        assert_eq!(
            rp.raw_after_l4().unwrap(),
            vec![8, 0, 0, 0, 0, 0, 0x64, 0, 0x6e, 0xbc, 0x8f, 0x8c]
        );
        let l = parse_line(
            "trace id 1 ip knetsim-trace out packet: oif \"eth0\" ip saddr 10.0.0.3 ip daddr 10.0.0.4 \
             ip protocol udp udp sport 4242 udp dport 8472 udp length 80 @th,64,96 0x080000000000640012345678",
        )
        .unwrap();
        let Event::Packet(p) = l.event else { panic!() };
        assert_eq!(p.oif.as_deref(), Some("eth0"));
        assert_eq!(p.l4(), Some("udp"));
        assert_eq!((p.sport(), p.dport()), (Some(4242), Some(8472)));
        assert_eq!(
            p.raw_after_l4().unwrap(),
            vec![8, 0, 0, 0, 0, 0, 0x64, 0, 0x12, 0x34, 0x56, 0x78]
        );
        assert_eq!(p.summary(), "10.0.0.3:4242 → 10.0.0.4:8472 udp");
    }

    #[test]
    fn not_a_trace_line() {
        assert!(parse_line("Error: something").is_none());
        assert!(parse_line("trace id 1 ip t c unknown stuff").is_none());
    }
}
