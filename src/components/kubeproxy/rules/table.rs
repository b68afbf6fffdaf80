//! kube-proxy's table as typed data: maps, their keys and verdicts, rules made of matches,
//! an optional counter, one statement and a comment. The same values are rendered to the
//! `nft -f` text a learner reads ([`std::fmt::Display`]) and read back from
//! `nft -j list table` ([`super::listing::Listing`]), so what the kernel holds compares
//! with what should be there. The fixed part of the table is in [`super::skeleton`].

use crate::components::kubeproxy::model::Protocol;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

pub const TABLE: &str = "kube-proxy";
/// The mark of packets to masquerade, as upstream's default `--masquerade-bit 14`.
pub const MASQ_MARK: u32 = 0x4000;
/// The set of every ClusterIP (traffic to one of their ports no Service has is rejected).
pub const SET_CLUSTER_IPS: &str = "cluster-ips";

/// What a verdict map is looked up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selector {
    /// `ip daddr`
    Daddr,
    /// `ip daddr . meta l4proto . th dport`
    DaddrProtoPort,
    /// `meta l4proto . th dport`
    ProtoPort,
}

impl Selector {
    fn text(self) -> &'static str {
        match self {
            Selector::Daddr => "ip daddr",
            Selector::DaddrProtoPort => "ip daddr . meta l4proto . th dport",
            Selector::ProtoPort => "meta l4proto . th dport",
        }
    }

    fn key_type(self) -> &'static str {
        match self {
            Selector::Daddr => "ipv4_addr",
            Selector::DaddrProtoPort => "ipv4_addr . inet_proto . inet_service",
            Selector::ProtoPort => "inet_proto . inet_service",
        }
    }

    /// From nft's JSON of the lookup key.
    fn from_json(v: &Value) -> Option<Selector> {
        let field = |v: &Value| -> Option<&'static str> {
            if let Some(p) = v.get("payload") {
                return match (p.get("protocol")?.as_str()?, p.get("field")?.as_str()?) {
                    ("ip", "daddr") => Some("daddr"),
                    ("th", "dport") => Some("dport"),
                    _ => None,
                };
            }
            (v.get("meta")?.get("key")?.as_str()? == "l4proto").then_some("l4proto")
        };
        match v.get("concat").and_then(Value::as_array) {
            None => (field(v)? == "daddr").then_some(Selector::Daddr),
            Some(parts) => {
                let parts: Option<Vec<_>> = parts.iter().map(field).collect();
                match parts?.as_slice() {
                    ["daddr", "l4proto", "dport"] => Some(Selector::DaddrProtoPort),
                    ["l4proto", "dport"] => Some(Selector::ProtoPort),
                    _ => None,
                }
            }
        }
    }
}

/// The verdict maps of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapName {
    ServiceIps,
    ServiceNodeports,
    NoEndpointServices,
    NoEndpointNodeports,
    StaticVips,
}

impl MapName {
    /// Every map, in creation order.
    pub const ALL: [MapName; 5] = [
        MapName::ServiceIps,
        MapName::ServiceNodeports,
        MapName::NoEndpointServices,
        MapName::NoEndpointNodeports,
        MapName::StaticVips,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MapName::ServiceIps => "service-ips",
            MapName::ServiceNodeports => "service-nodeports",
            MapName::NoEndpointServices => "no-endpoint-services",
            MapName::NoEndpointNodeports => "no-endpoint-nodeports",
            MapName::StaticVips => "static-vips",
        }
    }

    pub fn from_name(name: &str) -> Option<MapName> {
        MapName::ALL.into_iter().find(|m| m.name() == name)
    }

    fn selector(self) -> Selector {
        match self {
            MapName::ServiceIps | MapName::NoEndpointServices => Selector::DaddrProtoPort,
            MapName::ServiceNodeports | MapName::NoEndpointNodeports => Selector::ProtoPort,
            MapName::StaticVips => Selector::Daddr,
        }
    }

    pub fn key_type(self) -> &'static str {
        self.selector().key_type()
    }

    pub fn comment(self) -> &'static str {
        match self {
            MapName::ServiceIps => "ClusterIP traffic",
            MapName::ServiceNodeports => "NodePort traffic",
            MapName::NoEndpointServices => "vmap to reject packets to services with no endpoints",
            MapName::NoEndpointNodeports => {
                "vmap to reject packets to service nodeports with no endpoints"
            }
            MapName::StaticVips => "knetsim: the original simulator's all-protocol VIPs",
        }
    }
}

