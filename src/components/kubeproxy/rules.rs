//! From Service state to an nftables transaction, in the layout of kube-proxy's nftables
//! mode (table `ip kube-proxy`).
//!
//! ```text
//! nat-prerouting / nat-output (dstnat) ── jump services
//!   services:  ip daddr . meta l4proto . th dport vmap @service-ips       (ClusterIPs)
//!              ip daddr vmap @static-vips                                  (knetsim VIPs)
//!              fib daddr type local ... meta l4proto . th dport vmap @service-nodeports
//!   service-HASH-ns/name/proto/port      numgen random mod N vmap { i : goto endpoint-... }
//!   endpoint-HASH-ns/name/proto/port__ip/port
//!                                        ip saddr IP jump mark-for-masquerade   (hairpin)
//!                                        meta l4proto P dnat to IP:PORT
//!   external-HASH-...                    (NodePort) jump mark-for-masquerade; goto service-...
//!   vip-HASH-VIP / vip-endpoint-HASH-VIP__IP   the original's all-protocol VIP
//! nat-postrouting (srcnat) ── jump masquerading (masquerade packets marked 0x4000)
//! filter-input/forward/output (dstnat-10) ── ct state new: @no-endpoint-services and
//!   @no-endpoint-nodeports send a Service without endpoints to reject-chain (refused at once)
//! ```
//!
//! HASH is the first 8 characters of base32(sha256(name)), as upstream computes it; the
//! last part of a service name is the port's name, or its number when it has none.
//!
//! Re-programming is incremental, like kube-proxy's partial sync: chains whose content is
//! unchanged are not touched (their counters keep counting), changed chains are flushed
//! and rewritten, map elements are added or deleted one by one, stale chains deleted. Each
//! chain's content is compared through its rules' comments and jump/goto targets, which is
//! also what `nft -j list table` returns, so a restarted agent can converge a table it did
//! not write without ever deleting it.
//!
//! Every change is one atomic `nft -f -` transaction. The one exception is a large first
//! sync into a table that has no Service yet ([`plan_sync`]): with one anonymous set per
//! balancer rule the kernel's cost grows with the square of the number of rules in one
//! transaction (10,000 Services: 144 s), so its balancer rules go as netlink batches
//! ([`super::nfnl`]) between an `nft -f` that creates every chain and one that adds every
//! map element, all Services appearing at once. The listing is the same either way.

use super::model::{Endpoints, Service, ServicePort, ServiceType, State};
use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

pub const TABLE: &str = "kube-proxy";
pub const MASQ_MARK: &str = "0x4000";

pub const MAP_SERVICE_IPS: &str = "service-ips";
pub const MAP_SERVICE_NODEPORTS: &str = "service-nodeports";
pub const MAP_NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const MAP_NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const MAP_STATIC_VIPS: &str = "static-vips";
pub const SET_CLUSTER_IPS: &str = "cluster-ips";

/// (name, type, comment) of every map, in creation order.
const MAPS: &[(&str, &str, &str)] = &[
    (
        MAP_SERVICE_IPS,
        "ipv4_addr . inet_proto . inet_service : verdict",
        "ClusterIP traffic",
    ),
    (
        MAP_SERVICE_NODEPORTS,
        "inet_proto . inet_service : verdict",
        "NodePort traffic",
    ),
    (
        MAP_NO_ENDPOINT_SERVICES,
        "ipv4_addr . inet_proto . inet_service : verdict",
        "vmap to reject packets to services with no endpoints",
    ),
    (
        MAP_NO_ENDPOINT_NODEPORTS,
        "inet_proto . inet_service : verdict",
        "vmap to reject packets to service nodeports with no endpoints",
    ),
    (
        MAP_STATIC_VIPS,
        "ipv4_addr : verdict",
        "knetsim: the original simulator's all-protocol VIPs",
    ),
];

/// Base chains: (name, type, hook, priority). Filter chains run before DNAT (dstnat-10).
/// Priorities off the prerouting hook are numbers (dstnat = -100) because nft 1.0.6
/// accepts the name `dstnat` only there.
const BASE_CHAINS: &[(&str, &str, &str, &str)] = &[
    ("filter-input", "filter", "input", "-110"),
    ("filter-forward", "filter", "forward", "-110"),
    ("filter-output", "filter", "output", "-110"),
    ("filter-output-post-dnat", "filter", "output", "-90"),
    ("nat-prerouting", "nat", "prerouting", "dstnat"),
    ("nat-output", "nat", "output", "-100"),
    ("nat-postrouting", "nat", "postrouting", "srcnat"),
];

/// Regular chains that exist whatever the Services are, with their fixed rules.
fn static_chains() -> Vec<(&'static str, Vec<String>)> {
    let sv = |s: &str| s.to_string();
    vec![
        ("services", vec![
            format!("ip daddr . meta l4proto . th dport vmap @{MAP_SERVICE_IPS}"),
            format!("ip daddr vmap @{MAP_STATIC_VIPS}"),
            format!("fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{MAP_SERVICE_NODEPORTS}"),
        ]),
        ("masquerading", vec![
            format!("mark and {MASQ_MARK} == 0 return"),
            format!("mark set mark xor {MASQ_MARK}"),
            sv("masquerade fully-random"),
        ]),
        ("mark-for-masquerade", vec![format!("mark set mark or {MASQ_MARK}")]),
        ("service-endpoints-check", vec![format!(
            "ip daddr . meta l4proto . th dport vmap @{MAP_NO_ENDPOINT_SERVICES}"
        )]),
        ("nodeport-endpoints-check", vec![format!(
            "ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @{MAP_NO_ENDPOINT_NODEPORTS}"
        )]),
        ("cluster-ips-check", vec![format!(
            "ip daddr @{SET_CLUSTER_IPS} reject comment \"Reject traffic to invalid ports of ClusterIPs\""
        )]),
        ("reject-chain", vec![sv("reject")]),
    ]
}

/// Jumps from base chains: (from, match, to).
const JUMPS: &[(&str, &str, &str)] = &[
    ("filter-input", "ct state new", "nodeport-endpoints-check"),
    ("filter-input", "ct state new", "service-endpoints-check"),
    ("filter-forward", "ct state new", "service-endpoints-check"),
    ("filter-forward", "ct state new", "cluster-ips-check"),
    ("filter-output", "ct state new", "service-endpoints-check"),
    (
        "filter-output-post-dnat",
        "ct state new",
        "cluster-ips-check",
    ),
    ("nat-prerouting", "", "services"),
    ("nat-output", "", "services"),
    ("nat-postrouting", "", "masquerading"),
];

