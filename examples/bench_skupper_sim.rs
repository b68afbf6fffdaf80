//! Benchmark: a Skupper service inside the simulator, beside direct pod-to-pod TCP measured
//! in the same run, as the multi-cluster issue asks.
//!
//!   sudo cargo build --release --bins --examples
//!   sudo target/release/examples/bench_skupper_sim [ROUNDS]
//!
//! Two clusters. c4 on C0w3 runs `iperf3 -s` and a tiny accept-and-close server; C0's site
//! exposes both. The routed path is a pod in C1 -> C1w1's router (tcpListener) -> AMQP over
//! mutual TLS -> C0w1's router (tcpConnector) -> c4 across C0's VXLAN overlay. The direct
//! path is a pod on C0w2 -> c4 across the same overlay. Rounds alternate direct and routed
//! and the medians are printed with their ratio (the machines are noisy).
//!
//! `examples/bench_skupper.rs` measures the routers alone on loopback.

use knetsim::netns;
use knetsim::sim::{ClusterSpec, LinkOptions, SiteOptions, Worker};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IPERF_SECS: u32 = 3;
const CONNECT_SECS: u64 = 2;
const CONNECT_CLIENTS: usize = 8;
const ACCEPT_PORT: u16 = 7000;

#[path = "../tests/common/mod.rs"]
mod common;

use common::{close_with_reset, median};

/// iperf3 from `container` on `w` to addr:port; the receiver's bits per second.
fn iperf(w: &Worker, container: &str, addr: &str, port: u16) -> anyhow::Result<f64> {
    let out = w.exec_container_with_timeout(
        container,
        &format!("iperf3 -c {addr} -p {port} -t {IPERF_SECS} -J"),
        Some(Duration::from_secs(IPERF_SECS as u64 + 20)),
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| anyhow::anyhow!("iperf3 printed no JSON ({e}): {out}"))?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("iperf3 reported no result: {out}"))
}

/// Accepts connections in c4's namespace; each gets one byte, then the close.
fn accept_and_close(ns: &str) -> anyhow::Result<()> {
    let l = netns::run_in(ns, || Ok(TcpListener::bind(("0.0.0.0", ACCEPT_PORT))?))?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(b"x");
        }
    });
    Ok(())
}

/// Closes without TIME_WAIT: tens of thousands of connections a run would otherwise use up
/// the client's ephemeral ports and the later rounds would measure that, not the path.
/// Completed connections per second from `ns` to `addr`, CONNECT_CLIENTS at a time.
fn connect_rate(ns: &str, addr: SocketAddr) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (d, s) = (done.clone(), stop.clone());
    let clients = netns::run_in(ns, move || {
        // Threads spawned here inherit the namespace of this one.
        Ok((0..CONNECT_CLIENTS)
            .map(|_| {
                let (d, s) = (d.clone(), s.clone());
                std::thread::spawn(move || {
                    let mut b = [0u8; 8];
                    while !s.load(Ordering::Relaxed) {
                        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                        else {
                            continue;
                        };
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        if matches!(c.read(&mut b), Ok(1)) {
                            d.fetch_add(1, Ordering::Relaxed);
                        }
                        close_with_reset(c);
                    }
                })
            })
            .collect::<Vec<_>>())
    })?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(CONNECT_SECS));
    let n = done.load(Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    Ok(n as f64 / secs)
}

fn main() -> anyhow::Result<()> {
    let rounds = common::arg_or(1, 3);
    let sim = common::new_sim("benchsk")?;
    let spec = ClusterSpec {
        workers: 3,
        etcd: 1,
    };
    let c0 = sim.cluster("0", spec)?;
    let c1 = sim.cluster("1", spec)?;
    sim.start()?;
    let c0w3 = c0.worker("w3")?;
    let c4 = c0w3.create_container("c4", BTreeMap::new())?;
    let direct = c0.worker("w2")?;
    direct.create_container("c2", BTreeMap::new())?;
    let routed = c1.worker("w2")?;
    let client = routed.create_container("c1", BTreeMap::new())?;
    c0w3.exec_container_async("c4", "exec iperf3 -s")?;
    accept_and_close(&c4.ns)?;

    c0.skupper_init(SiteOptions::default())?;
    c1.skupper_init(SiteOptions::default())?;
    let token = c0.skupper_token()?;
    c1.skupper_link(&token, LinkOptions::default())?;
    let iperf_port = c0.skupper_expose("iperf", "c4", 5201)?;
    let accept_port = c0.skupper_expose("accept", "c4", ACCEPT_PORT as i64)?;
    let c1w1 = c1.worker("w1")?.ip().to_string();
    std::thread::sleep(Duration::from_millis(500));

    let (mut d_bps, mut r_bps, mut d_cps, mut r_cps) = (vec![], vec![], vec![], vec![]);
    for i in 0..rounds {
        d_bps.push(iperf(&direct, "c2", &c4.ip, 5201)?);
        r_bps.push(iperf(&routed, "c1", &c1w1, iperf_port)?);
        let c4_addr: SocketAddr = format!("{}:{ACCEPT_PORT}", c4.ip).parse()?;
        let routed_addr: SocketAddr = format!("{c1w1}:{accept_port}").parse()?;
        let direct_ns = direct.container("c2")?.ns;
        d_cps.push(connect_rate(&direct_ns, c4_addr)?);
        r_cps.push(connect_rate(&client.ns, routed_addr)?);
        println!(
            "round {}: direct {:.2} Gbit/s, {:.0} conn/s | through the routers {:.2} Gbit/s, {:.0} conn/s",
            i + 1,
            d_bps[i] / 1e9,
            d_cps[i],
            r_bps[i] / 1e9,
            r_cps[i]
        );
    }
    let (db, rb, dc, rc) = (median(d_bps), median(r_bps), median(d_cps), median(r_cps));
    println!();
    println!("| measure (median of {rounds}) | direct pod-to-pod | through two routers | ratio |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| TCP throughput (iperf3, {IPERF_SECS} s) | {:.2} Gbit/s | {:.2} Gbit/s | {:.0}% |",
        db / 1e9,
        rb / 1e9,
        100.0 * rb / db
    );
    println!(
        "| new connections ({CONNECT_CLIENTS} clients) | {dc:.0}/s | {rc:.0}/s | {:.0}% |",
        100.0 * rc / dc
    );
    sim.teardown()?;
    Ok(())
}
