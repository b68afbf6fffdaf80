//! Skupper sites through the simulator: clusters linked by their routers, a service exposed
//! in one cluster reached from every pod of the others (also across a chain of sites), and
//! bad input refused with a clear message and nothing left behind.

mod common;

use common::assert_holds;

use common::{
    alive, assert_nothing_left, knetsim_cleanup, knetsim_script, recorded_processes, root_or_skip,
    sim, tear_down, tear_down_since, Guard, HostSnapshot,
};
use knetsim::netns::process;
use knetsim::sim::{Cluster, ClusterSpec, LinkOptions, Sim, SiteOptions, Worker};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A running simulation for `instance` with clusters C0, C1, ... of `workers[i]` workers
/// each, and the root namespace as it was before; None (the skip said) without root.
fn running<const N: usize>(
    instance: &str,
    workers: [u32; N],
) -> Option<(HostSnapshot, Sim, [Cluster; N])> {
    if !root_or_skip() {
        return None;
    }
    let before = HostSnapshot::take();
    let sim = sim(instance);
    let clusters = std::array::from_fn(|i| sim.cluster(&i.to_string(), spec(workers[i])).unwrap());
    sim.start().unwrap();
    // Each cluster's election is timed on its own; the bring-up's is the last of them.
    let b = sim.last_bringup().expect("start() keeps its times");
    let ids: Vec<String> = b.elections.iter().map(|(id, _)| id.clone()).collect();
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(ids, want, "one election per cluster, in order: {b:?}");
    assert_eq!(
        b.elections.iter().map(|e| e.1).max(),
        Some(b.etcd_healthy),
        "{b:?}"
    );
    assert!(b.etcd_healthy <= b.total, "{b:?}");
    Some((before, sim, clusters))
}

fn spec(workers: u32) -> ClusterSpec {
    ClusterSpec { workers, etcd: 1 }
}

/// A page server in `container` on `w`, answering `text` on port 80.
fn serve(w: &Worker, container: &str, text: &str) {
    w.create_container(container, BTreeMap::new()).unwrap();
    let www = w.dir().join(format!("www-{container}"));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), format!("{text}\n")).unwrap();
    w.exec_container_async(
        container,
        &format!(
            "exec python3 -m http.server 80 --bind 0.0.0.0 --directory {}",
            www.display()
        ),
    )
    .unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let out = w
            .exec_container(container, "wget -q -O - -T 1 http://127.0.0.1/")
            .unwrap_or_default();
        if out.contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the page server in {container} did not start");
}

fn get(w: &Worker, container: &str, url: &str) -> String {
    w.exec_container(container, &format!("wget -q -O - -T 5 {url}"))
        .unwrap_or_else(|e| format!("{e:#}"))
}

fn config(c: &Cluster) -> String {
    std::fs::read_to_string(c.skupper_config_path()).unwrap_or_default()
}

