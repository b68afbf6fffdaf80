//! Node agents supervised as a DaemonSet's pods are: a killed kube-proxy or flanneld is
//! restarted with the same arguments and the cluster works again; a crash loop stops the
//! restarts with an error quoting the agent's log; an agent stopped on purpose stays
//! stopped until started again. Each simulation tears down when dropped, also when an
//! assertion fails.

mod common;

use common::assert_holds;

use common::{
    alive, assert_nothing_left, knetsim_exe, knetsim_script, root_or_skip, started,
    started_as_root, tear_down, tear_down_since, Guard, HostSnapshot,
};
use knetsim::sim::{
    ClusterSpec, LinkOptions, PortSpec, ServiceSpec, Sim, SiteOptions, SupervisionOutcome, Worker,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn web() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "web".to_string())])
}

fn web_service() -> ServiceSpec {
    ServiceSpec {
        selector: web(),
        ports: vec![PortSpec {
            port: 80,
            target: Some(8000),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A node agent runs in its worker's network namespace, in a process group of its own
/// (so the terminal's Ctrl-C, sent to the foreground group, never reaches it), with
/// stdin from /dev/null.
fn assert_placed_like_a_daemon(w: &Worker, agent: &str) {
    use nix::unistd::{getpgid, Pid};
    let pid = w.agent_pid(agent).unwrap().expect("the agent runs");
    let pgid = getpgid(Some(Pid::from_raw(pid as i32))).unwrap();
    assert_eq!(pgid.as_raw(), pid as i32, "{agent} leads its own group");
    assert_ne!(pgid, getpgid(None).unwrap(), "{agent} is not in our group");
    assert_eq!(
        knetsim::netns::process::netns_inode(pid),
        knetsim::netns::inode(&w.ns()),
        "{agent} runs in {}'s namespace",
        w.name()
    );
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(stdin, std::path::Path::new("/dev/null"));
}

fn kill9(pid: u32) {
    common::signal(pid, nix::sys::signal::Signal::SIGKILL);
}

/// Waits (bounded) until `agent` on `w` runs with a pid other than `old`.
fn restarted(w: &Worker, agent: &str, old: u32) -> u32 {
    let t = Instant::now();
    let until = t + Duration::from_secs(20);
    loop {
        if let Some(p) = w.agent_pid(agent).unwrap() {
            if p != old {
                eprintln!(
                    "{agent} on {} running again after {:.1} ms",
                    w.name(),
                    t.elapsed().as_secs_f64() * 1e3
                );
                return p;
            }
        }
        assert!(
            Instant::now() < until,
            "{agent} on {} was not restarted; events: {:?}",
            w.name(),
            messages(w.sim())
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn messages(sim: &Sim) -> Vec<String> {
    sim.events().into_iter().map(|e| e.message).collect()
}

/// Pids of the record's processes whose description is `what`.
fn recorded_pids(sim: &Sim, what: &str) -> Vec<u64> {
    let record = knetsim::netns::record::read_record(sim.instance())
        .unwrap()
        .expect("a record");
    record
        .processes
        .iter()
        .filter(|p| p.what == what)
        .map(|p| u64::from(p.pid))
        .collect()
}

fn curl(w: &Worker, pod: &str, ip: &str) -> String {
    w.exec_container(pod, &format!("curl -s -m 3 http://{ip}:80/"))
        .unwrap_or_default()
}

#[test]
fn a_killed_kube_proxy_is_restarted_and_services_work() {
    if !root_or_skip() {
        return;
    }
    let before = HostSnapshot::take();
    let instance = "sup-kp";
    let (sim, c) = started(instance, 2, 1);
    let (w1, w2) = (c.worker("w1").unwrap(), c.worker("w2").unwrap());
    w1.create_container("c1", BTreeMap::new()).unwrap();
    w2.create_container("c2", web()).unwrap();
    w2.echo_server("c2", 8000, "hello").unwrap();

    let old = w1
        .agent_pid("kube-proxy")
        .unwrap()
        .expect("kube-proxy runs");
    assert_eq!(recorded_pids(&sim, "kube-proxy C0w1"), vec![old as u64]);
    assert_placed_like_a_daemon(&w1, "kube-proxy");
    assert_placed_like_a_daemon(&w2, "flanneld");
    kill9(old);
    // No waiting for the restart: the Service call must simply work.
    let ip = c.service("web", &web_service()).unwrap();
    assert_eq!(curl(&w1, "c1", &ip.to_string()), "hello\n");

    let new = restarted(&w1, "kube-proxy", old);
    let events = sim.events();
    let e = events
        .iter()
        .find(|e| e.node == "C0w1" && e.daemon == "kube-proxy")
        .unwrap_or_else(|| panic!("no event for kube-proxy on C0w1: {events:?}"));
    assert_eq!(e.message, "kube-proxy on C0w1 exited (signal 9); restarted");
    assert_eq!(e.exit, "signal 9");
    assert_eq!(e.outcome, SupervisionOutcome::Restarted { pid: new });
    assert_eq!(events.len(), 1, "{events:?}");
    // The record follows the restart: the new pid is in it, the old one is not.
    assert_eq!(recorded_pids(&sim, "kube-proxy C0w1"), vec![new as u64]);
    assert_placed_like_a_daemon(&w1, "kube-proxy");

    let agents = [
        w1.agent_pid("kube-proxy").unwrap().unwrap(),
        w1.agent_pid("flanneld").unwrap().unwrap(),
        w2.agent_pid("kube-proxy").unwrap().unwrap(),
    ];
    tear_down_since(&sim, &agents, before);
}

#[test]
fn a_killed_flanneld_is_restarted_and_a_new_worker_is_reached() {
    let Some((sim, c)) = started_as_root("sup-fl", 2, 1) else {
        return;
    };
    let w1 = c.worker("w1").unwrap();
    let subnet = std::fs::read_to_string(w1.subnet_file()).unwrap();
    let old = w1.agent_pid("flanneld").unwrap().expect("flanneld runs");
    kill9(old);

    // w1 learns the new worker's subnet only if its flanneld runs again.
    let w3 = c.add_worker().unwrap();
    w3.create_container("c3", BTreeMap::new()).unwrap();
    w1.create_container("c1", BTreeMap::new()).unwrap();
    let ip3 = w3.container_ip("c3").unwrap();
    let out = w1
        .exec_container("c1", &format!("ping -c 2 -W 2 {ip3}"))
        .unwrap();
    assert_holds(&out, &[" 0% packet loss"]);

    let new = restarted(&w1, "flanneld", old);
    assert_ne!(new, old);
    // The restarted agent kept its lease: the same subnet.
    assert_eq!(std::fs::read_to_string(w1.subnet_file()).unwrap(), subnet);
    let msgs = messages(&sim);
    assert_eq!(
        msgs,
        vec!["flanneld on C0w1 exited (signal 9); restarted".to_string()]
    );
    tear_down(&sim, &[]);
}

#[test]
fn a_crash_loop_stops_the_restarts_with_the_agents_log() {
    let Some((sim, c)) = started_as_root("sup-loop", 2, 1) else {
        return;
    };
    let w1 = c.worker("w1").unwrap();
    let mut pid = w1.agent_pid("kube-proxy").unwrap().unwrap();
    for n in 1..=5 {
        kill9(pid);
        if n < 5 {
            pid = restarted(&w1, "kube-proxy", pid);
        }
    }
    let until = Instant::now() + Duration::from_secs(20);
    let gave_up = loop {
        let ev = sim.events();
        if let Some(e) = ev.iter().find(|e| e.outcome == SupervisionOutcome::GaveUp) {
            break e.clone();
        }
        assert!(Instant::now() < until, "no crash loop reported: {ev:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let restarts = sim
        .events()
        .iter()
        .filter(|e| matches!(e.outcome, SupervisionOutcome::Restarted { .. }))
        .count();
    assert_eq!(restarts, 4);
    let msg = gave_up.message;
    for want in [
        "kube-proxy on C0w1 exited (signal 9), its 5th exit within 30 s",
        "stopped restarting it",
        "kube-proxy.log) ends with:",
        // A line of the agent's own log, quoted inline.
        "kube-proxy: starting on C0w1",
        "C0w1.start_agent(\"kube-proxy\")",
    ] {
        assert!(msg.contains(want), "'{want}' missing from: {msg}");
    }
    assert_eq!(w1.agent_pid("kube-proxy").unwrap(), None);

    // Calls that need it fail at once with that error instead of timing out.
    let t = Instant::now();
    let e = format!("{:#}", c.service("web", &web_service()).unwrap_err());
    eprintln!(
        "service() refused after {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_holds(&e, &["its 5th exit within 30 s"]);
    let e = format!("{:#}", c.add_worker().err().expect("add_worker failed"));
    assert_holds(&e, &["its 5th exit within 30 s"]);
    assert_eq!(c.workers().len(), 2, "a worker was declared anyway");

    // Started again by hand (the fix), it works and the cluster with it.
    let pid = w1.start_agent("kube-proxy").unwrap();
    assert_eq!(w1.agent_pid("kube-proxy").unwrap(), Some(pid));
    c.service("web", &web_service()).unwrap();
    tear_down(&sim, &[]);
}

#[test]
fn an_agent_stopped_on_purpose_stays_stopped_until_started() {
    let Some((sim, c)) = started_as_root("sup-stop", 2, 1) else {
        return;
    };
    let (w1, w2) = (c.worker("w1").unwrap(), c.worker("w2").unwrap());
    w1.create_container("c1", BTreeMap::new()).unwrap();
    w2.create_container("c2", web()).unwrap();
    w2.echo_server("c2", 8000, "hello").unwrap();

    let old = w1.agent_pid("kube-proxy").unwrap().unwrap();
    w1.stop_agent("kube-proxy").unwrap();
    assert!(!alive(old), "kube-proxy {old} still runs");
    assert_eq!(w1.agent_pid("kube-proxy").unwrap(), None);
    assert!(recorded_pids(&sim, "kube-proxy C0w1").is_empty());
    let e = format!("{:#}", w1.stop_agent("kube-proxy").unwrap_err());
    assert_holds(&e, &["already stopped", "start_agent"]);

    // The Service is created; w2 programs it, w1 (its kube-proxy stopped) does not.
    let ip = c.service("web", &web_service()).unwrap().to_string();
    let table = |w: &Worker| w.exec("nft list table ip kube-proxy").unwrap();
    assert!(table(&w2).contains(&ip), "w2 lacks {ip}");
    assert!(
        !table(&w1).contains(&ip),
        "w1 programmed {ip} without kube-proxy"
    );
    assert_eq!(
        w1.agent_pid("kube-proxy").unwrap(),
        None,
        "it was restarted"
    );
    assert!(sim.events().is_empty(), "{:?}", messages(&sim));

    // Started again, it catches up before start_agent returns.
    let new = w1.start_agent("kube-proxy").unwrap();
    assert_ne!(new, old);
    assert!(table(&w1).contains(&ip), "w1 did not catch up");
    assert_eq!(curl(&w1, "c1", &ip), "hello\n");
    let e = format!("{:#}", w1.start_agent("kube-proxy").unwrap_err());
    assert_holds(&e, &["already running"]);
    let e = format!("{:#}", w1.stop_agent("kubelet").unwrap_err());
    assert_holds(&e, &["C0w1 has no agent 'kubelet'", "flanneld, kube-proxy"]);

    // etcd is not an agent: its exit is reported, not restarted.
    let etcd = recorded_pids(&sim, "etcd C0e1");
    assert_eq!(etcd.len(), 1);
    kill9(etcd[0] as u32);
    let until = Instant::now() + Duration::from_secs(20);
    while sim.events().is_empty() {
        assert!(Instant::now() < until, "the etcd exit was not reported");
        std::thread::sleep(Duration::from_millis(10));
    }
    let ev = sim.events();
    assert_eq!(ev[0].outcome, SupervisionOutcome::NotRestarted);
    assert!(
        ev[0]
            .message
            .starts_with("etcd on C0e1 exited (signal 9); not restarted"),
        "{}",
        ev[0].message
    );
    tear_down(&sim, &[]);
}

#[test]
fn a_script_sees_the_restart_on_stderr_and_stops_an_agent() {
    if !root_or_skip() {
        return;
    }
    let instance = "sup-script";
    let mut g = Guard::default();
    let script = g.file(
        "sup-script",
        "agents.rhai",
        r#"let C0 = cluster("0", #{ workers: 2, etcd: 1 });
start();
let w1 = C0.get("w1");
let p = w1.agent_pid("kube-proxy");
w1.exec(`kill -9 ${p}`);
let q = ();
for i in 0..400 {
    q = w1.agent_pid("kube-proxy");
    if q != () && q != p { break; }
    sleep(0.05);
}
expect(q != () && q != p, "kube-proxy was restarted");
w1.stop_agent("flanneld");
expect(w1.agent_pid("flanneld") == (), "flanneld stays stopped");
let f = w1.start_agent("flanneld");
expect(w1.agent_pid("flanneld") == f, "flanneld runs again");
"#,
    );
    let out = knetsim_script(instance, &script)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_holds(
        &stderr,
        &["! kube-proxy on C0w1 exited (signal 9); restarted"],
    );
    assert!(!stderr.contains("flanneld on C0w1 exited"), "{stderr}");
    assert_nothing_left(instance, &[]);
}

#[test]
fn a_killed_skupper_router_is_restarted_and_its_links_come_back() {
    if !root_or_skip() {
        return;
    }
    let instance = "sup-sk";
    let sim = common::sim(instance);
    let one = ClusterSpec {
        workers: 1,
        etcd: 1,
    };
    let c0 = sim.cluster("0", one).unwrap();
    let c1 = sim.cluster("1", one).unwrap();
    sim.start().unwrap();
    let (c0w1, c1w1) = (c0.worker("w1").unwrap(), c1.worker("w1").unwrap());
    c0w1.create_container("c4", BTreeMap::new()).unwrap();
    c0w1.echo_server("c4", 8000, "hello from c4").unwrap();
    c1w1.create_container("c1", BTreeMap::new()).unwrap();
    for c in [&c0, &c1] {
        c.skupper_init(SiteOptions { tls: false }).unwrap();
    }
    c1.skupper_link(&c0.skupper_token().unwrap(), LinkOptions::default())
        .unwrap();
    let port = c0.skupper_expose("svc1", "c4", 8000).unwrap();
    let get = || {
        c1w1.exec_container("c1", &format!("curl -s -m 2 http://{}:{port}/", c1w1.ip()))
            .unwrap_or_default()
    };
    assert_eq!(get(), "hello from c4\n");

    let old = c0.skupper_router_pid().unwrap();
    kill9(old);
    let new = restarted(&c0w1, "skrouterd", old);
    assert_eq!(c0.skupper_router_pid(), Some(new));
    // C1's router dials the restarted one again; until it has, a request may fail.
    let until = Instant::now() + Duration::from_secs(20);
    let mut got = get();
    while got != "hello from c4\n" && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        got = get();
    }
    assert_eq!(got, "hello from c4\n", "C1 no longer reaches svc1 in C0");
    assert_eq!(
        messages(&sim),
        vec!["skrouterd on C0w1 exited (signal 9); restarted".to_string()]
    );
    tear_down(&sim, &[new]);
}

/// A directory of this test's own, removed when dropped (also when the test fails).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn an_agent_that_cannot_run_ends_waits_at_once_with_its_log() {
    if !root_or_skip() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let instance = "sup-broken";
    let dir = TempDir(std::env::temp_dir().join(format!("knetsim-broken-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    // The agents start from this path: knetsim at first, something broken later.
    let exe = dir.0.join("knetsim");
    std::os::unix::fs::symlink(knetsim_exe(), &exe).unwrap();
    let sim = Sim::new(knetsim::sim::Options {
        knetsim_exe: exe.clone(),
        ..common::options(instance)
    })
    .unwrap();
    let c = common::declare_c0(&sim, 2, 1).unwrap();
    sim.start().unwrap();

    // An agent binary that fails at once: a new worker's flanneld crash-loops, and
    // add_worker says so as soon as the restarts stop, quoting what the agent printed.
    std::fs::remove_file(&exe).unwrap();
    std::fs::write(&exe, "#!/bin/sh\necho \"broken agent: $1\" >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let t = Instant::now();
    let e = format!("{:#}", c.add_worker().err().expect("add_worker failed"));
    eprintln!("add_worker failed after {:.2} s", t.elapsed().as_secs_f64());
    for want in [
        "the flannel agent on C0w3 wrote no",
        "flanneld on C0w3 exited (status 1), its 5th exit within 30 s",
        "broken agent: flanneld",
        "C0w3.start_agent(\"flanneld\")",
    ] {
        assert!(e.contains(want), "'{want}' missing from: {e}");
    }

    // No binary at all: a killed kube-proxy cannot even be started again.
    std::fs::remove_file(&exe).unwrap();
    let w1 = c.worker("w1").unwrap();
    kill9(w1.agent_pid("kube-proxy").unwrap().unwrap());
    let until = Instant::now() + Duration::from_secs(20);
    let msg = loop {
        let ev = sim.events();
        if let Some(e) = ev
            .iter()
            .find(|e| e.node == "C0w1" && e.outcome == SupervisionOutcome::GaveUp)
        {
            break e.message.clone();
        }
        assert!(Instant::now() < until, "no failed restart reported: {ev:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        msg.starts_with("kube-proxy on C0w1 exited (signal 9) and could not be started again")
            && msg.contains("C0w1.start_agent(\"kube-proxy\")"),
        "{msg}"
    );
    assert_eq!(w1.agent_pid("kube-proxy").unwrap(), None);
    tear_down(&sim, &[]);
}

/// A knetsim executable in `dir` that runs the real one, except the agent subcommand
/// `agent`, which fails at once every time, saying so.
fn exe_with_broken_agent(dir: &std::path::Path, agent: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = dir.join("knetsim");
    std::fs::write(
        &exe,
        format!(
            "#!/bin/sh\nif [ \"$1\" = {agent} ]; then echo \"broken agent: $1\" >&2; exit 1; fi\nexec '{}' \"$@\"\n",
            knetsim_exe().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// A simulator of `instance` whose agents start from a knetsim in a directory of its own
/// (removed when the returned guard drops) that fails the agent subcommand `agent`.
fn sim_with_broken_agent(instance: &str, agent: &str) -> (TempDir, Sim) {
    let dir =
        TempDir(std::env::temp_dir().join(format!("knetsim-{instance}-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let sim = Sim::new(knetsim::sim::Options {
        knetsim_exe: exe_with_broken_agent(&dir.0, agent),
        ..common::options(instance)
    })
    .unwrap();
    (dir, sim)
}

/// Bring-up waits for each kube-proxy's table as soon as the agent is started, beside
/// etcd's election: one that cannot run ends start() with what it printed, and the failed
/// bring-up leaves nothing behind.
#[test]
fn a_kube_proxy_that_cannot_run_ends_start_with_its_log() {
    if !root_or_skip() {
        return;
    }
    let (_dir, sim) = sim_with_broken_agent("sup-kpbroken", "kube-proxy");
    common::declare_c0(&sim, 2, 1).unwrap();
    let e = format!("{:#}", sim.start().expect_err("start failed"));
    for want in ["kube-proxy on C0w", "broken agent: kube-proxy"] {
        assert!(e.contains(want), "'{want}' missing from: {e}");
    }
    tear_down(&sim, &[]);
}

/// Pods declared with the cluster begin (namespace, loopback, bridge plugin) while their
/// worker's agent still waits for its lease: a flannel agent that never writes its subnet
/// ends start() with its log, and the failed start takes those pods back itself.
#[test]
fn declared_pods_of_a_worker_whose_agent_cannot_run_are_taken_back() {
    if !root_or_skip() {
        return;
    }
    let instance = "sup-flbroken";
    let (_dir, sim) = sim_with_broken_agent(instance, "flanneld");
    let c = common::declare_c0(&sim, 2, 1).unwrap();
    let plan = BTreeMap::from([
        ("w1".to_string(), vec!["p1".to_string(), "p2".to_string()]),
        ("w2".to_string(), vec!["p3".to_string()]),
    ]);
    c.plan_pods(&plan).unwrap();
    let e = format!("{:#}", sim.start().expect_err("start failed"));
    for want in [
        "the flannel agent on C0w",
        "broken agent: flanneld",
        "wiring container",
    ] {
        assert!(e.contains(want), "'{want}' missing from: {e}");
    }
    let pods_left: Vec<String> = common::namespaces_of(instance)
        .into_iter()
        .filter(|n| n.contains("C0-p"))
        .collect();
    assert!(pods_left.is_empty(), "pod namespaces left: {pods_left:?}");
    assert!(c.containers().is_empty(), "{:?}", c.containers());
    tear_down(&sim, &[]);
}
