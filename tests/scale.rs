//! Scale: Ctrl-C (a real SIGINT to the knetsim binary) in the middle of a 30-worker
//! bring-up leaves nothing behind: no namespace, no process, no run directory beyond the
//! logs; and pods created in bulk are wired, on the right workers, reachable.

mod common;

use common::{assert_nothing_left, knetsim_exe, namespaces_of, root_or_skip, wait_for};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The knetsim run under test; killed (by its pid, which we started) and cleaned if the
/// test fails before it ended on its own.
struct Run {
    child: Child,
    instance: String,
}

impl Drop for Run {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = Command::new(knetsim_exe())
            .args(["cleanup", "--instance", &self.instance])
            .output();
    }
}

/// Processes that belong to `instance`: inside one of `inodes` (its namespaces), or
/// with a log or an argument in its run or etcd-data directory.
fn processes_of(instance: &str, inodes: &BTreeSet<u64>) -> Vec<String> {
    let dirs = [
        knetsim::netns::record::run_dir(instance),
        knetsim::netns::record::shm_dir(instance),
    ];
    let mine = |text: &str| {
        dirs.iter()
            .any(|d| text.contains(&format!("{}/", d.display())))
    };
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let p = e.path();
        let in_ns = std::fs::metadata(p.join("ns/net")).is_ok_and(|m| inodes.contains(&m.ino()));
        let log = std::fs::read_link(p.join("fd/1"))
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        let cmd = std::fs::read(p.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if in_ns || mine(&log) || mine(&cmd) {
            found.push(format!("{pid}: {cmd}"));
        }
    }
    found
}

/// A cluster big enough to interrupt in the middle of its bring-up, kept up afterwards.
const BIG_CLUSTER: &str = "cluster(\"0\", #{ workers: 30, etcd: 1 });\nstart();\nsleep(60.0);\n";

