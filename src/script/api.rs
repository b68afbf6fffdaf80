//! The script API: the simulator's handles as Rhai types, plus the lesson helpers
//! (`step`, `sleep`, `expect`, `table`). Every Rust error becomes a Rhai runtime error
//! with its message intact; rhai adds the position of the call.

use crate::sim::{Cluster, ClusterSpec, EtcdNode, Node, Sim, Worker};
use crate::ui;
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext, Position};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type RResult<T> = Result<T, Box<EvalAltResult>>;

/// State the lesson helpers share with the session.
#[derive(Default)]
pub struct Lesson {
    pub passed: AtomicUsize,
    pub failed: AtomicUsize,
    pub steps: AtomicUsize,
    /// `step()` waits for Enter (only if stdin is also a terminal).
    pub interactive: AtomicBool,
    /// Set while the console evaluates a line: `step()` never waits there.
    pub in_console: AtomicBool,
}

/// What an interrupted `exec` hands back: the output so far, shown once by the runner.
pub const INTERRUPTED_MARK: &str = "^C (interrupted)\n";

fn rt<T>(r: anyhow::Result<T>) -> RResult<T> {
    r.map_err(|e| format!("{e:#}").into())
}

fn terminated(partial: impl Into<Dynamic>) -> Box<EvalAltResult> {
    EvalAltResult::ErrorTerminated(partial.into(), Position::NONE).into()
}

/// An exec whose command was ended by Ctrl-C stops the script (or console line) too;
/// its output travels with the stop so the runner can show it.
fn exec_result(r: anyhow::Result<String>) -> RResult<String> {
    let out = rt(r)?;
    if out.ends_with(INTERRUPTED_MARK) {
        return Err(terminated(out));
    }
    Ok(out)
}

pub fn node_to_dynamic(n: Node) -> Dynamic {
    match n {
        Node::Worker(w) => Dynamic::from(w),
        Node::Etcd(e) => Dynamic::from(e),
    }
}

/// The value a console variable or an unknown script variable named like a node has:
/// `C0` (a cluster), `C0w1` (a worker), `C0e1` (an etcd member).
pub fn resolve_name(sim: &Sim, name: &str) -> Option<Dynamic> {
    if let Some(n) = sim.node(name) {
        return Some(node_to_dynamic(n));
    }
    let id = name.strip_prefix('C')?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    sim.get_cluster(name).ok().map(Dynamic::from)
}

fn spec_from_map(id: &str, m: &Map) -> RResult<ClusterSpec> {
    let mut spec = ClusterSpec::default();
    for (k, v) in m {
        let n = v.as_int().map_err(|t| {
            format!("cluster(\"{id}\", ...): '{k}' must be a whole number, got {t} (e.g. #{{ workers: 3, etcd: 2 }})")
        })?;
        let n = rt(crate::sim::check_count(id, k, n))?;
        match k.as_str() {
            "workers" => spec.workers = n,
            _ => spec.etcd = n,
        }
    }
    Ok(spec)
}

fn labels_from_opts(c: &str, opts: &Map) -> RResult<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for (k, v) in opts {
        match k.as_str() {
            "labels" => {
                let m = v.read_lock::<Map>().ok_or_else(|| {
                    format!(
                        "create_container(\"{c}\", ...): 'labels' must be a map such as #{{ app: \"web\" }}, got {}",
                        v.type_name()
                    )
                })?;
                for (lk, lv) in m.iter() {
                    labels.insert(lk.to_string(), lv.to_string());
                }
            }
            other => {
                return Err(format!(
                    "create_container(\"{c}\", ...): unknown option '{other}'; the only option is 'labels', e.g. #{{ labels: #{{ app: \"web\" }} }}"
                )
                .into())
            }
        }
    }
    Ok(labels)
}

fn container_map(info: crate::sim::ContainerInfo) -> Map {
    let mut m = Map::new();
    m.insert("name".into(), info.name.into());
    m.insert("worker".into(), info.worker.into());
    m.insert("ip".into(), info.ip.into());
    m.insert("ns".into(), info.ns.into());
    let mut labels = Map::new();
    for (k, v) in info.labels {
        labels.insert(k.into(), v.into());
    }
    m.insert("labels".into(), labels.into());
    m
}

