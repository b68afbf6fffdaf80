use super::*;

fn cfg(id: &str, addrs: &[&str]) -> RouterConfig {
    let mut c = RouterConfig::new(id, Mode::Interior);
    for a in addrs {
        c.tcp_connectors.push(super::super::config::TcpConnector {
            name: a.to_string(),
            address: a.to_string(),
            host: "127.0.0.1".into(),
            port: 1,
        });
    }
    c
}

fn lsa(id: &str, nb: &[(&str, u32)], addrs: &[&str]) -> Vec<u8> {
    lsa_of(id, nb, addrs, false)
}

fn lsa_of(id: &str, nb: &[(&str, u32)], addrs: &[&str], edge: bool) -> Vec<u8> {
    serde_json::to_vec(&Lsa {
        id: id.into(),
        seq: now_nanos(),
        neighbors: nb.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
        addresses: addrs.iter().map(|s| s.to_string()).collect(),
        consumers: BTreeSet::new(),
        edge,
    })
    .unwrap()
}

#[test]
fn an_edge_router_is_never_a_transit() {
    // A-C direct costs 10; A-E-C costs 2 but E is an edge router.
    let a = Router::new(cfg("A", &[]));
    let _re = add_nb(&a, 1, "E", 1);
    let _rc = add_nb(&a, 2, "C", 10);
    a.handle_lsa(1, &lsa_of("E", &[("A", 1), ("C", 1)], &["at-e"], true));
    a.handle_lsa(2, &lsa("C", &[("A", 10), ("E", 1)], &["svc"]));
    assert_eq!(via(&a, "svc"), Some((2, 10)), "direct, not through E");
    assert_eq!(
        via(&a, "at-e"),
        Some((1, 1)),
        "the edge itself is reachable"
    );
}

#[test]
fn distribution_by_longest_whole_token_prefix() {
    let mut c = cfg("A", &[]);
    for (p, d) in [("q", "closest"), ("q.mc", "multicast")] {
        c.addresses.push(super::super::config::Address {
            prefix: p.into(),
            distribution: d.into(),
        });
    }
    let r = Router::new(c);
    assert_eq!(r.distribution("q"), Distribution::Closest);
    assert_eq!(r.distribution("q.x"), Distribution::Closest);
    assert_eq!(r.distribution("q.mc.news"), Distribution::Multicast);
    assert_eq!(
        r.distribution("qq"),
        Distribution::Balanced,
        "q is not a token of qq"
    );
    assert_eq!(r.distribution("other"), Distribution::Balanced);
}

fn add_nb(r: &Router, conn: u64, id: &str, cost: u32) -> mpsc::UnboundedReceiver<Msg> {
    let (tx, rx) = mpsc::unbounded_channel();
    r.neighbor_up(
        conn,
        Neighbor {
            router: id.into(),
            cost,
            tx,
            describe: "test".into(),
            auth: "test".into(),
        },
    );
    rx
}

fn via(r: &Router, a: &str) -> Option<(u64, u32)> {
    match r.state.lock().unwrap().addr_routes.get(a) {
        Some(AddrRoute::Via(c, _, d)) => Some((*c, *d)),
        _ => None,
    }
}

#[test]
fn triangle_prefers_cheaper_path_and_fails_over() {
    // A links to B (cost 1) and C (cost 10); B links to C (cost 1); svc at C.
    let a = Router::new(cfg("A", &[]));
    let _rb = add_nb(&a, 1, "B", 1);
    let _rc = add_nb(&a, 2, "C", 10);
    a.handle_lsa(1, &lsa("B", &[("A", 1), ("C", 1)], &[]));
    a.handle_lsa(2, &lsa("C", &[("A", 10), ("B", 1)], &["svc"]));
    assert_eq!(via(&a, "svc"), Some((1, 2)), "cheaper path A-B-C");
    a.neighbor_down(1, "test");
    assert_eq!(via(&a, "svc"), Some((2, 10)), "fails over to A-C");
    a.neighbor_down(2, "test");
    assert_eq!(via(&a, "svc"), None);
    assert!(!a.reachable("svc"));
}

#[test]
fn one_sided_links_do_not_count_and_lsas_flood() {
    let a = Router::new(cfg("A", &["local"]));
    let mut rb = add_nb(&a, 1, "B", 1);
    let mut rc = add_nb(&a, 2, "C", 1);
    // D claims a link to B, but B does not list D: not usable.
    a.handle_lsa(1, &lsa("B", &[("A", 1)], &[]));
    a.handle_lsa(1, &lsa("D", &[("B", 1)], &["svcd"]));
    assert!(!a.reachable("svcd"));
    assert!(a.reachable("local"));
    // The record from B was flooded to C and not back to B.
    let mut to_c = vec![];
    while let Ok(m) = rc.try_recv() {
        to_c.push(String::from_utf8_lossy(&m.body).to_string());
    }
    assert!(to_c.iter().any(|b| b.contains("\"id\":\"D\"")), "{to_c:?}");
    let mut to_b = vec![];
    while let Ok(m) = rb.try_recv() {
        to_b.push(String::from_utf8_lossy(&m.body).to_string());
    }
    assert!(!to_b.iter().any(|b| b.contains("\"id\":\"D\"")), "{to_b:?}");
}
