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

use super::model::{Service, ServicePort, ServiceType, State};
use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
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
    for svc in &state.services {
        d.services += 1;
        let eps = state.endpoints_of(svc);
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
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// The `nft -f -` transaction (empty when nothing changes).
    pub text: String,
    pub stats: PlanStats,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

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
    Plan {
        text: out,
        stats: st,
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