fn secs(what: &str, s: f64) -> RResult<Duration> {
    if !s.is_finite() || !(0.0..=86_400.0).contains(&s) {
        return Err(format!(
            "{what}: {s} is not a usable number of seconds (use 0 to 86400, e.g. 0.5)"
        )
        .into());
    }
    Ok(Duration::from_secs_f64(s))
}

fn exec_timeout(s: f64) -> RResult<Duration> {
    crate::sim::exec_timeout_from_secs(s)
        .map_err(|e| format!("set_exec_timeout: {e}, e.g. set_exec_timeout(30)").into())
}

/// Sleeps in short slices so Ctrl-C ends it at once.
pub fn interruptible_sleep(d: Duration) -> RResult<()> {
    crate::wait::sleep_until(Instant::now() + d, &crate::interrupt::is_set);
    if crate::interrupt::is_set() {
        return Err(terminated(Dynamic::UNIT));
    }
    Ok(())
}

/// Waits for Enter on stdin; Ctrl-C stops the script. EOF stops waiting.
fn wait_for_enter() -> RResult<()> {
    print!("{}", ui::dim("  (Enter to continue, Ctrl-C to stop) "));
    let _ = std::io::stdout().flush();
    loop {
        if crate::interrupt::is_set() {
            println!();
            return Err(terminated(Dynamic::UNIT));
        }
        let mut fds = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `fds` is one live pollfd for the whole call.
        let n = unsafe { libc::poll(&mut fds, 1, 100) };
        if n > 0 {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            return Ok(());
        }
    }
}

/// `━━ Step 2: title ━━`, or `━━ 2. title ━━` when the lesson numbers its steps itself.
pub fn step_header(n: usize, title: &str) -> String {
    if title.starts_with(|c: char| c.is_ascii_digit()) {
        format!("━━ {title} ━━")
    } else {
        format!("━━ Step {n}: {title} ━━")
    }
}

fn step(lesson: &Lesson, title: &str) -> RResult<()> {
    let n = lesson.steps.fetch_add(1, Ordering::SeqCst) + 1;
    println!("\n{}", ui::bold(&step_header(n, title)));
    let _ = std::io::stdout().flush();
    if lesson.interactive.load(Ordering::SeqCst)
        && !lesson.in_console.load(Ordering::SeqCst)
        && std::io::stdin().is_terminal()
    {
        wait_for_enter()?;
    }
    Ok(())
}

fn expect(lesson: &Lesson, ctx: &NativeCallContext, cond: Dynamic, what: &str) -> RResult<bool> {
    let ok = cond.as_bool().map_err(|t| {
        format!("expect() needs true or false as its first argument, got {t}: compare something, e.g. expect(out.contains(\"0% packet loss\"), \"{what}\")")
    })?;
    if ok {
        lesson.passed.fetch_add(1, Ordering::SeqCst);
        println!("  {} {what}", ui::green("✓"));
    } else {
        lesson.failed.fetch_add(1, Ordering::SeqCst);
        let pos = ctx.call_position();
        let src = ctx.call_source().unwrap_or("script");
        let at = match (pos.line(), pos.position()) {
            (Some(l), Some(c)) => format!("{src}:{l}:{c}"),
            (Some(l), None) => format!("{src}:{l}"),
            _ => src.to_string(),
        };
        println!(
            "  {} {what}  {}",
            ui::red("✗"),
            ui::dim(&format!("(expectation failed at {at})"))
        );
    }
    let _ = std::io::stdout().flush();
    Ok(ok)
}

/// A small table: `table(["name", "ip"], [["c1", "11.10.0.2"], ...])`.
pub fn render_table(headers: &Array, rows: &Array) -> RResult<String> {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(headers.iter().map(|h| h.to_string()));
    for (i, r) in rows.iter().enumerate() {
        let cells = r.read_lock::<Array>().ok_or_else(|| {
            format!(
                "table(): row {} must be an array such as [\"c1\", \"11.10.0.2\"], got {}",
                i + 1,
                r.type_name()
            )
        })?;
        t.add_row(cells.iter().map(|c| c.to_string()));
    }
    Ok(t.to_string())
}

