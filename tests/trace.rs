//! The packet walk, one test per path: the hops come from the kernel's own trace of one
//! real probe, in order, and every namespace's ruleset is the same afterwards.

mod common;

use common::{assert_nothing_left, started, HostSnapshot};
use knetsim::components::trace::Hop;
use knetsim::sim::{Cluster, IngressRule, PortSpec, ServiceSpec, Sim, TraceOptions, Walk};
use std::collections::BTreeMap;

/// The usual pair: pod c1 on w1 (the client) and pod `server` with `labels` on w2.
fn client_and_server(
    c: &Cluster,
    server: &str,
    labels: BTreeMap<String, String>,
) -> (knetsim::sim::Worker, knetsim::sim::Worker) {
    let (w1, w2) = (c.worker("w1").unwrap(), c.worker("w2").unwrap());
    w1.create_container("c1", BTreeMap::new()).unwrap();
    w2.create_container(server, labels).unwrap();
    (w1, w2)
}

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

/// Every namespace's ruleset (without counters, which the probe itself moves), once every
/// kube-proxy has written its table (start() waits for the overlay, not for that).
fn rulesets(c: &Cluster) -> BTreeMap<String, String> {
    c.wait_converged().unwrap();
    let mut out = BTreeMap::new();
    for w in c.workers() {
        out.insert(w.name(), w.exec("nft -s list ruleset").unwrap());
        for p in w.containers() {
            out.insert(
                format!("{p}@{}", w.name()),
                w.exec_container(&p, "nft -s list ruleset").unwrap(),
            );
        }
    }
    for e in c.etcd_nodes() {
        out.insert(e.name(), e.exec("nft -s list ruleset").unwrap());
    }
    out
}

/// No `nft monitor` (or its stdbuf) is left in any namespace of the simulation.
fn no_monitor_left(sim: &Sim, c: &Cluster) {
    let mut inodes = Vec::new();
    for w in c.workers() {
        inodes.extend(knetsim::netns::inode(&w.ns()));
        for p in w.containers() {
            inodes.extend(knetsim::netns::inode(&w.container(&p).unwrap().ns));
        }
    }
    for e in c.etcd_nodes() {
        inodes.extend(knetsim::netns::inode(&e.ns()));
    }
    for pid in knetsim::netns::process::pids_in_namespaces(&inodes) {
        let cmd = knetsim::netns::process::cmdline(pid).unwrap_or_default();
        assert!(
            !cmd.contains("monitor"),
            "a trace monitor was left running in {}: pid {pid} `{cmd}`",
            sim.instance()
        );
    }
}

/// The cluster's VXLAN device, VNI and port, read from the device by the test itself
/// (`N: NAME: <FLAGS> ... vxlan id VNI ... dstport PORT`).
fn vxlan_settings(c: &Cluster) -> (String, String, String) {
    let text = c.workers()[0]
        .exec("ip -d -o link show type vxlan")
        .unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |k: &str| {
        let i = words.iter().position(|w| *w == k).expect(k);
        words[i + 1].to_string()
    };
    (
        words[1].trim_end_matches(':').to_string(),
        after("id"),
        after("dstport"),
    )
}

fn traced(
    before: &BTreeMap<String, String>,
    c: &Cluster,
    sim: &Sim,
    walk: anyhow::Result<Walk>,
) -> Vec<Hop> {
    let walk = walk.expect("the trace runs");
    println!("{}", walk.text);
    assert_eq!(
        before,
        &rulesets(c),
        "a namespace's ruleset changed across the trace"
    );
    no_monitor_left(sim, c);
    walk.hops
}

/// Tears the simulation down and checks that nothing of it is left.
fn torn_down(sim: &Sim) {
    sim.teardown().unwrap();
    assert_nothing_left(sim.instance(), &[]);
}

fn pos(hops: &[Hop], f: impl Fn(&Hop) -> bool) -> Option<usize> {
    hops.iter().position(f)
}

fn web(port: i64, node_port: Option<i64>) -> ServiceSpec {
    ServiceSpec {
        selector: labels("web"),
        ports: vec![PortSpec {
            port,
            target: Some(8000),
            node_port,
            ..Default::default()
        }],
        type_: node_port.map(|_| "NodePort".to_string()),
        ..Default::default()
    }
}