#[test]
fn a_service_in_c0_is_reached_from_every_pod_of_c1_and_of_c2_through_c1() {
    let Some((before, sim, [c0, c1, c2])) = running("sksim-reach", [3, 3, 1]) else {
        return;
    };
    let c0w3 = c0.worker("w3").unwrap();
    serve(&c0w3, "c4", "hello from c4");
    serve(&c0w3, "c5", "hello from c5");
    let clients: Vec<(Worker, String)> = (1..=3)
        .map(|k| {
            let w = c1.worker(&format!("w{k}")).unwrap();
            let name = format!("c{k}");
            w.create_container(&name, BTreeMap::new()).unwrap();
            (w, name)
        })
        .collect();
    let c1w1 = c1.worker("w1").unwrap();
    let c2w1 = c2.worker("w1").unwrap();
    c2w1.create_container("c9", BTreeMap::new()).unwrap();

    for c in [&c0, &c1, &c2] {
        c.skupper_init(SiteOptions::default()).unwrap();
    }
    // A second init with the same options changes nothing.
    let pid0 = c0.skupper_router_pid().unwrap();
    c0.skupper_init(SiteOptions::default()).unwrap();
    assert_eq!(c0.skupper_router_pid(), Some(pid0));
    // ... with other options it is refused, naming the fix.
    let e = format!(
        "{:#}",
        c0.skupper_init(SiteOptions { tls: false }).unwrap_err()
    );
    assert_holds(&e, &["skupper_delete()"]);

    let t = c0.skupper_token().unwrap();
    c1.skupper_link(&t, LinkOptions::default()).unwrap();
    let log1 = std::fs::read_to_string(c1.skupper_log_path()).unwrap();
    assert_holds(&log1, &["link to router C0 up (inter-router, TLS)"]);

    let p1 = c0.skupper_expose("svc1", "c4", 80).unwrap();
    let p2 = c0.skupper_expose("svc2", "c5", 80).unwrap();
    assert_eq!((p1, p2), (1028, 1029));
    let cfg1 = config(&c1);
    assert!(
        cfg1.contains(
            r#"["tcpListener",{"address":"svc1","host":"0.0.0.0","name":"svc1","port":1028}]"#
        ),
        "{cfg1}"
    );
    let c4ip = c0w3.container_ip("c4").unwrap();
    assert!(
        config(&c0).contains(&format!(r#""host":"{c4ip}","name":"svc1","port":80"#)),
        "{}",
        config(&c0)
    );
    for (w, c) in &clients {
        let a = get(w, c, &format!("http://{}:{p1}/", c1w1.ip()));
        assert!(a.contains("hello from c4"), "{c} on {}: {a}", w.name());
        let b = get(w, c, &format!("http://{}:{p2}/", c1w1.ip()));
        assert!(b.contains("hello from c5"), "{c} on {}: {b}", w.name());
    }

    // C2 links only to C1: it gets listeners on the same ports and reaches C0 through C1.
    let t1 = c1.skupper_token().unwrap();
    c2.skupper_link(&t1, LinkOptions::default()).unwrap();
    let got = get(&c2w1, "c9", &format!("http://{}:{p1}/", c2w1.ip()));
    assert!(got.contains("hello from c4"), "c9 in C2: {got}");
    let log2 = std::fs::read_to_string(c2.skupper_log_path()).unwrap();
    assert_holds(
        &log2,
        &["address svc1: reachable at router C0, next hop C1, cost 2"],
    );
    // C1 still serves its pods after the restarts the new link caused.
    let (w, c) = &clients[1];
    assert!(get(w, c, &format!("http://{}:{p1}/", c1w1.ip())).contains("hello from c4"));

    // One router per cluster, each recorded for teardown.
    let pids: Vec<u32> = [&c0, &c1, &c2]
        .iter()
        .map(|c| c.skupper_router_pid().unwrap())
        .collect();
    let rec = std::fs::read_to_string(sim.run_dir().join("record.json")).unwrap();
    for p in &pids {
        assert!(alive(*p), "router {p} is not running");
        assert!(rec.contains(&format!("\"pid\": {p}")), "{p} not in {rec}");
    }
    assert_eq!(
        rec.matches("skrouterd C").count(),
        3,
        "one recorded router per site: {rec}"
    );

    tear_down_since(&sim, &pids, before);
}

fn err(r: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

/// A Skupper service follows its pod: the container deleted and created again (on another
/// worker, so at another address) is reached through the same port.
#[test]
fn an_exposed_container_created_again_is_followed_to_its_new_address() {
    let Some((_, sim, [c0, c1])) = running("sksim-follow", [2, 1]) else {
        return;
    };
    let (c0w1, c0w2) = (c0.worker("w1").unwrap(), c0.worker("w2").unwrap());
    let c1w1 = c1.worker("w1").unwrap();
    serve(&c0w1, "web", "first web");
    c1w1.create_container("cl", BTreeMap::new()).unwrap();
    c0.skupper_init(SiteOptions::default()).unwrap();
    c1.skupper_init(SiteOptions::default()).unwrap();
    c1.skupper_link(&c0.skupper_token().unwrap(), LinkOptions::default())
        .unwrap();
    let port = c0.skupper_expose("svc1", "web", 80).unwrap();
    let url = format!("http://{}:{port}/", c1w1.ip());
    assert!(get(&c1w1, "cl", &url).contains("first web"));

    let old_ip = c0w1.container_ip("web").unwrap();
    c0w1.delete_container("web").unwrap();
    serve(&c0w2, "web", "second web");
    let new_ip = c0w2.container_ip("web").unwrap();
    assert_ne!(old_ip, new_ip, "another worker, another subnet");
    assert!(
        config(&c0).contains(&format!(r#""host":"{new_ip}","name":"svc1","port":80"#)),
        "{}",
        config(&c0)
    );
    assert_eq!(c0.skupper_services(), vec![("svc1".to_string(), port)]);
    let got = get(&c1w1, "cl", &url);
    assert_holds(&got, &["second web"]);
    tear_down(&sim, &[]);
}

#[test]
fn bad_skupper_input_is_refused_clearly_and_leaves_nothing() {
    let Some((before, sim, [c0, c1])) = running("sksim-bad", [1, 1]) else {
        return;
    };
    let c0w1 = c0.worker("w1").unwrap();
    let c1w1 = c1.worker("w1").unwrap();
    c0w1.create_container("c1", BTreeMap::new()).unwrap();

    // Before init.
    let e = err(c0.skupper_expose("svc1", "c1", 80));
    assert_holds(&e, &["C0 has no Skupper site yet", "C0.skupper_init()"]);
    let e = err(c0.skupper_token());
    assert_holds(&e, &["C0.skupper_init()"]);
    let e = err(c1.skupper_link("/nonexistent/token.json", LinkOptions::default()));
    assert_holds(&e, &["C1.skupper_init()"]);

    // A router that cannot start (its HTTP port is taken on C1w1): a clear message, and
    // no site, config or process left.
    let squatter = c1w1
        .exec_async("exec python3 -m http.server 9090 --bind 127.0.0.1")
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10)
        && !c1w1
            .exec("ss -ltn")
            .unwrap_or_default()
            .contains("127.0.0.1:9090")
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = err(c1.skupper_init(SiteOptions::default()));
    assert!(
        e.contains("router of C1") && e.contains("9090") && e.contains("C1.log"),
        "{e}"
    );
    assert!(c1.skupper_router_pid().is_none());
    assert!(!c1.skupper_config_path().exists());
    assert!(!c1w1.exec("ps -eo args").unwrap().contains(&format!(
        "skrouterd -c {}",
        c1.skupper_config_path().display()
    )));
    common::signal(squatter, nix::sys::signal::Signal::SIGKILL);
    while alive(squatter) {
        std::thread::sleep(Duration::from_millis(20));
    }

    c0.skupper_init(SiteOptions::default()).unwrap();
    c1.skupper_init(SiteOptions::default()).unwrap();
    let (cfg0, pid0) = (config(&c0), c0.skupper_router_pid().unwrap());
    let (cfg1, pid1) = (config(&c1), c1.skupper_router_pid().unwrap());
    let unchanged = |what: &str| {
        assert_eq!(config(&c0), cfg0, "{what}: C0's config changed");
        assert_eq!(config(&c1), cfg1, "{what}: C1's config changed");
        assert_eq!(c0.skupper_router_pid(), Some(pid0), "{what}: C0 restarted");
        assert_eq!(c1.skupper_router_pid(), Some(pid1), "{what}: C1 restarted");
    };

    // Exposing what is not there.
    let e = err(c0.skupper_expose("svc1", "nope", 80));
    assert_holds(&e, &["C0 has no container 'nope'", "its containers: c1"]);
    let e = err(c0.skupper_expose("svc1", "c1", 0));
    assert_holds(&e, &["between 1 and 65535"]);
    let e = err(c0.skupper_expose("1 bad", "c1", 80));
    assert_holds(&e, &["not a valid service name"]);
    unchanged("bad expose");
    assert!(c0.skupper_services().is_empty());

    // Garbage tokens.
    let e = err(c1.skupper_link("garbage", LinkOptions::default()));
    assert_holds(
        &e,
        &["\"garbage\" is not a Skupper token", "skupper_token()"],
    );
    let junk = sim.run_dir().join("junk.json");
    std::fs::write(&junk, "{\"hello\": 1}").unwrap();
    let e = err(c1.skupper_link(&junk.display().to_string(), LinkOptions::default()));
    assert_holds(&e, &["is not a Skupper token"]);
    let own = c1.skupper_token().unwrap();
    let e = err(c1.skupper_link(&own, LinkOptions::default()));
    assert_holds(&e, &["C1 cannot link to itself"]);
    unchanged("garbage token");

    // Tokens that look right but are not: another instance's, an unknown site's, one
    // whose certificate files are missing.
    let t = c0.skupper_token().unwrap();
    let valid: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&t).unwrap()).unwrap();
    let forge = |edit: &dyn Fn(&mut serde_json::Value)| -> String {
        let mut v = valid.clone();
        edit(&mut v);
        let p = sim.run_dir().join("forged.json");
        std::fs::write(&p, v.to_string()).unwrap();
        p.display().to_string()
    };
    let e = err(c1.skupper_link(
        &forge(&|v| v["instance"] = "other".into()),
        LinkOptions::default(),
    ));
    assert_holds(&e, &["issued by instance 'other'"]);
    let e = err(c1.skupper_link(&forge(&|v| v["site"] = "C7".into()), LinkOptions::default()));
    assert_holds(&e, &["site C7", "no cluster"]);
    let e = err(c1.skupper_link(
        &forge(&|v| v["certFile"] = "/nonexistent/tls.crt".into()),
        LinkOptions::default(),
    ));
    assert_holds(&e, &["certificate files are missing"]);
    let e = err(c1.skupper_link(
        &forge(&|v| v["host"] = "router.example".into()),
        LinkOptions::default(),
    ));
    assert_holds(&e, &["router.example:55671 is not valid"]);
    unchanged("forged token");
    let e = err(c0
        .skupper_expose("svc1", "c1", 80)
        .and_then(|_| c0.skupper_expose("svc1", "c1", 81)));
    assert_holds(&e, &["service 'svc1' is already exposed by C0"]);

    // A token carrying certificates from another site's CA (C1's, relabelled as C0's):
    // the TLS handshake fails, the link is refused at once, C1's config is rolled back.
    let own_v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&own).unwrap()).unwrap();
    let other_ca = forge(&|v| {
        for k in ["caCertFile", "certFile", "privateKeyFile"] {
            v[k] = own_v[k].clone();
        }
    });
    let started = Instant::now();
    let e = err(c1.skupper_link(&other_ca, LinkOptions::default()));
    eprintln!(
        "link with another CA's certificates refused after {:.2} s: {e}",
        started.elapsed().as_secs_f64()
    );
    assert_holds(&e, &["the link to C0 was refused", "TLS handshake"]);
    assert!(!e.contains("retrying"), "{e}");
    let log0 = std::fs::read_to_string(c0.skupper_log_path()).unwrap();
    assert!(
        log0.contains(&format!(
            "refused inter-router connection from {}",
            c1w1.ip()
        )),
        "C0's log does not say it refused C1: {log0}"
    );
    assert_eq!(config(&c1), cfg1, "C1's config was not rolled back");
    let pid1 = c1.skupper_router_pid().unwrap();
    assert!(alive(pid1));
    let pid0 = c0.skupper_router_pid().unwrap();
    let cfg0 = config(&c0);

    // A token from a site whose router is not running: refused at once, not a hang. It is
    // stopped on purpose (a killed router would be restarted by the supervisor).
    c0.worker("w1").unwrap().stop_agent("skrouterd").unwrap();
    assert!(!alive(pid0));
    let started = Instant::now();
    let e = err(c1.skupper_link(&t, LinkOptions::default()));
    eprintln!(
        "link to a stopped router refused after {:.2} s: {e}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        e.contains("C1 cannot reach C0's router at 10.0.0.")
            && e.contains(":55671")
            && e.contains("is it running?"),
        "{e}"
    );
    assert_eq!(config(&c1), cfg1, "C1's config changed");
    assert_eq!(c1.skupper_router_pid(), Some(pid1), "C1 restarted");
    assert!(config(&c0).contains("tcpConnector") && cfg0.contains("tcpConnector"));

    // A token from a deleted site.
    c0.skupper_delete().unwrap();
    assert!(c0.skupper_router_pid().is_none());
    assert!(!c0.skupper_config_path().exists());
    let e = err(c1.skupper_link(&t, LinkOptions::default()));
    assert_holds(&e, &["site of C0 that was deleted", "C0.skupper_init()"]);
    assert_eq!(config(&c1), cfg1, "C1's config changed");

    // After all that, a fresh site and a new token link fine.
    c0.skupper_init(SiteOptions { tls: false }).unwrap();
    let t2 = c0.skupper_token().unwrap();
    let e = err(c1.skupper_link(&t, LinkOptions::default()));
    assert_holds(&e, &["that was deleted", "C0.skupper_token()"]);
    c1.skupper_link(&t2, LinkOptions { cost: 3 }).unwrap();
    let log = std::fs::read_to_string(c1.skupper_log_path()).unwrap();
    assert_holds(&log, &["link to router C0 up (inter-router, plain)"]);
    let e = err(c1.skupper_link(&t2, LinkOptions::default()));
    assert_holds(&e, &["already linked"]);
    // The original's list form does not mix with a site made by skupper_init().
    let e = err(c0.create_conf(&[], &[]));
    assert_holds(&e, &["do not mix"]);
    let e = err(c0.start_skupper());
    assert_holds(&e, &["started by skupper_init()"]);

    let pids: Vec<u32> = [&c0, &c1]
        .iter()
        .filter_map(|c| c.skupper_router_pid())
        .collect();
    tear_down_since(&sim, &pids, before);
}