/// Registers the types and functions on `engine`.
pub fn register(engine: &mut Engine, sim: &Sim, lesson: &Arc<Lesson>) {
    register_cluster(engine);
    register_worker(engine);
    register_etcd(engine);
    super::services_api::register(engine);
    super::ingress_api::register(engine);
    super::skupper_api::register(engine);

    // Declaring and starting.
    let s = sim.clone();
    engine.register_fn("cluster", move |id: &str| -> RResult<Cluster> {
        rt(s.cluster(id, ClusterSpec::default()))
    });
    let s = sim.clone();
    engine.register_fn("cluster", move |id: i64| -> RResult<Cluster> {
        rt(s.cluster(&id.to_string(), ClusterSpec::default()))
    });
    let s = sim.clone();
    engine.register_fn("cluster", move |id: &str, m: Map| -> RResult<Cluster> {
        let spec = spec_from_map(id, &m)?;
        rt(s.cluster(id, spec))
    });
    let s = sim.clone();
    engine.register_fn("cluster", move |id: i64, m: Map| -> RResult<Cluster> {
        let id = id.to_string();
        let spec = spec_from_map(&id, &m)?;
        rt(s.cluster(&id, spec))
    });
    let s = sim.clone();
    engine.register_fn("get_cluster", move |id: &str| -> RResult<Cluster> {
        rt(s.get_cluster(id))
    });
    let s = sim.clone();
    engine.register_fn("clusters", move || -> Array {
        s.clusters().into_iter().map(Dynamic::from).collect()
    });
    let s = sim.clone();
    engine.register_fn("start", move || -> RResult<()> { rt(s.start()) });
    let s = sim.clone();
    engine.register_fn("node", move |name: &str| -> RResult<Dynamic> {
        resolve_name(&s, name).ok_or_else(|| {
            let names = s.node_names();
            format!(
                "there is no node '{name}' (nodes: {})",
                if names.is_empty() {
                    "none yet: declare a cluster first".to_string()
                } else {
                    names.join(", ")
                }
            )
            .into()
        })
    });
    let s = sim.clone();
    engine.register_fn("node_names", move || -> Array {
        s.node_names().into_iter().map(Dynamic::from).collect()
    });
    let s = sim.clone();
    engine.register_fn("set_exec_timeout", move |t: f64| -> RResult<()> {
        s.set_exec_timeout(exec_timeout(t)?);
        Ok(())
    });
    let s = sim.clone();
    engine.register_fn("set_exec_timeout", move |t: i64| -> RResult<()> {
        s.set_exec_timeout(exec_timeout(t as f64)?);
        Ok(())
    });

    // Lesson helpers.
    let l = lesson.clone();
    engine.register_fn("step", move |title: &str| step(&l, title));
    engine.register_fn("sleep", |t: f64| interruptible_sleep(secs("sleep", t)?));
    engine.register_fn("sleep", |t: i64| {
        interruptible_sleep(secs("sleep", t as f64)?)
    });
    let l = lesson.clone();
    engine.register_fn(
        "expect",
        move |ctx: NativeCallContext, cond: Dynamic, what: &str| expect(&l, &ctx, cond, what),
    );
    engine.register_fn("table", |h: Array, rows: Array| -> RResult<()> {
        println!("{}", render_table(&h, &rows)?);
        Ok(())
    });
}

