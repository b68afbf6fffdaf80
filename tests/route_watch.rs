//! Readiness from the kernel's route announcements: a RouteWatch (what a readiness wait
//! sleeps on) wakes when a route is added in the namespace it listens to, and not for a
//! route added in another namespace.

mod common;

use common::{guarded_ns, sh};
use knetsim::netns::route_watch::RouteWatch;
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
    let watch = RouteWatch::new();
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
