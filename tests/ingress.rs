//! Ingress through the simulator: real nginx in a worker's namespace routes by path to
//! Services, a reconfiguration reloads it (same master, new rules), bad input is refused
//! with a clear message and leaves no nginx behind, and teardown ends nginx by pid.

mod common;

use common::assert_holds;

use common::{
    assert_nothing_left, err_text, knetsim_cleanup, knetsim_script, recorded_processes, started,
    tear_down, two_workers, Guard,
};
use knetsim::netns::{self, process};
use knetsim::sim::{IngressRule, PortSpec, ServiceSpec, Worker};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

fn spec(app: &str) -> ServiceSpec {
    ServiceSpec {
        selector: labels(app),
        ports: vec![PortSpec {
            port: 8000,
            target: Some(8000),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn rule(path: &str, endpoint: &str) -> IngressRule {
    IngressRule {
        path: path.into(),
        endpoint: endpoint.into(),
    }
}

/// Pids of nginx processes inside a worker's namespace.
fn nginx_pids(w: &Worker) -> Vec<u32> {
    let ino = netns::inode(&w.ns()).expect("worker namespace");
    process::pids_in_namespaces(&[ino])
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "nginx")
        })
        .collect()
}

/// nginx's processes once the master has forked its workers: run_ingress returns when the
/// port answers, which can be a moment before the last worker exists.
fn settled_nginx_pids(w: &Worker) -> Vec<u32> {
    let mut last = nginx_pids(w);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = nginx_pids(w);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn curl(from: &Worker, url: &str) -> String {
    from.exec(&format!("curl -s -m 3 {url}"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn ingress_routes_reloads_and_is_stopped_by_pid() {
    let (sim, c, w1, w2) = two_workers("ingr1");
    w2.create_container("pa", labels("a")).unwrap();
    w2.create_container("pb", labels("b")).unwrap();
    w2.echo_server("pa", 8000, "REPLY-A").unwrap();
    // `knetsim` is on the PATH of exec commands, so a lesson can also start one by hand.
    w2.exec_container_async("pb", "knetsim echo-server --port 8000 --message REPLY-B")
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while w2
        .exec_container("pb", "curl -s -m 1 http://127.0.0.1:8000/")
        .unwrap()
        .trim()
        != "REPLY-B"
    {
        assert!(Instant::now() < until, "echo server in pb did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ipa = c.service("sa", &spec("a")).unwrap();
    let ipb = c.service("sb", &spec("b")).unwrap();
    let (ea, eb) = (format!("{ipa}:8000"), format!("{ipb}:8000"));

    let info = w1
        .run_ingress("grp1", 8001, &[rule("/a", &ea), rule("/b", &eb)])
        .unwrap();
    assert_eq!(info.conf, w1.dir().join("ingress/grp1/nginx.conf"));
    let conf = std::fs::read_to_string(&info.conf).unwrap();
    assert!(conf.contains(&format!(
        "location = /a {{\n            proxy_pass http://{ea};"
    )));
    let base = format!("http://{}:8001", w1.ip());
    assert_eq!(curl(&w2, &format!("{base}/a")), "REPLY-A");
    assert_eq!(curl(&w2, &format!("{base}/b")), "REPLY-B");
    // Prefix matches by path element: below /a yes, /ab no.
    assert_eq!(curl(&w2, &format!("{base}/a/x/y")), "REPLY-A");
    let code = w2
        .exec(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' {base}/ab"
        ))
        .unwrap();
    assert_eq!(code, "404", "/a must not match /ab");
    let code = w2
        .exec(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' {base}/zzz"
        ))
        .unwrap();
    assert_eq!(code, "404");
    let first = nginx_pids(&w1);
    assert!(
        first.contains(&info.pid),
        "{first:?} lacks master {}",
        info.pid
    );
    assert!(first.len() >= 2, "a master and a worker: {first:?}");

    // Reconfigure under the same name: same master, new workers, swapped routing.
    let again = w1
        .run_ingress("grp1", 8001, &[rule("/a", &eb), rule("/b", &ea)])
        .unwrap();
    assert_eq!(again.pid, info.pid, "a reload keeps the master");
    for _ in 0..5 {
        assert_eq!(curl(&w2, &format!("{base}/a")), "REPLY-B");
        assert_eq!(curl(&w2, &format!("{base}/b")), "REPLY-A");
    }
    let second = nginx_pids(&w1);
    let old_workers: Vec<&u32> = first.iter().filter(|p| **p != info.pid).collect();
    assert!(
        old_workers.iter().all(|p| !second.contains(p)),
        "old workers {old_workers:?} still run after the reload: {second:?}"
    );

    // A new port on reload: the old one closes, the new one answers.
    w1.run_ingress("grp1", 8002, &[rule("/a", &ea)]).unwrap();
    assert_eq!(curl(&w2, &format!("http://{}:8002/a", w1.ip())), "REPLY-A");
    let old = w2
        .exec(&format!("curl -s -m 2 {base}/a || echo refused"))
        .unwrap();
    assert_eq!(old.trim(), "refused");

    // A second ingress beside it, stopped on its own by pid.
    let other = w1.run_ingress("grp2", 8003, &[rule("/", &ea)]).unwrap();
    assert_eq!(w1.ingresses(), vec!["grp1".to_string(), "grp2".to_string()]);
    assert_eq!(
        curl(&w2, &format!("http://{}:8003/anything", w1.ip())),
        "REPLY-A"
    );
    w1.stop_ingress("grp2").unwrap();
    assert!(
        !nginx_pids(&w1).contains(&other.pid),
        "grp2's nginx still runs"
    );
    assert_eq!(w1.ingresses(), vec!["grp1".to_string()]);
    let e = err_text(w1.stop_ingress("grp2"));
    assert_holds(&e, &["no ingress 'grp2'", "grp1"]);

    // Teardown ends every nginx process by the recorded pid (and its group).
    let left = nginx_pids(&w1);
    assert!(!left.is_empty());
    let starts: Vec<(u32, u64)> = left
        .iter()
        .filter_map(|p| process::start_time(*p).map(|s| (*p, s)))
        .collect();
    sim.teardown().unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while starts.iter().any(|(p, s)| process::is_same_process(*p, *s)) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (p, s) in &starts {
        assert!(
            !process::is_same_process(*p, *s),
            "nginx {p} survived teardown"
        );
    }
    assert_nothing_left("ingr1", &[]);
}

/// A reload whose old nginx worker cannot finish (a request it proxied is still waiting
/// for its answer) times out; the previous config is put back, so the file, nginx and
/// the rules the simulator reports agree, and a later reload works.
#[test]
fn a_reload_that_times_out_puts_the_previous_config_back() {
    let (sim, c) = started("ingrrb", 1, 1);
    let w1 = c.worker("w1").unwrap();
    w1.create_container("slow", labels("slow")).unwrap();
    let pod = w1.container("slow").unwrap();
    // A backend that takes connections and never answers: bound inside the pod, never
    // written to.
    let listener = netns::run_in(&pod.ns, || {
        let l = std::net::TcpListener::bind(("0.0.0.0", 9000))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .unwrap();
    let slow = format!("{}:9000", pod.ip);
    let before = w1.run_ingress("rb", 8005, &[rule("/", &slow)]).unwrap();
    let conf_before = std::fs::read_to_string(&before.conf).unwrap();
    w1.exec_async("curl -s -m 60 http://127.0.0.1:8005/hang")
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let held = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(_) => {
                assert!(Instant::now() < until, "nginx never proxied the request");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };

    let e = w1
        .run_ingress("rb", 8005, &[rule("/other", &slow)])
        .unwrap_err();
    let msg = format!("{e:#}");
    assert_holds(&msg, &["keeps its previous rules", "was put back"]);
    assert_eq!(std::fs::read_to_string(&before.conf).unwrap(), conf_before);
    let now = w1.ingress("rb").expect("the ingress still runs");
    assert_eq!(now.pid, before.pid);
    assert_eq!(now.rules, before.rules);

    // Once the held request ends, the old worker finishes and a reload goes through.
    drop(held);
    let after = w1
        .run_ingress("rb", 8005, &[rule("/other", &slow)])
        .unwrap();
    assert_eq!(after.rules[0].path, "/other");
    assert!(std::fs::read_to_string(&after.conf)
        .unwrap()
        .contains("location /other/"));
    drop(listener);
    tear_down(&sim, &[]);
}

#[test]
fn bad_ingress_input_is_refused_and_leaves_no_nginx() {
    let (sim, c) = started("ingr2", 1, 1);
    let w1 = c.worker("w1").unwrap();
    let ok = [rule("/svc1", "100.64.11.1:8000")];
    // A rule naming a Service names one of its TCP ports.
    c.service("web", &spec("web")).unwrap();
    for (want, endpoint) in [
        ("no TCP port 81 (its ports: 8000)", "web:81"),
        ("'http' is not a port", "web:http"),
    ] {
        let e = err_text(w1.run_ingress("g", 8001, &[rule("/w", endpoint)]));
        assert_holds(&e, &[want]);
    }
    let good: &[(&str, &str)] = &[("/svc1", "100.64.11.1:8000")];
    // What the message says, the group, the port, the rules as (path, endpoint).
    type Case<'a> = (&'a str, &'a str, i64, &'a [(&'a str, &'a str)]);
    let cases: &[Case] = &[
        (
            "does not start with '/'",
            "grp1",
            8001,
            &[("svc1", "100.64.11.1:8000")],
        ),
        ("has no port", "grp1", 8001, &[("/svc1", "100.64.11.1")]),
        (
            "is not an IPv4 address",
            "grp1",
            8001,
            &[("/svc1", "100.64.11:8000")],
        ),
        // A name is a Service's: it must exist.
        (
            "there is no Service 'svc1'",
            "grp1",
            8001,
            &[("/svc1", "svc1:8000")],
        ),
        (
            "outside 1-65535",
            "grp1",
            8001,
            &[("/svc1", "100.64.11.1:0")],
        ),
        ("is not a port", "grp1", 0, good),
        ("is not a port", "grp1", 70000, good),
        ("not a plain word", "grp 1", 8001, good),
        ("not a plain word", "../x", 8001, good),
        ("at least one rule", "grp1", 8001, &[]),
        (
            "appears twice",
            "grp1",
            8001,
            &[("/a", "100.64.11.1:80"), ("/a", "100.64.11.2:80")],
        ),
        (
            "configuration syntax",
            "grp1",
            8001,
            &[("/a;b", "100.64.11.1:80")],
        ),
    ];
    for &(want, name, port, rules) in cases {
        let rules: Vec<IngressRule> = rules.iter().map(|(p, e)| rule(p, e)).collect();
        let e = w1
            .run_ingress(name, port, &rules)
            .expect_err(want)
            .to_string();
        assert!(e.contains(want), "expected '{want}' in: {e}");
        assert!(e.contains("e.g.") || e.contains(": "), "no fix given: {e}");
        assert!(nginx_pids(&w1).is_empty(), "nginx left after '{want}'");
        assert!(!w1.ingress_dir(name).join("nginx.conf").exists());
    }

    // A port in use: by a server started on the worker (found through PATH), then by
    // another ingress.
    w1.exec_async("knetsim echo-server --port 8005 --message busy")
        .unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while !w1
        .exec("curl -s -m 1 http://127.0.0.1:8005/")
        .unwrap()
        .contains("busy")
    {
        assert!(Instant::now() < until, "the echo server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let e = err_text(w1.run_ingress("grp1", 8005, &ok));
    assert!(
        e.contains("port 8005 on") && e.contains("already in use") && e.contains("knetsim"),
        "{e}"
    );
    assert!(nginx_pids(&w1).is_empty());
    w1.run_ingress("grp1", 8001, &ok).unwrap();
    let pids = settled_nginx_pids(&w1);
    let e = err_text(w1.run_ingress("grp2", 8001, &ok));
    assert_holds(&e, &["already in use", "nginx"]);
    assert_eq!(nginx_pids(&w1), pids, "a refused ingress started nothing");
    // A bad reconfiguration leaves the running ingress as it was.
    let e = err_text(w1.run_ingress("grp1", 8001, &[rule("bad", "100.64.11.1:8000")]));
    assert_holds(&e, &["does not start with '/'"]);
    let conf = std::fs::read_to_string(w1.ingress_dir("grp1").join("nginx.conf")).unwrap();
    assert!(conf.contains("location /svc1/ {"));
    assert_eq!(nginx_pids(&w1), pids);

    // Echo servers refuse bad input too.
    w1.create_container("c1", BTreeMap::new()).unwrap();
    for (want, container, port, msg) in [
        ("is not a port", "c1", 0, "x"),
        ("is not a port", "c1", 70000, "x"),
        ("line break", "c1", 8000, "a\nb"),
        ("empty", "c1", 8000, ""),
        ("no container 'c9'", "c9", 8000, "x"),
    ] {
        let e = err_text(w1.echo_server(container, port, msg));
        assert!(e.contains(want), "expected '{want}' in: {e}");
    }
    w1.echo_server("c1", 8000, "first").unwrap();
    let e = err_text(w1.echo_server("c1", 8000, "second"));
    assert_holds(&e, &["already in use"]);
    tear_down(&sim, &[]);
}

#[test]
fn cleanup_after_a_crash_ends_nginx_by_its_recorded_pid() {
    let instance = "ingr3";
    let mut g = Guard::default();
    let script = g.file(
        instance,
        "crash.rhai",
        "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nstart();\n\
         C0.get(\"w1\").run_ingress(\"grp1\", 8001, [#{ path: \"/a\", endpoint: \"100.64.11.1:8000\" }]);\n\
         sleep(60.0);\n",
    );
    let mut child = knetsim_script(instance, &script)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let run = knetsim::netns::record::run_dir(instance);
    let until = Instant::now() + Duration::from_secs(60);
    let nginx = loop {
        let found = recorded_processes(instance, "ingress grp1")
            .first()
            .copied();
        // Recorded, and running (nginx has written its pid file).
        if let Some(f) = found {
            if run.join("C0w1/ingress/grp1/nginx.pid").exists() {
                break f;
            }
        }
        assert!(Instant::now() < until, "the ingress never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill(); // SIGKILL: no teardown runs
    let _ = child.wait();
    assert!(
        process::is_same_process(nginx.0, nginx.1),
        "nginx died with knetsim"
    );
    knetsim_cleanup(instance);
    let until = Instant::now() + Duration::from_secs(5);
    while process::is_same_process(nginx.0, nginx.1) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !process::is_same_process(nginx.0, nginx.1),
        "nginx survived cleanup"
    );
    assert_nothing_left(instance, &[]);
}

#[test]
fn missing_nginx_names_the_package_and_leaves_nothing() {
    let mut g = Guard::default();
    let script = g.file(
        "ingr4",
        "no-nginx.rhai",
        "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nstart();\n\
         C0.get(\"w1\").run_ingress(\"grp1\", 8001, [#{ path: \"/a\", endpoint: \"100.64.11.1:8000\" }]);\n",
    );
    let out = knetsim_script("ingr4", &script)
        .env("KNETSIM_NGINX", "/nonexistent/nginx")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert_holds(
        &text,
        &[
            "/nonexistent/nginx' was not found",
            "apt-get install nginx-light",
        ],
    );
    assert!(
        text.contains(":3:"),
        "the message names the script line: {text}"
    );
    assert_nothing_left("ingr4", &[]);
}