/// Starts a 30-worker cluster in the knetsim binary, sends SIGINT once `ready` says so,
/// and checks that the run ended as interrupted and left nothing.
fn interrupt_bring_up(instance: &str, moment: &str, ready: impl Fn(&str) -> bool) {
    let dir = std::env::temp_dir().join(format!("knetsim-test-{instance}"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("big.rhai");
    std::fs::write(&script, BIG_CLUSTER).unwrap();
    let (out_file, err_file) = (dir.join("stdout"), dir.join("stderr"));
    let child = Command::new(knetsim_exe())
        .args(["--no-pause", "--instance", instance])
        .arg(&script)
        .env_remove("KNETSIM_INSTANCE")
        .stdout(Stdio::from(std::fs::File::create(&out_file).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_file).unwrap()))
        .spawn()
        .unwrap();
    let mut run = Run {
        child,
        instance: instance.to_string(),
    };
    wait_for(moment, Duration::from_secs(60), || {
        ready(instance).then_some(())
    });
    let inodes: BTreeSet<u64> = namespaces_of(instance)
        .iter()
        .filter_map(|n| knetsim::netns::inode(n))
        .collect();
    common::signal(run.child.id(), nix::sys::signal::Signal::SIGINT);
    let out = wait_for(
        "knetsim to exit after SIGINT",
        Duration::from_secs(60),
        || run.child.try_wait().unwrap(),
    );
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&out_file).unwrap_or_default(),
        std::fs::read_to_string(&err_file).unwrap_or_default()
    );
    assert_eq!(
        out.code(),
        Some(130),
        "{moment}: exit status {out:?}\n{text}"
    );
    assert!(!text.contains("panicked"), "{moment}: {text}");
    let left = processes_of(instance, &inodes);
    assert!(left.is_empty(), "{moment}: processes left: {left:#?}");
    assert_nothing_left(instance, &[]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_while_hosts_are_wired_leaves_nothing() {
    if !root_or_skip() {
        return;
    }
    interrupt_bring_up("scale-intwire", "a dozen hosts wired", |i| {
        namespaces_of(i).len() >= 12
    });
}

#[test]
fn ctrl_c_while_agents_start_leaves_nothing() {
    if !root_or_skip() {
        return;
    }
    interrupt_bring_up("scale-intagents", "the first flannel agents", |i| {
        let dir = knetsim::netns::record::run_dir(i);
        (1..=30)
            .filter(|k| dir.join(format!("C0w{k}/flanneld.log")).exists())
            .count()
            >= 5
    });
}

#[test]
fn pods_created_in_bulk_are_wired_where_asked() {
    if !root_or_skip() {
        return;
    }
    let (sim, c) = common::started("scale-bulk", 3, 1);
    let mut plan = BTreeMap::new();
    plan.insert("w1".to_string(), vec!["a".to_string(), "b".to_string()]);
    plan.insert("C0w3".to_string(), vec!["c".to_string()]);
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    let made = c.create_containers(&plan, &labels).unwrap();
    let mut placed: Vec<(String, String)> = made
        .iter()
        .map(|p| (p.name.clone(), p.worker.clone()))
        .collect();
    placed.sort();
    assert_eq!(
        placed,
        [("a", "C0w1"), ("b", "C0w1"), ("c", "C0w3")].map(|(a, b)| (a.into(), b.into()))
    );
    assert!(made.iter().all(|p| p.labels == labels));
    let w1 = c.worker("w1").unwrap();
    assert_eq!(w1.containers(), ["a", "b"]);
    // A worker's bridge ADDs run in the order given: a gets the first address of w1's
    // subnet after the gateway, b the next, on every run.
    let (a_ip, b_ip) = (w1.container_ip("a").unwrap(), w1.container_ip("b").unwrap());
    assert!(a_ip.ends_with(".2"), "a: {a_ip}");
    let next = |ip: &str| {
        std::net::Ipv4Addr::from(u32::from(ip.parse::<std::net::Ipv4Addr>().unwrap()) + 1)
    };
    assert_eq!(b_ip, next(&a_ip).to_string(), "b follows a");
    let c_ip = c.worker("w3").unwrap().container_ip("c").unwrap();
    let out = w1
        .exec_container("a", &format!("ping -c 1 -W 2 {c_ip}"))
        .unwrap();
    assert!(out.contains(" 0% packet loss"), "{out}");

    // Every name is checked before anything is made: a taken name makes nothing.
    plan.clear();
    plan.insert("w2".to_string(), vec!["d".to_string(), "a".to_string()]);
    let e = c.create_containers(&plan, &labels).unwrap_err().to_string();
    assert!(e.contains("a container named 'a' already exists"), "{e}");
    assert!(c.find_container("d").is_none(), "d was made: {e}");
    // A pod named twice, an unknown worker and an etcd member are refused the same way.
    plan.insert("w3".to_string(), vec!["d".to_string()]);
    plan.insert("w2".to_string(), vec!["d".to_string()]);
    let e = c.create_containers(&plan, &labels).unwrap_err().to_string();
    assert!(e.contains("pod 'd' is named twice"), "{e}");
    plan.clear();
    plan.insert("w9".to_string(), vec!["e".to_string()]);
    let e = c.create_containers(&plan, &labels).unwrap_err().to_string();
    assert!(e.contains("has no node 'w9'"), "{e}");
    plan.clear();
    plan.insert("e1".to_string(), vec!["e".to_string()]);
    let e = c.create_containers(&plan, &labels).unwrap_err().to_string();
    assert!(e.contains("is an etcd member, not a worker"), "{e}");
    assert_eq!(c.containers().len(), 3);
    let record = knetsim::netns::record::read_record(sim.instance())
        .unwrap()
        .expect("a record");
    let mut pods: Vec<&str> = record
        .namespaces
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("scale-bulk-C0-"))
        .collect();
    pods.sort();
    assert_eq!(
        pods,
        ["scale-bulk-C0-a", "scale-bulk-C0-b", "scale-bulk-C0-c"],
        "the record holds exactly the pods made"
    );

    // A namespace already there under a pod's name is not the run's: that pod fails,
    // the namespace stays, and the worker's other pod is made.
    let mut foreign = common::Guard::default();
    let taken = foreign.ns("scale-bulk-C0-x");
    plan.clear();
    plan.insert("w2".to_string(), vec!["x".to_string(), "y".to_string()]);
    let e = format!("{:#}", c.create_containers(&plan, &labels).unwrap_err());
    assert!(
        e.contains("created 1 of 2 pods; these failed: x on C0w2"),
        "{e}"
    );
    assert!(e.contains("already exists"), "{e}");
    assert!(
        knetsim::netns::exists(&taken),
        "the foreign namespace was removed"
    );
    assert!(c.find_container("x").is_none());
    assert!(c
        .worker("w2")
        .unwrap()
        .container_ip("y")
        .unwrap()
        .ends_with(".2"));
    sim.teardown().unwrap();
    assert!(
        knetsim::netns::exists(&taken),
        "teardown removed the foreign namespace"
    );
    drop(foreign);
    assert_nothing_left("scale-bulk", &[]);
}
