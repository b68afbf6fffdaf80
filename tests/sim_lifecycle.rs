//! The core runtime end to end: a cluster comes up on a real etcd and flannel overlay,
//! pods on different workers reach each other, and teardown leaves the host as it was.

mod common;

use common::assert_holds;

use common::{assert_nothing_left, err_text, sim, tear_down, with_pod, HostSnapshot};
use knetsim::sim::ClusterSpec;
use std::collections::BTreeMap;

#[test]
fn pods_on_different_workers_ping_over_the_overlay_and_nothing_is_left() {
    let before = HostSnapshot::take();
    {
        let sim = sim("lc1");
        let c = common::declare_c0(&sim, 2, 1).unwrap();
        sim.start().expect("bring-up");
        let w1 = c.worker("w1").unwrap();
        let w2 = c.worker("w2").unwrap();
        assert_eq!(
            w1.ip().to_string(),
            "10.0.0.2",
            "Mininet numbering: e1 is host 1"
        );
        let a = w1.create_container("c1", BTreeMap::new()).unwrap();
        let b = w2.create_container("c2", BTreeMap::new()).unwrap();
        assert!(
            a.ip.starts_with("11."),
            "pod IPs come from the flannel network: {}",
            a.ip
        );
        let out = w1
            .exec_container("c1", &format!("ping -c 2 -W 2 {}", b.ip))
            .unwrap();
        assert!(
            out.contains(" 0% packet loss"),
            "cross-worker ping failed:\n{out}"
        );
        if std::path::Path::new("/proc/sys/net/ipv6").exists() {
            // The underlay is IPv4 only: a host's link there sends no IPv6 announcements
            // for the switch to flood.
            let v6 = w1.exec("ip -6 addr show dev eth0").unwrap();
            assert!(v6.trim().is_empty(), "IPv6 on w1's eth0: {v6}");
        } else {
            println!("skipped the IPv6 check: this kernel has no IPv6");
        }
        let links = w1.exec("ip -d link show flannel.100").unwrap();
        assert_holds(&links, &["vxlan id 100"]);
        let leases = w1
            .exec("etcdctl get --prefix /coreos.com/network/subnets --keys-only")
            .unwrap();
        assert_eq!(
            leases.lines().filter(|l| l.contains("/subnets/")).count(),
            2,
            "{leases}"
        );
        w2.delete_container("c2").unwrap();
        assert!(!knetsim::netns::exists("lc1-C0-c2"));
        sim.teardown().unwrap();
    }
    assert_nothing_left("lc1", &[]);
    assert_eq!(
        before,
        HostSnapshot::take(),
        "the root network namespace changed"
    );
}

#[test]
fn a_second_run_of_a_live_instance_is_refused() {
    let first = sim("lc2");
    let err = knetsim::sim::Sim::new(common::options("lc2"))
        .err()
        .expect("must refuse");
    let msg = format!("{err:#}");
    assert_holds(&msg, &["already running", "--instance"]);
    tear_down(&first, &[]);
}

#[test]
fn bad_names_give_clear_errors() {
    let sim = sim("lc3");
    let err = err_text(sim.cluster("x", ClusterSpec::default()));
    assert_holds(&err, &["cluster id 'x'"]);
    let c = sim
        .cluster(
            "0",
            ClusterSpec {
                workers: 1,
                etcd: 1,
            },
        )
        .unwrap();
    let err = err_text(sim.cluster("0", ClusterSpec::default()));
    assert_holds(&err, &["already declared"]);
    let err = err_text(c.get("w9"));
    assert_holds(&err, &["no node 'w9'", "w1"]);
    let err = err_text(c.worker("w1").unwrap().exec("true"));
    assert_holds(&err, &["not running yet"]);
    tear_down(&sim, &[]);
}

#[test]
fn a_worker_added_after_start_is_reachable() {
    let (sim, c, w1) = with_pod("lc4", 2);
    let t0 = std::time::Instant::now();
    let w3 = c.add_worker().unwrap();
    assert_eq!(w3.name(), "C0w3");
    let p = w3.create_container("c9", BTreeMap::new()).unwrap();
    let out = w1
        .exec_container("c1", &format!("ping -c 1 -W 2 {}", p.ip))
        .unwrap();
    println!(
        "joined, pod created and first ping answered after {:?}",
        t0.elapsed()
    );
    assert!(
        out.contains(" 0% packet loss"),
        "new worker's pod unreachable:\n{out}"
    );
    let routes = w1.exec("ip route show dev flannel.100").unwrap();
    assert_eq!(
        routes.lines().filter(|l| l.contains("onlink")).count(),
        2,
        "{routes}"
    );
    tear_down(&sim, &[]);
}

