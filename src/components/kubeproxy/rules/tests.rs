//! The plan over whole states: what a first sync writes, what a change rewrites, how a
//! large first sync is split.

use super::*;
use crate::components::kubeproxy::model::*;
use std::net::Ipv4Addr;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn state() -> State {
    State {
        services: vec![Service::synthetic(
            "web",
            ip("100.64.0.10"),
            Some("http"),
            80,
            8000,
            Some(30080),
        )],
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
    for want in [
        format!("add element ip kube-proxy service-ips {{ 100.64.0.10 . tcp . 80 : goto {svc_chain} }}"),
        format!("add rule ip kube-proxy {ep} ip saddr 11.10.0.2 counter jump mark-for-masquerade"),
        format!("add rule ip kube-proxy {ep} meta l4proto tcp counter dnat to 11.10.0.2:8000 comment \"default/web:http -> pod c2 on C0w2\""),
        format!("add rule ip kube-proxy {svc_chain} counter numgen random mod 2 vmap {{ 0 : goto endpoint-"),
        "service-nodeports { tcp . 30080 : goto external-".to_string(),
        "static-vips { 100.64.10.1 : goto vip-".to_string(),
        "counter dnat to 11.11.0.2 comment \"VIP 100.64.10.1 -> 11.11.0.2\"".to_string(),
    ] {
        assert!(t.contains(&want), "missing {want:?} in\n{t}");
    }
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
    assert!(
        t.contains(
            "add element ip kube-proxy no-endpoint-nodeports { tcp . 30080 : goto reject-chain }"
        ),
        "{t}"
    );
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
        let node_port = (i % 3 == 0).then_some(30000 + i as u16);
        let cluster_ip = Ipv4Addr::new(100, 64, 1, i as u8 + 1);
        st.services.push(Service::synthetic(
            &name, cluster_ip, None, 80, 8000, node_port,
        ));
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
        !plans[0]
            .text
            .lines()
            .any(|l| l.starts_with("add rule") && is_dynamic_chain(l.split(' ').nth(4).unwrap())),
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
                .balancer
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{i} : goto {t}"))
                .collect();
            texts.push(format!(
                "add rule ip {TABLE} {} counter numgen random mod {} vmap {{ {} }} comment \"{}\"\n",
                r.chain,
                r.balancer.targets.len(),
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
fn single_endpoint_service_has_no_numgen_map() {
    let mut s = state();
    s.endpoints[0].addresses.truncate(1);
    s.vips[0].ips.truncate(1);
    let t = full_transaction(&s);
    let (svc, port) = (&s.services[0], &s.services[0].ports[0]);
    let ep = endpoint_chain(svc, port, ip("11.10.0.2"));
    assert!(
        t.contains(&format!(
            "add rule ip kube-proxy {} counter goto {ep} comment \"default/web:http (1 endpoint)\"\n",
            service_chain(svc, port)
        )),
        "{t}"
    );
    let vep = vip_endpoint_chain(ORIGINAL_VIP, ip("11.10.0.2"));
    assert!(
        t.contains(&format!(
            "add rule ip kube-proxy {} counter goto {vep} comment \"VIP 100.64.10.1 all protocols (1 endpoint)\"\n",
            vip_chain(ORIGINAL_VIP)
        )),
        "{t}"
    );
    assert!(!t.contains("numgen"), "{t}");
    // The endpoint chain that DNATs (and whose counter counts flows) is still there.
    assert!(
        t.contains(&format!(
            "add rule ip kube-proxy {ep} meta l4proto tcp counter dnat to 11.10.0.2:8000"
        )),
        "{t}"
    );
    // Two endpoints -> one: the service chain is rewritten from a map to a goto, the
    // remaining endpoint chain kept.
    let two = state();
    let p = plan(&desired(&s), &Current::from_desired(&desired(&two)));
    assert!(
        p.text.contains(&format!(
            "flush chain ip kube-proxy {}\n",
            service_chain(svc, port)
        )),
        "{}",
        p.text
    );
    assert!(!p.text.contains(&format!("add rule ip kube-proxy {ep} ")));
    assert!(!p.text.contains("numgen"), "{}", p.text);
    // A first sync of single-endpoint Services has no balancer to send by netlink.
    let mut big = big_state(7, 3);
    for e in &mut big.endpoints {
        e.addresses.truncate(1);
    }
    for v in &mut big.vips {
        v.ips.truncate(1);
    }
    let plans = plan_sync(&big, &desired(&big), &Current::empty(), Bulk::Netlink(2));
    assert!(plans.iter().all(|p| p.netlink.is_none()), "{plans:?}");
    let texts: Vec<&str> = plans.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(normalized(&texts), normalized(&[&full_transaction(&big)]));
}

#[test]
fn a_chain_with_a_foreign_or_changed_rule_is_rewritten() {
    let s = state();
    let want = desired(&s);
    let (svc, port) = (&s.services[0], &s.services[0].ports[0]);
    let ep = endpoint_chain(svc, port, ip("11.10.0.2"));
    // A rule this model cannot read (say, added by hand with `nft add rule`).
    let mut cur = Current::from_desired(&want);
    cur.chains.insert(ep.clone(), None);
    let p = plan(&want, &cur);
    assert_eq!(p.stats.chains_rewritten, 1, "{}", p.text);
    assert!(p
        .text
        .starts_with(&format!("flush chain ip kube-proxy {ep}\n")));
    // The same targets and comments but another DNAT port: compared as rules, not
    // signatures, so it is rewritten too.
    let mut cur = Current::from_desired(&want);
    let rules = cur.chains.get_mut(&ep).unwrap().as_mut().unwrap();
    rules[1].statement = table::Statement::Dnat {
        addr: ip("11.10.0.2"),
        port: Some(9999),
    };
    let p = plan(&want, &cur);
    assert_eq!(p.stats.chains_rewritten, 1, "{}", p.text);
    assert!(p.text.contains(":8000"), "{}", p.text);
}
