//! The Skupper-style router end to end: real `knetsim skrouterd` processes on 127.0.0.1,
//! linked over AMQP (plain or mutual TLS), carrying TCP connections.

mod common;

use common::skupper::*;
use common::*;
use knetsim::components::skupper::{create_site_ca, create_token, issue_router_cert};
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Routers for `test` running a plain pair in which B serves `address` from an echo
/// server; returns them, the pair and A's port for `address`.
fn echo_pair(test: &str, address: &str) -> (Routers, Pair, u16) {
    let mut r = Routers::new(test);
    let mut p = Pair::new(None);
    let listen = p.service(address, echo_server());
    r.start_pair(&p);
    (r, p, listen)
}

/// Two routers, plain link: bytes through, half-close, health and metrics.
#[test]
fn two_routers_plain_echo_health_metrics() {
    let (r, p, lport) = echo_pair("plain", "svc1");
    r.wait_log("A", "link to router B up (inter-router, plain)");
    r.wait_log("B", "link to router A up (inter-router, plain)");
    r.wait_log("A", "tcpListener svc1 on 127.0.0.1:");
    wait_echo(lport);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(roundtrip(lport, &data).unwrap(), data);

    let h = http_get(p.http_a, "/healthz");
    assert!(h.starts_with("HTTP/1.1 200") && h.ends_with("OK"), "{h}");
    let m = http_get(p.http_a, "/metrics");
    assert!(m.contains("skrouter_links{router=\"A\"} 1"), "{m}");
    assert!(
        m.contains("skrouter_address_connections_total{router=\"A\",address=\"svc1\"}"),
        "{m}"
    );
    let bytes_in = metric(&m, "skrouter_bytes_in_total");
    assert!(bytes_in >= data.len() as u64, "{m}");
    let nf = http_get(p.http_b, "/nope");
    assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
}

/// Hashes what is written to it, so `io::copy` can feed the hash.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A server that hashes everything it reads until EOF, then answers the hex digest: a
/// half-close must cross both routers for the answer to come back.
fn hash_server() -> u16 {
    serve_each(|mut s| {
        let mut h = HashWriter(Sha256::new());
        let Ok(total) = std::io::copy(&mut s, &mut h) else {
            return;
        };
        let hex: String = h.0.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let _ = write!(s, "{total} {hex}");
    })
}

/// A pair linked over mutual TLS: B's listener presents a certificate of B's site CA (the
/// CA's directory is returned); A's connector uses sslProfile "link-B", which the test adds.
fn tls_pair(r: &Routers) -> (Pair, PathBuf) {
    let ca = r.dir.join("B-ca");
    create_site_ca(&ca, "B").unwrap();
    let server = issue_router_cert(&ca, &r.dir.join("B-router"), "B", &["127.0.0.1"]).unwrap();
    let mut p = Pair::new(Some(("site", "link-B")));
    p.b.push(ssl_profile("site", &server));
    (p, ca)
}

/// 100 MB through two routers over mutual TLS arrives with the same sha256.
#[test]
fn hundred_megabytes_over_tls_same_sha256() {
    let mut r = Routers::new("100mb");
    let (mut p, ca) = tls_pair(&r);
    let token = create_token(&ca, &r.dir.join("token-for-A"), "A", "127.0.0.1", 0).unwrap();
    p.a.push(ssl_profile("link-B", &token.files));
    let lport = p.service("hash", hash_server());
    r.start_pair(&p);
    r.wait_log("A", "link to router B up (inter-router, TLS)");
    r.wait_log("B", "link to router A up (inter-router, TLS)");
    r.wait_log("A", "address hash: reachable at router B");

    const SIZE: usize = 100 * 1024 * 1024;
    let mut data = vec![0u8; SIZE];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let want: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut s = TcpStream::connect(("127.0.0.1", lport)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(&data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, format!("{SIZE} {want}"), "{}", r.all_logs());
}

/// 200 concurrent connections through one link all complete with their own bytes.
#[test]
fn two_hundred_concurrent_connections() {
    let (r, p, lport) = echo_pair("c200", "svc");
    wait_echo(lport);
    let handles: Vec<_> = (0..200u32)
        .map(|i| {
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..20_000u32).map(|j| ((i * 31 + j) % 256) as u8).collect();
                roundtrip(lport, &data).map(|got| got == data)
            })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        match h.join().unwrap() {
            Ok(true) => ok += 1,
            Ok(false) => panic!("a connection got other bytes back"),
            Err(e) => panic!("a connection failed: {e}\n{}", r.all_logs()),
        }
    }
    assert_eq!(ok, 200);
    let m = http_get(p.http_b, "/metrics");
    assert!(metric(&m, "skrouter_tcp_connected_total") >= 200, "{m}");
}

