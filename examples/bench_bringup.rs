//! Benchmark: the default scenario's bring-up, from start() until every pod reaches every
//! other pod of its cluster, beside the etcd election time measured in the same runs.
//!
//!   sudo cargo build --release --bins --examples
//!   sudo target/release/examples/bench_bringup [RUNS]
//!
//! Prints medians (the machines are noisy) and the ratio of the two.

use knetsim::sim::{ClusterSpec, Worker};
use std::collections::BTreeMap;
use std::time::Instant;

#[path = "../tests/common/mod.rs"]
mod common;

use common::median;

/// Pings until every pod of each cluster reaches every other one.
fn all_pods_reach_each_other(pods: &[(Worker, String, String)]) {
    let mut threads = Vec::new();
    for (w, name, _) in pods {
        let targets: Vec<String> = pods
            .iter()
            .filter(|(ow, on, _)| on != name && ow.cluster().name() == w.cluster().name())
            .map(|(_, _, ip)| ip.clone())
            .collect();
        let (w, name) = (w.clone(), name.clone());
        threads.push(std::thread::spawn(move || {
            for ip in targets {
                loop {
                    let out = w
                        .exec_container(&name, &format!("ping -c 1 -W 1 {ip}"))
                        .unwrap_or_default();
                    if out.contains(" 0% packet loss") {
                        break;
                    }
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut totals = Vec::new();
    let mut etcds = Vec::new();
    for i in 0..runs {
        let sim = common::new_sim(&format!("bench{i}"))?;
        let c0 = sim.cluster(
            "0",
            ClusterSpec {
                workers: 3,
                etcd: 2,
            },
        )?;
        let c1 = sim.cluster(
            "1",
            ClusterSpec {
                workers: 3,
                etcd: 2,
            },
        )?;
        let t0 = Instant::now();
        sim.start()?;
        let mut pods = Vec::new();
        for (c, placement) in [
            (
                &c0,
                vec![("w1", "c1"), ("w2", "c2"), ("w3", "c3"), ("w3", "c4")],
            ),
            (&c1, vec![("w1", "c1"), ("w2", "c2"), ("w3", "c3")]),
        ] {
            for (w, p) in placement {
                let worker = c.worker(w)?;
                let info = worker.create_container(p, BTreeMap::new())?;
                pods.push((worker, p.to_string(), info.ip));
            }
        }
        all_pods_reach_each_other(&pods);
        let total = t0.elapsed();
        let etcd = sim
            .last_bringup()
            .map(|b| b.etcd_healthy)
            .unwrap_or_default();
        println!(
            "run {}: every pod reaches every other after {:.3} s (etcd healthy after {:.3} s)",
            i + 1,
            total.as_secs_f64(),
            etcd.as_secs_f64()
        );
        totals.push(total);
        etcds.push(etcd);
        sim.teardown()?;
    }
    let (t, e) = (median(totals), median(etcds));
    println!();
    println!("| measure (median of {runs}) | seconds |");
    println!("| --- | --- |");
    println!(
        "| default scenario: start() until all pods reach each other | {:.3} |",
        t.as_secs_f64()
    );
    println!(
        "| etcd election (both clusters healthy), same runs | {:.3} |",
        e.as_secs_f64()
    );
    println!("| everything after etcd | {:.3} |", (t - e).as_secs_f64());
    println!(
        "| ratio bring-up / etcd election | {:.2} |",
        t.as_secs_f64() / e.as_secs_f64()
    );
    Ok(())
}