/// First 8 characters of base32(sha256(name)), RFC 4648 alphabet, as kube-proxy does.
pub fn hash8(name: &str) -> String {
    const ALPHA: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(name.as_bytes());
    // 8 base32 characters use the first 40 bits = 5 bytes.
    let mut bits: u64 = 0;
    for b in &digest[..5] {
        bits = (bits << 8) | u64::from(*b);
    }
    (0..8)
        .map(|i| ALPHA[((bits >> (35 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// `ns/name/proto/port`, the readable part of every chain of one service port.
pub fn service_port_name(svc: &Service, port: &ServicePort) -> String {
    format!(
        "{}/{}/{}/{}",
        svc.namespace,
        svc.name,
        port.protocol,
        port.label()
    )
}

fn hashed(prefix: &str, base: &str) -> String {
    let mut name = format!("{prefix}{}-{base}", hash8(base));
    if name.len() > 128 {
        name.truncate(125);
        name.push_str("...");
    }
    name
}

pub fn service_chain(svc: &Service, port: &ServicePort) -> String {
    hashed("service-", &service_port_name(svc, port))
}

pub fn external_chain(svc: &Service, port: &ServicePort) -> String {
    hashed("external-", &service_port_name(svc, port))
}

pub fn endpoint_chain(svc: &Service, port: &ServicePort, ip: Ipv4Addr) -> String {
    hashed(
        "endpoint-",
        &format!(
            "{}__{ip}/{}",
            service_port_name(svc, port),
            port.target_port
        ),
    )
}

pub fn vip_chain(vip: Ipv4Addr) -> String {
    hashed("vip-", &vip.to_string())
}

pub fn vip_endpoint_chain(vip: Ipv4Addr, ip: Ipv4Addr) -> String {
    hashed("vip-endpoint-", &format!("{vip}__{ip}"))
}

/// True for chains this module creates per Service/VIP (the others are fixed).
pub fn is_dynamic_chain(name: &str) -> bool {
    name.contains('/') || name.starts_with("vip-")
}

/// Text usable inside an nft comment (quoted, at most 128 bytes).
fn comment(s: &str) -> String {
    let mut c: String = s
        .chars()
        .map(|ch| {
            if ch == '"' || ch == '\\' || ch.is_control() {
                '_'
            } else {
                ch
            }
        })
        .collect();
    if c.len() > 120 {
        let mut cut = 117;
        while !c.is_char_boundary(cut) {
            cut -= 1;
        }
        c.truncate(cut);
        c.push_str("...");
    }
    c
}

/// One rule: its text (without the comment), its comment, and the chains it jumps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub text: String,
    pub comment: Option<String>,
    pub targets: Vec<String>,
}

impl Rule {
    fn new(text: String, comment_text: &str, targets: Vec<String>) -> Rule {
        Rule {
            text,
            comment: Some(comment(comment_text)),
            targets,
        }
    }
}

/// What identifies a chain's content: per rule, its comment and sorted jump targets.
pub type Signature = Vec<(Option<String>, Vec<String>)>;

fn signature(rules: &[Rule]) -> Signature {
    rules
        .iter()
        .map(|r| {
            let mut t = r.targets.clone();
            t.sort();
            (r.comment.clone(), t)
        })
        .collect()
}

/// The table as it should be: per-service chains and the elements of every map/set.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// map name -> key -> verdict (e.g. "100.64.0.10 . tcp . 80" -> "goto service-...").
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
    pub cluster_ips: BTreeSet<String>,
    pub services: usize,
    pub endpoints: usize,
    pub vips: usize,
}

fn add_balancer(
    chains: &mut BTreeMap<String, Vec<Rule>>,
    chain: String,
    targets: Vec<String>,
    what: &str,
) {
    let elems: Vec<String> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{i} : goto {t}"))
        .collect();
    let text = format!(
        "counter numgen random mod {} vmap {{ {} }}",
        targets.len(),
        elems.join(", ")
    );
    chains.insert(chain, vec![Rule::new(text, what, targets)]);
}

/// Computes the desired table for `state` (which must have been validated).
pub fn desired(state: &State) -> Desired {
    let mut d = Desired::default();
    for (m, _, _) in MAPS {
        d.maps.insert(m.to_string(), BTreeMap::new());
    }
    // Endpoints by Service (the first entry wins, as in State::endpoints_of), so that a
    // large state is not searched once per Service.
    let mut by_svc: HashMap<(&str, &str), &[super::model::EndpointAddress]> = HashMap::new();
    for e in &state.endpoints {
        by_svc
            .entry((e.namespace.as_str(), e.service.as_str()))
            .or_insert(e.addresses.as_slice());
    }
    for svc in &state.services {
        d.services += 1;
        let eps: &[_] = by_svc
            .get(&(svc.namespace.as_str(), svc.name.as_str()))
            .copied()
            .unwrap_or(&[]);
        d.cluster_ips.insert(svc.cluster_ip.to_string());
        for port in &svc.ports {
            let spn = format!("{}/{}:{}", svc.namespace, svc.name, port.label());
            let proto = port.protocol.nft();
            let key = format!("{} . {proto} . {}", svc.cluster_ip, port.port);
            let np_key = port.node_port.map(|np| format!("{proto} . {np}"));
            let np_key = np_key.filter(|_| svc.type_ == ServiceType::NodePort);
            if eps.is_empty() {
                d.maps
                    .get_mut(MAP_NO_ENDPOINT_SERVICES)
                    .unwrap()
                    .insert(key, "goto reject-chain".into());
                if let Some(k) = np_key {
                    d.maps
                        .get_mut(MAP_NO_ENDPOINT_NODEPORTS)
                        .unwrap()
                        .insert(k, "goto reject-chain".into());
                }
                continue;
            }
            let svc_chain = service_chain(svc, port);
            let mut ep_chains = Vec::new();
            for ep in eps {
                d.endpoints += 1;
                let c = endpoint_chain(svc, port, ep.ip);
                let rules = vec![
                    Rule::new(
                        format!("ip saddr {} counter jump mark-for-masquerade", ep.ip),
                        &format!("{spn} hairpin: from its own endpoint"),
                        vec!["mark-for-masquerade".into()],
                    ),
                    Rule::new(
                        format!(
                            "meta l4proto {proto} counter dnat to {}:{}",
                            ep.ip, port.target_port
                        ),
                        &format!("{spn} -> pod {} on {}", ep.pod, ep.node),
                        vec![],
                    ),
                ];
                d.chains.insert(c.clone(), rules);
                ep_chains.push(c);
            }
            add_balancer(
                &mut d.chains,
                svc_chain.clone(),
                ep_chains,
                &format!("{spn} ({} endpoints)", eps.len()),
            );
            d.maps
                .get_mut(MAP_SERVICE_IPS)
                .unwrap()
                .insert(key, format!("goto {svc_chain}"));
            if let Some(k) = np_key {
                let ext = external_chain(svc, port);
                d.chains.insert(
                    ext.clone(),
                    vec![
                        Rule::new(
                            "jump mark-for-masquerade".into(),
                            &format!("{spn} NodePort: masquerade"),
                            vec!["mark-for-masquerade".into()],
                        ),
                        Rule::new(
                            format!("goto {svc_chain}"),
                            &format!("{spn} NodePort"),
                            vec![svc_chain.clone()],
                        ),
                    ],
                );
                d.maps
                    .get_mut(MAP_SERVICE_NODEPORTS)
                    .unwrap()
                    .insert(k, format!("goto {ext}"));
            }
        }
    }
    for v in &state.vips {
        d.vips += 1;
        let mut ep_chains = Vec::new();
        for ip in &v.ips {
            let c = vip_endpoint_chain(v.vip, *ip);
            d.chains.insert(
                c.clone(),
                vec![
                    Rule::new(
                        format!("ip saddr {ip} counter jump mark-for-masquerade"),
                        &format!("VIP {} hairpin: from its own endpoint", v.vip),
                        vec!["mark-for-masquerade".into()],
                    ),
                    Rule::new(
                        format!("counter dnat to {ip}"),
                        &format!("VIP {} -> {ip}", v.vip),
                        vec![],
                    ),
                ],
            );
            ep_chains.push(c);
        }
        let chain = vip_chain(v.vip);
        add_balancer(
            &mut d.chains,
            chain.clone(),
            ep_chains,
            &format!("VIP {} all protocols ({} endpoints)", v.vip, v.ips.len()),
        );
        d.maps
            .get_mut(MAP_STATIC_VIPS)
            .unwrap()
            .insert(v.vip.to_string(), format!("goto {chain}"));
    }
    d
}

/// The table as the kernel (or our last successful sync) has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Current {
    pub table: bool,
    /// Every fixed chain, map and set exists.
    pub skeleton: bool,
    pub chains: BTreeMap<String, Signature>,
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
    pub cluster_ips: BTreeSet<String>,
}

impl Current {
    /// An empty kernel: no table.
    pub fn empty() -> Current {
        Current::default()
    }

    /// What the kernel holds right after `d` was applied.
    pub fn from_desired(d: &Desired) -> Current {
        Current {
            table: true,
            skeleton: true,
            chains: d
                .chains
                .iter()
                .map(|(k, v)| (k.clone(), signature(v)))
                .collect(),
            maps: d.maps.clone(),
            cluster_ips: d.cluster_ips.clone(),
        }
    }

    /// Reads the output of `nft -j list table ip kube-proxy`.
    pub fn from_nft_json(json: &str) -> Result<Current> {
        let v: Value = serde_json::from_str(json)
            .context("parsing the JSON of `nft -j list table ip kube-proxy`")?;
        let items = v
            .get("nftables")
            .and_then(|n| n.as_array())
            .context("`nft -j` output has no \"nftables\" list")?;
        let mut cur = Current::default();
        let mut all_chains = BTreeSet::new();
        for item in items {
            if item.get("table").is_some() {
                cur.table = true;
            } else if let Some(c) = item.get("chain") {
                if let Some(name) = c.get("name").and_then(|n| n.as_str()) {
                    all_chains.insert(name.to_string());
                    if is_dynamic_chain(name) {
                        cur.chains.entry(name.to_string()).or_default();
                    }
                }
            } else if let Some(r) = item.get("rule") {
                let chain = r.get("chain").and_then(|c| c.as_str()).unwrap_or_default();
                if !is_dynamic_chain(chain) {
                    continue;
                }
                let comment = r
                    .get("comment")
                    .and_then(|c| c.as_str())
                    .map(str::to_string);
                let mut targets = Vec::new();
                if let Some(e) = r.get("expr") {
                    collect_targets(e, &mut targets);
                }
                targets.sort();
                cur.chains
                    .entry(chain.to_string())
                    .or_default()
                    .push((comment, targets));
            } else if let Some(m) = item.get("map") {
                let name = m.get("name").and_then(|n| n.as_str()).unwrap_or_default();
                let elems = cur.maps.entry(name.to_string()).or_default();
                for e in m
                    .get("elem")
                    .and_then(|e| e.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(pair) = e.as_array().filter(|p| p.len() == 2) {
                        elems.insert(elem_text(&pair[0]), verdict_text(&pair[1]));
                    }
                }
            } else if let Some(s) = item.get("set") {
                if s.get("name").and_then(|n| n.as_str()) == Some(SET_CLUSTER_IPS) {
                    for e in s
                        .get("elem")
                        .and_then(|e| e.as_array())
                        .into_iter()
                        .flatten()
                    {
                        cur.cluster_ips.insert(elem_text(e));
                    }
                }
            }
        }
        let sets_ok = items.iter().any(|i| {
            i.get("set")
                .and_then(|s| s.get("name"))
                .and_then(|n| n.as_str())
                == Some(SET_CLUSTER_IPS)
        });
        cur.skeleton = cur.table
            && sets_ok
            && MAPS.iter().all(|(m, _, _)| cur.maps.contains_key(*m))
            && BASE_CHAINS.iter().all(|(c, ..)| all_chains.contains(*c))
            && static_chains().iter().all(|(c, _)| all_chains.contains(*c));
        Ok(cur)
    }
}

fn collect_targets(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, val) in o {
                if k == "jump" || k == "goto" {
                    if let Some(t) = val.get("target").and_then(|t| t.as_str()) {
                        out.push(t.to_string());
                        continue;
                    }
                }
                collect_targets(val, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_targets(x, out)),
        _ => {}
    }
}

/// A set/map key in nft's text form ("100.64.0.10 . tcp . 80").
fn elem_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(c) = o.get("concat").and_then(|c| c.as_array()) {
                c.iter().map(elem_text).collect::<Vec<_>>().join(" . ")
            } else if let Some(e) = o.get("elem") {
                elem_text(e.get("val").unwrap_or(e))
            } else {
                v.to_string()
            }
        }
        _ => v.to_string(),
    }
}