/// Starts knetsim's echo server on port 8000 in `pod` and waits until it listens.
fn serve(c: &Cluster, pod: &str) {
    let w = c.find_container(pod).unwrap();
    w.exec_container_async(
        pod,
        &format!("knetsim echo-server --port 8000 --message {pod}"),
    )
    .unwrap();
    for _ in 0..200 {
        if w.exec_container(pod, "ss -ltn").unwrap().contains(":8000 ") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the echo server in {pod} never listened on port 8000");
}

#[test]
fn pod_to_pod_on_one_worker_is_bridged_without_nat() {
    let before_host = HostSnapshot::take();
    let (sim, c) = started("tr-same", 1, 1);
    let w1 = c.worker("w1").unwrap();
    w1.create_container("c1", BTreeMap::new()).unwrap();
    w1.create_container("c3", BTreeMap::new()).unwrap();
    let ip3 = w1.container_ip("c3").unwrap();
    let before = rulesets(&c);
    let hops = traced(
        &before,
        &c,
        &sim,
        w1.trace(Some("c1"), &ip3, &TraceOptions::default()),
    );
    assert_eq!(hops[0].node, "c1@C0w1");
    assert_eq!(hops[0].what, "send");
    assert!(pos(&hops, |h| h.what == "veth" && h.node == "C0w1").is_some());
    assert!(
        pos(&hops, |h| h.dev == "cni0" && h.node == "C0w1").is_some(),
        "the bridge cni0 is on the path"
    );
    assert!(
        pos(&hops, |h| h.what == "dnat").is_none(),
        "pod to pod: no DNAT"
    );
    assert!(pos(&hops, |h| h.what == "encapsulate").is_none());
    assert!(pos(&hops, |h| h.what == "deliver" && h.node == "c3@C0w1").is_some());
    let last = hops.last().unwrap();
    assert_eq!(
        (last.what.as_str(), last.node.as_str()),
        ("answer", "c3@C0w1")
    );
    torn_down(&sim);
    assert_eq!(before_host, HostSnapshot::take());
}

#[test]
fn pod_to_pod_across_workers_is_wrapped_in_vxlan() {
    let (sim, c) = started("tr-cross", 2, 1);
    let (w1, w2) = client_and_server(&c, "c2", BTreeMap::new());
    let ip2 = w2.container_ip("c2").unwrap();
    let (dev, vni, port) = vxlan_settings(&c);
    let before = rulesets(&c);
    let walk = w1.trace(Some("c1"), &ip2, &TraceOptions::default());
    let hops = traced(&before, &c, &sim, walk);
    let enc = pos(&hops, |h| h.what == "encapsulate").expect("an encapsulate hop");
    assert_eq!(hops[enc].node, "C0w1");
    assert_eq!(hops[enc].dev, dev);
    let outer = format!("outer {} → {}, UDP ", w1.ip(), w2.ip());
    assert!(hops[enc].detail.contains(&outer), "{}", hops[enc].detail);
    // The VNI is the one in the packet's own VXLAN header, and equals the device's.
    assert!(
        hops[enc].detail.contains(&format!("→ {port}, VNI {vni}"))
            && !hops[enc].detail.contains("the device's"),
        "{}",
        hops[enc].detail
    );
    let dec = pos(&hops, |h| h.what == "decapsulate").expect("a decapsulate hop");
    assert!(dec > enc && hops[dec].node == "C0w2" && hops[dec].dev == dev);
    assert!(pos(&hops, |h| h.what == "vxlan-in" && h.node == "C0w2").is_some());
    assert!(
        pos(&hops, |h| h.what == "dnat").is_none(),
        "pod to pod: no DNAT"
    );
    assert!(pos(&hops, |h| h.what == "deliver" && h.node == "c2@C0w2").is_some());
    assert_eq!(hops.last().unwrap().what, "answer");
    torn_down(&sim);
}

#[test]
fn pod_to_cluster_ip_is_dnatted_before_the_overlay() {
    let (sim, c) = started("tr-svc", 3, 1);
    let w1 = c.worker("w1").unwrap();
    w1.create_container("c1", BTreeMap::new()).unwrap();
    c.worker("w2")
        .unwrap()
        .create_container("c2", labels("web"))
        .unwrap();
    c.worker("w3")
        .unwrap()
        .create_container("c3", labels("web"))
        .unwrap();
    serve(&c, "c2");
    serve(&c, "c3");
    let vip = c.service("web", &web(80, None)).unwrap();
    c.wait_converged().unwrap();
    let (dev, vni, port) = vxlan_settings(&c);
    let before = rulesets(&c);
    let hops = traced(
        &before,
        &c,
        &sim,
        w1.trace(Some("c1"), &format!("{vip}:80"), &TraceOptions::default()),
    );
    assert!(pos(&hops, |h| h.node == "C0w1" && h.dev == "cni0").is_some());
    assert!(pos(&hops, |h| h.what == "nft"
        && h.detail.contains("default/web/tcp/80"))
    .is_some());
    let dnat = pos(&hops, |h| h.what == "dnat").expect("a DNAT hop");
    let target = hops[dnat]
        .detail
        .split("DNAT to ")
        .nth(1)
        .and_then(|t| t.split(':').next())
        .unwrap()
        .to_string();
    let (ep, ep_worker) = ["c2", "c3"]
        .iter()
        .map(|p| (p.to_string(), c.find_container(p).unwrap()))
        .find(|(p, w)| w.container_ip(p).unwrap() == target)
        .expect("the DNAT target is one of the endpoints");
    let into_overlay = pos(&hops, |h| h.dev == dev).expect("the flannel device");
    assert!(
        dnat < into_overlay,
        "DNAT happens before the packet enters {dev}"
    );
    let enc = pos(&hops, |h| h.what == "encapsulate").unwrap();
    assert!(hops[enc]
        .detail
        .contains(&format!("outer {} → {}, UDP ", w1.ip(), ep_worker.ip())));
    assert!(hops[enc].detail.contains(&format!("→ {port}, VNI {vni}")));
    assert!(pos(&hops, |h| h.what == "decapsulate"
        && h.node == ep_worker.name())
    .is_some());
    let last = hops.last().unwrap();
    assert_eq!(last.what, "answer", "{last:?}");
    assert_eq!(last.node, format!("{ep}@{}", ep_worker.name()));
    torn_down(&sim);
}

#[test]
fn outside_to_a_node_port() {
    let (sim, c) = started("tr-np", 2, 1);
    let w1 = c.worker("w1").unwrap();
    let w2 = c.worker("w2").unwrap();
    w2.create_container("c2", labels("web")).unwrap();
    serve(&c, "c2");
    c.service("web", &web(80, Some(30080))).unwrap();
    c.wait_converged().unwrap();
    let e1 = c.etcd_nodes().into_iter().next().unwrap();
    let before = rulesets(&c);
    let hops = traced(
        &before,
        &c,
        &sim,
        e1.trace(&format!("{}:30080", w1.ip()), &TraceOptions::default()),
    );
    assert_eq!(hops[0].node, e1.name());
    assert!(pos(&hops, |h| h.node == "C0w1"
        && h.dev == "eth0"
        && h.what == "receive")
    .is_some());
    let dnat = pos(&hops, |h| h.what == "dnat" && h.node == "C0w1").expect("DNAT on C0w1");
    assert!(hops[dnat].detail.contains(&w2.container_ip("c2").unwrap()));
    let enc = pos(&hops, |h| h.what == "encapsulate").unwrap();
    assert!(enc > dnat);
    assert!(pos(&hops, |h| h.what == "deliver" && h.node == "c2@C0w2").is_some());
    assert_eq!(hops.last().unwrap().what, "answer");
    torn_down(&sim);
}

#[test]
fn a_worker_to_a_cluster_ip() {
    let (sim, c) = started("tr-node", 2, 1);
    let w1 = c.worker("w1").unwrap();
    let w2 = c.worker("w2").unwrap();
    w2.create_container("c2", labels("web")).unwrap();
    serve(&c, "c2");
    let vip = c.service("web", &web(80, None)).unwrap();
    c.wait_converged().unwrap();
    let before = rulesets(&c);
    let hops = traced(
        &before,
        &c,
        &sim,
        w1.trace(None, &format!("{vip}:80"), &TraceOptions::default()),
    );
    assert_eq!(
        (hops[0].node.as_str(), hops[0].what.as_str()),
        ("C0w1", "send")
    );
    let dnat = pos(&hops, |h| h.what == "dnat").expect("DNAT in the output path");
    assert!(hops[dnat].detail.contains(&w2.container_ip("c2").unwrap()));
    assert!(pos(&hops, |h| h.what == "encapsulate").unwrap() > dnat);
    assert!(pos(&hops, |h| h.what == "deliver" && h.node == "c2@C0w2").is_some());
    assert_eq!(hops.last().unwrap().what, "answer");
    torn_down(&sim);
}

#[test]
fn a_service_without_endpoints_ends_in_its_reject() {
    let (sim, c) = started("tr-drop", 1, 1);
    let w1 = c.worker("w1").unwrap();
    w1.create_container("c1", BTreeMap::new()).unwrap();
    let vip = c.service("web", &web(80, None)).unwrap();
    c.wait_converged().unwrap();
    let before = rulesets(&c);
    let hops = traced(
        &before,
        &c,
        &sim,
        w1.trace(Some("c1"), &format!("{vip}:80"), &TraceOptions::default()),
    );
    let drop = pos(&hops, |h| h.what == "drop").expect("a drop hop");
    assert_eq!(hops[drop].node, "C0w1");
    assert!(
        hops[drop].detail.contains("reject"),
        "{}",
        hops[drop].detail
    );
    torn_down(&sim);
}

#[test]
fn bad_trace_input_is_refused_and_changes_nothing() {
    let (sim, c) = started("tr-bad", 1, 1);
    let w1 = c.worker("w1").unwrap();
    w1.create_container("c1", BTreeMap::new()).unwrap();
    let before = rulesets(&c);
    let udp = TraceOptions {
        proto: Some("udp".into()),
        ..Default::default()
    };
    for (walk, says) in [
        (
            w1.trace(Some("c9"), "11.0.0.1", &TraceOptions::default()),
            "no container 'c9'",
        ),
        (
            w1.trace(Some("c1"), "c2", &TraceOptions::default()),
            "not an IPv4 address",
        ),
        (w1.trace(Some("c1"), "11.0.0.1", &udp), "udp needs a port"),
    ] {
        let e = format!("{:#}", walk.unwrap_err());
        assert!(e.contains(says), "{e}");
    }
    assert_eq!(before, rulesets(&c));
    torn_down(&sim);
}

#[test]
fn the_console_word_trace() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tr-con");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("setup.rhai");
    std::fs::write(
        &script,
        "let C0 = cluster(\"0\", #{ workers: 1, etcd: 1 });\nstart();\nC0.get(\"w1\").create_container(\"c1\");\n",
    )
    .unwrap();
    // C0w1 is 10.0.0.2 with one etcd member first (hosts are numbered in creation order).
    // One literal per line: the deck shows some of them (tests/deck.rs looks for them).
    let lines = [
        "trace C0e1 10.0.0.2",
        "trace C0w1 c1 10.0.0.2 udp",
        "trace C0w1 c9 10.0.0.2",
        "trace nowhere 10.0.0.2",
        "trace C0w1",
        "trace C0e1 c1 10.0.0.2",
        "trace C0e1 10.0.0.2:30080 tcp",
        "trace C0e1 10.0.0.2 full",
        "topo",
        "topo cluster.png",
        "quit",
    ];
    let input = lines.join("\n") + "\n";
    let out = common::piped_console("tr-con", &script, &dir, &input);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        text.contains("Packet walk: icmp 10.0.0.2 from C0e1 (10.1.0.1)"),
        "{text}"
    );
    assert!(text.contains("delivered to C0w1 itself"), "{text}");
    assert!(
        text.contains("C0w1 (10.0.0.2) answers: an echo reply"),
        "{text}"
    );
    assert!(text.contains("error: trace: udp needs a port"), "{text}");
    assert!(
        text.contains("there is no container 'c9' on C0w1"),
        "{text}"
    );
    assert!(text.contains("there is no node 'nowhere'"), "{text}");
    assert!(
        text.contains("usage: trace NODE [POD] DEST[:PORT]"),
        "{text}"
    );
    assert!(
        text.contains("C0e1 is an etcd member: it runs no pods"),
        "{text}"
    );
    assert!(
        text.contains("Packet walk: tcp 10.0.0.2:30080 from C0e1"),
        "{text}"
    );
    // The default view leaves out the rules that only jump (so only the `full` walk
    // can show a jump); `full` shows them.
    assert!(
        text.contains("nft rules that only jump or return are not shown"),
        "{text}"
    );
    assert!(
        text.contains("→ jump nodeport-endpoints-check"),
        "full: {text}"
    );
    assert!(text.contains("C0w1      10.0.0.2"), "topo: {text}");
    assert!(text.contains("      c1       11."), "topo: {text}");
    assert!(text.contains("must end in .svg or .html"), "{text}");
    assert_nothing_left("tr-con", &[]);
}

