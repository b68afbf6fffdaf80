//! kube-proxy's table as typed data: maps, their keys and verdicts, rules made of matches,
//! an optional counter, one statement and a comment, and the fixed part of the table
//! (base chains, fixed chains, jumps). The same values are rendered to the `nft -f` text a
//! learner reads ([`std::fmt::Display`]) and read back from `nft -j list table`
//! ([`Listing::parse`]), so what the kernel holds compares with what should be there.

use crate::components::kubeproxy::model::Protocol;
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

pub const TABLE: &str = "kube-proxy";
/// The mark of packets to masquerade, as upstream's default `--masquerade-bit 14`.
pub const MASQ_MARK: u32 = 0x4000;
/// The set of every ClusterIP (traffic to one of their ports no Service has is rejected).
pub const SET_CLUSTER_IPS: &str = "cluster-ips";
const CLUSTER_IPS_COMMENT: &str = "Active ClusterIPs";
const TABLE_COMMENT: &str = "rules for kube-proxy (knetsim)";

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
    fn from_json(v: &Value) -> Option<Key> {
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

    fn from_json(v: &Value) -> Option<Verdict> {
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

/// A base chain: attached to a netfilter hook.
pub struct BaseChain {
    pub name: &'static str,
    pub kind: &'static str,
    pub hook: &'static str,
    pub priority: &'static str,
}

/// Base chains. Filter chains run before DNAT (dstnat-10). Priorities off the prerouting
/// hook are numbers (dstnat = -100) because nft 1.0.6 accepts the name `dstnat` only there.
pub const BASE_CHAINS: &[BaseChain] = &[
    base("filter-input", "filter", "input", "-110"),
    base("filter-forward", "filter", "forward", "-110"),
    base("filter-output", "filter", "output", "-110"),
    base("filter-output-post-dnat", "filter", "output", "-90"),
    base("nat-prerouting", "nat", "prerouting", "dstnat"),
    base("nat-output", "nat", "output", "-100"),
    base("nat-postrouting", "nat", "postrouting", "srcnat"),
];

const fn base(
    name: &'static str,
    kind: &'static str,
    hook: &'static str,
    priority: &'static str,
) -> BaseChain {
    BaseChain {
        name,
        kind,
        hook,
        priority,
    }
}

impl fmt::Display for BaseChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {{ type {} hook {} priority {} ; policy accept ; }}",
            self.name, self.kind, self.hook, self.priority
        )
    }
}

/// Regular chains that exist whatever the Services are, with their fixed rules.
pub fn fixed_chains() -> Vec<(&'static str, Vec<Rule>)> {
    let dispatch = |m| Rule::new(Statement::Dispatch(m));
    vec![
        (
            "services",
            vec![
                dispatch(MapName::ServiceIps),
                dispatch(MapName::StaticVips),
                dispatch(MapName::ServiceNodeports)
                    .matching(Match::LocalDaddr)
                    .matching(Match::NotLoopback),
            ],
        ),
        (
            "masquerading",
            vec![
                Rule::verdict(Verdict::Return).matching(Match::MarkClear(MASQ_MARK)),
                Rule::new(Statement::MarkXor(MASQ_MARK)),
                Rule::new(Statement::MasqueradeFullyRandom),
            ],
        ),
        (
            "mark-for-masquerade",
            vec![Rule::new(Statement::MarkOr(MASQ_MARK))],
        ),
        (
            "service-endpoints-check",
            vec![dispatch(MapName::NoEndpointServices)],
        ),
        (
            "nodeport-endpoints-check",
            vec![dispatch(MapName::NoEndpointNodeports).matching(Match::NotLoopback)],
        ),
        (
            "cluster-ips-check",
            vec![Rule::verdict(Verdict::Reject)
                .matching(Match::ClusterIp)
                .commented("Reject traffic to invalid ports of ClusterIPs")],
        ),
        ("reject-chain", vec![Rule::verdict(Verdict::Reject)]),
    ]
}

