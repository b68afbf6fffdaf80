//! Each rule kind rendered to nft's text and read back from nft's JSON.

use super::*;
use crate::components::kubeproxy::rules::skeleton::{fixed_chains, jumps, BASE_CHAINS};

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