fn register_cluster(engine: &mut Engine) {
    engine.register_type_with_name::<Cluster>("Cluster");
    engine.register_get("name", |c: &mut Cluster| c.name());
    engine.register_fn("name", |c: &mut Cluster| c.name());
    engine.register_fn("to_string", |c: &mut Cluster| {
        format!("cluster {}", c.name())
    });
    engine.register_fn("to_debug", |c: &mut Cluster| {
        format!("cluster {}", c.name())
    });
    engine.register_fn("start", |c: &mut Cluster| rt(c.start()));
    engine.register_fn("get", |c: &mut Cluster, n: &str| {
        rt(c.get(n)).map(node_to_dynamic)
    });
    engine.register_fn("worker", |c: &mut Cluster, n: &str| rt(c.worker(n)));
    engine.register_fn("add_worker", |c: &mut Cluster| rt(c.add_worker()));
    engine.register_fn("workers", |c: &mut Cluster| -> Array {
        c.workers().into_iter().map(Dynamic::from).collect()
    });
    engine.register_fn("etcd_nodes", |c: &mut Cluster| -> Array {
        c.etcd_nodes().into_iter().map(Dynamic::from).collect()
    });
    engine.register_fn("etcd_endpoints", |c: &mut Cluster| c.etcd_endpoints());
    engine.register_fn("containers", |c: &mut Cluster| -> Array {
        c.containers()
            .into_iter()
            .map(|(name, worker)| {
                let mut m = Map::new();
                m.insert("name".into(), name.into());
                m.insert("worker".into(), format!("{}{worker}", c.name()).into());
                Dynamic::from_map(m)
            })
            .collect()
    });
    engine.register_fn("find_container", |c: &mut Cluster, n: &str| -> Dynamic {
        c.find_container(n)
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT)
    });
}

fn register_worker(engine: &mut Engine) {
    engine.register_type_with_name::<Worker>("Worker");
    engine.register_get("name", |w: &mut Worker| w.name());
    engine.register_fn("name", |w: &mut Worker| w.name());
    engine.register_get("ip", |w: &mut Worker| w.ip().to_string());
    engine.register_fn("ip", |w: &mut Worker| w.ip().to_string());
    engine.register_get("cluster", |w: &mut Worker| w.cluster());
    engine.register_get("dir", |w: &mut Worker| w.dir().display().to_string());
    engine.register_fn("dir", |w: &mut Worker| w.dir().display().to_string());
    engine.register_fn("exec_async", |w: &mut Worker, cmd: &str| -> RResult<i64> {
        rt(w.exec_async(cmd)).map(|pid| pid as i64)
    });
    engine.register_fn("to_string", |w: &mut Worker| {
        format!("worker {} ({})", w.name(), w.ip())
    });
    engine.register_fn("to_debug", |w: &mut Worker| {
        format!("worker {} ({})", w.name(), w.ip())
    });
    engine.register_fn("exec", |w: &mut Worker, cmd: &str| exec_result(w.exec(cmd)));
    engine.register_fn("containers", |w: &mut Worker| -> Array {
        w.containers().into_iter().map(Dynamic::from).collect()
    });
    engine.register_fn("container_ip", |w: &mut Worker, c: &str| {
        rt(w.container_ip(c))
    });
    engine.register_fn(
        "create_container",
        |w: &mut Worker, c: &str| -> RResult<Map> {
            rt(w.create_container(c, BTreeMap::new())).map(container_map)
        },
    );
    engine.register_fn(
        "create_container",
        |w: &mut Worker, c: &str, opts: Map| -> RResult<Map> {
            let labels = labels_from_opts(c, &opts)?;
            rt(w.create_container(c, labels)).map(container_map)
        },
    );
    engine.register_fn("delete_container", |w: &mut Worker, c: &str| {
        rt(w.delete_container(c))
    });
    engine.register_fn("exec_container", |w: &mut Worker, c: &str, cmd: &str| {
        exec_result(w.exec_container(c, cmd))
    });
    engine.register_fn(
        "exec_container_async",
        |w: &mut Worker, c: &str, cmd: &str| -> RResult<i64> {
            rt(w.exec_container_async(c, cmd)).map(|pid| pid as i64)
        },
    );
    engine.register_fn("stop_agent", |w: &mut Worker, agent: &str| {
        rt(w.stop_agent(agent))
    });
    engine.register_fn(
        "start_agent",
        |w: &mut Worker, agent: &str| -> RResult<i64> {
            rt(w.start_agent(agent)).map(|pid| pid as i64)
        },
    );
    // A stopped agent has no pid: () then, so `if pid == ()` reads naturally.
    engine.register_fn(
        "agent_pid",
        |w: &mut Worker, agent: &str| -> RResult<Dynamic> {
            rt(w.agent_pid(agent)).map(|p| p.map_or(Dynamic::UNIT, |p| Dynamic::from(p as i64)))
        },
    );
}