/// The rules of base chains: (base chain, rule), in order.
pub fn jumps() -> Vec<(&'static str, Rule)> {
    let new_flow = |to: &str| Rule::verdict(Verdict::Jump(to.into())).matching(Match::CtStateNew);
    let always = |to: &str| Rule::verdict(Verdict::Jump(to.into()));
    vec![
        ("filter-input", new_flow("nodeport-endpoints-check")),
        ("filter-input", new_flow("service-endpoints-check")),
        ("filter-forward", new_flow("service-endpoints-check")),
        ("filter-forward", new_flow("cluster-ips-check")),
        ("filter-output", new_flow("service-endpoints-check")),
        ("filter-output-post-dnat", new_flow("cluster-ips-check")),
        ("nat-prerouting", always("services")),
        ("nat-output", always("services")),
        ("nat-postrouting", always("masquerading")),
    ]
}

/// The `add` commands of the fixed part of the table: table, maps, set, base chains with
/// their jumps, fixed chains with their rules. Base and fixed chains are flushed first,
/// so writing this again over an existing table does not double their rules.
pub fn skeleton_text() -> String {
    let t = TABLE;
    let mut out = format!("add table ip {t} {{ comment \"{TABLE_COMMENT}\" ; }}\n");
    for m in MapName::ALL {
        out += &format!(
            "add map ip {t} {m} {{ type {} : verdict ; comment \"{}\" ; }}\n",
            m.key_type(),
            m.comment()
        );
    }
    out += &format!(
        "add set ip {t} {SET_CLUSTER_IPS} {{ type ipv4_addr ; comment \"{CLUSTER_IPS_COMMENT}\" ; }}\n"
    );
    for b in BASE_CHAINS {
        out += &format!("add chain ip {t} {b}\nflush chain ip {t} {}\n", b.name);
    }
    for (name, rules) in fixed_chains() {
        out += &format!("add chain ip {t} {name}\nflush chain ip {t} {name}\n");
        for r in rules {
            out += &format!("add rule ip {t} {name} {r}\n");
        }
    }
    for (from, r) in jumps() {
        out += &format!("add rule ip {t} {from} {r}\n");
    }
    out
}

/// One rule of a listing: its chain, the rule (None when this model cannot express it)
/// and its counter.
#[derive(Debug, Clone)]
pub struct ListedRule {
    pub chain: String,
    pub rule: Option<Rule>,
    pub counter: Option<Counter>,
}

/// `nft -j list table ip kube-proxy`, as typed values.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub table: bool,
    /// Every chain, fixed or not.
    pub chains: BTreeSet<String>,
    /// Every rule in listing order (chain by chain).
    pub rules: Vec<ListedRule>,
    /// Our maps with their elements; elements this model cannot read are left out.
    pub maps: BTreeMap<MapName, BTreeMap<Key, Verdict>>,
    /// The ClusterIP set's elements; None when the set does not exist.
    pub cluster_ips: Option<BTreeSet<Ipv4Addr>>,
}

