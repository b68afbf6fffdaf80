//! Benchmark: an HTTP GET through the ingress (real nginx on C0w1, proxying to a
//! Service's ClusterIP) beside the same GET sent straight to the ClusterIP and to the pod,
//! from another worker, interleaved in the same run. Also the time `run_ingress` takes to
//! start nginx and to reload it with new rules.
//!
//!   sudo cargo build --release --bins --examples
//!   sudo target/release/examples/bench_ingress [COUNT]

use knetsim::netns;
use knetsim::sim::{IngressRule, PortSpec, ServiceSpec};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::median;

fn get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let n = common::arg_or(1, 500);
    let (sim, c) = common::new_started("benchingress", 2, 1)?;
    let w1 = c.worker("w1")?;
    let w2 = c.worker("w2")?;
    let labels = BTreeMap::from([("app".to_string(), "a".to_string())]);
    let pod = w2.create_container("pa", labels.clone())?;
    w2.echo_server("pa", 8000, "A")?;
    let vip = c.service(
        "sa",
        &ServiceSpec {
            selector: labels,
            ports: vec![PortSpec {
                port: 8000,
                target: Some(8000),
                ..Default::default()
            }],
            ..Default::default()
        },
    )?;
    let rules = |p: &str| {
        vec![IngressRule {
            path: p.into(),
            endpoint: format!("{vip}:8000"),
        }]
    };
    let t = Instant::now();
    w1.run_ingress("grp1", 8001, &rules("/a"))?;
    let start = t.elapsed();
    let mut reloads = Vec::new();
    for i in 0..9 {
        let t = Instant::now();
        w1.run_ingress("grp1", 8001, &rules(if i % 2 == 0 { "/b" } else { "/a" }))?;
        reloads.push(t.elapsed());
    }
    // Now routing /b.
    let ingress: SocketAddr = (w1.ip(), 8001).into();
    let cluster_ip: SocketAddr = (vip, 8000).into();
    let pod_ip: SocketAddr = (pod.ip.parse::<std::net::Ipv4Addr>()?, 8000).into();
    let (a, b, p) = netns::run_in(&w2.ns(), move || {
        let (mut a, mut b, mut p) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let t = Instant::now();
            let r = get(ingress, "/b")?;
            a.push(t.elapsed());
            anyhow::ensure!(r.ends_with("\r\n\r\nA\n"), "ingress reply: {r}");
            let t = Instant::now();
            get(cluster_ip, "/b")?;
            b.push(t.elapsed());
            let t = Instant::now();
            get(pod_ip, "/b")?;
            p.push(t.elapsed());
        }
        Ok((a, b, p))
    })?;
    sim.teardown()?;
    let (a, b, p) = (median(a), median(b), median(p));
    println!("| measure (median of {n} GETs from C0w2, interleaved) | ms |");
    println!("| --- | --- |");
    println!(
        "| through the ingress (nginx on C0w1 -> ClusterIP -> pod) | {:.3} |",
        ms(a)
    );
    println!("| straight to the ClusterIP (baseline) | {:.3} |", ms(b));
    println!("| straight to the pod IP (baseline) | {:.3} |", ms(p));
    println!(
        "| ingress / ClusterIP | {:.2}x |",
        a.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "| run_ingress: start nginx until it listens | {:.1} |",
        ms(start)
    );
    println!(
        "| run_ingress again: nginx -t, SIGHUP, old workers gone (median of 9) | {:.1} |",
        ms(median(reloads))
    );
    Ok(())
}