fn register_etcd(engine: &mut Engine) {
    engine.register_type_with_name::<EtcdNode>("EtcdNode");
    engine.register_get("name", |e: &mut EtcdNode| e.name());
    engine.register_fn("name", |e: &mut EtcdNode| e.name());
    engine.register_get("ip", |e: &mut EtcdNode| e.ip().to_string());
    engine.register_fn("ip", |e: &mut EtcdNode| e.ip().to_string());
    engine.register_fn("to_string", |e: &mut EtcdNode| {
        format!("etcd member {} ({})", e.name(), e.ip())
    });
    engine.register_fn("to_debug", |e: &mut EtcdNode| {
        format!("etcd member {} ({})", e.name(), e.ip())
    });
    engine.register_fn("exec", |e: &mut EtcdNode, cmd: &str| {
        exec_result(e.exec(cmd))
    });
}

/// Global functions, for completion and `help`: (name, one-line example).
pub const GLOBAL_API: &[(&str, &str)] = &[
    (
        "cluster",
        "let C0 = cluster(\"0\", #{ workers: 3, etcd: 2 });",
    ),
    ("start", "start();  // brings up every declared cluster"),
    ("get_cluster", "let C1 = get_cluster(\"C1\");"),
    ("clusters", "for c in clusters() { print(c.name) }"),
    ("node", "let w = node(\"C0w1\");"),
    ("node_names", "print(node_names());"),
    (
        "set_exec_timeout",
        "set_exec_timeout(30);  // seconds, for exec*",
    ),
    (
        "step",
        "step(\"Ping across workers\");  // pauses when interactive",
    ),
    ("sleep", "sleep(0.5);"),
    (
        "expect",
        "expect(out.contains(\" 0% packet loss\"), \"c1 reaches c2\");",
    ),
    (
        "table",
        "table([\"name\", \"ip\"], [[\"c1\", C0w1.container_ip(\"c1\")]]);",
    ),
    ("print", "print(C0w1.ip);"),
];

