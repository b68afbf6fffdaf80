//! Per-endpoint counters read back from a worker: how many flows (nat chains see only a
//! flow's first packet) each endpoint chain DNATed, for lessons to print and `expect` on.

use super::rules;
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CounterRow {
    /// "service" or "vip".
    pub kind: String,
    /// `namespace/name/protocol/port` for a Service, the address for a VIP.
    pub service: String,
    pub endpoint: Ipv4Addr,
    /// Packets (= new flows) DNATed to this endpoint.
    pub packets: u64,
    pub bytes: u64,
}

/// Reads the counters of every endpoint chain of namespace `ns` (empty when the worker has
/// no kube-proxy table yet). Sorted by service, then endpoint.
pub fn read_counters(ns: &str) -> Result<Vec<CounterRow>> {
    match super::list_table_json(Some(ns))
        .with_context(|| format!("reading counters in namespace '{ns}'"))?
    {
        Some(json) => parse_counters(&json),
        None => Ok(Vec::new()),
    }
}

/// Splits an endpoint chain name into (kind, service, endpoint ip).
fn endpoint_of(chain: &str) -> Option<(&'static str, String, Ipv4Addr)> {
    let (kind, rest) = if let Some(r) = chain.strip_prefix("vip-endpoint-") {
        ("vip", r)
    } else if let Some(r) = chain.strip_prefix("endpoint-") {
        ("service", r)
    } else {
        return None;
    };
    // rest = HASH-<service part>__<ip>[/<port>]
    let rest = rest.get(9..)?;
    let (svc, ep) = rest.split_once("__")?;
    let ip = ep.split('/').next()?.parse().ok()?;
    Some((kind, svc.to_string(), ip))
}

/// Parses `nft -j list table ip kube-proxy`: the counter of each endpoint chain's DNAT rule.
pub fn parse_counters(json: &str) -> Result<Vec<CounterRow>> {
    let v: Value = serde_json::from_str(json).context("parsing the JSON of nft's table listing")?;
    let mut rows = Vec::new();
    for item in v
        .get("nftables")
        .and_then(|n| n.as_array())
        .into_iter()
        .flatten()
    {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        if rule
            .get("table")
            .and_then(|t| t.as_str())
            .is_some_and(|t| t != rules::TABLE)
        {
            continue;
        }
        let chain = rule
            .get("chain")
            .and_then(|c| c.as_str())
            .unwrap_or_default();
        let Some((kind, service, endpoint)) = endpoint_of(chain) else {
            continue;
        };
        let exprs = rule
            .get("expr")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        if !exprs.iter().any(|e| e.get("dnat").is_some()) {
            continue;
        }
        let counter = exprs.iter().find_map(|e| e.get("counter"));
        let get = |k: &str| {
            counter
                .and_then(|c| c.get(k))
                .and_then(|n| n.as_u64())
                .unwrap_or(0)
        };
        rows.push(CounterRow {
            kind: kind.to_string(),
            service,
            endpoint,
            packets: get("packets"),
            bytes: get("bytes"),
        });
    }
    rows.sort_by(|a, b| (&a.service, a.endpoint).cmp(&(&b.service, b.endpoint)));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoint_and_vip_counters() {
        let json = r#"{"nftables":[{"metainfo":{}},
          {"rule":{"table":"kube-proxy","chain":"endpoint-ABCDEFGH-default/web/tcp/http__11.10.0.2/8000","expr":[
             {"match":{}},{"counter":{"packets":0,"bytes":0}},{"jump":{"target":"mark-for-masquerade"}}]}},
          {"rule":{"table":"kube-proxy","chain":"endpoint-ABCDEFGH-default/web/tcp/http__11.10.0.2/8000","expr":[
             {"match":{}},{"counter":{"packets":3,"bytes":180}},{"dnat":{"addr":"11.10.0.2","port":8000}}]}},
          {"rule":{"table":"kube-proxy","chain":"vip-endpoint-ABCDEFGH-100.64.10.1__11.11.0.2","expr":[
             {"counter":{"packets":7,"bytes":588}},{"dnat":{"addr":"11.11.0.2"}}]}},
          {"rule":{"table":"kube-proxy","chain":"services","expr":[{"counter":{"packets":9,"bytes":1}}]}}]}"#;
        let rows = parse_counters(json).unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].service, "100.64.10.1");
        assert_eq!(rows[0].kind, "vip");
        assert_eq!(
            (rows[0].endpoint, rows[0].packets),
            ("11.11.0.2".parse().unwrap(), 7)
        );
        assert_eq!(rows[1].service, "default/web/tcp/http");
        assert_eq!((rows[1].packets, rows[1].bytes), (3, 180));
        assert!(parse_counters("[").is_err());
    }
}
