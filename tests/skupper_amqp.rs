//! The router as real AMQP clients see it: Qpid Proton (Debian's python3-qpid-proton)
//! against `knetsim skrouterd` processes on 127.0.0.1: SASL, message routing by address,
//! end-to-end settlement, credit that follows consumers.

mod common;

use common::skupper::*;
use common::*;
use knetsim::components::skupper::{create_site_ca, create_token, issue_router_cert};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's python, where python3-qpid-proton installs (another python3 may come first
/// on PATH).
const PYTHON: &str = "/usr/bin/python3";

fn client_script() -> String {
    format!("{}/tests/common/amqp_client.py", env!("CARGO_MANIFEST_DIR"))
}

/// Routers for an AMQP client test, which needs Qpid Proton.
fn proton_routers(test: &str) -> Routers {
    require_proton();
    Routers::new(test)
}

fn require_proton() {
    let ok = Command::new(PYTHON)
        .args(["-c", "import proton"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "Qpid Proton for {PYTHON} is missing: install python3-qpid-proton (scripts/packages.txt)"
    );
}

/// A running Proton client; killed by pid if the test ends first.
struct Client(Option<Child>);

impl Client {
    fn start(args: &[String]) -> Client {
        let child = Command::new(PYTHON)
            .arg(client_script())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Client(Some(child))
    }

    /// Waits for the client to finish; returns its stdout and stderr.
    fn finish(mut self) -> String {
        let mut c = self.0.take().unwrap();
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let mut err = String::new();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let _ = c.wait();
        if !err.is_empty() {
            out.push_str(&format!("\n[stderr] {err}"));
        }
        out
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(args: &[String]) -> String {
    Client::start(args).finish()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn normal_listener(port: u16, ssl: Option<&str>) -> String {
    match ssl {
        Some(p) => format!(
            r#"["listener", {{"name": "amqp", "host": "127.0.0.1", "port": {port}, "role": "normal", "sslProfile": "{p}", "authenticatePeer": true, "saslMechanisms": "EXTERNAL"}}]"#
        ),
        None => format!(
            r#"["listener", {{"name": "amqp", "host": "127.0.0.1", "port": {port}, "role": "normal"}}]"#
        ),
    }
}

fn address(prefix: &str, distribution: &str) -> String {
    format!(r#"["address", {{"prefix": "{prefix}", "distribution": "{distribution}"}}]"#)
}

/// Two linked routers A and B for `test`, each with a plain AMQP listener and the `extra`
/// entries; returns them and their client ports.
fn two_sites(test: &str, extra: &[String]) -> (Routers, u16, u16) {
    let mut r = proton_routers(test);
    let (amqp_a, amqp_b) = (free_port(), free_port());
    let mut p = Pair::new(None);
    p.b.push(normal_listener(amqp_b, None));
    p.b.extend(extra.iter().cloned());
    p.a.push(normal_listener(amqp_a, None));
    p.a.extend(extra.iter().cloned());
    r.start_pair(&p);
    r.wait_log("A", "link to router B up");
    r.wait_log("B", "link to router A up");
    r.wait_log("A", "listening for AMQP clients");
    r.wait_log("B", "listening for AMQP clients");
    (r, amqp_a, amqp_b)
}

fn hp(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn count(out: &str, prefix: &str) -> usize {
    out.lines().filter(|l| l.starts_with(prefix)).count()
}

/// Waits until the router's log shows `n` occurrences of `needle`.
fn wait_attached(r: &Routers, name: &str, needle: &str, n: usize) {
    r.wait_log_count(name, needle, n);
}

/// Starts a client on router `at` (its name and AMQP port) that does `verb` (send, recv,
/// reject) on `address` (`count` messages, `secs` at most), and waits until the router
/// logs the client's link attached.
fn attached(
    r: &Routers,
    at: (&str, u16),
    verb: &str,
    address: &str,
    [count, secs]: [&str; 2],
) -> Client {
    let client = Client::start(&args(&[&hp(at.1), verb, address, count, secs]));
    let link = if verb == "send" { "sender" } else { "receiver" };
    let needle = format!("client {link} attached to address {address}");
    wait_attached(r, at.0, &needle, 1);
    client
}

/// A Proton client with its default settings (SASL on, no credentials) connects with
/// ANONYMOUS, and attaches a receiver and a sender.
#[test]
fn proton_default_client_connects_with_sasl_and_attaches() {
    let mut r = proton_routers("amqp-attach");
    let (amqp, http) = (free_port(), free_port());
    r.start(
        "A",
        &config(&[
            router("A"),
            http_listener(http),
            normal_listener(amqp, None),
        ]),
    );
    r.wait_log("A", "listening for AMQP clients");
    let out = run(&args(&[&hp(amqp), "attach", "examples"]));
    assert!(out.contains("sasl ANONYMOUS"), "{out}\n{}", r.all_logs());
    assert!(out.contains("attached"), "{out}\n{}", r.all_logs());
    r.wait_log("A", "connected (SASL ANONYMOUS as anonymous)");
}

/// Ten messages from a sender on A reach a receiver on B; each is settled with the
/// receiver's outcome (accepted), and a receiver that rejects makes the sender see
/// `REJECTED`: settlement is end to end across both routers.
#[test]
fn ten_messages_cross_sites_settled_end_to_end() {
    let (r, a, b) = two_sites("amqp-ten", &[]);
    let rcv = attached(&r, ("B", b), "recv", "greetings", ["10", "20"]);
    let out = run(&args(&[&hp(a), "send", "greetings", "10", "20"]));
    assert_eq!(count(&out, "settled"), 10, "{out}\n{}", r.all_logs());
    assert_eq!(
        count(&out, "settled"),
        out.matches("ACCEPTED").count(),
        "{out}"
    );
    let got = rcv.finish();
    for i in 0..10 {
        assert!(got.contains(&format!("got msg-{i}\n")), "{got}");
    }

    let rej = attached(&r, ("B", b), "reject", "refusals", ["2", "20"]);
    let out = run(&args(&[&hp(a), "send", "refusals", "2", "20"]));
    assert_eq!(
        out.matches("REJECTED").count(),
        2,
        "{out}\n{}",
        r.all_logs()
    );
    rej.finish();
}

/// A sender to an address nobody consumes gets no credit: its message is not sent until
/// a receiver appears on the other site; then it is delivered and accepted.
#[test]
fn no_credit_until_a_consumer_appears() {
    let (r, a, b) = two_sites("amqp-credit", &[]);
    let snd = attached(&r, ("A", a), "send", "later", ["1", "30"]);
    // Give a credit grant, if the router wrongly made one, time to reach the client.
    std::thread::sleep(Duration::from_millis(1500));
    let m = http_get_metrics(&r, "A");
    assert!(
        !r.log("B").contains("client receiver attached"),
        "no consumer yet"
    );
    assert!(
        m.contains("skrouter_client_deliveries_total{router=\"A\"} 0"),
        "{m}"
    );
    let rcv = Client::start(&args(&[&hp(b), "recv", "later", "1", "30"]));
    let out = snd.finish();
    assert!(
        out.contains("settled 0 ACCEPTED"),
        "{out}\n{}",
        r.all_logs()
    );
    assert!(rcv.finish().contains("got msg-0"));
}

fn http_get_metrics(r: &Routers, name: &str) -> String {
    // The HTTP port is in the router's log line "health and metrics on http://H:P/healthz".
    let log = r.log(name);
    let port: u16 = log
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    http_get(port, "/metrics")
}

/// `multicast`: every consumer gets every message; `closest`: the local consumer gets them
/// all; `balanced` (the default): a burst is shared by both consumers (skupper-router weighs
/// unsettled deliveries plus path cost, so one message at a time would stay local).
#[test]
fn distributions_multicast_closest_balanced() {
    let (r, a, b) = two_sites(
        "amqp-dist",
        &[address("mc", "multicast"), address("near", "closest")],
    );
    for (addr, n) in [("mc.news", 3), ("near.x", 6), ("work", 40)] {
        let ra = Client::start(&args(&[&hp(a), "recv", addr, "100", "4"]));
        let rb = Client::start(&args(&[&hp(b), "recv", addr, "100", "4"]));
        wait_attached(
            &r,
            "A",
            &format!("client receiver attached to address {addr}"),
            1,
        );
        wait_attached(
            &r,
            "B",
            &format!("client receiver attached to address {addr}"),
            1,
        );
        // Both routers must know of the remote consumer before the sender starts.
        wait_remote_consumer(&r, "A", addr);
        let how = if addr == "work" { "burst" } else { "send" };
        let out = run(&args(&[&hp(a), how, addr, &n.to_string(), "20"]));
        assert_eq!(
            out.matches("ACCEPTED").count(),
            n,
            "{out}\n{}",
            r.all_logs()
        );
        let (ga, gb) = (ra.finish(), rb.finish());
        let (na, nb) = (count(&ga, "got"), count(&gb, "got"));
        match addr {
            "mc.news" => assert_eq!((na, nb), (3, 3), "{ga}\n{gb}"),
            "near.x" => assert_eq!((na, nb), (6, 0), "{ga}\n{gb}"),
            _ => {
                assert_eq!(na + nb, 40, "{ga}\n{gb}");
                assert!(
                    na > 0 && nb > 0,
                    "balanced shares: {na} and {nb}\n{ga}\n{gb}"
                );
            }
        }
    }
}

fn wait_remote_consumer(r: &Routers, name: &str, addr: &str) {
    let t = Instant::now();
    let needle = format!("consumers of address {addr} at router B");
    while t.elapsed() < Duration::from_secs(20) {
        if r.log(name).contains(&needle) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{name} never learnt of {addr}'s consumer on B:\n{}",
        r.all_logs()
    );
}

/// Over mutual TLS a client presenting a token's certificate connects with SASL EXTERNAL
/// as the certificate's subject; one presenting a certificate from another CA is refused.
#[test]
fn mutual_tls_external_and_foreign_certificate_refused() {
    let mut r = proton_routers("amqp-tls");
    let ca = r.dir.join("B-ca");
    create_site_ca(&ca, "B").unwrap();
    let server = issue_router_cert(&ca, &r.dir.join("B-router"), "B", &["127.0.0.1"]).unwrap();
    let token = create_token(&ca, &r.dir.join("token"), "learner", "127.0.0.1", 0).unwrap();
    let other_ca = r.dir.join("X-ca");
    create_site_ca(&other_ca, "X").unwrap();
    let foreign = create_token(
        &other_ca,
        &r.dir.join("foreign"),
        "intruder",
        "127.0.0.1",
        0,
    )
    .unwrap();
    let (amqp, http) = (free_port(), free_port());
    r.start(
        "B",
        &config(&[
            router("B"),
            ssl_profile("site", &server),
            http_listener(http),
            normal_listener(amqp, Some("site")),
        ]),
    );
    r.wait_log("B", "listening for AMQP clients");
    // The client presents the certificate in `f`, trusting B's CA, and attaches with EXTERNAL.
    let attach_with = |f: &knetsim::components::skupper::CertFiles| {
        let mut a = vec![
            "--tls".to_string(),
            token.files.ca_cert.display().to_string(),
            f.cert.display().to_string(),
            f.key.display().to_string(),
        ];
        a.extend(args(&[
            "--mechs",
            "EXTERNAL",
            &hp(amqp),
            "attach",
            "secure",
        ]));
        run(&a)
    };
    let out = attach_with(&token.files);
    assert!(out.contains("sasl EXTERNAL"), "{out}\n{}", r.all_logs());
    assert!(out.contains("attached"), "{out}");
    r.wait_log("B", "connected (SASL EXTERNAL as CN=learner)");

    let out = attach_with(&foreign.files);
    assert!(!out.contains("attached"), "{out}");
    assert!(out.contains("error"), "{out}");
    r.wait_log("B", "refused AMQP client");
    assert!(!r.log("B").contains("as CN=intruder"), "{}", r.log("B"));
}