fn verdict_text(v: &Value) -> String {
    for k in ["goto", "jump"] {
        if let Some(t) = v
            .get(k)
            .and_then(|x| x.get("target"))
            .and_then(|t| t.as_str())
        {
            return format!("{k} {t}");
        }
    }
    match v.as_object().and_then(|o| o.keys().next()) {
        Some(k) => k.clone(),
        None => v.to_string(),
    }
}

/// What a transaction does, for the learner-readable log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanStats {
    pub setup: bool,
    pub chains_added: usize,
    pub chains_rewritten: usize,
    pub chains_deleted: usize,
    pub chains_kept: usize,
    pub elements_added: usize,
    pub elements_deleted: usize,
    /// nft transactions the sync took (1, or more for a split first sync).
    pub transactions: usize,
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// The `nft -f -` transaction (empty when nothing changes).
    pub text: String,
    /// Or, for the bulk part of a large first sync, balancer rules sent as one nf_tables
    /// netlink batch (see [`super::nfnl`]); `text` is then empty.
    pub netlink: Option<NetlinkBatch>,
    pub stats: PlanStats,
}

/// Balancer rules for one netlink transaction, their sets named `__map{first_set}`...
#[derive(Debug, Clone)]
pub struct NetlinkBatch {
    pub rules: Vec<super::nfnl::Balancer>,
    pub first_set: u32,
}