impl fmt::Display for MapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The key of a map element (`100.64.0.10 . tcp . 80`, `tcp . 30080`, `100.64.10.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Addr(Ipv4Addr),
    ProtoPort(Protocol, u16),
    AddrProtoPort(Ipv4Addr, Protocol, u16),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Addr(a) => write!(f, "{a}"),
            Key::ProtoPort(p, port) => write!(f, "{p} . {port}"),
            Key::AddrProtoPort(a, p, port) => write!(f, "{a} . {p} . {port}"),
        }
    }
}

impl Key {
    /// Reads a set or map key from nft's JSON.
    pub fn from_json(v: &Value) -> Option<Key> {
        let addr = |v: &Value| v.as_str()?.parse::<Ipv4Addr>().ok();
        let proto = |v: &Value| Protocol::parse(v.as_str()?).ok();
        let port = |v: &Value| u16::try_from(v.as_u64()?).ok();
        if let Some(e) = v.get("elem") {
            return Key::from_json(e.get("val").unwrap_or(e));
        }
        match v.get("concat").and_then(Value::as_array).map(Vec::as_slice) {
            None => addr(v).map(Key::Addr),
            Some([p, n]) => Some(Key::ProtoPort(proto(p)?, port(n)?)),
            Some([a, p, n]) => Some(Key::AddrProtoPort(addr(a)?, proto(p)?, port(n)?)),
            Some(_) => None,
        }
    }
}

/// Where a rule or a map element sends a packet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Return,
    Reject,
    Jump(String),
    Goto(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Return => f.write_str("return"),
            Verdict::Reject => f.write_str("reject"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

impl Verdict {
    pub fn target(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            Verdict::Return | Verdict::Reject => None,
        }
    }

    /// Reads a verdict from nft's JSON (a map element's value, a rule's last expression).
    pub fn from_json(v: &Value) -> Option<Verdict> {
        let target = |k: &str| Some(v.get(k)?.get("target")?.as_str()?.to_string());
        if let Some(t) = target("goto") {
            Some(Verdict::Goto(t))
        } else if let Some(t) = target("jump") {
            Some(Verdict::Jump(t))
        } else if v.get("return").is_some() {
            Some(Verdict::Return)
        } else if v.get("reject").is_some() {
            // nft lists a plain `reject` with the ICMP type it defaults to.
            Some(Verdict::Reject)
        } else {
            None
        }
    }
}

/// A condition at the start of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `ip saddr IP`
    Saddr(Ipv4Addr),
    /// `meta l4proto tcp`
    L4Proto(Protocol),
    /// `ct state new`
    CtStateNew,
    /// `ip daddr @cluster-ips`
    ClusterIp,
    /// `fib daddr type local`
    LocalDaddr,
    /// `ip daddr != 127.0.0.0/8`
    NotLoopback,
    /// `mark and MARK == 0`
    MarkClear(u32),
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Saddr(a) => write!(f, "ip saddr {a}"),
            Match::L4Proto(p) => write!(f, "meta l4proto {p}"),
            Match::CtStateNew => f.write_str("ct state new"),
            Match::ClusterIp => write!(f, "ip daddr @{SET_CLUSTER_IPS}"),
            Match::LocalDaddr => f.write_str("fib daddr type local"),
            Match::NotLoopback => f.write_str("ip daddr != 127.0.0.0/8"),
            Match::MarkClear(m) => write!(f, "mark and {m:#x} == 0"),
        }
    }
}

impl Match {
    fn from_json(m: &Value) -> Option<Match> {
        let op = m.get("op")?.as_str()?;
        let left = m.get("left")?;
        let right = m.get("right")?;
        let payload = left
            .get("payload")
            .and_then(|p| Some((p.get("protocol")?.as_str()?, p.get("field")?.as_str()?)));
        let meta = left.get("meta").and_then(|x| x.get("key")?.as_str());
        Some(match (op, payload, meta) {
            ("==", Some(("ip", "saddr")), _) => Match::Saddr(right.as_str()?.parse().ok()?),
            ("==", Some(("ip", "daddr")), _) if right.as_str()? == "@cluster-ips" => {
                Match::ClusterIp
            }
            ("!=", Some(("ip", "daddr")), _) => {
                let p = right.get("prefix")?;
                let loopback = p.get("addr")?.as_str()? == "127.0.0.0" && p.get("len")? == 8;
                loopback.then_some(Match::NotLoopback)?
            }
            ("==", None, Some("l4proto")) => Match::L4Proto(Protocol::parse(right.as_str()?).ok()?),
            (_, None, None)
                if left.get("ct").and_then(|c| c.get("key")) == Some(&"state".into()) =>
            {
                let new = right.as_str() == Some("new") || right.get(0) == Some(&"new".into());
                new.then_some(Match::CtStateNew)?
            }
            ("==", None, None) if left.get("fib").is_some() => {
                let fib = left.get("fib")?;
                let daddr = fib.get("flags")?.as_array()? == &[Value::from("daddr")]
                    || fib.get("flags")? == "daddr";
                (daddr && fib.get("result")? == "type" && right == "local")
                    .then_some(Match::LocalDaddr)?
            }
            ("==", None, None) => {
                let and = left.get("&")?.as_array()?;
                let is_mark = and.first()?.get("meta")?.get("key")? == "mark";
                (is_mark && right == 0)
                    .then_some(Match::MarkClear(u32::try_from(and.get(1)?.as_u64()?).ok()?))?
            }
            _ => return None,
        })
    }
}

/// `numgen random mod N vmap { 0 : goto targets[0], ... }`: one endpoint chain picked at
/// random per new flow. A Service with one endpoint has none (it goes to its endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancer {
    pub targets: Vec<String>,
}

impl fmt::Display for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "numgen random mod {} vmap {{ ", self.targets.len())?;
        for (i, t) in self.targets.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{i} : goto {t}")?;
        }
        f.write_str(" }")
    }
}

impl Balancer {
    fn from_json(vmap: &Value) -> Option<Balancer> {
        let ng = vmap.get("key")?.get("numgen")?;
        let n = usize::try_from(ng.get("mod")?.as_u64()?).ok()?;
        let random = ng.get("mode")? == "random" && ng.get("offset").is_none_or(|o| o == 0);
        let elems = vmap.get("data")?.get("set")?.as_array()?;
        let mut by_index = BTreeMap::new();
        for e in elems {
            let [i, v] = e.as_array()?.as_slice() else {
                return None;
            };
            let Verdict::Goto(t) = Verdict::from_json(v)? else {
                return None;
            };
            by_index.insert(usize::try_from(i.as_u64()?).ok()?, t);
        }
        let complete = random && by_index.len() == n && by_index.keys().copied().eq(0..n);
        complete.then(|| Balancer {
            targets: by_index.into_values().collect(),
        })
    }
}

/// What a rule does once its matches hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    Verdict(Verdict),
    /// `dnat to ADDR[:PORT]`
    Dnat {
        addr: Ipv4Addr,
        port: Option<u16>,
    },
    Balance(Balancer),
    /// `<the map's key> vmap @MAP`
    Dispatch(MapName),
    /// `mark set mark or MARK`
    MarkOr(u32),
    /// `mark set mark xor MARK`
    MarkXor(u32),
    /// `masquerade fully-random`
    MasqueradeFullyRandom,
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Statement::Verdict(v) => write!(f, "{v}"),
            Statement::Dnat { addr, port: None } => write!(f, "dnat to {addr}"),
            Statement::Dnat {
                addr,
                port: Some(p),
            } => write!(f, "dnat to {addr}:{p}"),
            Statement::Balance(b) => write!(f, "{b}"),
            Statement::Dispatch(m) => write!(f, "{} vmap @{m}", m.selector().text()),
            Statement::MarkOr(m) => write!(f, "mark set mark or {m:#x}"),
            Statement::MarkXor(m) => write!(f, "mark set mark xor {m:#x}"),
            Statement::MasqueradeFullyRandom => f.write_str("masquerade fully-random"),
        }
    }
}