/// Methods, for completion and `help`: (receiver, name, one-line example).
pub const METHOD_API: &[(&str, &str, &str)] = &[
    ("Cluster", "start", "C0.start();"),
    (
        "Cluster",
        "get",
        "let w1 = C0.get(\"w1\");  // a worker or an etcd member",
    ),
    ("Cluster", "add_worker", "let w4 = C0.add_worker();"),
    (
        "Cluster",
        "workers",
        "for w in C0.workers() { print(w.name) }",
    ),
    ("Cluster", "etcd_nodes", "print(C0.etcd_nodes());"),
    ("Cluster", "containers", "print(C0.containers());"),
    (
        "Cluster",
        "find_container",
        "let w = C0.find_container(\"c3\");",
    ),
    ("Cluster", "etcd_endpoints", "print(C0.etcd_endpoints());"),
    (
        "Cluster",
        "kp_vip_add",
        "C0.kp_vip_add(\"100.64.10.1\", [\"c2\", \"c3\"]);  // static, all protocols",
    ),
    ("Cluster", "kp_vip_del", "C0.kp_vip_del(\"100.64.10.1\");"),
    (
        "Cluster",
        "service",
        "let ip = C0.service(\"web\", #{ selector: #{ app: \"web\" }, ports: [#{ port: 80, target: 8000 }] });",
    ),
    ("Cluster", "delete_service", "C0.delete_service(\"web\");"),
    ("Cluster", "service_ip", "print(C0.service_ip(\"web\"));"),
    ("Worker", "nft_counters", "print(C0w1.nft_counters());  // flows per endpoint"),
    (
        "Worker",
        "flows_by_endpoint",
        "print(C0w1.flows_by_endpoint(\"100.64.10.1\"));",
    ),
    (
        "Worker",
        "create_container",
        "w1.create_container(\"c2\", #{ labels: #{ app: \"web\" } });",
    ),
    (
        "Worker",
        "delete_container",
        "C0w3.delete_container(\"c3\");",
    ),
    ("Worker", "exec", "print(C0w1.exec(\"ip route\"));"),
    (
        "Worker",
        "exec_container",
        "print(C0w1.exec_container(\"c1\", \"ping -c 3 11.10.0.2\"));",
    ),
    (
        "Worker",
        "exec_container_async",
        "C0w1.exec_container_async(\"c1\", \"python3 -m http.server 80\");",
    ),
    (
        "Worker",
        "container_ip",
        "let ip = C0w2.container_ip(\"c2\");",
    ),
    ("Worker", "containers", "print(C0w3.containers());"),
    (
        "Worker",
        "run_ingress",
        "let ing = C0w1.run_ingress(\"grp1\", 8001, [#{ path: \"/svc1\", endpoint: \"100.64.11.1:8000\" }]);  // real nginx; again to reload",
    ),
    ("Worker", "stop_ingress", "C0w1.stop_ingress(\"grp1\");"),
    ("Worker", "ingresses", "print(C0w1.ingresses());"),
    (
        "Worker",
        "echo_server",
        "C0w2.echo_server(\"c2\", 8000, \"S1-W2\");  // answers every GET with S1-W2",
    ),
    (
        "Worker",
        "stop_agent",
        "C0w1.stop_agent(\"kube-proxy\");  // on purpose: not restarted (flanneld, kube-proxy, skrouterd)",
    ),
    (
        "Worker",
        "start_agent",
        "C0w1.start_agent(\"kube-proxy\");  // same arguments as before; waits until it caught up",
    ),
    (
        "Worker",
        "agent_pid",
        "print(C0w1.agent_pid(\"flanneld\"));  // changes when the agent is restarted",
    ),
    ("Worker", "ip", "print(C0w1.ip);  // underlay address"),
    ("Worker", "name", "print(w1.name);"),
    (
        "EtcdNode",
        "exec",
        "print(C0e1.exec(\"etcdctl member list\"));",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_timeouts_must_be_above_zero_and_finite() {
        assert_eq!(exec_timeout(0.5).unwrap(), Duration::from_millis(500));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            let e = exec_timeout(bad).unwrap_err().to_string();
            assert!(e.contains("above 0 and at most 86400"), "{bad}: {e}");
        }
    }

    #[test]
    fn step_headers_number_steps_unless_the_lesson_does() {
        assert_eq!(step_header(3, "Ping"), "━━ Step 3: Ping ━━");
        assert_eq!(step_header(3, "3. Ping"), "━━ 3. Ping ━━");
    }

    #[test]
    fn tables_render_and_reject_bad_rows() {
        let h: Array = vec!["name".into(), "ip".into()];
        let rows: Array = vec![Dynamic::from_array(vec!["c1".into(), "11.10.0.2".into()])];
        let t = render_table(&h, &rows).unwrap();
        assert!(t.contains("name") && t.contains("11.10.0.2"), "{t}");
        let bad: Array = vec![Dynamic::from(1_i64)];
        let e = render_table(&h, &bad).unwrap_err().to_string();
        assert!(e.contains("row 1 must be an array"), "{e}");
    }

    #[test]
    fn options_maps_are_checked() {
        let mut m = Map::new();
        m.insert("workers".into(), Dynamic::from(2_i64));
        m.insert("etcd".into(), Dynamic::from(1_i64));
        let s = spec_from_map("0", &m).unwrap();
        assert_eq!((s.workers, s.etcd), (2, 1));
        m.insert("etcd".into(), Dynamic::from(-1_i64));
        let e = spec_from_map("0", &m).unwrap_err().to_string();
        assert!(e.contains("etcd must be between 1 and 5 (got -1)"), "{e}");
        m.insert("etcd".into(), Dynamic::from(1_i64));
        m.insert("workers".into(), Dynamic::from(i64::MAX));
        let e = spec_from_map("0", &m).unwrap_err().to_string();
        assert!(
            e.contains("workers must be between 1 and 200 (got 9223372036854775807)"),
            "{e}"
        );
        m.remove("workers");
        m.insert("nodes".into(), Dynamic::from(3_i64));
        let e = spec_from_map("0", &m).unwrap_err().to_string();
        assert!(e.contains("unknown option 'nodes'"), "{e}");
        let mut o = Map::new();
        let mut l = Map::new();
        l.insert("app".into(), "web".into());
        o.insert("labels".into(), l.into());
        let labels = labels_from_opts("c1", &o).unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        o.insert("labels".into(), "app=web".into());
        assert!(labels_from_opts("c1", &o)
            .unwrap_err()
            .to_string()
            .contains("must be a map"));
    }
}