/// `challenge` without a cluster: a fault that shows and a repair that works count two
/// held expectations; a fault that does not show, or a repair that does not work, counts
/// a failed one; a check that answers anything but true or false stops the script.
#[test]
fn challenge_checks_before_and_after_the_repair() {
    use knetsim::script::{Outcome, ScriptSession};
    let instance = "tr-challenge";
    let sim = common::sim(instance);
    let mut s = ScriptSession::new(sim.clone(), false);
    let good = "let broken = true;\n\
                challenge(\"t\", \"h\", || !broken, || { broken = false; });";
    assert_eq!(s.run_source("good.rhai", good), Outcome::Ok);
    assert_eq!(s.expect_counts(), (2, 0));
    let never_broken = "challenge(\"t\", \"h\", || true, || ());";
    assert_eq!(
        s.run_source("never.rhai", never_broken),
        Outcome::ExpectFailed(1)
    );
    let never_fixed = "challenge(\"t\", \"h\", || false, || ());";
    assert_eq!(
        s.run_source("unfixed.rhai", never_fixed),
        Outcome::ExpectFailed(1)
    );
    let not_bool = "challenge(\"t\", \"h\", || \"yes\", || ());";
    assert_eq!(s.run_source("b.rhai", not_bool), Outcome::ScriptError);
    let e = s.last_error().unwrap_or_default().to_string();
    assert!(
        e.contains("the check must return true (repaired) or false (broken)"),
        "{e}"
    );
    drop(s);
    sim.teardown().expect("teardown");
    assert_nothing_left(instance, &[]);
}

