//! Per-endpoint counters read back from a worker: how many flows (nat chains see only a
//! flow's first packet) each endpoint chain DNATed, for lessons to print and `expect` on.

use super::rules::listing::Listing;
use super::rules::names::endpoint_of;
use super::rules::table::Statement;
use anyhow::{Context, Result};
use serde::Serialize;
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

/// Parses `nft -j list table ip kube-proxy`: the counter of each endpoint chain's DNAT rule.
pub fn parse_counters(json: &str) -> Result<Vec<CounterRow>> {
    let listing = Listing::parse(json)?;
    let mut rows = Vec::new();
    for r in &listing.rules {
        let (Some(rule), Some((kind, service, endpoint))) = (&r.rule, endpoint_of(&r.chain)) else {
            continue;
        };
        if !matches!(rule.statement, Statement::Dnat { .. }) {
            continue;
        }
        let c = r.counter.unwrap_or_default();
        rows.push(CounterRow {
            kind: kind.to_string(),
            service,
            endpoint,
            packets: c.packets,
            bytes: c.bytes,
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
             {"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":"11.10.0.2"}},{"counter":{"packets":0,"bytes":0}},{"jump":{"target":"mark-for-masquerade"}}]}},
          {"rule":{"table":"kube-proxy","chain":"endpoint-ABCDEFGH-default/web/tcp/http__11.10.0.2/8000","expr":[
             {"match":{"op":"==","left":{"meta":{"key":"l4proto"}},"right":"tcp"}},{"counter":{"packets":3,"bytes":180}},{"dnat":{"addr":"11.10.0.2","port":8000}}]}},
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
