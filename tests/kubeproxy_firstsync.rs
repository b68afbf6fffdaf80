//! A large first sync is split (netlink batches of balancer rules, or `nft -f` batches):
//! the table it leaves must be the one a single `nft -f` transaction writes, listed
//! byte for byte the same, and it must carry traffic and count it. Needs root; each test
//! builds and removes its own namespaces.

mod common;

use common::kubeproxy::*;
use common::*;
use knetsim::components::kubeproxy::rules::listing::Listing;
use knetsim::components::kubeproxy::rules::skeleton;
use knetsim::components::kubeproxy::rules::{self, Bulk};
use knetsim::components::kubeproxy::{
    apply_local, apply_plans, apply_transaction, list_table_json, read_counters, Endpoints,
    Service, State, StaticVip,
};
use std::net::Ipv4Addr;

/// `n` Services (every fourth a NodePort, every seventh without endpoints) on the two
/// backends, and two VIPs.
fn state(n: usize, backends: [Ipv4Addr; 2]) -> State {
    let mut st = State::default();
    for i in 0..n {
        let name = format!("svc-{i}");
        let node_port = (i % 4 == 0).then_some(30000 + i as u16);
        let cluster_ip = Ipv4Addr::new(100, 64, 20 + (i / 250) as u8, (i % 250) as u8 + 1);
        st.services.push(Service::synthetic(
            &name,
            cluster_ip,
            Some("http"),
            80,
            8000,
            node_port,
        ));
        if i % 7 != 6 {
            st.endpoints.push(Endpoints::synthetic(&name, &backends));
        }
    }
    for v in [1, 2] {
        st.vips.push(StaticVip {
            vip: Ipv4Addr::new(100, 64, 10, v),
            ips: backends.to_vec(),
        });
    }
    st
}

fn table(ns: &str) -> String {
    sh(ns, "nft list table ip kube-proxy")
}

#[test]
fn split_first_sync_lists_like_one_transaction() {
    if !root_or_skip() {
        return;
    }
    let mut g = Guard::default();
    let backends = [Ipv4Addr::new(11, 10, 0, 2), Ipv4Addr::new(11, 10, 0, 3)];
    let st = state(600, backends);
    let want = rules::desired(&st);

    let one = g.ns("kubeproxy-firstsync-list-one");
    apply_transaction(Some(&one), &rules::full_transaction(&st)).unwrap();
    let reference = table(&one);
    assert_eq!(
        reference.matches("numgen random mod 2 vmap {").count(),
        600 - 85 + 2
    );

    for (name, bulk) in [
        ("kubeproxy-firstsync-list-nl", Bulk::Netlink(250)),
        ("kubeproxy-firstsync-list-txt", Bulk::NftText(250)),
    ] {
        let ns = g.ns(name);
        let plans = rules::plan_sync(&st, &want, &rules::Current::empty(), bulk);
        assert!(plans.len() > 3, "{bulk:?} was not split");
        apply_plans(Some(&ns), &plans).unwrap();
        let got = table(&ns);
        if got != reference {
            let diff: Vec<_> = got
                .lines()
                .zip(reference.lines())
                .filter(|(a, b)| a != b)
                .take(3)
                .collect();
            panic!("{bulk:?}: the listing differs from one nft -f transaction: {diff:?}");
        }
        // The kernel's view the agent converges from: nothing left to do.
        let cur = knetsim::components::kubeproxy::read_current(Some(&ns)).unwrap();
        assert!(rules::plan(&want, &cur).is_empty(), "{bulk:?}");
    }
    // Every rule the kernel lists reads back as the typed rule that wrote it, the fixed
    // chains' too.
    let json = list_table_json(Some(&one)).unwrap().unwrap();
    let listing = Listing::parse(&json).unwrap();
    assert!(listing.has_skeleton());
    assert!(listing.rules.iter().all(|r| r.rule.is_some()));
    for (chain, rules) in skeleton::fixed_chains() {
        let listed: Vec<_> = listing
            .rules
            .iter()
            .filter(|r| r.chain == chain)
            .map(|r| r.rule.clone().unwrap())
            .collect();
        assert_eq!(listed, rules, "{chain}");
    }
}