#[test]
fn script_options_are_checked_before_anything_starts() {
    if !root_or_skip() {
        return;
    }
    use knetsim::script::{Outcome, ScriptSession};
    let instance = "sksim-script";
    let mut s = ScriptSession::new(sim(instance), false);
    let cases = [
        ("C0.skupper_init(#{ tls: 1 })", "'tls' is true or false"),
        (
            "C0.skupper_init(#{ colour: true })",
            "unknown option 'colour'",
        ),
        (
            "C0.skupper_link(\"t\", #{ cost: 0 })",
            "the cost must be between 1 and 1000000",
        ),
        (
            "C0.skupper_link(\"t\", #{ weight: 2 })",
            "unknown option 'weight'",
        ),
        ("C0.skupper_init()", "C0 is not running yet: call start()"),
        ("C0.skupper_token()", "C0 has no Skupper site yet"),
        (
            "create_conf(C0, [], [])",
            "C0 is not running yet: call start()",
        ),
    ];
    let o = s.run_source(
        "decl.rhai",
        "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });",
    );
    assert_eq!(o, Outcome::Ok);
    for (src, want) in cases {
        let o = s.run_source("case.rhai", src);
        assert_ne!(o, Outcome::Ok, "{src} was accepted");
        let e = s.last_error().unwrap_or_default().to_string();
        assert!(e.contains(want), "{src}: {e}");
        assert!(e.contains("case.rhai:1:"), "{src}: no position in {e}");
    }
    tear_down(s.sim(), &[]);
}

