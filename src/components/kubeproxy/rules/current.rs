//! The table as the kernel has it (read from `nft -j list table`), or as our last
//! successful sync left it, in the same typed values as [`super::Desired`].

use super::desired::Desired;
use super::listing::Listing;
use super::names::is_dynamic_chain;
use super::table::{Key, MapName, Rule, Verdict};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Current {
    pub table: bool,
    /// Every fixed chain, map and set exists.
    pub skeleton: bool,
    /// Per-Service/VIP chains with their rules; None for a chain holding a rule this
    /// model cannot express (someone else's): it is rewritten on the next sync.
    pub chains: BTreeMap<String, Option<Vec<Rule>>>,
    pub maps: BTreeMap<MapName, BTreeMap<Key, Verdict>>,
    pub cluster_ips: BTreeSet<Ipv4Addr>,
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
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
            maps: d.maps.clone(),
            cluster_ips: d.cluster_ips.clone(),
        }
    }

    /// Reads the output of `nft -j list table ip kube-proxy`.
    pub fn from_nft_json(json: &str) -> Result<Current> {
        Ok(Current::from_listing(Listing::parse(json)?))
    }

    pub fn from_listing(l: Listing) -> Current {
        let skeleton = l.has_skeleton();
        let mut chains: BTreeMap<String, Option<Vec<Rule>>> = l
            .chains
            .iter()
            .filter(|c| is_dynamic_chain(c))
            .map(|c| (c.clone(), Some(Vec::new())))
            .collect();
        for r in l.rules {
            if !is_dynamic_chain(&r.chain) {
                continue;
            }
            let slot = chains.entry(r.chain).or_insert_with(|| Some(Vec::new()));
            match (slot.as_mut(), r.rule) {
                (Some(rules), Some(rule)) => rules.push(rule),
                _ => *slot = None,
            }
        }
        Current {
            table: l.table,
            skeleton,
            chains,
            maps: l.maps,
            cluster_ips: l.cluster_ips.unwrap_or_default(),
        }
    }

    /// True when the table holds no Service or VIP yet (no chain of ours, no element):
    /// a sync from here changes nothing that exists, so it may be split.
    pub fn is_unprogrammed(&self) -> bool {
        self.chains.is_empty()
            && self.cluster_ips.is_empty()
            && self.maps.values().all(|m| m.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::kubeproxy::model::Protocol;
    use crate::components::kubeproxy::rules::table::{Balancer, Statement};

    #[test]
    fn reads_nft_json() {
        let json = r#"{"nftables":[{"metainfo":{}},{"table":{"family":"ip","name":"kube-proxy"}},
          {"map":{"name":"service-ips","elem":[[{"concat":["100.64.0.10","tcp",80]},{"goto":{"target":"service-X-default/web/tcp/http"}}]]}},
          {"map":{"name":"static-vips","elem":[["100.64.10.1",{"goto":{"target":"vip-Y-100.64.10.1"}}]]}},
          {"set":{"name":"cluster-ips","elem":["100.64.0.10"]}},
          {"chain":{"name":"service-X-default/web/tcp/http"}},
          {"chain":{"name":"endpoint-Z-default/web/tcp/http__11.10.0.2/8000"}},
          {"chain":{"name":"vip-Y-100.64.10.1"}},
          {"chain":{"name":"services"}},
          {"rule":{"chain":"service-X-default/web/tcp/http","comment":"c","expr":[{"counter":{}},{"vmap":{"key":{"numgen":{"mode":"random","mod":2,"offset":0}},"data":{"set":[[1,{"goto":{"target":"b"}}],[0,{"goto":{"target":"a"}}]]}}}]}},
          {"rule":{"chain":"vip-Y-100.64.10.1","expr":[{"log":{}}]}},
          {"rule":{"chain":"services","expr":[{"log":{}}]}}]}"#;
        let c = Current::from_nft_json(json).unwrap();
        assert!(c.table && !c.skeleton);
        assert_eq!(
            c.maps[&MapName::ServiceIps]
                [&Key::AddrProtoPort("100.64.0.10".parse().unwrap(), Protocol::Tcp, 80)],
            Verdict::Goto("service-X-default/web/tcp/http".into())
        );
        assert_eq!(
            c.maps[&MapName::StaticVips][&Key::Addr("100.64.10.1".parse().unwrap())],
            Verdict::Goto("vip-Y-100.64.10.1".into())
        );
        assert!(c.cluster_ips.contains(&"100.64.0.10".parse().unwrap()));
        let want = Rule::new(Statement::Balance(Balancer {
            targets: vec!["a".into(), "b".into()],
        }))
        .counted()
        .commented("c");
        assert_eq!(c.chains["service-X-default/web/tcp/http"], Some(vec![want]));
        // An empty chain is an empty chain; one with a foreign rule is unreadable.
        assert_eq!(
            c.chains["endpoint-Z-default/web/tcp/http__11.10.0.2/8000"],
            Some(vec![])
        );
        assert_eq!(c.chains["vip-Y-100.64.10.1"], None);
        assert!(!c.chains.contains_key("services"));
        assert!(!c.is_unprogrammed());
        assert!(Current::from_nft_json("not json").is_err());
        assert!(Current::empty().is_unprogrammed());
    }
}
