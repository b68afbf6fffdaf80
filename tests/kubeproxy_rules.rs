//! kube-proxy rules programmed into real namespaces with `apply_local`, and real traffic.
//! Needs root; each test builds and removes its own namespaces.

mod common;

use common::kubeproxy::*;
use common::*;
use knetsim::components::kubeproxy::{apply_local, read_counters, Service, State, StaticVip};
use std::net::Ipv4Addr;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn service(name: &str, cip: &str, port: u16, target: u16, node_port: Option<u16>) -> Service {
    Service::synthetic(name, ip(cip), None, port, target, node_port)
}

#[test]
fn vip_services_nodeports_reject_and_counters() {
    let Some((_g, t, [ip1, ip2])) = serving_topology("kubeproxy-rules-e2e") else {
        return;
    };

    let mut state = State {
        services: vec![
            service("web", "100.64.0.10", 80, 8000, Some(30080)),
            service("empty", "100.64.0.20", 80, 8000, None),
        ],
        endpoints: vec![endpoints("web", &[(ip1, "b1"), (ip2, "b2")])],
        vips: vec![StaticVip {
            vip: ip("100.64.10.1"),
            ips: vec![ip1, ip2],
        }],
    };
    let r = apply_local(&t.node, &state).unwrap();
    println!("{}", r.summary());
    assert!(r.stats.setup && r.stats.chains_added > 0);
    let rs = ruleset(&t.node);
    assert!(rs.contains("table ip kube-proxy"), "{rs}");
    assert!(rs.contains("numgen random mod 2 vmap"), "{rs}");

    // 20 separate pings of the static VIP: every one answers, and both backends got some.
    for i in 0..20 {
        let (ok, out) = sh_any(&t.client, "ping -c 1 -W 2 100.64.10.1");
        assert!(ok, "ping {i} of the VIP failed: {out}");
    }
    let rows = read_counters(&t.node).unwrap();
    let vip_rows: Vec<_> = rows.iter().filter(|r| r.kind == "vip").collect();
    assert_eq!(vip_rows.len(), 2, "{rows:?}");
    assert!(
        vip_rows.iter().all(|r| r.packets > 0),
        "both VIP endpoints counted flows: {rows:?}"
    );
    assert_eq!(
        vip_rows.iter().map(|r| r.packets).sum::<u64>(),
        20,
        "{rows:?}"
    );

    // TCP to the ClusterIP reaches the target port of a backend; NodePort on the node too.
    let out = connect(&t.client, "100.64.0.10:80").unwrap();
    assert!(out.starts_with("hello from b"), "{out}");
    let out = connect(&t.client, "10.0.0.1:30080").unwrap();
    assert!(out.starts_with("hello from b"), "{out}");
    // A port the Service does not have is rejected too, not routed nowhere.
    let e = connect(&t.client, "100.64.0.10:81").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

    // Hairpin: a backend reaching the Service lands on itself about half the time, and
    // still gets the answer (masqueraded through the node), never a broken connection.
    let mut own = 0;
    for _ in 0..20 {
        let out = connect(&t.backends[0].0, "100.64.0.10:80").unwrap();
        own += usize::from(out == "hello from b1");
    }
    assert!(own > 0, "b1 never reached itself through the Service");
    // The worker itself reaches the VIP (nat-output, plus the service route).
    let (ok, out) = sh_any(&t.node, "ping -c 1 -W 2 100.64.10.1");
    assert!(ok, "the node could not ping the VIP: {out}");

    // A Service without endpoints refuses the connection (not a timeout).
    let e = connect(&t.client, "100.64.0.20:80").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");

    // Re-programming after a change keeps the counters of unchanged chains: add a Service
    // and drop b2 from web; the VIP endpoint counters (untouched) must stay as they were.
    let before = read_counters(&t.node).unwrap();
    let web_b1_before = before
        .iter()
        .find(|r| r.kind == "service" && r.endpoint == ip1)
        .unwrap()
        .packets;
    state
        .services
        .push(service("api", "100.64.0.30", 8080, 8000, None));
    state.endpoints.push(endpoints("api", &[(ip2, "b2")]));
    state.endpoints[0].addresses.retain(|a| a.ip == ip1);
    let r = apply_local(&t.node, &state).unwrap();
    println!("{}", r.summary());
    assert!(!r.stats.setup);
    assert_eq!(r.stats.chains_deleted, 1, "{:?}", r.stats);
    assert!(r.stats.chains_kept >= 4, "{:?}", r.stats);
    let after = read_counters(&t.node).unwrap();
    for row in before.iter().filter(|r| r.kind == "vip") {
        let now = after
            .iter()
            .find(|a| a.kind == "vip" && a.endpoint == row.endpoint)
            .unwrap();
        assert_eq!(
            now.packets, row.packets,
            "counter of an unchanged chain was reset"
        );
    }
    let web_b1_after = after
        .iter()
        .find(|r| r.service == "default/web/tcp/80" && r.endpoint == ip1)
        .unwrap();
    assert_eq!(web_b1_after.packets, web_b1_before);
    assert!(
        !after
            .iter()
            .any(|r| r.service == "default/web/tcp/80" && r.endpoint == ip2),
        "{after:?}"
    );
    // With one endpoint left, web's service chain goes straight to it: no numgen map, as
    // upstream kube-proxy writes it since 2026; its endpoint chain still counts flows.
    let web_chain = rs_chain(&t.node, "default/web/tcp/80");
    assert!(
        web_chain.contains("goto endpoint-") && !web_chain.contains("numgen"),
        "{web_chain}"
    );
    // The healed Service now always reaches b1, the new one reaches b2.
    for _ in 0..5 {
        assert_eq!(
            connect(&t.client, "100.64.0.10:80").unwrap(),
            "hello from b1"
        );
    }
    assert_eq!(
        connect(&t.client, "100.64.0.30:8080").unwrap(),
        "hello from b2"
    );
    let after5 = read_counters(&t.node).unwrap();
    let web_b1_after5 = after5
        .iter()
        .find(|r| r.service == "default/web/tcp/80" && r.endpoint == ip1)
        .unwrap();
    assert_eq!(web_b1_after5.packets, web_b1_before + 5, "{after5:?}");
    // Same state again: nothing to do.
    let r = apply_local(&t.node, &state).unwrap();
    assert_eq!(
        r.stats.chains_added + r.stats.chains_rewritten + r.stats.chains_deleted,
        0
    );
    assert_eq!(r.stats.elements_added + r.stats.elements_deleted, 0);
}

