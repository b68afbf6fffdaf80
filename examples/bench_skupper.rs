//! Benchmark: TCP through two knetsim routers (A --AMQP--> B) against direct TCP, measured
//! in the same run on the same machine (127.0.0.1).
//!
//! Run: `cargo build --release && cargo run --release --example bench_skupper`
//! Options (env): BENCH_MB (default 1024) bytes per throughput run, BENCH_SECS (default 3)
//! per connection-rate run, BENCH_WORKERS (default 8) concurrent connecting clients.

#[path = "../tests/common/mod.rs"]
mod common;

use common::skupper::ssl_profile;
use common::{echo_server, free_port, serve_each, Guard};

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knetsim::components::skupper::{create_site_ca, create_token, issue_router_cert};

/// Reads until EOF, answers the byte count.
fn sink_server() -> u16 {
    serve_each(|mut s| {
        let mut buf = vec![0u8; 1 << 18];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(_) => return,
            }
        }
        let _ = write!(s, "{n}");
    })
}

fn throughput(port: u16, bytes: u64) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let buf = vec![0x5au8; 1 << 18];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).unwrap();
        left -= k as u64;
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(answer, bytes.to_string(), "the sink did not get every byte");
    bytes as f64 * 8.0 / secs / 1e9
}

fn conn_rate(port: u16, secs: u64, workers: usize) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..workers)
        .map(|_| {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ok = (|| -> std::io::Result<()> {
                        let mut s = TcpStream::connect(("127.0.0.1", port))?;
                        s.set_read_timeout(Some(Duration::from_secs(10)))?;
                        s.write_all(b"x")?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b)?;
                        Ok(())
                    })();
                    match ok {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    let f = failed.load(Ordering::Relaxed);
    if f > 0 {
        eprintln!("  ({f} connections failed)");
    }
    done.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64()
}

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn wait_ready(port: u16) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut b = [0u8; 1];
            if s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok() {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("routers never carried a connection to port {port}");
}

fn main() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("knetsim"))
        .unwrap();
    if !bin.exists() {
        eprintln!(
            "error: {} not found; build it first with `cargo build --release`",
            bin.display()
        );
        std::process::exit(1);
    }
    let mb = env_u64("BENCH_MB", 1024);
    let secs = env_u64("BENCH_SECS", 3);
    let workers = env_u64("BENCH_WORKERS", 8) as usize;
    let mut g = Guard::default();
    let dir = g.dir("bench-skupper");

    // Site B's CA; A links with a token from it (mutual TLS), as Skupper does.
    create_site_ca(&dir.join("ca"), "B").unwrap();
    let srv = issue_router_cert(&dir.join("ca"), &dir.join("B"), "B", &["127.0.0.1"]).unwrap();
    let tok = create_token(&dir.join("ca"), &dir.join("tok"), "A", "127.0.0.1", 0).unwrap();
    let sink = sink_server();
    let echo = echo_server();
    let (ir_tls, ir_plain) = (free_port(), free_port());
    let (sink_tls, echo_tls, sink_plain, echo_plain) =
        (free_port(), free_port(), free_port(), free_port());
    let b = format!(
        r#"[["router", {{"id": "B"}}], {},
 ["listener", {{"host": "127.0.0.1", "port": {}, "http": true}}],
 ["listener", {{"host": "127.0.0.1", "port": {ir_tls}, "role": "inter-router", "sslProfile": "site"}}],
 ["listener", {{"host": "127.0.0.1", "port": {ir_plain}, "role": "inter-router"}}],
 ["tcpConnector", {{"name": "sink", "address": "sink", "host": "127.0.0.1", "port": {sink}}}],
 ["tcpConnector", {{"name": "echo", "address": "echo", "host": "127.0.0.1", "port": {echo}}}]]"#,
        ssl_profile("site", &srv),
        free_port()
    );
    // Two A routers: one linked over TLS, one plain.
    let a = |id: &str, ir: u16, ssl: &str, s: u16, e: u16| {
        format!(
            r#"[["router", {{"id": "{id}"}}], {},
 ["listener", {{"host": "127.0.0.1", "port": {}, "http": true}}],
 ["connector", {{"name": "to-B", "role": "inter-router", "host": "127.0.0.1", "port": {ir}{ssl}}}],
 ["tcpListener", {{"name": "sink", "address": "sink", "host": "127.0.0.1", "port": {s}}}],
 ["tcpListener", {{"name": "echo", "address": "echo", "host": "127.0.0.1", "port": {e}}}]]"#,
            ssl_profile("tok", &tok.files),
            free_port()
        )
    };
    let configs = [
        ("B", b),
        (
            "A-tls",
            a(
                "Atls",
                ir_tls,
                r#", "sslProfile": "tok""#,
                sink_tls,
                echo_tls,
            ),
        ),
        ("A-plain", a("Aplain", ir_plain, "", sink_plain, echo_plain)),
    ];
    for (name, cfg) in &configs {
        let f = dir.join(format!("{name}.json"));
        std::fs::write(&f, cfg).unwrap();
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        g.children.push(
            Command::new(&bin)
                .args(["skrouterd", "-c"])
                .arg(&f)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    wait_ready(echo_tls);
    wait_ready(echo_plain);

    let bytes = mb * 1024 * 1024;
    println!("throughput, one connection, {mb} MiB client -> server (Gbit/s):");
    let direct = throughput(sink, bytes);
    println!("  direct TCP                     {direct:7.2}");
    let tls = throughput(sink_tls, bytes);
    println!(
        "  two routers, AMQP over mTLS    {tls:7.2}   ({:.0}% of direct)",
        tls / direct * 100.0
    );
    let plain = throughput(sink_plain, bytes);
    println!(
        "  two routers, AMQP plain        {plain:7.2}   ({:.0}% of direct)",
        plain / direct * 100.0
    );
    println!("new connections per second ({workers} clients, connect + 1-byte echo + close, {secs} s each):");
    let d = conn_rate(echo, secs, workers);
    println!("  direct TCP                     {d:9.0}/s");
    let t = conn_rate(echo_tls, secs, workers);
    println!(
        "  two routers, AMQP over mTLS    {t:9.0}/s   ({:.0}% of direct)",
        t / d * 100.0
    );
    let p = conn_rate(echo_plain, secs, workers);
    println!(
        "  two routers, AMQP plain        {p:9.0}/s   ({:.0}% of direct)",
        p / d * 100.0
    );
}