#[test]
fn two_instances_run_side_by_side() {
    let a = sim("lc5a");
    let b = sim("lc5b");
    for s in [&a, &b] {
        s.cluster(
            "0",
            ClusterSpec {
                workers: 2,
                etcd: 1,
            },
        )
        .unwrap();
    }
    let (ta, tb) = (a.clone(), b.clone());
    let ha = std::thread::spawn(move || ta.start());
    let hb = std::thread::spawn(move || tb.start());
    ha.join().unwrap().unwrap();
    hb.join().unwrap().unwrap();
    for s in [&a, &b] {
        let c = s.get_cluster("0").unwrap();
        let w1 = c.worker("w1").unwrap();
        let w2 = c.worker("w2").unwrap();
        w1.create_container("c1", BTreeMap::new()).unwrap();
        let ip = w2.create_container("c2", BTreeMap::new()).unwrap().ip;
        let out = w1
            .exec_container("c1", &format!("ping -c 1 -W 2 {ip}"))
            .unwrap();
        assert!(out.contains(" 0% packet loss"), "{}: {out}", s.instance());
    }
    assert!(knetsim::netns::exists("lc5a-C0w1") && knetsim::netns::exists("lc5b-C0w1"));
    tear_down(&a, &[]);
    tear_down(&b, &[]);
}

#[test]
fn exec_async_processes_end_with_their_pod() {
    let (sim, _c, w1) = with_pod("lc6", 1);
    let pid = w1.exec_container_async("c1", "sleep 300").unwrap();
    let start = knetsim::netns::process::start_time(pid).expect("the async command runs");
    w1.delete_container("c1").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !knetsim::netns::process::is_same_process(pid, start),
        "sleep survived its pod"
    );
    tear_down(&sim, &[]);
}

