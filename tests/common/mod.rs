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

/// Asserts that nothing of instance `instance` is left: no namespace, no run directory.
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
    let dir = knetsim::netns::record::run_dir(instance);
    assert!(!dir.exists(), "run directory {} was left", dir.display());
    let shm = std::path::Path::new("/dev/shm/knetsim").join(instance);
    assert!(!shm.exists(), "etcd data {} was left", shm.display());
}
