//! Readiness from the kernel's announcements: a watch (what a readiness wait sleeps on)
//! wakes when a route is added, or the nftables ruleset changes, in the namespace it
//! listens to, and not for a change in another namespace.

mod common;

use common::{guarded_ns, sh, wait_until};
use knetsim::netns::{self, route_watch::Announcements};
use knetsim::wait::Wake;
use std::time::Duration;

fn has_route(ns: &str, dst: &str) -> bool {
    sh(ns, "ip -4 route show").contains(dst)
}

/// `watch`, listening in `ns`: not woken by `elsewhere` run in `other`, woken (well before
/// its 20 s) by `here` run in `ns` a moment later, and what woke it was read, so the next
/// sleep waits for the next change.
fn wakes_here_not_elsewhere(
    watch: &Announcements,
    (ns, here): (&str, &str),
    (other, elsewhere): (&str, &str),
) {
    watch.listen(ns).unwrap();
    sh(other, elsewhere);
    assert!(
        !watch.sleep(Duration::from_millis(200)),
        "woken by `{elsewhere}` in another namespace"
    );
    let (ns2, here2) = (ns.to_string(), here.to_string());
    let doer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        sh(&ns2, &here2);
    });
    let woken = watch.sleep(Duration::from_secs(20));
    doer.join().unwrap();
    assert!(woken, "no announcement of `{here}`");
    assert!(!watch.sleep(Duration::from_millis(100)));
}

#[test]
fn a_route_added_here_wakes_the_watch_and_one_elsewhere_does_not() {
    let Some((mut g, ns)) = guarded_ns("routewatch-wake") else {
        return;
    };
    let other = g.ns("routewatch-other");
    for n in [&ns, &other] {
        sh(
            n,
            "ip link add va type veth peer name vb && ip link set va up && ip link set vb up",
        );
    }
    wakes_here_not_elsewhere(
        &Announcements::routes(),
        (&ns, "ip route add 11.12.16.0/20 dev va"),
        (&other, "ip route add 11.20.0.0/20 dev va"),
    );
    assert!(has_route(&ns, "11.12.16.0/20"));
}

#[test]
fn an_nftables_change_wakes_the_watch_and_one_elsewhere_does_not() {
    let Some((mut g, ns)) = guarded_ns("nftwatch-wake") else {
        return;
    };
    let other = g.ns("nftwatch-other");
    wakes_here_not_elsewhere(
        &Announcements::nftables(),
        (&ns, "nft add table ip kube-proxy"),
        (&other, "nft add table ip elsewhere"),
    );
    assert!(sh(&ns, "nft list tables").contains("kube-proxy"));
}

#[test]
fn a_table_watch_wakes_for_its_own_table_not_for_others_in_the_namespace() {
    let Some((_g, ns)) = guarded_ns("nfttable-wake") else {
        return;
    };
    // flanneld's masquerade commits and an IPv6 table of the same name, in the same
    // namespace: not kube-proxy's table.
    wakes_here_not_elsewhere(
        &Announcements::nftables_table("kube-proxy"),
        // One transaction: one wake.
        (
            &ns,
            "nft 'add table ip kube-proxy; add chain ip kube-proxy services'",
        ),
        (
            &ns,
            "nft add table ip flannel && nft add chain ip flannel masq && nft add table ip6 kube-proxy",
        ),
    );
    assert!(sh(&ns, "nft list chains").contains("services"));
}

/// The netfilter netlink sockets (protocol 12 in /proc/net/netlink) programs hold in a
/// namespace: port id 0 is the kernel's own.
fn netfilter_sockets(ns: &str) -> usize {
    sh(ns, "cat /proc/net/netlink")
        .lines()
        .map(|row| row.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 2 && f[1] == "12" && f[2] != "0")
        .count()
}

/// A watch that moves to another namespace, or is dropped, closes its nf_tables socket
/// (on the closer thread: that close holds the namespace's nf_tables commit lock for a
/// grace period), and leaves none behind.
#[test]
fn a_moved_or_dropped_nftables_watch_closes_its_socket() {
    let Some((mut g, first)) = guarded_ns("nftwatch-close") else {
        return;
    };
    let second = g.ns("nftwatch-close2");
    let gone = |ns: &str| {
        wait_until(
            &format!("the watch's socket in {ns} to be closed"),
            Duration::from_secs(10),
            || netfilter_sockets(ns) == 0,
        )
    };
    let watch = Announcements::nftables_table("kube-proxy");
    watch.listen(&first).unwrap();
    assert_eq!(netfilter_sockets(&first), 1);
    watch.listen(&second).unwrap();
    assert_eq!(netfilter_sockets(&second), 1);
    gone(&first);
    drop(watch);
    gone(&second);
}

/// kube-proxy's service route waits for its device on the link announcements: with the
/// fallback retry set to an hour, only the announcement of the device coming up can bring
/// the route. Before it, the agent says why it has none yet.
#[test]
fn the_service_route_follows_its_device_appearing_later() {
    let Some((mut g, ns)) = guarded_ns("kp-linkwake") else {
        return;
    };
    let log = g.dir("kp-linkwake").join("kube-proxy.log");
    let args: Vec<String> = [
        "kube-proxy",
        // Nothing answers there: the route does not wait for etcd.
        "--etcd-endpoints",
        "http://127.0.0.1:9",
        "--service-route-dev",
        "flannel.7",
        "--service-route-retry-ms",
        "3600000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let child = netns::process::spawn_daemon(Some(&ns), env!("CARGO_BIN_EXE_knetsim"), &args, &log)
        .unwrap();
    g.children.push(child);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(
        "kube-proxy to say it has no device yet",
        Duration::from_secs(20),
        || {
            let text = read_log();
            text.contains("(does 'flannel.7' exist yet?)") && text.contains("will retry")
        },
    );
    assert!(!has_route(&ns, "100.64.0.0/16"));
    sh(
        &ns,
        "ip link add flannel.7 type bridge && ip link set flannel.7 up",
    );
    wait_until("the service route", Duration::from_secs(20), || {
        has_route(&ns, "100.64.0.0/16 dev flannel.7")
    });
    let text = read_log();
    assert!(
        text.contains("route 100.64.0.0/16 dev flannel.7 added"),
        "{text}"
    );
    assert_eq!(text.matches("will retry").count(), 1, "{text}");
}

/// `is_oper_up` (what bring-up waits on before a host's agents start): false for a link
/// that is down or whose peer is down, true once both ends are up and the kernel's link
/// watch has taken them into service, and an error for a link that is not there.
#[test]
fn a_link_is_operationally_up_only_once_both_ends_are() {
    let Some((_g, ns)) = guarded_ns("operup") else {
        return;
    };
    let up = |dev: &'static str| {
        knetsim::netns::netlink::with(&ns, move |nl| async move { nl.is_oper_up(dev).await })
    };
    sh(&ns, "ip link add va type veth peer name vb");
    assert!(!up("va").unwrap(), "va is down");
    sh(&ns, "ip link set va up");
    std::thread::sleep(Duration::from_millis(50));
    assert!(!up("va").unwrap(), "va's peer is down: no carrier");
    sh(&ns, "ip link set vb up");
    wait_until(
        "both ends of a veth pair operationally up",
        Duration::from_secs(5),
        || up("va").unwrap() && up("vb").unwrap(),
    );
    let missing = up("nosuch").unwrap_err().to_string();
    assert!(missing.contains("link 'nosuch'"), "{missing}");
}
