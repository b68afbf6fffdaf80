//! Helpers for the router tests: routers started as `knetsim skrouterd -c FILE` on
//! 127.0.0.1 with distinct ports, killed by pid when the guard drops.

use super::{free_port, knetsim_exe, roundtrip};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Routers {
    pub dir: PathBuf,
    pub children: Vec<(String, Child)>,
}

impl Routers {
    pub fn new(test: &str) -> Routers {
        let dir =
            std::env::temp_dir().join(format!("knetsim-skupper-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Routers {
            dir,
            children: vec![],
        }
    }

    /// Writes `config` to NAME.json and starts a router on it, logging to NAME.log.
    pub fn start(&mut self, name: &str, config: &str) {
        let cfg = self.dir.join(format!("{name}.json"));
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(knetsim_exe())
            .arg("skrouterd")
            .arg("-c")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push((name.to_string(), child));
    }

    /// Rewrites NAME.json and sends the router SIGHUP, as the simulator does.
    pub fn reload(&self, name: &str, config: &str) {
        std::fs::write(self.dir.join(format!("{name}.json")), config).unwrap();
        let (_, c) = self.children.iter().find(|(n, _)| n == name).unwrap();
        // SAFETY: a plain kill(2) to our own child, which has not been reaped.
        let rc = unsafe { libc::kill(c.id() as i32, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP to router {name}");
    }

    /// Starts B, then A, of `pair`.
    pub fn start_pair(&mut self, pair: &Pair) {
        self.start("B", &config(&pair.b));
        self.start("A", &config(&pair.a));
    }

    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until router NAME's log contains `needle` (panics with the log after 20 s).
    pub fn wait_log(&self, name: &str, needle: &str) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.log(name).contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "router {name} never logged {needle:?}; log:\n{}",
            self.log(name)
        );
    }

    /// Waits until router NAME's log contains `needle` at least `n` times.
    pub fn wait_log_count(&self, name: &str, needle: &str, n: usize) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if self.log(name).matches(needle).count() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "router {name} never logged {needle:?} {n} times; log:\n{}",
            self.log(name)
        );
    }

    pub fn all_logs(&self) -> String {
        self.children
            .iter()
            .map(|(n, _)| format!("--- {n}\n{}", self.log(n)))
            .collect()
    }
}

impl Drop for Routers {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("router logs kept in {}", self.dir.display());
        }
    }
}

/// Retries an echo through `port` until it works (routes settle), up to 20 s.
pub fn wait_echo(port: u16) {
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < Duration::from_secs(20) {
        match roundtrip(port, b"ping") {
            Ok(v) if v == b"ping" => return,
            Ok(v) => last = format!("got {v:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no echo through port {port}: {last}");
}

/// A plain HTTP GET on 127.0.0.1:port, returning the whole response.
pub fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

pub fn router(id: &str) -> String {
    format!(r#"["router", {{"id": "{id}", "mode": "interior"}}]"#)
}
pub fn http_listener(port: u16) -> String {
    format!(
        r#"["listener", {{"host": "127.0.0.1", "port": {port}, "http": true, "healthz": true, "metrics": true}}]"#
    )
}
pub fn ir_listener(port: u16, ssl: Option<&str>) -> String {
    match ssl {
        Some(p) => format!(
            r#"["listener", {{"name": "ir", "host": "127.0.0.1", "port": {port}, "role": "inter-router", "sslProfile": "{p}"}}]"#
        ),
        None => format!(
            r#"["listener", {{"name": "ir", "host": "127.0.0.1", "port": {port}, "role": "inter-router"}}]"#
        ),
    }
}
pub fn connector(name: &str, port: u16, cost: u32, ssl: Option<&str>) -> String {
    match ssl {
        Some(p) => format!(
            r#"["connector", {{"name": "{name}", "role": "inter-router", "host": "127.0.0.1", "port": {port}, "cost": {cost}, "sslProfile": "{p}"}}]"#
        ),
        None => format!(
            r#"["connector", {{"name": "{name}", "role": "inter-router", "host": "127.0.0.1", "port": {port}, "cost": {cost}}}]"#
        ),
    }
}
pub fn tcp_listener(addr: &str, port: u16) -> String {
    format!(
        r#"["tcpListener", {{"name": "{addr}", "address": "{addr}", "host": "127.0.0.1", "port": {port}}}]"#
    )
}
pub fn tcp_connector(addr: &str, port: u16) -> String {
    format!(
        r#"["tcpConnector", {{"name": "{addr}", "address": "{addr}", "host": "127.0.0.1", "port": {port}}}]"#
    )
}
pub fn ssl_profile(name: &str, f: &knetsim::components::skupper::CertFiles) -> String {
    format!(
        r#"["sslProfile", {{"name": "{name}", "caCertFile": "{}", "certFile": "{}", "privateKeyFile": "{}"}}]"#,
        f.ca_cert.display(),
        f.cert.display(),
        f.key.display()
    )
}
pub fn config(entries: &[String]) -> String {
    format!("[\n{}\n]\n", entries.join(",\n"))
}

/// An interior router: HTTP on `http`, an inter-router listener on `ir` if given, an
/// inter-router connector per (name, port, cost) of `links`, then `rest`.
pub fn interior(
    id: &str,
    http: u16,
    ir: Option<u16>,
    links: &[(&str, u16, u32)],
    rest: &[String],
) -> String {
    let mut entries = vec![router(id), http_listener(http)];
    entries.extend(ir.map(|port| ir_listener(port, None)));
    for (name, port, cost) in links {
        entries.push(connector(name, *port, *cost, None));
    }
    entries.extend(rest.iter().cloned());
    config(&entries)
}

/// The value of the first series in a /metrics text whose line starts with `series`.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// The link most tests set up: router B takes inter-router links on `ir`, router A
/// connects to it. Each starts with its router, HTTP and link entries; tests add the rest.
#[derive(Clone)]
pub struct Pair {
    pub ir: u16,
    pub http_a: u16,
    pub http_b: u16,
    pub a: Vec<String>,
    pub b: Vec<String>,
}

impl Pair {
    /// `ssl`: the sslProfile names of B's listener and A's connector (the profiles
    /// themselves are entries the test adds).
    pub fn new(ssl: Option<(&str, &str)>) -> Pair {
        let (ir, http_a, http_b) = (free_port(), free_port(), free_port());
        Pair {
            ir,
            http_a,
            http_b,
            b: vec![
                router("B"),
                http_listener(http_b),
                ir_listener(ir, ssl.map(|s| s.0)),
            ],
            a: vec![
                router("A"),
                http_listener(http_a),
                connector("to-B", ir, 1, ssl.map(|s| s.1)),
            ],
        }
    }

    /// B serves `address` from `port`; A listens for it on a free port, which is returned.
    pub fn service(&mut self, address: &str, port: u16) -> u16 {
        let listen = free_port();
        self.b.push(tcp_connector(address, port));
        self.a.push(tcp_listener(address, listen));
        listen
    }
}
