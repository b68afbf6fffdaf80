//! Readiness from the kernel's announcements: a watch (what a readiness wait sleeps on)
//! wakes when a route is added, or the nftables ruleset changes, in the namespace it
//! listens to, and not for a change in another namespace.

mod common;

use common::{guarded_ns, sh};
use knetsim::netns::route_watch::Announcements;
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