/// A namespace that exists before the run (another instance's, or one made by hand) under a
/// name the run wants: bring-up fails, and teardown leaves that namespace alone.
#[test]
fn a_namespace_that_already_exists_is_never_taken_over() {
    struct Foreign(&'static str);
    impl Drop for Foreign {
        fn drop(&mut self) {
            let _ = knetsim::netns::delete(self.0);
        }
    }
    let foreign = Foreign("lcclash-underlay");
    knetsim::netns::create(foreign.0).expect("creating the stand-in namespace");
    {
        let sim = sim("lcclash");
        sim.cluster(
            "0",
            ClusterSpec {
                workers: 1,
                etcd: 1,
            },
        )
        .unwrap();
        let err = sim.start().expect_err("bring-up must refuse a taken name");
        assert!(
            format!("{err:#}").contains("already exists"),
            "the error names the clash: {err:#}"
        );
    }
    assert!(
        knetsim::netns::exists(foreign.0),
        "teardown deleted a namespace the run did not create"
    );
    drop(foreign);
    assert_nothing_left("lcclash", &[]);
}

/// start()'s contract, read straight from the kernel the moment it returns: every worker
/// holds a route to each other worker's subnet over the overlay, and its kube-proxy's
/// table with its fixed chains (awaited beside etcd's election, not after the overlay).
#[test]
fn start_returns_with_every_overlay_route_and_kube_proxy_table() {
    if !common::root_or_skip() {
        return;
    }
    let (sim, c) = common::started("life-ready", 3, 1);
    for w in c.workers() {
        let routes = common::sh(&w.ns(), "ip -4 route show dev flannel.100");
        assert_eq!(
            routes.matches("onlink").count(),
            2,
            "{}: {routes}",
            w.name()
        );
        let table = common::sh(&w.ns(), "nft list table ip kube-proxy");
        assert_holds(&table, &["chain services", "chain nat-prerouting"]);
    }
    tear_down(&sim, &[]);
}

/// etcd members start in turn: a member is started only once the one before has logged
/// that it is past its bootstrap check (started together, each could wait 1 s on the
/// other's half-open peer port).
#[test]
fn etcd_members_start_one_after_another() {
    if !common::root_or_skip() {
        return;
    }
    let (sim, _c) = common::started("life-etcd", 1, 3);
    // capnslog lines start "2026-11-30 05:49:23.413716 I | ..."
    let stamp = |line: &str| line.get(..26).unwrap_or_default().to_string();
    let log = |m: &str| std::fs::read_to_string(sim.run_dir().join(m).join("etcd.log")).unwrap();
    for (before, after) in [("C0e1", "C0e2"), ("C0e2", "C0e3")] {
        let checked = log(before)
            .lines()
            .find(|l| l.contains("etcdserver: starting member"))
            .map(stamp)
            .unwrap_or_else(|| panic!("{before} never logged its start"));
        let began = log(after)
            .lines()
            .find(|l| l.contains("etcdmain: etcd Version"))
            .map(stamp)
            .unwrap_or_else(|| panic!("{after} never logged its version"));
        assert!(
            began >= checked,
            "{after} began at {began}, before {before} was past its bootstrap check at {checked}"
        );
    }
    tear_down(&sim, &[]);
}

/// The nice value of every thread of each process the record lists as `what`.
fn recorded_nice(sim: &knetsim::sim::Sim, what: &str) -> Vec<i32> {
    let record = knetsim::netns::record::read_record(sim.instance())
        .unwrap()
        .expect("a record");
    let mut nice = Vec::new();
    for p in record.processes.iter().filter(|p| p.what == what) {
        for t in std::fs::read_dir(format!("/proc/{}/task", p.pid)).unwrap() {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap();
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            nice.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
        }
    }
    nice
}

/// etcd members start ahead of the wiring beside their election
/// (`etcd::ELECTION_NICE`) and are ordinary processes once their cluster has elected.
#[test]
fn etcd_members_run_at_the_simulators_priority_once_elected() {
    if !common::root_or_skip() {
        return;
    }
    let (sim, _c) = common::started("life-nice", 1, 2);
    let members = [
        recorded_nice(&sim, "etcd C0e1"),
        recorded_nice(&sim, "etcd C0e2"),
    ];
    tear_down(&sim, &[]);
    for (m, nice) in ["C0e1", "C0e2"].iter().zip(&members) {
        assert!(!nice.is_empty(), "no threads of {m} found in the record");
        assert!(
            nice.iter().all(|n| *n == 0),
            "{m}'s threads after the election: {nice:?}"
        );
    }
}

/// The benchmarks' baseline: a declared cluster's etcd members started and elected the
/// way start() does it, and nothing else: no worker's namespace is made.
#[test]
fn elect_alone_starts_only_the_etcd_members() {
    if !common::root_or_skip() {
        return;
    }
    let sim = sim("life-alone");
    let c = sim
        .cluster(
            "0",
            ClusterSpec {
                workers: 2,
                etcd: 2,
            },
        )
        .unwrap();
    let elections = sim.elect_alone();
    let workers: Vec<String> = c.workers().iter().map(|w| w.ns()).collect();
    let listed = knetsim::netns::list();
    let config = sim
        .node("C0e1")
        .expect("C0e1")
        .exec("etcdctl --endpoints=http://127.0.0.1:2379 get /coreos.com/network/config");
    let nice = recorded_nice(&sim, "etcd C0e2");
    tear_down(&sim, &[]);
    let elections = elections.expect("the election");
    assert_eq!(elections.len(), 1, "{elections:?}");
    assert_eq!(elections[0].0, "0");
    for ns in &workers {
        assert!(
            !listed.contains(ns),
            "worker namespace {ns} was made: {listed:?}"
        );
    }
    assert!(
        config.as_deref().unwrap_or_default().contains("Network"),
        "the flannel config in etcd: {config:?}"
    );
    assert!(nice.iter().all(|n| *n == 0), "C0e2's threads: {nice:?}");
}

/// etcd's WAL segments (64 MB each, the current one and the next) are sparse files on the
/// run directory's tmpfs: they take memory only as etcd writes to them, not 125 MB a
/// member from the start.
#[test]
fn etcd_wal_segments_take_memory_only_as_written() {
    use std::os::unix::fs::MetadataExt;
    if !common::root_or_skip() {
        return;
    }
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        println!("SKIPPED: the fallocate filter is not written for this architecture");
        return;
    }
    let (sim, _c) = common::started("life-wal", 1, 1);
    let dirs = [
        knetsim::netns::record::shm_dir(sim.instance()).join("C0e1/member/wal"),
        sim.run_dir().join("C0e1/data/member/wal"),
    ];
    let wal = dirs.iter().find(|d| d.is_dir()).cloned();
    let files: Vec<_> = wal
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    let sizes: Vec<(String, u64, u64)> = files
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).unwrap();
            (p.display().to_string(), m.len(), m.blocks() * 512)
        })
        .collect();
    tear_down(&sim, &[]);
    assert!(wal.is_some(), "no WAL directory in {dirs:?}");
    assert!(
        sizes.len() >= 2,
        "expected a segment and the next one: {sizes:?}"
    );
    for (path, len, used) in &sizes {
        assert!(
            *len >= 64_000_000,
            "{path} is {len} bytes, not a whole segment"
        );
        assert!(
            *used < 8 << 20,
            "{path} takes {used} bytes of {len}: preallocated, not sparse"
        );
    }
}
