//! Shared helpers for the integration tests: a simulation per test with its own instance
//! name, and a snapshot of the host's root network namespace to prove it is untouched.
#![allow(dead_code)]

use knetsim::sim::{Options, Sim};
use std::process::Command;

pub fn knetsim_exe() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_knetsim").into()
}

pub fn options(instance: &str) -> Options {
    Options {
        instance: instance.to_string(),
        knetsim_exe: knetsim_exe(),
        progress: false,
        ..Options::default()
    }
}

pub fn sim(instance: &str) -> Sim {
    Sim::new(options(instance)).expect("creating the simulation")
}

/// A simulation with one running cluster `C0` of `workers` workers and `etcd` members.
pub fn started(instance: &str, workers: u32, etcd: u32) -> (Sim, knetsim::sim::Cluster) {
    let sim = sim(instance);
    let c = sim
        .cluster("0", knetsim::sim::ClusterSpec { workers, etcd })
        .expect("declaring C0");
    sim.start().expect("bring-up");
    (sim, c)
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the simulator must never change in the host's root network namespace.
#[derive(Debug, PartialEq)]
pub struct HostSnapshot {
    links: String,
    addrs: String,
    routes: String,
    nft: String,
    sysctls: String,
}

impl HostSnapshot {
    pub fn take() -> HostSnapshot {
        HostSnapshot {
            links: sh("ip -o link show | sed 's/ qlen [0-9]*//'"),
            addrs: sh("ip -o addr show"),
            routes: sh("ip route show table all"),
            nft: sh("nft list ruleset"),
            sysctls: sh(
                "for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/* \
                 /proc/sys/net/ipv4/conf/default/* /proc/sys/net/bridge/* /proc/sys/net/core/somaxconn; \
                 do [ -r \"$f\" ] && echo \"$f=$(cat $f 2>/dev/null)\"; done",
            ),
        }
    }
}

/// Asserts that nothing of instance `instance` is left: no namespace, no etcd data, and no
/// run directory, except the logs a failed run keeps (only non-empty `*.log` files, in a
/// private directory, no record); those are then removed the way a user would, with
/// `knetsim cleanup`, so the test leaves nothing either.
pub fn assert_nothing_left(instance: &str, namespaces: &[&str]) {
    let listed = knetsim::netns::list();
    for ns in namespaces {
        assert!(
            !listed.iter().any(|n| n == ns),
            "namespace {ns} was left behind: {listed:?}"
        );
    }
    let prefix = format!("{instance}-");
    let ours: Vec<&String> = listed.iter().filter(|n| n.starts_with(&prefix)).collect();
    assert!(ours.is_empty(), "namespaces of {instance} left: {ours:?}");
    let shm = knetsim::netns::record::shm_dir(instance);
    assert!(!shm.exists(), "etcd data {} was left", shm.display());
    let dir = knetsim::netns::record::run_dir(instance);
    if dir.exists() {
        let others = assert_only_logs(&dir);
        assert!(
            others.is_empty(),
            "run directory {} was left with more than logs: {others:?}",
            dir.display()
        );
        let out = Command::new(knetsim_exe())
            .args(["cleanup", "--instance", instance])
            .output()
            .expect("knetsim cleanup");
        assert!(out.status.success(), "cleanup of kept logs failed: {out:?}");
        assert!(!dir.exists(), "cleanup left {}", dir.display());
    }
}

/// Checks that `dir` is private and returns every entry below it that is not a
/// non-empty `*.log` file or a directory.
pub fn assert_only_logs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).unwrap();
    assert!(
        m.is_dir() && m.uid() == 0 && m.mode() & 0o077 == 0,
        "{} is not a private directory of root's (mode {:o})",
        dir.display(),
        m.mode()
    );
    let mut others = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if !(m.is_file() && m.len() > 0 && p.extension().is_some_and(|x| x == "log")) {
                others.push(p);
            }
        }
    }
    others
}
