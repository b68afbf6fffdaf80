//! Benchmark: latency of `exec_container` (a command inside a pod, output returned) beside
//! `ip netns exec NS true` measured in the same run, on the same pod.
//!
//!   sudo cargo build --release --bins --examples
//!   sudo target/release/examples/bench_exec [COUNT]

use std::collections::BTreeMap;
use std::time::Instant;

#[path = "../tests/common/mod.rs"]
mod common;

use common::median;

fn main() -> anyhow::Result<()> {
    let n = common::arg_or(1, 200);
    let (sim, c) = common::new_started("benchexec", 1, 1)?;
    let w1 = c.worker("w1")?;
    let pod = w1.create_container("c1", BTreeMap::new())?;
    let (mut ours, mut ip) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        w1.exec_container("c1", "true")?;
        ours.push(t.elapsed());
        let t = Instant::now();
        std::process::Command::new("ip")
            .args(["netns", "exec", &pod.ns, "true"])
            .status()?;
        ip.push(t.elapsed());
    }
    sim.teardown()?;
    let (o, b) = (median(ours), median(ip));
    println!("| measure (median of {n}, interleaved) | ms |");
    println!("| --- | --- |");
    println!(
        "| exec_container(\"c1\", \"true\") | {:.2} |",
        o.as_secs_f64() * 1e3
    );
    println!(
        "| ip netns exec {} true (baseline) | {:.2} |",
        pod.ns,
        b.as_secs_f64() * 1e3
    );
    println!("| ratio | {:.2} |", o.as_secs_f64() / b.as_secs_f64());
    Ok(())
}