impl Plan {
    fn text(text: String, stats: PlanStats) -> Plan {
        Plan {
            text,
            netlink: None,
            stats,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.netlink.as_ref().is_none_or(|n| n.rules.is_empty())
    }
}

/// How a large first sync is written (see [`plan_sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    /// Never split: one `nft -f` transaction.
    Single,
    /// Split into `nft -f` transactions of this many Services (or VIPs) each.
    NftText(usize),
    /// Balancer rules as netlink batches of this many rules each, the rest as `nft -f`.
    Netlink(usize),
}

/// What a sync uses: the netlink bulk path in batches of [`FIRST_SYNC_BATCH`].
pub const DEFAULT_BULK: Bulk = Bulk::Netlink(FIRST_SYNC_BATCH);

fn setup_text(out: &mut String) {
    let t = TABLE;
    let _ = writeln!(
        out,
        "add table ip {t} {{ comment \"rules for kube-proxy (knetsim)\" ; }}"
    );
    for (name, ty, c) in MAPS {
        let _ = writeln!(
            out,
            "add map ip {t} {name} {{ type {ty} ; comment \"{c}\" ; }}"
        );
    }
    let _ = writeln!(
        out,
        "add set ip {t} {SET_CLUSTER_IPS} {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    for (name, ty, hook, prio) in BASE_CHAINS {
        let _ = writeln!(
            out,
            "add chain ip {t} {name} {{ type {ty} hook {hook} priority {prio} ; policy accept ; }}"
        );
        let _ = writeln!(out, "flush chain ip {t} {name}");
    }
    for (name, rules) in static_chains() {
        let _ = writeln!(out, "add chain ip {t} {name}");
        let _ = writeln!(out, "flush chain ip {t} {name}");
        for r in rules {
            let _ = writeln!(out, "add rule ip {t} {name} {r}");
        }
    }
    for (from, m, to) in JUMPS {
        let sep = if m.is_empty() { "" } else { " " };
        let _ = writeln!(out, "add rule ip {t} {from} {m}{sep}jump {to}");
    }
}

fn write_rules(out: &mut String, chain: &str, rules: &[Rule]) {
    for r in rules {
        match &r.comment {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "add rule ip {TABLE} {chain} {} comment \"{c}\"",
                    r.text
                );
            }
            None => {
                let _ = writeln!(out, "add rule ip {TABLE} {chain} {}", r.text);
            }
        }
    }
}

