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

#[test]
fn a_route_added_here_wakes_the_watch_and_one_elsewhere_does_not() {
    let Some((mut g, ns)) = guarded_ns("routewatch-wake") else {
        return;
    };
    let other = g.ns("routewatch-other");
    sh(
        &ns,
        "ip link add va type veth peer name vb && ip link set va up && ip link set vb up",
    );
    sh(
        &other,
        "ip link add va type veth peer name vb && ip link set va up && ip link set vb up",
    );
    let watch = Announcements::routes();
    watch.listen(&ns).unwrap();
    // A route in another namespace is not announced here.
    sh(&other, "ip route add 11.20.0.0/20 dev va");
    assert!(
        !watch.sleep(Duration::from_millis(200)),
        "woken by another namespace's route"
    );

    let ns2 = ns.clone();
    let adder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        sh(&ns2, "ip route add 11.12.16.0/20 dev va");
    });
    // True: woken by the announcement, not by the end of its 20 s.
    let woken = watch.sleep(Duration::from_secs(20));
    adder.join().unwrap();
    assert!(woken, "no announcement of the new route");
    assert!(has_route(&ns, "11.12.16.0/20"));
    // What woke it was read: the next sleep waits for the next change.
    assert!(!watch.sleep(Duration::from_millis(100)));
}

#[test]
fn an_nftables_change_wakes_the_wait_and_another_namespaces_does_not() {
    let Some((mut g, ns)) = guarded_ns("nftwatch-wake") else {
        return;
    };
    let other = g.ns("nftwatch-other");
    let watch = Announcements::nftables();
    watch.listen(&ns).unwrap();
    sh(&other, "nft add table ip elsewhere");
    assert!(
        !watch.sleep(Duration::from_millis(200)),
        "woken by another namespace's nftables change"
    );
    let ns2 = ns.clone();
    let adder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        sh(&ns2, "nft add table ip kube-proxy");
    });
    // True: woken by the announcement, not by the end of its 20 s.
    let woke = watch.sleep(Duration::from_secs(20));
    adder.join().unwrap();
    assert!(woke, "the new table was not announced");
    assert!(sh(&ns, "nft list tables").contains("kube-proxy"));
}