impl Statement {
    fn from_json(v: &Value) -> Option<Statement> {
        if let Some(verdict) = Verdict::from_json(v) {
            return Some(Statement::Verdict(verdict));
        }
        if let Some(d) = v.get("dnat") {
            if d.get("family").is_some_and(|f| f != "ip") {
                return None;
            }
            return Some(Statement::Dnat {
                addr: d.get("addr")?.as_str()?.parse().ok()?,
                port: match d.get("port") {
                    None => None,
                    Some(p) => Some(u16::try_from(p.as_u64()?).ok()?),
                },
            });
        }
        if let Some(vmap) = v.get("vmap") {
            if let Some(b) = Balancer::from_json(vmap) {
                return Some(Statement::Balance(b));
            }
            let map = MapName::from_name(vmap.get("data")?.as_str()?.strip_prefix('@')?)?;
            let selector = Selector::from_json(vmap.get("key")?)?;
            return (selector == map.selector()).then_some(Statement::Dispatch(map));
        }
        if let Some(m) = v.get("mangle") {
            if m.get("key")?.get("meta")?.get("key")? != "mark" {
                return None;
            }
            let value = m.get("value")?;
            let operand = |op: &str| -> Option<u32> {
                let [mark, n] = value.get(op)?.as_array()?.as_slice() else {
                    return None;
                };
                (mark.get("meta")?.get("key")? == "mark")
                    .then_some(u32::try_from(n.as_u64()?).ok()?)
            };
            return operand("|")
                .map(Statement::MarkOr)
                .or_else(|| operand("^").map(Statement::MarkXor));
        }
        if let Some(m) = v.get("masquerade") {
            let flags = m.get("flags")?;
            let fully = flags == "fully-random" || flags.get(0) == Some(&"fully-random".into());
            return fully.then_some(Statement::MasqueradeFullyRandom);
        }
        None
    }
}

