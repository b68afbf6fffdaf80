//! etcd fail-over: with three members, killing one (the first member every client tries, or
//! the leader) changes nothing a user can see: pods, Services, VIPs and a new worker still
//! work, and the agents' watches resume on the members left. With two members, losing one
//! loses quorum: calls fail at once with a message naming the member that is down.
//!
//! A member is killed by the pid the simulator recorded for it, and only that pid.

mod common;

use common::{root_or_skip, started, started_as_root, tear_down};
use knetsim::sim::{Cluster, PortSpec, ServiceSpec, Worker};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

fn web_spec() -> ServiceSpec {
    ServiceSpec {
        selector: labels("web"),
        ports: vec![PortSpec {
            port: 80,
            target: Some(8000),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A pod labelled app=web answering `message` on port 8000.
fn web_pod(w: &Worker, name: &str, message: &str) -> String {
    let info = w.create_container(name, labels("web")).unwrap();
    w.exec_container_async(
        name,
        &format!("exec knetsim echo-server --port 8000 --message {message}"),
    )
    .unwrap();
    info.ip
}

/// Fetches `url` from pod `client` until the answer contains `want` (bounded).
fn reaches(w: &Worker, client: &str, url: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = w
            .exec_container(client, &format!("wget -q -O - -T 2 {url}"))
            .unwrap_or_else(|e| format!("{e:#}"));
        if out.contains(want) || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills member `name` of `c` by its recorded pid and waits until the others see it down.
fn kill_member(c: &Cluster, name: &str) {
    let member = c
        .etcd_nodes()
        .into_iter()
        .find(|e| e.name() == name)
        .unwrap();
    let pid = member
        .pid()
        .expect("the simulator recorded the member's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = c.etcd_health().unwrap();
        let h = health
            .iter()
            .find(|h| h.endpoint.name.as_deref() == Some(name))
            .unwrap();
        if !h.is_up() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} (pid {pid}) still answers after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn leader(c: &Cluster) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health = c.etcd_health().unwrap();
        if let Some(h) = health.iter().find(|h| h.is_leader()) {
            return h.endpoint.name.clone().unwrap();
        }
        assert!(Instant::now() < deadline, "no etcd leader: {health:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills `victim` (chosen from the running cluster), then exercises everything that talks to
/// etcd: the endpoints controller, a Service, a VIP, a new worker and its flannel lease.
/// `all_watched_victim`: every agent is known to have been watching through the victim.
fn one_of_three_lost(
    instance: &str,
    victim: impl Fn(&Cluster) -> String,
    all_watched_victim: bool,
) {
    let (sim, c) = started(instance, 2, 3);
    let w1 = c.worker("w1").unwrap();
    let w2 = c.worker("w2").unwrap();
    w1.create_container("c1", BTreeMap::new()).unwrap();
    let ip2 = web_pod(&w2, "c2", "from-c2");
    assert!(reaches(&w1, "c1", &format!("http://{ip2}:8000/"), "from-c2").contains("from-c2"));

    let name = victim(&c);
    kill_member(&c, &name);
    println!("killed etcd member {name}");

    // A pod (the endpoints controller writes nothing yet), a Service with that pod behind it.
    let ip3 = web_pod(&w1, "c3", "from-c3");
    let cip = c.service("web", &web_spec()).unwrap();
    for want in ["from-c2", "from-c3"] {
        let got = reaches(&w1, "c1", &format!("http://{cip}/"), want);
        assert!(
            got.contains(want),
            "the Service {cip} reaches {want}: {got}"
        );
    }
    // A static VIP.
    c.kp_vip_add("100.64.10.1", &["c3".to_string()]).unwrap();
    let got = reaches(&w2, "c2", "http://100.64.10.1:8000/", "from-c3");
    assert!(got.contains("from-c3"), "the VIP reaches c3: {got}");
    // A new worker: its flanneld takes a lease, the old ones program a route to it, its
    // kube-proxy programs the Service, and the endpoints controller adds its pod.
    let w3 = c.add_worker().unwrap();
    let ip4 = web_pod(&w3, "c4", "from-c4");
    let got = reaches(&w1, "c1", &format!("http://{ip4}:8000/"), "from-c4");
    assert!(
        got.contains("from-c4"),
        "c1 reaches the new worker's pod: {got}"
    );
    let got = reaches(&w3, "c4", &format!("http://{ip3}:8000/"), "from-c3");
    assert!(
        got.contains("from-c3"),
        "the new worker's pod reaches c3: {got}"
    );
    let got = reaches(&w3, "c4", &format!("http://{cip}/"), "from-c");
    assert!(
        got.contains("from-c"),
        "the new worker reaches the Service: {got}"
    );
    let table = w2.exec("nft list table ip kube-proxy").unwrap();
    assert!(
        table.contains(&format!("dnat to {ip4}:8000")),
        "w2's kube-proxy follows the new endpoint: {table}"
    );
    // Every agent that was watching through the dead member resumed on another one.
    let dead = c
        .etcd_nodes()
        .into_iter()
        .find(|e| e.name() == name)
        .unwrap()
        .ip();
    let dead = format!(" on {dead}:2379");
    for w in [&w1, &w2] {
        for agent in ["flanneld", "kube-proxy"] {
            let log = std::fs::read_to_string(w.dir().join(format!("{agent}.log"))).unwrap();
            let watches: Vec<&str> = log.lines().filter(|l| l.contains(" watching ")).collect();
            println!("{agent} on {}:\n  {}", w.name(), watches.join("\n  "));
            if all_watched_victim {
                assert!(
                    watches.first().is_some_and(|l| l.ends_with(&dead)),
                    "{agent} on {} starts with the first member:\n{log}",
                    w.name()
                );
            }
            if watches.iter().any(|l| l.ends_with(&dead)) {
                assert!(
                    !watches.last().unwrap().ends_with(&dead),
                    "{agent} on {} watched through {name} and did not move:\n{log}",
                    w.name()
                );
            }
        }
    }
    drop((w1, w2, w3, c));
    tear_down(&sim, &[]);
}

#[test]
fn losing_the_first_member_of_three_changes_nothing() {
    if !root_or_skip() {
        return;
    }
    // C0e1 is the member every client starts with.
    one_of_three_lost("etcdfo1", |_| "C0e1".to_string(), true);
}

#[test]
fn losing_the_leader_of_three_changes_nothing() {
    if !root_or_skip() {
        return;
    }
    one_of_three_lost("etcdfo2", leader, false);
}

#[test]
fn losing_one_of_two_members_fails_at_once_naming_it() {
    let Some((sim, c)) = started_as_root("etcdfo3", 1, 2) else {
        return;
    };
    let w1 = c.worker("w1").unwrap();
    w1.create_container("c1", labels("web")).unwrap();
    kill_member(&c, "C0e2");
    let want = "etcd of C0 has lost quorum: C0e2 (10.1.0.2:2379) is down, 1 of 2 members up; \
                a 2-member cluster cannot lose any member — use etcd: 3";
    let t = Instant::now();
    let e = format!("{:#}", c.service("web", &web_spec()).unwrap_err());
    println!(
        "service() failed after {:.2} s: {e}",
        t.elapsed().as_secs_f64()
    );
    assert!(e.contains(want), "{e}");
    assert!(c.service_ip("web").is_err(), "no half-created Service");
    let t = Instant::now();
    let e = format!(
        "{:#}",
        c.kp_vip_add("100.64.10.1", &["c1".to_string()])
            .unwrap_err()
    );
    println!(
        "kp_vip_add() failed after {:.2} s: {e}",
        t.elapsed().as_secs_f64()
    );
    assert!(e.contains(want), "{e}");
    drop((w1, c));
    tear_down(&sim, &[]);
}