/// `topology`: the SVG parses as XML and shows every node and pod address, each worker's
/// VTEP MAC as its kernel has it, and the Service with its endpoint; `.html` embeds it.
#[test]
fn the_topology_picture_shows_every_node_and_pod() {
    let (sim, c) = started("tr-topo", 2, 1);
    let (_, w2) = client_and_server(&c, "c2", labels("web"));
    c.service("web", &web(80, None)).unwrap();
    let dir = std::env::temp_dir().join(format!("tr-topo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg_path = dir.join("c0.svg");
    let text = sim.write_topology(svg_path.to_str().unwrap()).unwrap();
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let html_path = dir.join("c0.html");
    sim.write_topology(html_path.to_str().unwrap()).unwrap();
    let html = std::fs::read_to_string(&html_path).unwrap();
    let bad = sim.write_topology(dir.join("c0.png").to_str().unwrap());
    // A symlink in the way is not followed (root must not write through one).
    let target = dir.join("elsewhere");
    std::os::unix::fs::symlink(&target, dir.join("link.svg")).unwrap();
    let through = sim.write_topology(dir.join("link.svg").to_str().unwrap());
    assert!(
        through.is_err() && !target.exists(),
        "wrote through a symlink"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    println!("{text}");
    knetsim::components::topology::well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    let mut addresses: Vec<String> = c.etcd_nodes().iter().map(|e| e.ip().to_string()).collect();
    for w in c.workers() {
        addresses.push(w.ip().to_string());
        for p in w.containers() {
            addresses.push(w.container_ip(&p).unwrap());
        }
        let mac = w.exec("cat /sys/class/net/flannel.*/address").unwrap();
        assert!(
            svg.contains(mac.trim()),
            "{}'s VTEP MAC {mac} in the SVG",
            w.name()
        );
    }
    assert_eq!(addresses.len(), 5);
    for ip in &addresses {
        let shown = svg.contains(&format!(" {ip}<")) || svg.contains(&format!(" {ip} "));
        assert!(shown, "{ip} is not in the SVG:\n{svg}");
        assert!(
            text.contains(ip.as_str()),
            "{ip} is not in the text:\n{text}"
        );
    }
    let vip = c.service_ip("web").unwrap().to_string();
    let c2 = w2.container_ip("c2").unwrap();
    assert!(
        svg.contains(&vip) && text.contains(&format!("→ c2 {c2}")),
        "{text}"
    );
    assert!(html.contains(&svg) && html.contains("<pre>"));
    let e = format!("{:#}", bad.unwrap_err());
    assert!(e.contains("must end in .svg or .html"), "{e}");
    torn_down(&sim);
}

/// Client → ingress → Service → pod: the client's flow ends at nginx on C0w1 (no DNAT on
/// it), then nginx's own flow to the Service is DNATed to the endpoint before it enters the
/// overlay, and the endpoint answers the real GET.
#[test]
fn through_the_ingress_to_a_service_and_its_pod() {
    let (sim, c) = started("tr-ingress", 2, 1);
    let (w1, w2) = client_and_server(&c, "ic0", labels("web"));
    serve(&c, "ic0");
    let vip = c.service("web", &web(8000, None)).unwrap();
    let rules = [
        IngressRule {
            path: "/svc1".into(),
            endpoint: format!("{vip}:8000"),
        },
        IngressRule {
            path: "/svc2".into(),
            endpoint: "web:8000".into(),
        },
        IngressRule {
            path: "/none".into(),
            endpoint: "empty:8000".into(),
        },
    ];
    let mut empty = web(8000, None);
    empty.selector = labels("nobody");
    c.service("empty", &empty).unwrap();
    w1.run_ingress("grp1", 8001, &rules).unwrap();
    let ip0 = w2.container_ip("ic0").unwrap();
    let before = rulesets(&c);
    let dest = format!("{}:8001/svc1", w1.ip());
    let walk = w1.trace(Some("c1"), &dest, &TraceOptions::default());
    let hops = traced(&before, &c, &sim, walk);
    let proxy = pos(&hops, |h| h.what == "proxy").expect("a proxy hop");
    assert_eq!(hops[proxy].node, "C0w1");
    assert!(
        hops[proxy].detail.contains(&format!("{vip}:8000")),
        "{}",
        hops[proxy].detail
    );
    // Flow 1: to nginx on C0w1 itself, no DNAT.
    assert!(pos(&hops[..proxy], |h| h.what == "deliver" && h.node == "C0w1").is_some());
    assert!(pos(&hops[..proxy], |h| h.what == "dnat").is_none());
    // Flow 2: from C0w1 itself, DNAT to the endpoint before the overlay, then the pod.
    let flow2 = &hops[proxy + 1..];
    assert_eq!(
        (flow2[0].node.as_str(), flow2[0].what.as_str()),
        ("C0w1", "send")
    );
    let dnat = pos(flow2, |h| h.what == "dnat").expect("nginx's flow is DNATed");
    assert!(flow2[dnat].detail.contains(&ip0), "{}", flow2[dnat].detail);
    let enc = pos(flow2, |h| h.what == "encapsulate").expect("and wrapped in VXLAN");
    assert!(dnat < enc);
    assert!(pos(flow2, |h| h.what == "deliver" && h.node == "ic0@C0w2").is_some());
    let last = hops.last().unwrap();
    assert_eq!(last.what, "answer");
    assert!(
        last.detail.contains("200 OK") && last.detail.contains("\"ic0\""),
        "{}",
        last.detail
    );
    // A Service backend: nginx picks the endpoint itself, so its flow goes straight to
    // the pod, with no DNAT.
    let dest2 = format!("{}:8001/svc2", w1.ip());
    let walk = w1.trace(Some("c1"), &dest2, &TraceOptions::default());
    let hops = traced(&before, &c, &sim, walk);
    let proxy = pos(&hops, |h| h.what == "proxy").expect("a proxy hop");
    assert!(
        hops[proxy].detail.contains("web:8000"),
        "{}",
        hops[proxy].detail
    );
    let flow2 = &hops[proxy + 1..];
    assert!(
        pos(flow2, |h| h.what == "dnat").is_none(),
        "nginx went to the pod itself"
    );
    assert!(pos(flow2, |h| h.what == "deliver" && h.node == "ic0@C0w2").is_some());
    assert!(hops.last().unwrap().detail.contains("200 OK"));
    // Paths nginx does not route, and ports no ingress listens on, are refused.
    let e = |d: &str| {
        format!(
            "{:#}",
            w1.trace(Some("c1"), d, &TraceOptions::default())
                .unwrap_err()
        )
    };
    assert!(e(&format!("{}:8001/other", w1.ip())).contains("routes no location"));
    assert!(e(&format!("{}:8001/none", w1.ip())).contains("which has no endpoints"));
    assert!(e(&format!("{}:8002/svc1", w1.ip())).contains("no ingress of C0 listens on"));
    assert_eq!(before, rulesets(&c));
    torn_down(&sim);
}

/// Across clusters through the Skupper routers: the client's flow ends at C1's router, the
/// AMQP link between the routers carries the request (its byte counters move), and C0's
/// router opens its own flow to the pod, which answers.
#[test]
fn across_clusters_through_the_skupper_routers() {
    use knetsim::sim::{ClusterSpec, LinkOptions, SiteOptions};
    let sim = common::sim("tr-skupper");
    let c0 = sim
        .cluster(
            "0",
            ClusterSpec {
                workers: 2,
                etcd: 1,
            },
        )
        .unwrap();
    let c1 = sim
        .cluster(
            "1",
            ClusterSpec {
                workers: 1,
                etcd: 1,
            },
        )
        .unwrap();
    sim.start().unwrap();
    let w2 = c0.worker("w2").unwrap();
    w2.create_container("c4", BTreeMap::new()).unwrap();
    serve(&c0, "c4");
    let client = c1.worker("w1").unwrap();
    client.create_container("c1", BTreeMap::new()).unwrap();
    c0.skupper_init(SiteOptions::default()).unwrap();
    c1.skupper_init(SiteOptions::default()).unwrap();
    c1.skupper_link(&c0.skupper_token().unwrap(), LinkOptions::default())
        .unwrap();
    let port = c0.skupper_expose("svc1", "c4", 8000).unwrap();
    let router0 = c0.worker("w1").unwrap();
    let ip4 = w2.container_ip("c4").unwrap();
    let (before0, before1) = (rulesets(&c0), rulesets(&c1));
    let dest = format!("{}:{port}", client.ip());
    let walk = client.trace(Some("c1"), &dest, &TraceOptions::default());
    let hops = traced(&before1, &c1, &sim, walk);
    assert_eq!(before0, rulesets(&c0), "C0's rulesets changed");
    no_monitor_left(&sim, &c0);
    let link = pos(&hops, |h| h.what == "amqp-link").expect("the AMQP link is a hop");
    assert_eq!(hops[link].node, "C1w1");
    let peer = format!("→ {}:55671", router0.ip());
    assert!(hops[link].detail.contains(&peer), "{}", hops[link].detail);
    assert!(
        !hops[link].detail.contains("sent 0 bytes"),
        "the request crossed the link: {}",
        hops[link].detail
    );
    // Flow 1 ends at C1's router; flow 2 leaves C0's router for the pod.
    assert!(pos(&hops[..link], |h| h.what == "deliver" && h.node == "C1w1").is_some());
    assert_eq!(hops[link - 1].what, "proxy");
    assert_eq!(
        (hops[link + 1].what.as_str(), hops[link + 1].node.as_str()),
        ("proxy", "C0w1")
    );
    let flow2 = &hops[link + 2..];
    assert_eq!(
        (flow2[0].node.as_str(), flow2[0].what.as_str()),
        ("C0w1", "send")
    );
    assert!(
        flow2[0].detail.contains(&format!("{ip4}:8000")),
        "{}",
        flow2[0].detail
    );
    assert!(pos(flow2, |h| h.what == "encapsulate" && h.node == "C0w1").is_some());
    assert!(pos(flow2, |h| h.what == "deliver" && h.node == "c4@C0w2").is_some());
    let last = hops.last().unwrap();
    assert!(
        last.what == "answer" && last.detail.contains("\"c4\""),
        "{}",
        last.detail
    );
    torn_down(&sim);
}

/// `challenge` on a terminal (the `script` tool gives knetsim one): the learner's prompt
/// runs Rhai and console words, Enter runs the check again, `solution` applies the
/// lesson's repair, and the check then passes.
#[test]
fn a_challenge_on_a_terminal_takes_rhai_console_words_and_solution() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    if Command::new("script").arg("--version").output().is_err() {
        println!(
            "skipped: the `script` tool (util-linux) is not installed, so no terminal can be made"
        );
        return;
    }
    let instance = "tr-chal";
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(instance);
    std::fs::create_dir_all(&dir).unwrap();
    let lesson = dir.join("challenge.rhai");
    std::fs::write(
        &lesson,
        "let broken = true;\nchallenge(\"t\", \"the hint\", || !broken, || { broken = false; });\n",
    )
    .unwrap();
    let cmd = format!(
        "{} --instance {instance} {}",
        common::knetsim_exe().display(),
        lesson.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let screen = Arc::new(Mutex::new(String::new()));
    let (mut out, sink) = (child.stdout.take().unwrap(), screen.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = 0;
    // Each line typed, then what the screen must show after it.
    let steps = [
        ("", "challenge> "),
        ("40 + 2\n", "42"),
        ("\n", "not yet: the check still fails"),
        ("nodes\n", "no clusters yet"),
        ("solution\n", "repaired: the check passes (t)"),
    ];
    for (line, want) in steps {
        stdin.write_all(line.as_bytes()).unwrap();
        let t = Instant::now();
        loop {
            let text = screen.lock().unwrap()[seen..].to_string();
            if let Some(i) = text.find(want) {
                seen += i + want.len();
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                // End the lesson before failing, so it tears down.
                let _ = stdin.write_all(b"solution\n");
                let _ = child.wait();
                panic!("typed {line:?}, waited for {want:?}; the screen:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = child.wait().unwrap();
    let text = screen.lock().unwrap().clone();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("the hint"), "{text}");
    assert!(text.contains("all 2 expectations held"), "{text}");
    assert_nothing_left(instance, &[]);
}

/// With kube-proxy's table flushed, a probe to a ClusterIP is never rewritten: the walk
/// has no DNAT, and its last hop names the missing rules as the likely cause.
#[test]
fn a_lost_probe_to_a_service_without_dnat_blames_the_missing_rules() {
    let (sim, c) = started("tr-nodnat", 2, 1);
    let (w1, _) = client_and_server(&c, "c2", labels("web"));
    serve(&c, "c2");
    let vip = c.service("web", &web(80, None)).unwrap();
    w1.exec("nft flush table ip kube-proxy").unwrap();
    let walk = w1
        .trace(Some("c1"), &format!("{vip}:80"), &TraceOptions::default())
        .unwrap();
    println!("{}", walk.text);
    assert!(!walk.answered);
    assert!(pos(&walk.hops, |h| h.what == "dnat").is_none());
    let last = walk.hops.last().unwrap();
    assert_eq!(last.what, "lost");
    assert!(
        last.detail
            .contains("is a Service address, but no rule rewrote it"),
        "{}",
        last.detail
    );
    torn_down(&sim);
}