/// The listing of the service chain of `ns/name/proto/port` in namespace `node`.
fn rs_chain(node: &str, service_port: &str) -> String {
    let rs = ruleset(node);
    let head = rs
        .lines()
        .find(|l| {
            let l = l.trim();
            l.starts_with("chain service-") && l.ends_with(&format!("-{service_port} {{"))
        })
        .unwrap_or_else(|| panic!("no service chain for {service_port} in\n{rs}"));
    let start = rs.find(head).unwrap();
    let len = rs[start..].find('}').unwrap();
    rs[start..start + len].to_string()
}

#[test]
fn rejected_change_leaves_ruleset_unchanged() {
    let Some((_g, node)) = guarded_ns("kubeproxy-rules-reject-node") else {
        return;
    };
    let good = State {
        services: vec![service("web", "100.64.0.10", 80, 8000, None)],
        endpoints: vec![endpoints("web", &[(ip("11.10.0.2"), "c2")])],
        vips: vec![StaticVip {
            vip: ip("100.64.10.1"),
            ips: vec![ip("11.10.0.2")],
        }],
    };
    apply_local(&node, &good).unwrap();
    let before = ruleset(&node);

    // Each bad change is refused, saying why, and the ruleset stays as it was.
    let refused = |bad: State, why: &str| {
        let e = format!("{:#}", apply_local(&node, &bad).unwrap_err());
        assert!(e.contains(why), "{e}");
        assert_eq!(ruleset(&node), before);
    };
    let mut bad = good.clone();
    bad.vips.push(StaticVip {
        vip: ip("10.0.0.99"),
        ips: vec![ip("11.10.0.3")],
    });
    refused(
        bad,
        "VIP 10.0.0.99 is outside the service range 100.64.0.0/16",
    );
    let mut bad = good.clone();
    bad.vips.push(StaticVip {
        vip: ip("100.64.0.10"),
        ips: vec![ip("11.10.0.3")],
    });
    refused(bad, "already taken by Service default/web");
    let mut bad = good.clone();
    bad.services[0].ports[0].port = 0;
    bad.services
        .push(service("api", "100.64.0.11", 80, 8000, None));
    refused(bad, "invalid port 0");

    // A namespace that does not exist: a clear message naming it.
    let e = format!(
        "{:#}",
        apply_local("kubeproxy-rules-no-such-ns", &good).unwrap_err()
    );
    assert!(e.contains("kubeproxy-rules-no-such-ns"), "{e}");
}

#[test]
fn nft_and_route_errors_are_clear() {
    let Some((_g, node)) = guarded_ns("kubeproxy-rules-errors-node") else {
        return;
    };
    let e = knetsim::components::kubeproxy::apply_transaction(
        Some(&node),
        "add rule ip nowhere x accept\n",
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("nft refused the kube-proxy transaction (nothing was changed)"),
        "{e}"
    );
    let e =
        knetsim::components::kubeproxy::ensure_service_route(Some(&node), "nosuchdev").unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("100.64.0.0/16 dev nosuchdev") && e.contains("does 'nosuchdev' exist yet?"),
        "{e}"
    );
    // No table yet: counters are simply empty, not an error.
    assert!(read_counters(&node).unwrap().is_empty());
}