impl Listing {
    pub fn parse(json: &str) -> Result<Listing> {
        let v: Value = serde_json::from_str(json)
            .context("parsing the JSON of `nft -j list table ip kube-proxy`")?;
        let items = v
            .get("nftables")
            .and_then(Value::as_array)
            .context("`nft -j` output has no \"nftables\" list")?;
        let mut l = Listing::default();
        let ours = |o: &Value| {
            o.get("table")
                .and_then(Value::as_str)
                .is_none_or(|t| t == TABLE)
        };
        let elems = |o: &Value| -> Vec<Value> {
            o.get("elem")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        for item in items {
            if item.get("table").is_some_and(ours) {
                l.table = true;
            } else if let Some(c) = item.get("chain").filter(|c| ours(c)) {
                if let Some(name) = c.get("name").and_then(Value::as_str) {
                    l.chains.insert(name.to_string());
                }
            } else if let Some(r) = item.get("rule").filter(|r| ours(r)) {
                let chain = r.get("chain").and_then(Value::as_str).unwrap_or_default();
                let (rule, counter) = match Rule::from_json(r) {
                    Some((rule, counter)) => (Some(rule), counter),
                    None => (None, None),
                };
                l.rules.push(ListedRule {
                    chain: chain.to_string(),
                    rule,
                    counter,
                });
            } else if let Some(m) = item.get("map").filter(|m| ours(m)) {
                let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
                let Some(map) = MapName::from_name(name) else {
                    continue;
                };
                let out = l.maps.entry(map).or_default();
                for e in elems(m) {
                    if let Some([k, v]) = e.as_array().map(Vec::as_slice) {
                        if let (Some(k), Some(v)) = (Key::from_json(k), Verdict::from_json(v)) {
                            out.insert(k, v);
                        }
                    }
                }
            } else if let Some(s) = item.get("set").filter(|s| ours(s)) {
                if s.get("name").and_then(Value::as_str) == Some(SET_CLUSTER_IPS) {
                    let set = l.cluster_ips.get_or_insert_with(BTreeSet::new);
                    for e in elems(s) {
                        if let Some(Key::Addr(a)) = Key::from_json(&e) {
                            set.insert(a);
                        }
                    }
                }
            }
        }
        Ok(l)
    }

    /// True when every fixed map, set and chain exists.
    pub fn has_skeleton(&self) -> bool {
        self.table
            && self.cluster_ips.is_some()
            && MapName::ALL.iter().all(|m| self.maps.contains_key(m))
            && BASE_CHAINS.iter().all(|b| self.chains.contains(b.name))
            && fixed_chains().iter().all(|(c, _)| self.chains.contains(*c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// Every kind of rule the table holds, with the text nft is given for it.
    pub(crate) fn every_rule_kind() -> Vec<(Rule, &'static str)> {
        let mut v: Vec<(Rule, &str)> = vec![
            (
                Rule::verdict(Verdict::Jump("mark-for-masquerade".into()))
                    .matching(Match::Saddr(ip("11.10.0.2")))
                    .counted()
                    .commented("web hairpin"),
                "ip saddr 11.10.0.2 counter jump mark-for-masquerade comment \"web hairpin\"",
            ),
            (
                Rule::new(Statement::Dnat {
                    addr: ip("11.10.0.2"),
                    port: Some(8000),
                })
                .matching(Match::L4Proto(Protocol::Tcp))
                .counted(),
                "meta l4proto tcp counter dnat to 11.10.0.2:8000",
            ),
            (
                Rule::new(Statement::Dnat {
                    addr: ip("11.11.0.2"),
                    port: None,
                })
                .counted()
                .commented("VIP"),
                "counter dnat to 11.11.0.2 comment \"VIP\"",
            ),
            (
                Rule::new(Statement::Balance(Balancer {
                    targets: vec!["a".into(), "b".into()],
                }))
                .counted(),
                "counter numgen random mod 2 vmap { 0 : goto a, 1 : goto b }",
            ),
            (
                Rule::verdict(Verdict::Goto("endpoint-X".into())).counted(),
                "counter goto endpoint-X",
            ),
        ];
        let fixed = [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "ip daddr vmap @static-vips",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
            "mark and 0x4000 == 0 return",
            "mark set mark xor 0x4000",
            "masquerade fully-random",
            "mark set mark or 0x4000",
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
            "ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports",
            "ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"",
            "reject",
        ];
        for ((_, r), text) in fixed_chains()
            .into_iter()
            .flat_map(|(c, rs)| rs.into_iter().map(move |r| (c, r)))
            .zip(fixed)
        {
            v.push((r, text));
        }
        v.push((
            jumps()[0].1.clone(),
            "ct state new jump nodeport-endpoints-check",
        ));
        v.push((jumps()[6].1.clone(), "jump services"));
        v
    }

    #[test]
    fn renders_each_rule_kind() {
        let all = every_rule_kind();
        assert_eq!(all.len(), 5 + 11 + 2);
        for (rule, text) in all {
            assert_eq!(rule.to_string(), text);
        }
        assert_eq!(
            Key::AddrProtoPort(ip("100.64.0.10"), Protocol::Udp, 53).to_string(),
            "100.64.0.10 . udp . 53"
        );
        assert_eq!(
            Key::ProtoPort(Protocol::Tcp, 30080).to_string(),
            "tcp . 30080"
        );
        assert_eq!(
            BASE_CHAINS[4].to_string(),
            "nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; }"
        );
    }

    #[test]
    fn skeleton_lists_maps_chains_and_jumps() {
        let t = skeleton_text();
        for want in [
            "add table ip kube-proxy { comment \"rules for kube-proxy (knetsim)\" ; }\n",
            "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP traffic\" ; }\n",
            "add map ip kube-proxy static-vips { type ipv4_addr : verdict ;",
            "add set ip kube-proxy cluster-ips { type ipv4_addr ; comment \"Active ClusterIPs\" ; }\n",
            "add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority srcnat ; policy accept ; }\nflush chain ip kube-proxy nat-postrouting\n",
            "add chain ip kube-proxy reject-chain\nflush chain ip kube-proxy reject-chain\nadd rule ip kube-proxy reject-chain reject\n",
            "add rule ip kube-proxy filter-output-post-dnat ct state new jump cluster-ips-check\n",
            "add rule ip kube-proxy nat-postrouting jump masquerading\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }

    /// The JSON nft 1.0.6 lists for the rules of [`every_rule_kind`], in the same order
    /// (recorded from `nft -j list table` after `nft -f` of their text).
    const LISTED: &str = r#"[
      {"comment":"web hairpin","expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"11.10.0.2"}},{"counter":{"packets":1,"bytes":60}},{"jump":{"target":"mark-for-masquerade"}}]},
      {"expr":[{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},{"counter":{"packets":3,"bytes":180}},{"dnat":{"addr":"11.10.0.2","port":8000}}]},
      {"comment":"VIP","expr":[{"counter":{"packets":0,"bytes":0}},{"dnat":{"addr":"11.11.0.2"}}]},
      {"expr":[{"counter":{"packets":0,"bytes":0}},{"vmap":{"key":{"numgen":{"mode":"random","mod":2,"offset":0}},"data":{"set":[[1,{"goto":{"target":"b"}}],[0,{"goto":{"target":"a"}}]]}}}]},
      {"expr":[{"counter":{"packets":0,"bytes":0}},{"goto":{"target":"endpoint-X"}}]},
      {"expr":[{"vmap":{"key":{"concat":[{"payload":{"protocol":"ip","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@service-ips"}}]},
      {"expr":[{"vmap":{"key":{"payload":{"protocol":"ip","field":"daddr"}},"data":"@static-vips"}}]},
      {"expr":[{"match":{"op":"==","left":{"fib":{"result":"type","flags":["daddr"]}},"right":"local"}},{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":{"prefix":{"addr":"127.0.0.0","len":8}}}},{"vmap":{"key":{"concat":[{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@service-nodeports"}}]},
      {"expr":[{"match":{"op":"==","left":{"&":[{"meta":{"key":"mark"}},16384]},"right":0}},{"return":null}]},
      {"expr":[{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"^":[{"meta":{"key":"mark"}},16384]}}}]},
      {"expr":[{"masquerade":{"flags":"fully-random"}}]},
      {"expr":[{"mangle":{"key":{"meta":{"key":"mark"}},"value":{"|":[{"meta":{"key":"mark"}},16384]}}}]},
      {"expr":[{"vmap":{"key":{"concat":[{"payload":{"protocol":"ip","field":"daddr"}},{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@no-endpoint-services"}}]},
      {"expr":[{"match":{"op":"!=","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":{"prefix":{"addr":"127.0.0.0","len":8}}}},{"vmap":{"key":{"concat":[{"meta":{"key":"l4proto"}},{"payload":{"protocol":"th","field":"dport"}}]},"data":"@no-endpoint-nodeports"}}]},
      {"comment":"Reject traffic to invalid ports of ClusterIPs","expr":[{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"@cluster-ips"}},{"reject":{"type":"icmp","expr":"port-unreachable"}}]},
      {"expr":[{"reject":{"type":"icmp","expr":"port-unreachable"}}]},
      {"expr":[{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":"new"}},{"jump":{"target":"nodeport-endpoints-check"}}]},
      {"expr":[{"jump":{"target":"services"}}]}
    ]"#;

    #[test]
    fn reads_back_each_rule_kind_from_nft_json() {
        let listed: Vec<Value> = serde_json::from_str(LISTED).unwrap();
        let all = every_rule_kind();
        assert_eq!(listed.len(), all.len());
        for (json, (rule, text)) in listed.iter().zip(&all) {
            let (read, counter) = Rule::from_json(json).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(&read, rule, "{text}");
            assert_eq!(counter.is_some(), rule.counter);
        }
        let (_, c) = Rule::from_json(&listed[1]).unwrap();
        assert_eq!(
            c,
            Some(Counter {
                packets: 3,
                bytes: 180
            })
        );
        // What this model does not express is not guessed at.
        for odd in [
            r#"{"expr":[{"counter":{}},{"counter":{}},{"jump":{"target":"x"}}]}"#,
            r#"{"expr":[{"counter":{}},{"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},{"jump":{"target":"x"}}]}"#,
            r#"{"expr":[{"log":{}}]}"#,
            r#"{"expr":[{"vmap":{"key":{"numgen":{"mode":"random","mod":3,"offset":0}},"data":{"set":[[0,{"goto":{"target":"a"}}]]}}}]}"#,
            r#"{"expr":[{"vmap":{"key":{"payload":{"protocol":"ip","field":"daddr"}},"data":"@service-ips"}}]}"#,
            r#"{"expr":[{"dnat":{"family":"ip6","addr":"::1"}}]}"#,
        ] {
            let v: Value = serde_json::from_str(odd).unwrap();
            assert!(Rule::from_json(&v).is_none(), "{odd}");
        }
    }

    #[test]
    fn listing_reads_maps_sets_and_chains() {
        let json = r#"{"nftables":[{"metainfo":{}},{"table":{"family":"ip","name":"kube-proxy"}},
          {"map":{"name":"service-ips","table":"kube-proxy","elem":[[{"concat":["100.64.0.10","tcp",80]},{"goto":{"target":"service-X"}}]]}},
          {"map":{"name":"service-nodeports","table":"kube-proxy","elem":[[{"concat":["udp",30053]},{"goto":{"target":"external-X"}}]]}},
          {"map":{"name":"static-vips","table":"kube-proxy","elem":[["100.64.10.1",{"goto":{"target":"vip-Y"}}]]}},
          {"map":{"name":"someone-elses","table":"kube-proxy","elem":[["1.2.3.4",{"accept":null}]]}},
          {"set":{"name":"cluster-ips","table":"kube-proxy","elem":["100.64.0.10"]}},
          {"chain":{"name":"services","table":"kube-proxy"}},
          {"chain":{"name":"elsewhere","table":"other"}},
          {"rule":{"chain":"services","table":"kube-proxy","expr":[{"log":{}}]}}]}"#;
        let l = Listing::parse(json).unwrap();
        assert!(l.table && !l.has_skeleton());
        assert_eq!(
            l.maps[&MapName::ServiceIps][&Key::AddrProtoPort(ip("100.64.0.10"), Protocol::Tcp, 80)],
            Verdict::Goto("service-X".into())
        );
        assert_eq!(
            l.maps[&MapName::ServiceNodeports][&Key::ProtoPort(Protocol::Udp, 30053)],
            Verdict::Goto("external-X".into())
        );
        assert_eq!(
            l.maps[&MapName::StaticVips][&Key::Addr(ip("100.64.10.1"))],
            Verdict::Goto("vip-Y".into())
        );
        assert_eq!(l.maps.len(), 3);
        assert_eq!(l.cluster_ips, Some([ip("100.64.0.10")].into()));
        assert_eq!(l.chains, ["services".to_string()].into());
        assert_eq!(l.rules.len(), 1);
        assert!(l.rules[0].rule.is_none());
        assert!(Listing::parse("not json").is_err());
        assert!(Listing::parse("{}").is_err());
    }
}