/// Several services share one link; a reset by the server reaches the client; an address
/// nobody serves is refused at once.
#[test]
fn services_share_a_link_and_resets_propagate() {
    let mut r = Routers::new("reset");
    let mut p = Pair::new(None);
    let l1 = p.service("echo", echo_server());
    // A server that resets every connection after reading a little.
    let rs = TcpListener::bind("127.0.0.1:0").unwrap();
    let rport = rs.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in rs.incoming() {
            let Ok(mut s) = s else { return };
            let mut b = [0u8; 4];
            let _ = s.read_exact(&mut b);
            close_with_reset(s);
        }
    });
    let l2 = p.service("rst", rport);
    let l3 = free_port();
    p.a.push(tcp_listener("nobody", l3));
    r.start_pair(&p);
    wait_echo(l1);
    r.wait_log("A", "address rst: reachable");
    let mut s = TcpStream::connect(("127.0.0.1", l2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"abcd").unwrap();
    let mut buf = [0u8; 16];
    let res = s.read(&mut buf);
    match res {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
    // The echo service still works on the same link.
    assert_eq!(roundtrip(l1, b"still here").unwrap(), b"still here");
    // No router serves "nobody": the connection is reset and the log says why.
    let mut s = TcpStream::connect(("127.0.0.1", l3)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"x");
    let mut buf = [0u8; 4];
    assert!(!matches!(s.read(&mut buf), Ok(n) if n > 0));
    r.wait_log("A", "connection to address nobody refused");
}

/// Three routers in a line: `server` serves "svc" from an echo server, B links to it, and
/// `client` links to B (and with `direct`, straight to `server` at that cost) and listens
/// for "svc". Returns B's HTTP port and the client's "svc" port.
fn three_routers(r: &mut Routers, server: &str, client: &str, direct: Option<u32>) -> (u16, u16) {
    let (ir_server, ir_b) = (free_port(), free_port());
    let (hb, lport) = (free_port(), free_port());
    let serve = [tcp_connector("svc", echo_server())];
    r.start(
        server,
        &interior(server, free_port(), Some(ir_server), &[], &serve),
    );
    let to_server = format!("to-{server}");
    r.start(
        "B",
        &interior("B", hb, Some(ir_b), &[(&to_server, ir_server, 1)], &[]),
    );
    let mut links = vec![("to-B", ir_b, 1)];
    links.extend(direct.map(|cost| (to_server.as_str(), ir_server, cost)));
    let listen = [tcp_listener("svc", lport)];
    r.start(
        client,
        &interior(client, free_port(), None, &links, &listen),
    );
    (hb, lport)
}

/// A-B-C chain: the service at A is reachable from C, which links only to B.
#[test]
fn three_router_chain() {
    let mut r = Routers::new("chain");
    let (hb, lport) = three_routers(&mut r, "A", "C", None);
    r.wait_log(
        "C",
        "address svc: reachable at router A, next hop B, cost 2",
    );
    wait_echo(lport);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(roundtrip(lport, &data).unwrap(), data);
    // B relayed the flow without being an end of it.
    let m = http_get(hb, "/metrics");
    assert!(m.contains("skrouter_links{router=\"B\"} 2"), "{m}");
    assert!(m.contains("skrouter_tcp_flows{router=\"B\"} 0"), "{m}");
}

/// Triangle: A-B (1), B-C (1), A-C (10). Traffic takes A-B-C; when B dies it moves to A-C,
/// and A's connector to B keeps retrying with backoff.
#[test]
fn triangle_prefers_cheap_path_and_fails_over() {
    let mut r = Routers::new("triangle");
    let (hb, lport) = three_routers(&mut r, "C", "A", Some(10));
    r.wait_log(
        "A",
        "address svc: reachable at router C, next hop B, cost 2",
    );
    wait_echo(lport);
    let routed = |port: u16, id: &str| -> u64 {
        let m = http_get(port, "/metrics");
        metric(
            &m,
            &format!("skrouter_messages_routed_total{{router=\"{id}\"}}"),
        )
    };
    let before = routed(hb, "B");
    let data = vec![7u8; 200_000];
    assert_eq!(roundtrip(lport, &data).unwrap(), data);
    assert!(routed(hb, "B") > before, "the flow did not cross B");

    r.kill("B");
    r.wait_log("A", "link to router B down");
    r.wait_log(
        "A",
        "address svc: reachable at router C, next hop C, cost 10",
    );
    wait_echo(lport);
    assert_eq!(roundtrip(lport, &data).unwrap(), data);
    r.wait_log("A", "connector to-B: connect to 127.0.0.1");
    r.wait_log("A", "retrying in 2s");

    // B comes back: A's connector reconnects and traffic returns to the cheap path.
    let b_cfg = std::fs::read_to_string(r.dir.join("B.json")).unwrap();
    r.start("B", &b_cfg);
    r.wait_log_count("A", "link to router B up", 2);
    r.wait_log_count(
        "A",
        "address svc: reachable at router C, next hop B, cost 2",
        2,
    );
    let before = routed(hb, "B");
    assert_eq!(roundtrip(lport, &data).unwrap(), data);
    assert!(routed(hb, "B") > before, "the flow did not return to B");
}

/// A router presenting a certificate from another site's CA is refused, and says so.
#[test]
fn wrong_ca_is_refused() {
    let mut r = Routers::new("wrongca");
    let (mut p, _) = tls_pair(&r);
    // A's token comes from another site's CA.
    let other = r.dir.join("X-ca");
    create_site_ca(&other, "X").unwrap();
    let bad = create_token(&other, &r.dir.join("bad-token"), "A", "127.0.0.1", p.ir).unwrap();
    p.a.push(ssl_profile("link-B", &bad.files));
    p.service("svc", echo_server());
    r.start_pair(&p);
    r.wait_log("B", "refused inter-router connection from 127.0.0.1");
    r.wait_log("A", "connector to-B: TLS handshake with 127.0.0.1");
    assert!(
        r.log("B").contains("TLS handshake failed"),
        "{}",
        r.log("B")
    );
    assert!(
        !r.log("A").contains("link to router B up"),
        "{}",
        r.log("A")
    );
    assert!(
        !r.log("B").contains("link to router A up"),
        "{}",
        r.log("B")
    );
}

/// Runs `knetsim skrouterd -c config`, which must exit non-zero; returns what it printed.
fn skrouterd_fails(config: &Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_knetsim"))
        .args(["skrouterd", "-c"])
        .arg(config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    err
}

/// Writes `text` to DIR/NAME and runs skrouterd on it, which must fail; returns the file
/// and what it printed.
fn refused_config(dir: &Path, name: &str, text: &str) -> (PathBuf, String) {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    let err = skrouterd_fails(&f);
    (f, err)
}

/// A malformed config: a clear error naming the problem and a non-zero exit.
#[test]
fn malformed_config_fails_clearly() {
    let dir = std::env::temp_dir().join(format!("knetsim-skupper-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            r#"[["router", {"id": "A"}], ["tcpListener", {"name": "s", "address": "s", "prot": 1}]]"#,
            "entry 1 (tcpListener): unknown attribute \"prot\"",
        ),
        (
            r#"[["router", {"id": "A"}], ["bridge", {}]]"#,
            "unknown entity type \"bridge\"",
        ),
        (r#"[["router", {"id": "A"}], "#, "not valid JSON"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let (f, err) = refused_config(&dir, &format!("bad{i}.json"), text);
        assert!(err.contains(want), "wanted {want:?} in: {err}");
        assert!(err.contains(&f.display().to_string()), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let err = skrouterd_fails(Path::new("/nonexistent/router.json"));
    assert!(
        err.contains("cannot read router config /nonexistent/router.json"),
        "{err}"
    );
    // A port already taken: the router says which listener and exits non-zero.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let entries = [
        router("A"),
        http_listener(free_port()),
        tcp_listener("svc", port),
    ];
    let (_, err) = refused_config(&dir, "busy.json", &config(&entries));
    assert!(
        err.contains(&format!(
            "tcpListener svc cannot listen on 127.0.0.1:{port}"
        )),
        "{err}"
    );
    // A listener's sslProfile naming a missing certificate: the file is named, exit non-zero.
    let entries = [
        router("A"),
        http_listener(free_port()),
        r#"["sslProfile", {"name": "site", "caCertFile": "/nonexistent/ca.crt", "certFile": "/nonexistent/tls.crt", "privateKeyFile": "/nonexistent/tls.key"}]"#.to_string(),
        ir_listener(free_port(), Some("site")),
    ];
    let (_, err) = refused_config(&dir, "nocert.json", &config(&entries));
    assert!(err.contains("/nonexistent/ca.crt"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SIGHUP applies a changed configuration in place: a second service is added on both
/// routers while a connection through the first stays open and keeps echoing; a bad file
/// or a listener change is refused with the old configuration kept; removing the connector
/// takes the link down.
#[test]
fn reload_adds_a_service_without_dropping_connections() {
    let (r, p1, l1) = echo_pair("reload", "svc1");
    r.wait_log("A", "address svc1: reachable at router B");
    wait_echo(l1);
    let mut long = TcpStream::connect(("127.0.0.1", l1)).unwrap();
    long.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let echo_once = |s: &mut TcpStream, what: &[u8]| {
        s.write_all(what).unwrap();
        let mut got = vec![0u8; what.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, what);
    };
    echo_once(&mut long, b"before");

    let mut p2 = p1.clone();
    let l2 = p2.service("svc2", echo_server());
    r.reload("B", &config(&p2.b));
    r.reload("A", &config(&p2.a));
    r.wait_log("A", "SIGHUP: configuration reloaded");
    r.wait_log("B", "SIGHUP: configuration reloaded");
    r.wait_log("A", "address svc2: reachable at router B");
    wait_echo(l2);
    echo_once(&mut long, b"after the reload");
    let logs = r.all_logs();
    assert_eq!(
        logs.matches("starting (mode").count(),
        2,
        "no router restarted:\n{logs}"
    );
    assert_eq!(
        r.log("A").matches("link to router B up").count(),
        1,
        "the link stayed up:\n{logs}"
    );

    // A broken file and a listener change are refused; the old configuration stays.
    r.reload("A", "[");
    r.wait_log("A", "SIGHUP: reload of");
    assert!(r.log("A").contains("not valid JSON"), "{}", r.log("A"));
    let mut a3 = p2.a.clone();
    a3.push(http_listener(free_port()));
    r.reload("A", &config(&a3));
    r.wait_log("A", "the listeners changed; that takes a restart");
    echo_once(&mut long, b"still here");
    wait_echo(l2);

    // Without the connector the link goes, and svc2 with it.
    let a4: Vec<String> =
        p2.a.iter()
            .filter(|e| !e.contains("\"to-B\""))
            .cloned()
            .collect();
    r.reload("A", &config(&a4));
    r.wait_log("A", "reload: connector to-B removed");
    r.wait_log("B", "link to router A down");
    r.wait_log("A", "address svc2: no longer reachable");
    drop(long);
}

fn edge_router(id: &str) -> String {
    format!(r#"["router", {{"id": "{id}", "mode": "edge"}}]"#)
}
fn edge_listener(port: u16) -> String {
    format!(
        r#"["listener", {{"name": "edge", "host": "127.0.0.1", "port": {port}, "role": "edge"}}]"#
    )
}
fn edge_connector(name: &str, port: u16) -> String {
    format!(
        r#"["connector", {{"name": "{name}", "role": "edge", "host": "127.0.0.1", "port": {port}}}]"#
    )
}

/// Edge mode, three sites: interior A and B linked (cost 10), edge E connected to both
/// with edge connectors. E reaches B's service through an interior router; A reaches it
/// over the direct A-B link at cost 10 and never through E, although A-E-B costs 2. An
/// edge connector aimed at an inter-router listener is refused, saying why.
#[test]
fn edge_router_routes_only_through_interior_routers() {
    let mut r = Routers::new("edge");
    let (ir, ea, eb, le, la) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let serve = tcp_connector("svc1", echo_server());
    let b_serves = [edge_listener(eb), serve.clone()];
    r.start("B", &interior("B", free_port(), Some(ir), &[], &b_serves));
    let a_listens = [edge_listener(ea), tcp_listener("svc1", la)];
    r.start(
        "A",
        &interior("A", free_port(), None, &[("to-B", ir, 10)], &a_listens),
    );
    r.start(
        "E",
        &config(&[
            edge_router("E"),
            http_listener(free_port()),
            edge_connector("up-A", ea),
            edge_connector("up-B", eb),
            tcp_listener("svc1", le),
        ]),
    );
    r.wait_log("E", "link to router A up (edge, plain)");
    r.wait_log("E", "link to router B up (edge, plain)");
    r.wait_log("A", "link to router E up (edge, plain)");
    r.wait_log(
        "E",
        "address svc1: reachable at router B, next hop B, cost 1",
    );
    wait_echo(le);
    wait_echo(la);
    let a = r.log("A");
    assert!(
        a.contains("address svc1: reachable at router B, next hop B, cost 10"),
        "{a}"
    );
    assert!(
        !a.contains("next hop E"),
        "A routed through the edge router:\n{a}"
    );

    // Without its uplink to B, E reaches B through A.
    r.kill("B");
    r.start("B", &interior("B", free_port(), Some(ir), &[], &[serve]));
    r.wait_log(
        "E",
        "address svc1: reachable at router B, next hop A, cost 11",
    );
    wait_echo(le);

    // An edge router dialing an inter-router listener is refused, on both ends.
    r.start(
        "F",
        &config(&[
            edge_router("F"),
            http_listener(free_port()),
            edge_connector("wrong", ir),
        ]),
    );
    r.wait_log("B", "refused inter-router connection");
    r.wait_log(
        "F",
        "connector wrong: this end of the link has role edge, router B's end has role inter-router",
    );
    assert!(
        !r.log("F").contains("link to router B up"),
        "{}",
        r.log("F")
    );
}