/// One rule: `MATCHES [counter] STATEMENT [comment "..."]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub counter: bool,
    pub statement: Statement,
    pub comment: Option<String>,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        if self.counter {
            f.write_str("counter ")?;
        }
        write!(f, "{}", self.statement)?;
        if let Some(c) = &self.comment {
            write!(f, " comment \"{c}\"")?;
        }
        Ok(())
    }
}

impl Rule {
    pub fn new(statement: Statement) -> Rule {
        Rule {
            matches: Vec::new(),
            counter: false,
            statement,
            comment: None,
        }
    }

    pub fn verdict(v: Verdict) -> Rule {
        Rule::new(Statement::Verdict(v))
    }

    pub fn matching(mut self, m: Match) -> Rule {
        self.matches.push(m);
        self
    }

    pub fn counted(mut self) -> Rule {
        self.counter = true;
        self
    }

    /// Adds a comment, made safe for nft (see [`super::names::comment`]).
    pub fn commented(mut self, text: &str) -> Rule {
        self.comment = Some(super::names::comment(text));
        self
    }

    /// The chains this rule jumps or goes to.
    pub fn targets(&self) -> Vec<&str> {
        match &self.statement {
            Statement::Verdict(v) => v.target().into_iter().collect(),
            Statement::Balance(b) => b.targets.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// Reads one rule of nft's JSON listing (its `expr` list and `comment`), with the
    /// values of its counter. None for a rule this model cannot express.
    pub fn from_json(rule: &Value) -> Option<(Rule, Option<Counter>)> {
        let exprs = rule.get("expr")?.as_array()?;
        let (last, rest) = exprs.split_last()?;
        let mut r = Rule::new(Statement::from_json(last)?);
        let mut counter = None;
        for e in rest {
            if let Some(c) = e.get("counter") {
                if counter.is_some() {
                    return None;
                }
                counter = Some(Counter {
                    packets: c.get("packets").and_then(Value::as_u64).unwrap_or(0),
                    bytes: c.get("bytes").and_then(Value::as_u64).unwrap_or(0),
                });
            } else if counter.is_none() {
                r.matches.push(Match::from_json(e.get("match")?)?);
            } else {
                return None;
            }
        }
        r.counter = counter.is_some();
        r.comment = rule
            .get("comment")
            .and_then(Value::as_str)
            .map(str::to_string);
        Some((r, counter))
    }
}

/// A rule counter's values as the kernel reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
