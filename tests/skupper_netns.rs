//! Two routers in two network namespaces joined by a veth pair, as the simulator runs them:
//! started with `netns::process::spawn_daemon`, linked over mutual TLS on the default
//! inter-router port 55671 with certificates naming the listener's address, carrying an
//! HTTP request from one site to a server in the other.

mod common;

use common::assert_holds;

use common::{root_or_skip, Guard};

use knetsim::components::skupper::{create_site_ca, create_token, issue_router_cert};
use knetsim::netns;
use std::time::{Duration, Instant};

fn log_of(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

#[test]
fn routers_in_namespaces_over_veth_with_tls() {
    if !root_or_skip() {
        return;
    }
    let (na, nb) = ("skupper-netns-a", "skupper-netns-b");
    let mut g = Guard::default();
    let dir = g.dir("skupper-netns");
    for n in [na, nb] {
        g.ns(n);
    }
    let nbs = nb.to_string();
    netns::netlink::with(na, move |nl| async move {
        nl.add_veth("skva", "skvb").await?;
        nl.move_to_ns("skvb", &nbs).await?;
        nl.add_addr("skva", "10.77.0.1".parse().unwrap(), 24)
            .await?;
        nl.set_up("skva").await?;
        nl.set_up("lo").await
    })
    .unwrap();
    netns::netlink::with(nb, |nl| async move {
        nl.add_addr("skvb", "10.77.0.2".parse().unwrap(), 24)
            .await?;
        nl.set_up("skvb").await?;
        nl.set_up("lo").await
    })
    .unwrap();

    // Site B's CA; its router's certificate names 10.77.0.2; A links with a token.
    create_site_ca(&dir.join("ca-b"), "B").unwrap();
    let srv = issue_router_cert(&dir.join("ca-b"), &dir.join("B"), "B", &["10.77.0.2"]).unwrap();
    let tok = create_token(&dir.join("ca-b"), &dir.join("tok"), "A", "10.77.0.2", 55671).unwrap();
    let prof = |n: &str, f: &knetsim::components::skupper::CertFiles| {
        format!(
            r#"["sslProfile", {{"name": "{n}", "caCertFile": "{}", "certFile": "{}", "privateKeyFile": "{}"}}]"#,
            f.ca_cert.display(),
            f.cert.display(),
            f.key.display()
        )
    };
    std::fs::write(dir.join("www.txt"), "hello from site B\n").unwrap();
    let b = format!(
        r#"[["router", {{"id": "B", "mode": "interior"}}], {},
 ["listener", {{"name": "ir", "host": "0.0.0.0", "port": "55671", "role": "inter-router", "sslProfile": "site"}}],
 ["listener", {{"port": 9090, "http": true}}],
 ["tcpConnector", {{"name": "web", "address": "web", "host": "127.0.0.1", "port": 8080}}]]"#,
        prof("site", &srv)
    );
    let a = format!(
        r#"[["router", {{"id": "A", "mode": "interior"}}], {},
 ["listener", {{"port": 9090, "http": true}}],
 ["connector", {{"name": "link-B", "role": "inter-router", "host": "{}", "port": {}, "cost": 1, "sslProfile": "token"}}],
 ["tcpListener", {{"name": "web", "address": "web", "port": 1028}}]]"#,
        prof("token", &tok.files),
        tok.host,
        tok.port
    );
    std::fs::write(dir.join("A.json"), a).unwrap();
    std::fs::write(dir.join("B.json"), b).unwrap();
    let bin = common::knetsim_exe().display().to_string();
    let www = format!("--directory={}", dir.display());
    g.children.push(
        netns::process::spawn_daemon(
            Some(nb),
            "python3",
            &[
                "-m".into(),
                "http.server".into(),
                "8080".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                www,
            ],
            &dir.join("www.log"),
        )
        .unwrap(),
    );
    for (ns, name) in [(nb, "B"), (na, "A")] {
        let args = vec![
            "skrouterd".to_string(),
            "-c".into(),
            dir.join(format!("{name}.json")).display().to_string(),
        ];
        g.children.push(
            netns::process::spawn_daemon(Some(ns), &bin, &args, &dir.join(format!("{name}.log")))
                .unwrap(),
        );
    }
    // A shell line in A's namespace.
    let in_a =
        |cmd: &str| netns::process::run_shell(Some(na), cmd, &[], Duration::from_secs(5), None);
    let t = Instant::now();
    let mut last = String::new();
    while t.elapsed() < Duration::from_secs(20) {
        let out = in_a("curl -s --max-time 3 http://127.0.0.1:1028/www.txt");
        if let Ok(o) = out {
            if o.text.contains("hello from site B") {
                last.clear();
                break;
            }
            last = o.text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        last.is_empty(),
        "no page through the routers: {last}\n--- A\n{}\n--- B\n{}",
        log_of(&dir, "A"),
        log_of(&dir, "B")
    );
    let la = log_of(&dir, "A");
    assert_holds(&la, &["link to router B up (inter-router, TLS)"]);
    assert!(log_of(&dir, "B").contains("link to router A up (inter-router, TLS)"));
    // /healthz answers inside the namespace on the default port.
    let h = in_a("curl -s -i --max-time 3 http://127.0.0.1:9090/healthz").unwrap();
    assert!(
        h.text.contains("200 OK") && h.text.ends_with("OK"),
        "{}",
        h.text
    );
}
