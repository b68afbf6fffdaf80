//! `nft -j list table ip kube-proxy` read into the typed values of [`super::table`].

use super::skeleton::{fixed_chains, jumps, BASE_CHAINS};
use super::table::{Counter, Key, MapName, Rule, Verdict, SET_CLUSTER_IPS, TABLE};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

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

    /// True when every fixed map, set and chain exists and holds its rules.
    pub fn has_skeleton(&self) -> bool {
        self.table
            && self.cluster_ips.is_some()
            && MapName::ALL.iter().all(|m| self.maps.contains_key(m))
            && BASE_CHAINS.iter().all(|b| self.chains.contains(b.name))
            && fixed_chains().iter().all(|(c, _)| self.chains.contains(*c))
            && self.has_fixed_rules()
    }

    /// The base and fixed chains hold at least as many rules as the skeleton gives them:
    /// `nft flush table` keeps every chain but empties it, and a kube-proxy started over
    /// such a table must write the skeleton again (as upstream's first full sync does).
    fn has_fixed_rules(&self) -> bool {
        let mut want: BTreeMap<&str, usize> = BTreeMap::new();
        for (chain, rules) in fixed_chains() {
            *want.entry(chain).or_default() += rules.len();
        }
        for (chain, _) in jumps() {
            *want.entry(chain).or_default() += 1;
        }
        want.iter()
            .all(|(chain, n)| self.rules.iter().filter(|r| r.chain == *chain).count() >= *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::kubeproxy::model::Protocol;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
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

    #[test]
    fn a_flushed_table_has_no_skeleton() {
        let listed = |chain: &str, rule| ListedRule {
            chain: chain.to_string(),
            rule: Some(rule),
            counter: None,
        };
        let mut l = Listing {
            table: true,
            cluster_ips: Some(BTreeSet::new()),
            maps: MapName::ALL.iter().map(|m| (*m, BTreeMap::new())).collect(),
            chains: BASE_CHAINS.iter().map(|b| b.name.to_string()).collect(),
            ..Listing::default()
        };
        for (chain, rules) in fixed_chains() {
            l.chains.insert(chain.to_string());
            l.rules.extend(rules.into_iter().map(|r| listed(chain, r)));
        }
        l.rules
            .extend(jumps().into_iter().map(|(c, r)| listed(c, r)));
        assert!(l.has_skeleton());
        // `nft flush table ip kube-proxy`: every chain is still there, empty.
        l.rules.clear();
        assert!(!l.has_skeleton());
    }
}
