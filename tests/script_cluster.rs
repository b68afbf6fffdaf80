//! The script API and the console against running clusters (real etcd, flannel agent,
//! CNI): a lesson-like script, the default scenario with `pingall`, mininet lines.

mod common;

use common::assert_holds;

use common::session::Session;
use common::{assert_nothing_left, HostSnapshot};
use knetsim::script::{Outcome, DEFAULT_SCENARIO};

const LESSON: &str = r#"
let C0 = cluster("0", #{ workers: 2, etcd: 1 });
C0.start();
let w1 = C0.get("w1");
let w2 = C0.get("w2");
let c1 = w1.create_container("c1");
w2.create_container("c2", #{ labels: #{ app: "web", tier: 1 } });
expect(c1.ip == w1.container_ip("c1") && c1.ip.starts_with("11."), "container IPs come from the flannel network");
expect(w2.containers() == ["c2"], "w2 lists its container");
expect(C0.containers().len() == 2, "the cluster lists both containers");
expect(C0.find_container("c2").name == "C0w2", "find_container names the worker");
let ping = w1.exec_container("c1", `ping -c 2 -W 2 ${w2.container_ip("c2")}`);
expect(ping.contains(" 0% packet loss"), "c1 reaches c2 on another worker");
let pid = w1.exec_container_async("c1", "sleep 300");
expect(pid > 0, "an async command returns its pid");
expect(C0e1.exec("etcdctl --endpoints http://10.1.0.1:2379 endpoint health").contains("is healthy"), "etcd answers on its member");
expect(w1.exec("ip -br link show flannel.100").contains("flannel.100"), "the worker has the VXLAN device");
let w3 = C0.add_worker();
w3.create_container("c3");
let ping3 = w3.exec_container("c3", `ping -c 2 -W 2 ${w2.container_ip("c2")}`);
expect(ping3.contains(" 0% packet loss"), "a worker added to a running cluster reaches the others");
w2.delete_container("c2");
expect(w2.containers().len() == 0, "delete_container removes it");
"#;

#[test]
fn a_lesson_like_script_drives_a_running_cluster() {
    let before = HostSnapshot::take();
    {
        let mut s = Session::new("scr-lesson", false);
        let o = s.run_source("lesson.rhai", LESSON);
        assert_eq!(o, Outcome::Ok, "{:?}", s.last_error());
        assert_eq!(s.expect_counts(), (10, 0));
        // Errors from a running cluster keep the sim's words.
        let o = s.run_source("dup.rhai", "w1.create_container(\"c1\");");
        assert_eq!(o, Outcome::ScriptError);
        assert!(
            s.last_error().unwrap().contains("already exists"),
            "{:?}",
            s.last_error()
        );
        let o = s.run_source("gone.rhai", "w1.exec_container(\"c2\", \"true\");");
        assert_eq!(o, Outcome::ScriptError);
        assert!(
            s.last_error()
                .unwrap()
                .starts_with("error: gone.rhai:1:4: there is no container 'c2' on C0w1"),
            "{:?}",
            s.last_error()
        );
        let o = s.run_source(
            "labels.rhai",
            "w1.create_container(\"c4\", #{ label: #{ app: \"x\" } });",
        );
        assert_eq!(o, Outcome::ScriptError);
        assert!(
            s.last_error().unwrap().contains("unknown option 'label'"),
            "{:?}",
            s.last_error()
        );
        // Mininet-style lines in the console, on a worker and an etcd member.
        let out = s.line("C0w1 ip -br addr show eth0");
        assert_holds(&out, &["eth0", "10.0.0.2"]);
        let out = s.line("py C0w1.exec_container(\"c1\", \"ip -br addr show eth0\")");
        assert_holds(&out, &["eth0", "11."]);
        let out = s.line("C0w1 false; echo status=$?");
        assert_holds(&out, &["status=1"]);
        let nodes = s.line("nodes");
        assert_holds(&nodes, &["running", "c1 11."]);
    }
    assert_nothing_left("scr-lesson", &[]);
    assert_eq!(
        before,
        HostSnapshot::take(),
        "the root network namespace changed"
    );
}

#[test]
fn default_scenario_comes_up_and_every_container_pings_every_other() {
    let mut s = Session::new("scr-default", false);
    s.ran(knetsim::script::DEFAULT_SCENARIO_NAME, DEFAULT_SCENARIO);
    let want = [
        ("C0w1", "c1"),
        ("C0w2", "c2"),
        ("C0w3", "c3"),
        ("C0w3", "c4"),
        ("C1w1", "c1"),
        ("C1w2", "c2"),
        ("C1w3", "c3"),
        ("C0w2", "ic0"),
        ("C0w3", "ic1"),
        ("C0w2", "ic2"),
        ("C0w3", "ic3"),
    ];
    for (node, c) in want {
        let out = s.line(&format!("{node}.containers().contains(\"{c}\")"));
        assert_eq!(out, "true\n", "{c} on {node}");
    }
    assert_eq!(s.line("C1w1.ip"), "10.0.0.8\n", "the original's numbering");
    let ping = s.line("pingall");
    // C0: 8 containers (c1..c4, the ingress's ic0..ic3), 56 pings; C1: 3 containers, 6 pings.
    assert_holds(&ping, &["*** Results: 0% dropped (62/62 received)"]);
    assert_holds(&ping, &["C0 c1  -> c2  ic0 ic2 c3  c4  ic1 ic3"]);
    // Delete a container and ping again: the matrix shrinks, still no loss.
    s.line("C0w3.delete_container(\"c4\")");
    let ping = s.line("pingall");
    assert_holds(&ping, &["0% dropped (48/48 received)"]);
}

/// Pods declared with their cluster are made by start(), each worker's in the order given
/// (addresses ascending: b before a although a sorts first), and the option is refused
/// for a cluster already running.
#[test]
fn pods_declared_with_the_cluster_are_made_by_start_in_order() {
    let mut s = Session::new("scr-planned", false);
    s.ran(
        "planned.rhai",
        r#"
let C0 = cluster("0", #{ workers: 2, etcd: 1, pods: #{ w1: ["b", "a"], w2: ["c"] } });
start();
"#,
    );
    assert_eq!(s.line("C0w1.containers()"), "[\"a\", \"b\"]\n");
    assert_eq!(s.line("C0w2.containers()"), "[\"c\"]\n");
    let last_octet = |s: &mut Session, pod: &str| -> u32 {
        let ip = s.line(&format!("C0w1.container_ip(\"{pod}\")"));
        ip.trim().rsplit('.').next().unwrap().parse().unwrap()
    };
    let (a, b) = (last_octet(&mut s, "a"), last_octet(&mut s, "b"));
    assert!(
        b < a,
        "b was listed first, so it has the lower address: b .{b}, a .{a}"
    );
    let ping = s.line("C0w1.exec_container(\"b\", `ping -c 1 -W 2 ${C0w2.container_ip(\"c\")}`)");
    assert_holds(&ping, &[" 0% packet loss"]);
    let c0 = s.sim().get_cluster("0").unwrap();
    let plan = std::collections::BTreeMap::from([("w1".to_string(), vec!["d".to_string()])]);
    let e = c0.plan_pods(&plan).unwrap_err().to_string();
    assert!(e.contains("C0.create_containers"), "{e}");
    assert_eq!(
        s.line("C0w1.containers()"),
        "[\"a\", \"b\"]\n",
        "nothing planned later"
    );
}