#[test]
fn the_originals_list_form_create_conf_and_start_skupper() {
    use knetsim::script::{Outcome, ScriptSession};
    let Some((before, sim, [c0, c1, _])) = running("sksim-list", [3, 2, 1]) else {
        return;
    };
    serve(&c0.worker("w3").unwrap(), "c4", "hello from c4");
    c1.worker("w2")
        .unwrap()
        .create_container("c2", BTreeMap::new())
        .unwrap();
    let mut s = ScriptSession::new(sim.clone(), false);
    let o = s.run_source(
        "list.rhai",
        r#"
let C0 = get_cluster("0");
let C1 = get_cluster("1");
let ip = C0.get("w3").container_ip("c4");
let svcs = [#{ name: "svc1", cluster: "0", host: ip, port: "80", lport: 1028 }];
create_conf(C0, [], svcs);
C1.create_conf([C0], svcs);
C0.start_skupper();
C1.start_skupper();
C1.start_skupper();   // a second start does nothing
let out = C1.get("w2").exec_container("c2", `wget -q -O - -T 5 http://${C1.get("w1").ip}:1028/`);
expect(out.contains("hello from c4"), "c2 in C1 reaches svc1 through the routers");
"#,
    );
    assert_eq!(o, Outcome::Ok, "{:?}", s.last_error());
    let cfg1 = config(&c1);
    assert!(
        cfg1.contains(r#"["connector",{"cost":1,"host":"10.0.0.2","name":"C0""#)
            && cfg1.contains(r#""port":1028"#),
        "{cfg1}"
    );
    let pid1 = c1.skupper_router_pid().unwrap();

    let cases = [
        ("C0.skupper_token()", "configured with create_conf()"),
        ("C0.skupper_init()", "configured with create_conf()"),
        ("create_conf(C0, [], [])", "C0's router is already running"),
        ("create_conf(C2, [C2], [])", "cannot be its own remote"),
        ("create_conf(C2, [\"C0\"], [])", "remotes is a list of clusters"),
        (
            "create_conf(C2, [], [#{ name: \"s\", cluster: \"9\", host: \"1.2.3.4\", port: 1, lport: 2 }])",
            "\"9\", which is not a cluster here",
        ),
        (
            "create_conf(C2, [], [#{ name: \"s\", cluster: \"2\", host: \"1.2.3.4\", port: \"http\", lport: 2 }])",
            "'port' must be a port number",
        ),
        (
            "create_conf(C2, [], [#{ name: \"s\", cluster: \"2\", host: \"1.2.3.4\", port: 1 }])",
            "'lport' is missing",
        ),
        (
            "create_conf(C2, [], [#{ name: \"s\", cluster: \"2\", host: \"c4\", port: 1, lport: 2 }])",
            "is not an IPv4 address",
        ),
        (
            "create_conf(C2, [], [#{ name: \"s\", cluster: \"2\", host: \"1.2.3.4\", port: 1, lport: 2, colour: 1 }])",
            "unknown field 'colour'",
        ),
        ("create_conf(C2, [], [1])", "each service is a map"),
        (
            "create_conf(C2, [], [#{ name: \"1s\", cluster: \"2\", host: \"1.2.3.4\", port: 1, lport: 2 }])",
            "'name' must be letters",
        ),
        (
            "let s = #{ name: \"s\", cluster: \"2\", host: \"1.2.3.4\", port: 1, lport: 2 }; create_conf(C2, [], [s, s])",
            "the name 's' is used twice",
        ),
        ("C2.start_skupper()", "call create_conf(C2, remotes, svcs) first"),
        ("C2.skupper_delete()", "C2 has no Skupper site to delete"),
    ];
    for (src, want) in cases {
        let o = s.run_source("case.rhai", src);
        assert_ne!(o, Outcome::Ok, "{src} was accepted");
        let e = s.last_error().unwrap_or_default().to_string();
        assert!(e.contains(want), "{src}: {e}");
    }
    let c2 = sim.get_cluster("2").unwrap();
    // A remote from another simulation is refused (only reachable from Rust).
    let other = common::sim("sksim-list2");
    let foreign = other.cluster("0", spec(1)).unwrap();
    let e = format!("{:#}", c2.create_conf(&[foreign], &[]).unwrap_err());
    assert_holds(&e, &["belongs to another simulation"]);
    tear_down(&other, &[]);
    assert!(c2.skupper_router_pid().is_none());
    assert!(!c2.skupper_config_path().exists());
    assert_eq!(c1.skupper_router_pid(), Some(pid1));

    // Deleting a list-form site stops its router.
    c1.skupper_delete().unwrap();
    assert!(!alive(pid1));
    let pid0 = c0.skupper_router_pid().unwrap();
    drop(s);
    tear_down_since(&sim, &[pid0], before);
}

/// After restarts (link, expose), the record names exactly the running routers, so
/// `knetsim cleanup` after a crash ends them by pid.
#[test]
fn cleanup_after_a_crash_ends_the_routers() {
    if !root_or_skip() {
        return;
    }
    use std::process::Stdio;
    let instance = "sksim-crash";
    let mut g = Guard::default();
    let script = g.file(
        instance,
        "crash.rhai",
        r#"
let C0 = cluster("0", #{ workers: 1, etcd: 1 });
let C1 = cluster("1", #{ workers: 1, etcd: 1 });
start();
C0.get("w1").create_container("c1");
C0.skupper_init();
C1.skupper_init();
C1.skupper_link(C0.skupper_token());
C0.skupper_expose("svc1", "c1", 80);
C0.get("w1").exec(`touch ${C0.skupper_config}.ready`);
sleep(120);
"#,
    );
    let mut child = knetsim_script(instance, &script)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = knetsim::netns::record::run_dir(instance);
    let ready = run.join("skupper/C0.json.ready");
    let t = Instant::now();
    while !ready.exists() && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill(); // SIGKILL: no teardown runs
    let _ = child.wait();
    assert!(ready.exists(), "the script did not get to expose");
    let routers = recorded_processes(instance, "skrouterd");
    assert_eq!(
        routers.len(),
        2,
        "one recorded router per site: {routers:?}"
    );
    for (pid, start) in &routers {
        assert!(
            process::is_same_process(*pid, *start),
            "recorded router {pid} is not the running one"
        );
    }
    knetsim_cleanup(instance);
    std::thread::sleep(Duration::from_millis(100));
    for (pid, start) in routers {
        assert!(
            !process::is_same_process(pid, start),
            "router {pid} is still running after cleanup"
        );
    }
    assert_nothing_left(instance, &[]);
}

/// Every file under `dir`, recursively, with every directory on the way.
fn walk(
    dir: &std::path::Path,
    dirs: &mut Vec<std::path::PathBuf>,
    files: &mut Vec<std::path::PathBuf>,
) {
    dirs.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            walk(&p, dirs, files);
        } else {
            files.push(p);
        }
    }
}

#[test]
fn site_keys_and_tokens_are_private_to_root() {
    use std::os::unix::fs::MetadataExt;
    let Some((_, sim, [c0, c1])) = running("sksim-keys", [1, 1]) else {
        return;
    };
    c0.skupper_init(SiteOptions { tls: true }).unwrap();
    let token = c0.skupper_token().unwrap();
    let second = c0.skupper_token().unwrap();
    c1.skupper_init(SiteOptions { tls: true }).unwrap();
    c1.skupper_link(&token, LinkOptions::default()).unwrap();

    let skupper = sim.run_dir().join("skupper");
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    walk(&skupper, &mut dirs, &mut files);
    let secret = |p: &std::path::Path| {
        let n = p.file_name().unwrap().to_string_lossy();
        n.ends_with(".key") || n == "token.json"
    };
    let secrets: Vec<&std::path::PathBuf> = files.iter().filter(|p| secret(p)).collect();
    // Per site a CA key and a router key; per token a key and token.json.
    assert_eq!(secrets.len(), 2 + 2 + 2 * 2, "{secrets:#?}");
    for t in [&token, &second] {
        assert!(
            secrets.iter().any(|p| p.to_str() == Some(t.as_str())),
            "{t}"
        );
    }
    for p in &secrets {
        let md = std::fs::symlink_metadata(p).unwrap();
        assert!(md.is_file(), "{} is a regular file", p.display());
        assert_eq!(md.mode() & 0o7777, 0o600, "{} is 0600", p.display());
        assert_eq!(md.uid(), 0, "{} is root's", p.display());
    }
    for d in &dirs {
        let md = std::fs::symlink_metadata(d).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o700, "{} is 0700", d.display());
        assert_eq!(md.uid(), 0, "{} is root's", d.display());
    }
    // Certificates stay readable files, but only through those 0700 directories.
    assert!(files.iter().any(|p| p.file_name().unwrap() == "tls.crt"));
    drop((c0, c1));
    tear_down(&sim, &[]);
}

/// An echo server in `container` on `w`, port 80: writes back everything it reads.
fn serve_echo(w: &Worker, container: &str) {
    w.create_container(container, BTreeMap::new()).unwrap();
    let script = w.dir().join(format!("echo-{container}.py"));
    std::fs::write(
        &script,
        "import socket, threading\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', 80))\n\
         s.listen()\n\
         def echo(c):\n    \
             while True:\n        \
                 d = c.recv(65536)\n        \
                 if not d:\n            \
                     return c.close()\n        \
                 c.sendall(d)\n\
         while True:\n    \
             c, _ = s.accept()\n    \
             threading.Thread(target=echo, args=(c,), daemon=True).start()\n",
    )
    .unwrap();
    w.exec_container_async(container, &format!("exec python3 {}", script.display()))
        .unwrap();
}

/// Exposing a second service reloads the routers in place (SIGHUP), so a connection already
/// carried for the first service keeps working, and no router restarts.
#[test]
fn a_long_connection_through_svc1_survives_exposing_svc2() {
    use std::io::{Read, Write};
    let Some((before, sim, [c0, c1])) = running("sksim-reload", [1, 1]) else {
        return;
    };
    let c0w1 = c0.worker("w1").unwrap();
    let c1w1 = c1.worker("w1").unwrap();
    serve_echo(&c0w1, "c4");
    serve(&c0w1, "c5", "hello from c5");
    c1w1.create_container("c1", BTreeMap::new()).unwrap();
    for c in [&c0, &c1] {
        c.skupper_init(SiteOptions::default()).unwrap();
    }
    c1.skupper_link(&c0.skupper_token().unwrap(), LinkOptions::default())
        .unwrap();
    let p1 = c0.skupper_expose("svc1", "c4", 80).unwrap();
    let pids = (c0.skupper_router_pid(), c1.skupper_router_pid());

    // A long-lived connection from C1w1 through svc1's listener to c4's echo server.
    let target = std::net::SocketAddr::from((c1w1.ip(), p1));
    // The instance's namespace names are prefixed; the worker knows its own.
    let mut long = knetsim::netns::run_in(&c1w1.ns(), move || {
        let t = Instant::now();
        loop {
            let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"before")?;
            let mut got = [0u8; 6];
            match s.read_exact(&mut got) {
                Ok(()) if &got == b"before" => return Ok(s),
                _ if t.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                other => anyhow::bail!("no echo through svc1: {other:?}"),
            }
        }
    })
    .unwrap();

    let p2 = c0.skupper_expose("svc2", "c5", 80).unwrap();
    assert_eq!(
        (c0.skupper_router_pid(), c1.skupper_router_pid()),
        pids,
        "no router restarted"
    );
    let log1 = std::fs::read_to_string(c1.skupper_log_path()).unwrap();
    assert_holds(&log1, &["SIGHUP: configuration reloaded"]);
    let got = get(&c1w1, "c1", &format!("http://{}:{p2}/", c1w1.ip()));
    assert!(got.contains("hello from c5"), "svc2 from C1: {got}");
    long.write_all(b"after exposing svc2").unwrap();
    let mut got = vec![0u8; b"after exposing svc2".len()];
    long.read_exact(&mut got).unwrap();
    assert_eq!(got, b"after exposing svc2", "the svc1 connection survived");
    drop(long);

    tear_down_since(&sim, &[], before);
}
