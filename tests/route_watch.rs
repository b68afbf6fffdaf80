//! Readiness from the kernel's route announcements: a wait sleeping on a Announcements
//! checks again as soon as a route is added in the namespace it listens to, long before
//! its fallback interval, and not for a route added in another namespace.

mod common;

use common::{guarded_ns, sh};
use knetsim::netns::route_watch::Announcements;
use knetsim::wait::{Poll, Wait, Wake};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn has_route(ns: &str, dst: &str) -> bool {
    sh(ns, "ip -4 route show").contains(dst)
}

#[test]
fn a_route_added_wakes_the_wait_before_its_fallback_interval() {
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

    let gave_up = Arc::new(AtomicBool::new(false));
    let (g2, ns2) = (gave_up.clone(), ns.clone());
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let adder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        sh(&ns2, "ip route add 11.12.16.0/20 dev va");
        // Without the announcement the wait would sleep for its hour: end it so the test
        // fails instead of hanging.
        if finished.recv_timeout(Duration::from_secs(20)).is_err() {
            g2.store(true, Ordering::SeqCst);
        }
    });
    let mut checks = 0;
    let res = Wait::new("the route to 11.12.16.0/20", Duration::from_secs(3600))
        .every(Duration::from_secs(3600))
        .wake_on(&watch)
        .cancel_on(&gave_up)
        .until(|| {
            checks += 1;
            Ok(if has_route(&ns, "11.12.16.0/20") {
                Poll::Ready(())
            } else {
                Poll::Pending("no route yet".into())
            })
        });
    let _ = done.send(());
    adder.join().unwrap();
    res.expect("the route announcement ended the wait");
    assert!(checks >= 2, "checked {checks} times");
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
    // Woken well before the hour, by the table's announcement.
    let woke = watch.sleep(Duration::from_secs(3600));
    adder.join().unwrap();
    assert!(woke, "the new table was not announced");
    assert!(sh(&ns, "nft list tables").contains("kube-proxy"));
}