#[test]
fn split_first_sync_carries_traffic_then_changes_atomically() {
    let Some((_g, t, [ip1, ip2])) = serving_topology("kubeproxy-firstsync-e2e") else {
        return;
    };
    let mut st = state(600, [ip1, ip2]);

    // apply_local takes the bulk path by itself for a first sync this large.
    let r = apply_local(&t.node, &st).unwrap();
    println!("{}", r.summary());
    assert!(r.stats.transactions > 3, "{:?}", r.stats);
    assert!(r.summary().contains("split into"), "{}", r.summary());

    // Services from the first and the last netlink batch, a NodePort, a VIP, a Service
    // without endpoints (refused at once).
    for addr in ["100.64.20.1:80", "100.64.22.100:80", "10.0.0.1:30000"] {
        let out = connect(&t.client, addr).unwrap();
        assert!(out.starts_with("hello from b"), "{addr}: {out}");
    }
    let (ok, out) = sh_any(&t.client, "ping -c 1 -W 2 100.64.10.2");
    assert!(ok, "{out}");
    let e = connect(&t.client, "100.64.20.7:80").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    let rows = read_counters(&t.node).unwrap();
    let hit: u64 = rows
        .iter()
        .filter(|r| r.service == "default/svc-0/tcp/http")
        .map(|r| r.packets)
        .sum();
    // Two connections reached svc-0: through its ClusterIP and through its NodePort.
    assert_eq!(hit, 2, "{:?}", &rows[..4.min(rows.len())]);

    // A later change is one transaction again, and keeps the counters of the rest.
    let count = |rows: &[knetsim::components::kubeproxy::CounterRow], ip: Ipv4Addr| -> u64 {
        rows.iter()
            .filter(|r| r.service == "default/svc-0/tcp/http" && r.endpoint == ip)
            .map(|r| r.packets)
            .sum()
    };
    let before_b1 = count(&rows, ip1);
    st.endpoints[0].addresses.retain(|a| a.ip == ip1);
    let r = apply_local(&t.node, &st).unwrap();
    assert_eq!(r.stats.transactions, 1, "{:?}", r.stats);
    assert_eq!(r.stats.chains_deleted, 1, "{:?}", r.stats);
    let after = read_counters(&t.node).unwrap();
    assert_eq!(
        count(&after, ip1),
        before_b1,
        "the kept endpoint chain kept its counter"
    );
    assert_eq!(count(&after, ip2), 0);
    assert_eq!(
        connect(&t.client, "100.64.20.1:80").unwrap(),
        "hello from b1"
    );
}

#[test]
fn refused_netlink_batch_names_the_transaction() {
    let Some((mut g, ns)) = guarded_ns("kubeproxy-firstsync-refused") else {
        return;
    };
    let st = state(
        30,
        [Ipv4Addr::new(11, 10, 0, 2), Ipv4Addr::new(11, 10, 0, 3)],
    );
    let want = rules::desired(&st);
    let mut plans = rules::plan_sync(&st, &want, &rules::Current::empty(), Bulk::Netlink(10));
    // Break the second netlink batch: a rule going to a chain that does not exist.
    let b = plans[2].netlink.as_mut().unwrap();
    b.rules[3].balancer.targets[1] = "no-such-chain".into();
    let e = format!("{:#}", apply_plans(Some(&ns), &plans).unwrap_err());
    assert!(
        e.contains(&format!("first sync, transaction 3 of {}", plans.len()))
            && e.contains("the kernel refused adding the elements of balancer rule 4 of 10")
            && e.contains("nothing of it was applied"),
        "{e}"
    );
    // The first netlink batch stayed; nothing of the second one did.
    let listing = table(&ns);
    assert_eq!(listing.matches("numgen random").count(), 10, "{listing}");
    // The next sync converges from what the kernel has, in one transaction.
    let r = apply_local(&ns, &st).unwrap();
    assert_eq!(r.stats.transactions, 1);
    let one = g.ns("kubeproxy-firstsync-refused-ref");
    apply_transaction(Some(&one), &rules::full_transaction(&st)).unwrap();
    assert_eq!(
        table(&ns).matches("numgen random").count(),
        table(&one).matches("numgen random").count()
    );
}

#[test]
fn split_first_sync_from_inside_the_namespace() {
    // The agent runs inside its worker's namespace and passes no namespace name.
    let Some((_g, ns)) = guarded_ns("kubeproxy-firstsync-inside") else {
        return;
    };
    let st = state(
        300,
        [Ipv4Addr::new(11, 10, 0, 2), Ipv4Addr::new(11, 10, 0, 3)],
    );
    let want = rules::desired(&st);
    let plans = rules::plan_sync(&st, &want, &rules::Current::empty(), rules::DEFAULT_BULK);
    assert!(plans.iter().any(|p| p.netlink.is_some()));
    knetsim::netns::run_in(&ns, move || apply_plans(None, &plans)).unwrap();
    let cur = knetsim::components::kubeproxy::read_current(Some(&ns)).unwrap();
    assert!(rules::plan(&want, &cur).is_empty());
    assert_eq!(table(&ns).matches("numgen random").count(), 300 - 42 + 2);
}