/// Writes `elems` as `add/delete element` commands, batched.
fn write_elements(out: &mut String, verb: &str, set: &str, elems: &[String]) {
    for chunk in elems.chunks(1000) {
        let _ = writeln!(
            out,
            "{verb} element ip {TABLE} {set} {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// The transaction that turns `cur` into `want`. One `nft -f -` run applies it atomically.
pub fn plan(want: &Desired, cur: &Current) -> Plan {
    let mut st = PlanStats::default();
    let mut out = String::new();
    if !cur.skeleton {
        st.setup = true;
        setup_text(&mut out);
    }
    // 1. declare new chains, 2. (re)write their rules
    let mut to_write = Vec::new();
    for (name, rules) in &want.chains {
        match cur.chains.get(name) {
            None => {
                let _ = writeln!(out, "add chain ip {TABLE} {name}");
                st.chains_added += 1;
                to_write.push((name, rules));
            }
            Some(sig) if *sig != signature(rules) => {
                let _ = writeln!(out, "flush chain ip {TABLE} {name}");
                st.chains_rewritten += 1;
                to_write.push((name, rules));
            }
            Some(_) => st.chains_kept += 1,
        }
    }
    for (name, rules) in to_write {
        write_rules(&mut out, name, rules);
    }
    // 3. map elements: delete stale or changed ones, then add missing or changed ones
    let empty = BTreeMap::new();
    let mut adds: Vec<(&str, Vec<String>)> = Vec::new();
    for (map, elems) in &want.maps {
        let have = cur.maps.get(map).unwrap_or(&empty);
        let dels: Vec<String> = have
            .iter()
            .filter(|(k, v)| elems.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        st.elements_deleted += dels.len();
        write_elements(&mut out, "delete", map, &dels);
        let add: Vec<String> = elems
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} : {v}"))
            .collect();
        st.elements_added += add.len();
        adds.push((map, add));
    }
    let dels: Vec<String> = cur
        .cluster_ips
        .difference(&want.cluster_ips)
        .cloned()
        .collect();
    st.elements_deleted += dels.len();
    write_elements(&mut out, "delete", SET_CLUSTER_IPS, &dels);
    for (map, add) in adds {
        write_elements(&mut out, "add", map, &add);
    }
    let add: Vec<String> = want
        .cluster_ips
        .difference(&cur.cluster_ips)
        .cloned()
        .collect();
    st.elements_added += add.len();
    write_elements(&mut out, "add", SET_CLUSTER_IPS, &add);
    // 4. stale chains: nothing refers to them once the above is applied and they are all
    // flushed (a stale service chain still jumps to stale endpoint chains until then).
    let stale: Vec<&String> = cur
        .chains
        .keys()
        .filter(|n| !want.chains.contains_key(*n))
        .collect();
    for name in &stale {
        let _ = writeln!(out, "flush chain ip {TABLE} {name}");
    }
    for name in &stale {
        let _ = writeln!(out, "delete chain ip {TABLE} {name}");
        st.chains_deleted += 1;
    }
    st.transactions = usize::from(!out.is_empty());
    Plan::text(out, st)
}

/// Services (and, separately, VIPs) per transaction when a first sync is split, and the
/// size from which it is split.
///
/// Measured with 10,000 Services x 2 endpoints (examples/bench_services.rs `--program`):
/// on the netlink path batches of 250, 1,000 and 2,500 all took 7.4-7.8 s, so the batch
/// size hardly matters there (the walks over the table's sets do); the `nft -f` split is
/// slower the smaller its batches (nft dumps every chain for its cache on each run).
pub const FIRST_SYNC_BATCH: usize = 250;

impl Current {
    /// True when the table holds no Service or VIP yet (no chain of ours, no element):
    /// a sync from here changes nothing that exists, so it may be split.
    pub fn is_unprogrammed(&self) -> bool {
        self.chains.is_empty()
            && self.cluster_ips.is_empty()
            && self.maps.values().all(|m| m.is_empty())
    }
}

/// The balancer rule of a chain (`counter numgen random mod N vmap { ... }`), if it is one.
fn balancer(chain: &str, rules: &[Rule]) -> Option<super::nfnl::Balancer> {
    match rules {
        // A very large one stays in the `nft -f` part: its set would outgrow one netlink
        // attribute's length.
        [r] if r.text.starts_with("counter numgen random mod ")
            && r.targets.len() <= super::nfnl::MAX_TARGETS =>
        {
            Some(super::nfnl::Balancer {
                chain: chain.to_string(),
                comment: r.comment.clone(),
                targets: r.targets.clone(),
            })
        }
        _ => None,
    }
}

/// The transactions that turn `cur` into the table of `state` (`want` = `desired(state)`).
///
/// Normally exactly one: [`plan`], applied atomically. A first sync (the table holds no
/// Service yet, see [`Current::is_unprogrammed`]) of more than `batch` Services is split,
/// because the kernel's cost per anonymous set grows with the length of the transaction
/// and with the table (see [`super::nfnl`]). Every transaction leaves a consistent table:
///
/// - [`Bulk::Netlink`]: (1) `nft -f`: the fixed skeleton, every chain (in the order one
///   transaction would create them, so the listing is the same) and the rules of every
///   chain but the balancers; nothing refers to these chains yet. (2) netlink batches of
///   `batch` balancer rules with their anonymous sets. (3) `nft -f`: every map and set
///   element at once, so all Services start answering together.
/// - [`Bulk::NftText`]: (1) skeleton and every chain, empty; then per `batch` Services
///   one transaction with their rules and, in it, their map elements.
pub fn plan_sync(state: &State, want: &Desired, cur: &Current, bulk: Bulk) -> Vec<Plan> {
    let batch = match bulk {
        Bulk::Single => usize::MAX,
        Bulk::NftText(b) | Bulk::Netlink(b) => b.max(1),
    };
    if !cur.is_unprogrammed() || (state.services.len() <= batch && state.vips.len() <= batch) {
        return vec![plan(want, cur)];
    }
    let mut plans = Vec::new();
    let mut st = PlanStats::default();
    let mut out = String::new();
    if !cur.skeleton {
        st.setup = true;
        setup_text(&mut out);
    }
    for name in want.chains.keys() {
        let _ = writeln!(out, "add chain ip {TABLE} {name}");
        st.chains_added += 1;
    }
    if let Bulk::Netlink(_) = bulk {
        let mut balancers = Vec::new();
        for (name, rules) in &want.chains {
            match balancer(name, rules) {
                Some(b) => balancers.push(b),
                None => write_rules(&mut out, name, rules),
            }
        }
        plans.push(Plan::text(out, st));
        for (i, chunk) in balancers.chunks(batch).enumerate() {
            plans.push(Plan {
                text: String::new(),
                netlink: Some(NetlinkBatch {
                    rules: chunk.to_vec(),
                    first_set: (i * batch) as u32,
                }),
                stats: PlanStats::default(),
            });
        }
        let mut st = PlanStats::default();
        let mut out = String::new();
        write_all_elements(&mut out, &mut st, want);
        plans.push(Plan::text(out, st));
        return plans;
    }
    plans.push(Plan::text(out, st));
    let eps: HashMap<(&str, &str), &Endpoints> = state
        .endpoints
        .iter()
        .map(|e| ((e.namespace.as_str(), e.service.as_str()), e))
        .collect();
    let svc_chunks = state.services.chunks(batch).map(|svcs| State {
        services: svcs.to_vec(),
        endpoints: svcs
            .iter()
            .filter_map(|s| eps.get(&(s.namespace.as_str(), s.name.as_str())))
            .map(|e| (*e).clone())
            .collect(),
        vips: vec![],
    });
    let vip_chunks = state.vips.chunks(batch).map(|vips| State {
        vips: vips.to_vec(),
        ..State::default()
    });
    for sub in svc_chunks.chain(vip_chunks) {
        let d = desired(&sub);
        let mut st = PlanStats::default();
        let mut out = String::new();
        for (name, rules) in &d.chains {
            write_rules(&mut out, name, rules);
        }
        write_all_elements(&mut out, &mut st, &d);
        plans.push(Plan::text(out, st));
    }
    plans
}

/// `add element` commands for every map and set element of `d`.
fn write_all_elements(out: &mut String, st: &mut PlanStats, d: &Desired) {
    for (map, elems) in &d.maps {
        let add: Vec<String> = elems.iter().map(|(k, v)| format!("{k} : {v}")).collect();
        st.elements_added += add.len();
        write_elements(out, "add", map, &add);
    }
    let add: Vec<String> = d.cluster_ips.iter().cloned().collect();
    st.elements_added += add.len();
    write_elements(out, "add", SET_CLUSTER_IPS, &add);
}

impl PlanStats {
    /// The sum of the stats of several transactions of one sync.
    pub fn total(plans: &[Plan]) -> PlanStats {
        let mut t = PlanStats::default();
        for p in plans {
            let s = &p.stats;
            t.setup |= s.setup;
            t.chains_added += s.chains_added;
            t.chains_rewritten += s.chains_rewritten;
            t.chains_deleted += s.chains_deleted;
            t.chains_kept += s.chains_kept;
            t.elements_added += s.elements_added;
            t.elements_deleted += s.elements_deleted;
        }
        t.transactions = plans.iter().filter(|p| !p.is_empty()).count();
        t
    }
}

/// The whole table from scratch (what a first sync writes).
pub fn full_transaction(state: &State) -> String {
    plan(&desired(state), &Current::empty()).text
}

/// The original simulator's layout, for comparison in the benchmark: one linear
/// `ip daddr VIP dnat to IP` rule per VIP in a prerouting chain of table `ip knetsim-linear`.
pub fn linear_transaction(vips: &[(Ipv4Addr, Ipv4Addr)]) -> String {
    let mut out = String::new();
    out.push_str("add table ip knetsim-linear\n");
    out.push_str("add chain ip knetsim-linear prerouting { type nat hook prerouting priority dstnat ; policy accept ; }\n");
    out.push_str("flush chain ip knetsim-linear prerouting\n");
    for (vip, ip) in vips {
        let _ = writeln!(
            out,
            "add rule ip knetsim-linear prerouting ip daddr {vip} counter dnat to {ip}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::kubeproxy::model::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn state() -> State {
        State {
            services: vec![Service {
                name: "web".into(),
                namespace: "default".into(),
                cluster_ip: ip("100.64.0.10"),
                type_: ServiceType::NodePort,
                ports: vec![ServicePort {
                    name: Some("http".into()),
                    protocol: Protocol::Tcp,
                    port: 80,
                    target_port: 8000,
                    node_port: Some(30080),
                }],
            }],
            endpoints: vec![Endpoints {
                service: "web".into(),
                namespace: "default".into(),
                addresses: vec![
                    EndpointAddress {
                        ip: ip("11.10.0.2"),
                        pod: "c2".into(),
                        node: "C0w2".into(),
                    },
                    EndpointAddress {
                        ip: ip("11.11.0.2"),
                        pod: "c3".into(),
                        node: "C0w3".into(),
                    },
                ],
            }],
            vips: vec![StaticVip {
                vip: ORIGINAL_VIP,
                ips: vec![ip("11.10.0.2"), ip("11.11.0.2")],
            }],
        }
    }

    #[test]
    fn hash_matches_base32_sha256() {
        // sha256("") = e3b0c442 98..., base32 of e3 b0 c4 42 98 = "4OYMIQUY".
        assert_eq!(hash8(""), "4OYMIQUY");
        // sha256("abc") = ba7816bf 8f...: base32 "XJ4BNP4P".
        assert_eq!(hash8("abc"), "XJ4BNP4P");
        let h = hash8("default/web/tcp/http");
        assert_eq!(h.len(), 8);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    }

    #[test]
    fn chain_names() {
        let s = state();
        let (svc, port) = (&s.services[0], &s.services[0].ports[0]);
        let h = hash8("default/web/tcp/http");
        assert_eq!(
            service_chain(svc, port),
            format!("service-{h}-default/web/tcp/http")
        );
        let he = hash8("default/web/tcp/http__11.10.0.2/8000");
        assert_eq!(
            endpoint_chain(svc, port, ip("11.10.0.2")),
            format!("endpoint-{he}-default/web/tcp/http__11.10.0.2/8000")
        );
        let mut unnamed = port.clone();
        unnamed.name = None;
        assert!(service_chain(svc, &unnamed).ends_with("-default/web/tcp/80"));
        assert!(
            vip_chain(ORIGINAL_VIP).starts_with("vip-")
                && vip_chain(ORIGINAL_VIP).ends_with("-100.64.10.1")
        );
    }

    #[test]
    fn full_transaction_shape() {
        let s = state();
        let t = full_transaction(&s);
        let svc_chain = service_chain(&s.services[0], &s.services[0].ports[0]);
        let ep = endpoint_chain(&s.services[0], &s.services[0].ports[0], ip("11.10.0.2"));
        for want in [
            "add table ip kube-proxy",
            "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority dstnat ; policy accept ; }",
            "add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority srcnat ;",
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
            "add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
            "add rule ip kube-proxy nat-prerouting jump services",
            "add rule ip kube-proxy nat-postrouting jump masquerading",
            "add rule ip kube-proxy masquerading masquerade fully-random",
            "add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000",
            "add rule ip kube-proxy reject-chain reject",
            "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ;",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(t.contains(&format!("add element ip kube-proxy service-ips {{ 100.64.0.10 . tcp . 80 : goto {svc_chain} }}")), "{t}");
        assert!(
            t.contains(&format!(
                "add rule ip kube-proxy {ep} ip saddr 11.10.0.2 counter jump mark-for-masquerade"
            )),
            "{t}"
        );
        assert!(t.contains(&format!(
            "add rule ip kube-proxy {ep} meta l4proto tcp counter dnat to 11.10.0.2:8000 comment \"default/web:http -> pod c2 on C0w2\""
        )), "{t}");
        assert!(t.contains(&format!("add rule ip kube-proxy {svc_chain} counter numgen random mod 2 vmap {{ 0 : goto endpoint-")), "{t}");
        assert!(
            t.contains("service-nodeports { tcp . 30080 : goto external-"),
            "{t}"
        );
        assert!(t.contains("static-vips { 100.64.10.1 : goto vip-"), "{t}");
        assert!(
            t.contains("counter dnat to 11.11.0.2 comment \"VIP 100.64.10.1 -> 11.11.0.2\""),
            "{t}"
        );
        assert!(
            !t.contains("add element ip kube-proxy no-endpoint-services"),
            "a service with endpoints is not rejected:\n{t}"
        );
    }

    #[test]
    fn no_endpoints_rejects() {
        let mut s = state();
        s.endpoints.clear();
        let t = full_transaction(&s);
        assert!(t.contains("add element ip kube-proxy no-endpoint-services { 100.64.0.10 . tcp . 80 : goto reject-chain }"), "{t}");
        assert!(t.contains("add element ip kube-proxy no-endpoint-nodeports { tcp . 30080 : goto reject-chain }"), "{t}");
        assert!(
            !t.contains(&service_chain(&s.services[0], &s.services[0].ports[0])),
            "{t}"
        );
    }

    #[test]
    fn incremental_keeps_unchanged_chains() {
        let s = state();
        let d1 = desired(&s);
        let cur = Current::from_desired(&d1);
        // Same state: nothing to do.
        assert!(plan(&d1, &cur).is_empty());
        // One endpoint goes away: its chain is deleted, the service chain rewritten, the
        // other endpoint chain untouched, and no setup, no table flush.
        let mut s2 = s.clone();
        s2.endpoints[0].addresses.remove(1);
        let p = plan(&desired(&s2), &cur);
        let gone = endpoint_chain(&s.services[0], &s.services[0].ports[0], ip("11.11.0.2"));
        let kept = endpoint_chain(&s.services[0], &s.services[0].ports[0], ip("11.10.0.2"));
        let svc_chain = service_chain(&s.services[0], &s.services[0].ports[0]);
        assert!(
            p.text
                .contains(&format!("delete chain ip kube-proxy {gone}")),
            "{}",
            p.text
        );
        assert!(
            p.text
                .contains(&format!("flush chain ip kube-proxy {svc_chain}")),
            "{}",
            p.text
        );
        assert!(
            !p.text
                .contains(&format!("flush chain ip kube-proxy {kept}\n")),
            "{}",
            p.text
        );
        assert!(
            !p.text.contains(&format!("add rule ip kube-proxy {kept} ")),
            "{}",
            p.text
        );
        assert!(
            !p.text.contains("add table")
                && !p.text.contains("delete table")
                && !p.text.contains("flush table")
        );
        assert_eq!(p.stats.chains_deleted, 1);
        assert_eq!(p.stats.chains_rewritten, 1);
        // The whole Service goes: every stale chain is flushed before any is deleted (a
        // service chain still jumps to its endpoint chains until it is flushed).
        let mut s4 = s.clone();
        s4.services.clear();
        s4.endpoints.clear();
        let p = plan(&desired(&s4), &cur);
        assert_eq!(p.stats.chains_deleted, 4, "{}", p.text);
        let last_flush = p.text.rfind("flush chain").unwrap();
        let first_delete = p.text.find("delete chain").unwrap();
        assert!(last_flush < first_delete, "{}", p.text);
        // The ClusterIP changes: elements move, chains stay.
        let mut s3 = s.clone();
        s3.services[0].cluster_ip = ip("100.64.0.11");
        let p = plan(&desired(&s3), &cur);
        assert!(
            p.text
                .contains("delete element ip kube-proxy service-ips { 100.64.0.10 . tcp . 80 }"),
            "{}",
            p.text
        );
        assert!(
            p.text
                .contains("add element ip kube-proxy service-ips { 100.64.0.11 . tcp . 80 : goto"),
            "{}",
            p.text
        );
        assert!(
            p.text
                .contains("delete element ip kube-proxy cluster-ips { 100.64.0.10 }"),
            "{}",
            p.text
        );
        assert_eq!(
            p.stats.chains_added + p.stats.chains_rewritten + p.stats.chains_deleted,
            0
        );
    }

    /// `n` Services svc-0.. (every third a NodePort, every fifth without endpoints) and
    /// `v` VIPs.
    fn big_state(n: usize, v: usize) -> State {
        let mut st = State::default();
        for i in 0..n {
            let name = format!("svc-{i}");
            let np = i % 3 == 0;
            st.services.push(Service {
                name: name.clone(),
                namespace: "default".into(),
                cluster_ip: Ipv4Addr::new(100, 64, 1, i as u8 + 1),
                type_: if np {
                    ServiceType::NodePort
                } else {
                    ServiceType::ClusterIP
                },
                ports: vec![ServicePort {
                    name: None,
                    protocol: Protocol::Tcp,
                    port: 80,
                    target_port: 8000,
                    node_port: np.then_some(30000 + i as u16),
                }],
            });
            if i % 5 != 4 {
                st.endpoints.push(Endpoints {
                    service: name,
                    namespace: "default".into(),
                    addresses: (2..4)
                        .map(|k| EndpointAddress {
                            ip: Ipv4Addr::new(11, 10, 0, k),
                            pod: format!("c{k}"),
                            node: "w".into(),
                        })
                        .collect(),
                });
            }
        }
        for i in 0..v {
            st.vips.push(StaticVip {
                vip: Ipv4Addr::new(100, 64, 10, i as u8 + 1),
                ips: vec![ip("11.10.0.2"), ip("11.10.0.3")],
            });
        }
        st
    }

    /// The lines of transactions, with `add element` lines cut into one element each.
    fn normalized(texts: &[&str]) -> Vec<String> {
        let mut v = Vec::new();
        for t in texts {
            for l in t.lines() {
                match l.split_once(" { ").filter(|_| l.starts_with("add element")) {
                    Some((head, body)) => {
                        for e in body.trim_end_matches(" }").split(", ") {
                            v.push(format!("{head} {{ {e} }}"));
                        }
                    }
                    None => v.push(l.to_string()),
                }
            }
        }
        v.sort();
        v
    }

    #[test]
    fn first_sync_split_adds_what_one_transaction_adds() {
        let s = big_state(7, 3);
        s.validate().unwrap();
        let want = desired(&s);
        let one = plan(&want, &Current::empty());
        let plans = plan_sync(&s, &want, &Current::empty(), Bulk::NftText(2));
        // skeleton + chains, 4 batches of Services (2,2,2,1), 2 of VIPs (2,1)
        assert_eq!(plans.len(), 7);
        let texts: Vec<&str> = plans.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(normalized(&texts), normalized(&[&one.text]));
        let total = PlanStats::total(&plans);
        assert_eq!(total.transactions, 7);
        assert!(total.setup);
        assert_eq!(total.chains_added, one.stats.chains_added);
        assert_eq!(total.elements_added, one.stats.elements_added);
        // The first creates every chain, empty, in the order one transaction would.
        let chains = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| {
                    l.starts_with("add chain") && is_dynamic_chain(l.split(' ').nth(4).unwrap())
                })
                .map(str::to_string)
                .collect()
        };
        assert_eq!(chains(&plans[0].text), chains(&one.text));
        assert!(plans[0].text.contains("add table ip kube-proxy"));
        assert!(
            !plans[0].text.lines().any(
                |l| l.starts_with("add rule") && is_dynamic_chain(l.split(' ').nth(4).unwrap())
            ),
            "{}",
            plans[0].text
        );
        // Every later one only adds: it names a chain in a map element only when the
        // same transaction writes that chain's rules, and endpoint chains with it.
        for p in &plans[1..] {
            assert!(!p.text.contains("add chain") && !p.text.contains("delete "));
            for l in p.text.lines().filter(|l| l.starts_with("add element")) {
                for target in l.split("goto ").skip(1) {
                    let chain = target.split([',', ' ']).next().unwrap();
                    if chain == "reject-chain" {
                        continue;
                    }
                    assert!(
                        p.text.contains(&format!("add rule ip kube-proxy {chain} ")),
                        "{chain} is referred to before its rules exist:\n{}",
                        p.text
                    );
                }
            }
            for l in p.text.lines().filter(|l| l.contains("numgen random")) {
                for target in l.split("goto ").skip(1) {
                    let chain = target.split([',', ' ']).next().unwrap();
                    assert!(p.text.contains(&format!("add rule ip kube-proxy {chain} ")));
                }
            }
        }
        // The same state with a table that already has the skeleton: no setup.
        let mut skel = Current::empty();
        skel.table = true;
        skel.skeleton = true;
        let plans = plan_sync(&s, &want, &skel, Bulk::NftText(2));
        assert_eq!(plans.len(), 7);
        assert!(!plans[0].text.contains("add table") && !plans[0].stats.setup);
    }

    #[test]
    fn first_sync_netlink_adds_what_one_transaction_adds() {
        let s = big_state(7, 3);
        let want = desired(&s);
        let one = plan(&want, &Current::empty());
        let plans = plan_sync(&s, &want, &Current::empty(), Bulk::Netlink(2));
        // 6 Services with endpoints + 3 VIPs = 9 balancers: 5 netlink batches.
        assert_eq!(plans.len(), 1 + 5 + 1);
        let (first, rest) = plans.split_first().unwrap();
        let (last, middle) = rest.split_last().unwrap();
        assert!(first.netlink.is_none() && last.netlink.is_none());
        assert!(!first.text.contains("add element") && !first.text.contains("numgen"));
        assert!(
            last.text.lines().all(|l| l.starts_with("add element")),
            "{}",
            last.text
        );
        // The balancers, rendered as the rule text nft would have been given.
        let mut texts = vec![first.text.clone(), last.text.clone()];
        let mut set = 0;
        for p in middle {
            let b = p.netlink.as_ref().unwrap();
            assert!(p.text.is_empty() && !b.rules.is_empty() && b.rules.len() <= 2);
            assert_eq!(b.first_set, set);
            set += b.rules.len() as u32;
            for r in &b.rules {
                let elems: Vec<String> = r
                    .targets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| format!("{i} : goto {t}"))
                    .collect();
                texts.push(format!(
                    "add rule ip {TABLE} {} counter numgen random mod {} vmap {{ {} }} comment \"{}\"\n",
                    r.chain,
                    r.targets.len(),
                    elems.join(", "),
                    r.comment.as_deref().unwrap()
                ));
            }
        }
        assert_eq!(set, 9);
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        assert_eq!(normalized(&texts), normalized(&[&one.text]));
        let total = PlanStats::total(&plans);
        assert_eq!(total.transactions, 7);
        assert_eq!(total.chains_added, one.stats.chains_added);
        assert_eq!(total.elements_added, one.stats.elements_added);
    }

    #[test]
    fn only_a_first_sync_is_split() {
        let s = big_state(7, 3);
        let want = desired(&s);
        // A table that already has Services: one atomic transaction, whatever its size.
        let cur = Current::from_desired(&desired(&big_state(2, 0)));
        assert!(!cur.is_unprogrammed());
        let plans = plan_sync(&s, &want, &cur, Bulk::Netlink(2));
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].text, plan(&want, &cur).text);
        assert_eq!(PlanStats::total(&plans).transactions, 1);
        // Small enough for one batch: not split either.
        let plans = plan_sync(&s, &want, &Current::empty(), Bulk::NftText(7));
        assert_eq!(plans.len(), 1);
        // Nothing to do: one empty plan, zero transactions.
        let plans = plan_sync(&s, &want, &Current::from_desired(&want), Bulk::Netlink(2));
        assert!(plans.len() == 1 && plans[0].is_empty());
        assert_eq!(PlanStats::total(&plans).transactions, 0);
        // Batch 0 is taken as 1.
        assert_eq!(
            plan_sync(&s, &want, &Current::empty(), Bulk::NftText(0)).len(),
            1 + 7 + 3
        );
        // Never split when asked not to.
        assert_eq!(
            plan_sync(&s, &want, &Current::empty(), Bulk::Single).len(),
            1
        );
    }

    #[test]
    fn reads_nft_json() {
        let json = r#"{"nftables":[{"metainfo":{}},{"table":{"family":"ip","name":"kube-proxy"}},
          {"map":{"name":"service-ips","elem":[[{"concat":["100.64.0.10","tcp",80]},{"goto":{"target":"service-X-default/web/tcp/http"}}]]}},
          {"map":{"name":"static-vips","elem":[["100.64.10.1",{"goto":{"target":"vip-Y-100.64.10.1"}}]]}},
          {"set":{"name":"cluster-ips","elem":["100.64.0.10"]}},
          {"chain":{"name":"service-X-default/web/tcp/http"}},
          {"chain":{"name":"services"}},
          {"rule":{"chain":"service-X-default/web/tcp/http","comment":"c","expr":[{"counter":{}},{"vmap":{"key":{"numgen":{}},"data":{"set":[[1,{"goto":{"target":"b"}}],[0,{"goto":{"target":"a"}}]]}}}]}}]}"#;
        let c = Current::from_nft_json(json).unwrap();
        assert!(c.table && !c.skeleton);
        assert_eq!(
            c.maps["service-ips"]["100.64.0.10 . tcp . 80"],
            "goto service-X-default/web/tcp/http"
        );
        assert_eq!(
            c.maps["static-vips"]["100.64.10.1"],
            "goto vip-Y-100.64.10.1"
        );
        assert!(c.cluster_ips.contains("100.64.0.10"));
        assert_eq!(
            c.chains["service-X-default/web/tcp/http"],
            vec![(
                Some("c".to_string()),
                vec!["a".to_string(), "b".to_string()]
            )]
        );
        assert!(!c.chains.contains_key("services"));
        assert!(Current::from_nft_json("not json").is_err());
    }
}
