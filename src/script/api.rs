//! The script API's core: the simulator's handles as Rhai types (`Cluster`, `Worker`,
//! `EtcdNode`) and the functions that declare and start clusters. Services, ingress,
//! Skupper and the lesson helpers register in their own files, all through the one
//! [`Registry`], so each binding carries its signature, description and example.

use super::lesson_api::terminated;
pub use super::lesson_api::{interruptible_sleep, render_table, step_header, Lesson};
use super::registry::{rt, Catalog, Env, RResult, Registry};
use crate::components::flannel::config::NetConfig;
use crate::sim::{Cluster, ClusterSpec, EtcdNode, Node, Sim, Worker};
use rhai::{Array, Dynamic, Engine, Map, NativeCallContext};
use std::collections::BTreeMap;
use std::time::Duration;

/// What an interrupted `exec` hands back: the output so far, shown once by the runner.
pub const INTERRUPTED_MARK: &str = "^C (interrupted)\n";

/// An exec whose command was ended by Ctrl-C stops the script (or console line) too;
/// its output travels with the stop so the runner can show it.
/// How long `wait_log` waits when not told.
const WAIT_LOG_DEFAULT: Duration = Duration::from_secs(30);

/// `wait_log`'s count: at least 1.
fn log_count(count: i64) -> RResult<usize> {
    if count < 1 {
        return Err(format!(
            "wait_log: count {count} is not a number of lines; give 1 or more (how many lines with the text to wait for)"
        )
        .into());
    }
    Ok(count as usize)
}

/// `wait_log`'s limit: 1 to 3600 seconds.
fn log_seconds(seconds: i64) -> RResult<Duration> {
    if !(1..=3600).contains(&seconds) {
        return Err(
            format!("wait_log: {seconds} s is no time limit; give 1 to 3600 seconds").into(),
        );
    }
    Ok(Duration::from_secs(seconds as u64))
}

pub(super) fn exec_result(r: anyhow::Result<String>) -> RResult<String> {
    r.map_err(
        |e| match e.downcast::<crate::netns::process::Interrupted>() {
            Ok(i) => terminated(format!("{}{INTERRUPTED_MARK}", i.partial)),
            Err(e) => format!("{e:#}").into(),
        },
    )
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

/// `cluster(id, #{ workers, etcd, flannel, pods })` options: the spec, flannel's network
/// config when given, and the pods declared for start() to make.
type PodPlan = BTreeMap<String, Vec<String>>;

fn spec_from_map(id: &str, m: &Map) -> RResult<(ClusterSpec, Option<NetConfig>, PodPlan)> {
    let mut spec = ClusterSpec::default();
    let mut flannel = None;
    let mut pods = PodPlan::new();
    for (k, v) in m {
        match k.as_str() {
            "flannel" => {
                flannel = Some(super::flannel_api::from_option(id, v)?);
                continue;
            }
            "pods" => {
                let what = format!("cluster(\"{id}\", #{{ pods: ... }})");
                let plan = v.read_lock::<Map>().map(|m| m.clone()).ok_or_else(|| {
                    format!(
                        "{what}: 'pods' must map workers to pod names, such as #{{ w1: [\"c1\"], w2: [\"c2\", \"c3\"] }}, got {}",
                        v.type_name()
                    )
                })?;
                pods = pod_plan(&what, plan)?;
                continue;
            }
            _ => {}
        }
        let n = v.as_int().map_err(|t| {
            format!("cluster(\"{id}\", ...): '{k}' must be a whole number, got {t} (e.g. #{{ workers: 3, etcd: 2 }})")
        })?;
        let n = rt(crate::sim::check_count(id, k, n))?;
        match k.as_str() {
            "workers" => spec.workers = n,
            _ => spec.etcd = n,
        }
    }
    Ok((spec, flannel, pods))
}

/// A map of worker to pod names (`#{ w1: ["a", "b"] }`), for `what` (named in errors).
fn pod_plan(what: &str, plan: Map) -> RResult<PodPlan> {
    let mut pods = PodPlan::new();
    for (worker, v) in plan {
        let names = v.read_lock::<Array>().map(|a| a.clone()).ok_or_else(|| {
            format!(
                "{what}: '{worker}' must map to a list of pod names such as [\"a\", \"b\"], got {}",
                v.type_name()
            )
        })?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        pods.insert(worker.to_string(), names);
    }
    Ok(pods)
}

/// The labels in `opts` of `call` (what error messages name: `create_container("c1", ...)`).
fn labels_from_opts(call: &str, opts: &Map) -> RResult<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for (k, v) in opts {
        match k.as_str() {
            "labels" => {
                let m = v.read_lock::<Map>().ok_or_else(|| {
                    format!(
                        "{call}: 'labels' must be a map such as #{{ app: \"web\" }}, got {}",
                        v.type_name()
                    )
                })?;
                for (lk, lv) in m.iter() {
                    labels.insert(lk.to_string(), lv.to_string());
                }
            }
            other => {
                return Err(format!(
                    "{call}: unknown option '{other}'; the only option is 'labels', e.g. #{{ labels: #{{ app: \"web\" }} }}"
                )
                .into())
            }
        }
    }
    Ok(labels)
}

/// `C0.create_containers(#{ w1: ["a", "b"] }, opts?)`: the plan read from its map.
fn bulk_pods(c: &mut Cluster, plan: Map, opts: Map) -> RResult<Array> {
    let labels = labels_from_opts("create_containers(...)", &opts)?;
    let pods = pod_plan("create_containers", plan)?;
    let made = rt(c.create_containers(&pods, &labels))?;
    Ok(made
        .into_iter()
        .map(|i| Dynamic::from_map(container_map(i)))
        .collect())
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

fn exec_timeout(s: f64) -> RResult<Duration> {
    crate::sim::exec_timeout_from_secs(s)
        .map_err(|e| format!("set_exec_timeout: {e}, e.g. set_exec_timeout(30)").into())
}

fn sim(ctx: &NativeCallContext) -> RResult<Sim> {
    Env::of(ctx).map(|e| e.sim)
}

fn declare(ctx: &NativeCallContext, id: &str, opts: Option<&Map>) -> RResult<Cluster> {
    let (spec, flannel, pods) = match opts {
        Some(m) => spec_from_map(id, m)?,
        None => (ClusterSpec::default(), None, PodPlan::new()),
    };
    let c = match flannel {
        Some(f) => rt(sim(ctx)?.cluster_with_flannel(id, spec, f))?,
        None => rt(sim(ctx)?.cluster(id, spec))?,
    };
    if let Err(e) = c.plan_pods(&pods) {
        // The declaration and its options are one call: refused, it declares nothing.
        c.undeclare();
        return rt(Err(e));
    }
    Ok(c)
}

fn node(ctx: &NativeCallContext, name: &str) -> RResult<Dynamic> {
    let s = sim(ctx)?;
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
}

/// Registers the whole script API on `engine` and returns its entries. The functions act
/// on the [`Env`] installed as the engine's tag.
pub fn register(engine: &mut Engine) -> Catalog {
    let mut reg = Registry::new(engine);
    reg.ty::<Cluster>(
        "Cluster",
        "C0, C1, ...: from cluster(), get_cluster() or by name",
    )
    .ty::<Worker>(
        "Worker",
        "C0w1, ...: from C.get(\"w1\"), C.add_worker() or by name",
    )
    .ty::<EtcdNode>("EtcdNode", "C0e1, ...: from C.get(\"e1\") or by name");
    // The order here is the order of `help` and the README within each type.
    register_globals(&mut reg);
    super::lesson_api::register(&mut reg);
    register_cluster(&mut reg);
    register_worker(&mut reg);
    register_etcd(&mut reg);
    super::services_api::register(&mut reg);
    super::ingress_api::register(&mut reg);
    super::skupper_api::register(&mut reg);
    super::trace_api::register(&mut reg);
    super::netns_api::register(&mut reg);
    reg.finish()
}

fn register_globals(reg: &mut Registry) {
    reg.func(
        "cluster",
        "cluster(id, opts?) -> Cluster",
        "Declares the cluster named C + id (cluster(\"0\") is C0); opts #{ workers: 1-200, etcd: 1-5 } (default 3 and 2), \
         pods: #{ w1: [\"c1\"], w3: [\"c3\", \"c4\"] } (made by start() as soon as each worker has its subnet, a worker's in the order given), \
         flannel: #{ network, subnet_len, subnet_min, subnet_max, backend: \"vxlan\" or \"host-gw\", vni, port } (flannel's fields; \
         left out: 11.0.0.0/8, 20, 11.10.0.0, 11.99.0.0, vxlan, 100, 8472) or flannel: \"file.json\" in flannel's own format; start() brings it up",
        r#"let C0 = cluster("0", #{ workers: 3, etcd: 2 });"#,
        |ctx: NativeCallContext, id: &str| declare(&ctx, id, None),
    )
    .overload(|ctx: NativeCallContext, id: i64| declare(&ctx, &id.to_string(), None))
    .overload(|ctx: NativeCallContext, id: &str, m: Map| declare(&ctx, id, Some(&m)))
    .overload(|ctx: NativeCallContext, id: i64, m: Map| {
        declare(&ctx, &id.to_string(), Some(&m))
    })
    .func(
        "start",
        "start()",
        "Brings up every cluster declared since the last start(), with progress",
        "start();",
        |ctx: NativeCallContext| rt(sim(&ctx)?.start()),
    )
    .func(
        "get_cluster",
        "get_cluster(name) -> Cluster",
        "A declared cluster by name (\"C1\") or id (\"1\")",
        r#"let C1 = get_cluster("C1");"#,
        |ctx: NativeCallContext, id: &str| rt(sim(&ctx)?.get_cluster(id)),
    )
    .func(
        "clusters",
        "clusters() -> [Cluster]",
        "Every declared cluster",
        "for c in clusters() { print(c.name) }",
        |ctx: NativeCallContext| -> RResult<Array> {
            Ok(sim(&ctx)?.clusters().into_iter().map(Dynamic::from).collect())
        },
    )
    .func(
        "node",
        "node(name) -> Worker | EtcdNode | Cluster",
        "A node (or cluster) by its full name",
        r#"let w = node("C0w1");"#,
        |ctx: NativeCallContext, name: &str| node(&ctx, name),
    )
    .func(
        "node_names",
        "node_names() -> [string]",
        "The names of every cluster and node",
        "print(node_names());",
        |ctx: NativeCallContext| -> RResult<Array> {
            Ok(sim(&ctx)?.node_names().into_iter().map(Dynamic::from).collect())
        },
    )
    .func(
        "set_exec_timeout",
        "set_exec_timeout(seconds)",
        "The time limit of every later exec* in scripts (above 0, at most 86400; default 10)",
        "set_exec_timeout(30);",
        |ctx: NativeCallContext, t: f64| -> RResult<()> {
            sim(&ctx)?.set_exec_timeout(exec_timeout(t)?);
            Ok(())
        },
    )
    .overload(|ctx: NativeCallContext, t: i64| -> RResult<()> {
        sim(&ctx)?.set_exec_timeout(exec_timeout(t as f64)?);
        Ok(())
    })
    // Mininet's habits as values (the console words print them).
    .func(
        "pingall",
        "pingall() -> #{ sent, received, loss, interrupted, pairs }",
        "Every pod pings every other pod of its cluster once; loss in percent, pairs as #{ cluster, from, to, ok }",
        r#"expect(pingall().loss == 0, "every pod reaches every other");"#,
        |ctx: NativeCallContext| -> RResult<Map> { Ok(pingall_map(&sim(&ctx)?)) },
    )
    .func(
        "net",
        "net() -> [#{ node, dev, peer }]",
        "The links: each host's eth0 to the switch s0, flannel.100, each pod's eth0 to its worker's cni0",
        r#"for l in net() { print(l.node + " " + l.dev + " -> " + l.peer) }"#,
        |ctx: NativeCallContext| -> RResult<Array> {
            Ok(sim(&ctx)?.links().into_iter().map(|l| {
                let mut m = Map::new();
                m.insert("node".into(), l.node.into());
                m.insert("dev".into(), l.dev.into());
                m.insert("peer".into(), l.peer.into());
                m.into()
            }).collect())
        },
    )
    .func(
        "dump",
        "dump() -> [#{ name, kind, ns, ip, pids }]",
        "Every node and pod: kind, namespace, address, the pids knetsim started for it",
        r#"for n in dump() { print(n.name + " " + n.ip) }"#,
        |ctx: NativeCallContext| -> RResult<Array> {
            Ok(sim(&ctx)?.dump().into_iter().map(|n| {
                let mut m = Map::new();
                m.insert("name".into(), n.name.into());
                m.insert("kind".into(), n.kind.into());
                m.insert("ns".into(), n.ns.into());
                m.insert("ip".into(), n.ip.into());
                let pids: Array = n.pids.iter().map(|(p, _)| Dynamic::from(*p as i64)).collect();
                m.insert("pids".into(), pids.into());
                m.into()
            }).collect())
        },
    );
}

fn pingall_map(sim: &Sim) -> Map {
    let r = sim.pingall();
    let pairs: Array = r
        .pairs()
        .map(|p| {
            let mut m = Map::new();
            m.insert("cluster".into(), p.cluster.clone().into());
            m.insert("from".into(), p.from.clone().into());
            m.insert("to".into(), p.to.clone().into());
            m.insert(
                "ok".into(),
                p.ok.map(Dynamic::from).unwrap_or(Dynamic::UNIT),
            );
            m.into()
        })
        .collect();
    let mut m = Map::new();
    m.insert("sent".into(), (r.sent() as i64).into());
    m.insert("received".into(), (r.received() as i64).into());
    m.insert("loss".into(), (r.loss_percent() as i64).into());
    m.insert("interrupted".into(), r.interrupted.into());
    m.insert("pairs".into(), pairs.into());
    m
}

fn register_cluster(reg: &mut Registry) {
    reg.on::<Cluster>()
        .display(|c: &mut Cluster| format!("cluster {}", c.name()))
        .property(
            "name",
            "name -> string",
            "The cluster's name: C0, C1, ...",
            "print(C0.name);",
            |c: &mut Cluster| c.name(),
        )
        .method(
            "start",
            "start()",
            "Brings up this cluster (if declared and not yet up)",
            "C0.start();",
            |c: &mut Cluster| rt(c.start()),
        )
        .method(
            "get",
            "get(name) -> Worker | EtcdNode",
            "A worker or etcd member of this cluster by short name (w1, e1)",
            r#"let w1 = C0.get("w1");"#,
            |c: &mut Cluster, n: &str| rt(c.get(n)).map(node_to_dynamic),
        )
        .method(
            "worker",
            "worker(name) -> Worker",
            "A worker of this cluster by short name; an error if it is an etcd member",
            r#"let w2 = C0.worker("w2");"#,
            |c: &mut Cluster, n: &str| rt(c.worker(n)),
        )
        .method(
            "add_worker",
            "add_worker() -> Worker",
            "Joins a new worker to the running cluster (flannel, kube-proxy and all)",
            "let w4 = C0.add_worker();",
            |c: &mut Cluster| rt(c.add_worker()),
        )
        .method(
            "workers",
            "workers() -> [Worker]",
            "The cluster's workers",
            "for w in C0.workers() { print(w.name) }",
            |c: &mut Cluster| -> Array { c.workers().into_iter().map(Dynamic::from).collect() },
        )
        .method(
            "etcd_nodes",
            "etcd_nodes() -> [EtcdNode]",
            "The cluster's etcd members",
            "print(C0.etcd_nodes());",
            |c: &mut Cluster| -> Array { c.etcd_nodes().into_iter().map(Dynamic::from).collect() },
        )
        .property(
            "flannel",
            "flannel -> #{ network, subnet_len, subnet_min, subnet_max, backend, vni, port, device, json }",
            "The cluster's flannel network config (vni and port only for vxlan), the device pod traffic to other workers leaves by (flannel.VNI or eth0), and the JSON its etcd holds",
            r#"print(`${C0.flannel.network} over ${C0.flannel.device}`);"#,
            |c: &mut Cluster| super::flannel_api::to_map(&c.flannel(), &c.flannel_device()),
        )
        .method(
            "etcd_endpoints",
            "etcd_endpoints() -> string",
            "The etcd client URLs, comma-separated, as etcdctl --endpoints takes them",
            "print(C0.etcd_endpoints());",
            |c: &mut Cluster| c.etcd_endpoints(),
        )
        .method(
            "containers",
            "containers() -> [#{ name, worker }]",
            "Every pod of the cluster and the worker it runs on",
            "print(C0.containers());",
            |c: &mut Cluster| -> Array {
                c.containers()
                    .into_iter()
                    .map(|(name, worker)| {
                        let mut m = Map::new();
                        m.insert("name".into(), name.into());
                        m.insert("worker".into(), format!("{}{worker}", c.name()).into());
                        Dynamic::from_map(m)
                    })
                    .collect()
            },
        )
        .method(
            "create_containers",
            "create_containers(#{ worker: [pod, ...] }, opts?) -> [#{ name, worker, ip, ns, labels }]",
            "Creates many pods at once, CNI ADDs on different workers running concurrently; each worker's pods get their addresses in the order listed; opts #{ labels: #{ app: \"web\" } }",
            r#"C0.create_containers(#{ w1: ["a", "b"], w2: ["c"] });"#,
            |c: &mut Cluster, plan: Map| bulk_pods(c, plan, Map::new()),
        )
        .overload(|c: &mut Cluster, plan: Map, opts: Map| bulk_pods(c, plan, opts))
        .method(
            "find_container",
            "find_container(pod) -> Worker | ()",
            "The worker that runs pod, or () if none does",
            r#"let w = C0.find_container("c3");"#,
            |c: &mut Cluster, n: &str| -> Dynamic {
                c.find_container(n)
                    .map(Dynamic::from)
                    .unwrap_or(Dynamic::UNIT)
            },
        );
}

fn register_worker(reg: &mut Registry) {
    reg.on::<Worker>()
        .display(|w: &mut Worker| format!("worker {} ({})", w.name(), w.ip()))
        .property(
            "name",
            "name -> string",
            "The worker's name: C0w1, ...",
            "print(C0w1.name);",
            |w: &mut Worker| w.name(),
        )
        .property(
            "ip",
            "ip -> string",
            "The worker's underlay address (10.0.0.x)",
            "print(C0w1.ip);",
            |w: &mut Worker| w.ip().to_string(),
        )
        .property(
            "ns",
            "ns -> string",
            "The worker's network namespace, as `ip netns exec` names it (prefixed under --instance)",
            r#"print(`sudo ip netns exec ${C0w1.ns} ip route`);"#,
            |w: &mut Worker| w.ns(),
        )
        .property(
            "cluster",
            "cluster -> Cluster",
            "The cluster the worker belongs to",
            "print(C0w1.cluster);",
            |w: &mut Worker| w.cluster(),
        )
        .property(
            "dir",
            "dir -> string",
            "The worker's directory in the run directory (subnet.env, logs, CNI state)",
            r#"print(C0w1.exec("cat " + C0w1.dir + "/subnet.env"));"#,
            |w: &mut Worker| w.dir().display().to_string(),
        )
        .method(
            "exec",
            "exec(cmd) -> string",
            "Runs a shell command on the worker; returns its output (bounded by the exec timeout)",
            r#"print(C0w1.exec("ip route"));"#,
            |w: &mut Worker, cmd: &str| exec_result(w.exec(cmd)),
        )
        .method(
            "exec_async",
            "exec_async(cmd) -> int",
            "Starts a long-running command on the worker; returns its pid (output goes to async.log in dir)",
            r#"C0w1.exec_async("tcpdump -ni eth0 -c 4 udp port 8472");"#,
            |w: &mut Worker, cmd: &str| -> RResult<i64> {
                rt(w.exec_async(cmd)).map(|pid| pid as i64)
            },
        )
        .method(
            "wait_log",
            "wait_log(text, count?, seconds?)",
            "Waits until the output of the worker's exec_async commands (async.log) holds `count` (1) lines containing text, at most `seconds` (30): a capture's \"listening on\", its \"packets captured\"",
            r#"C0w1.exec_async("tcpdump -i eth0 -c 4 udp port 8472"); C0w1.wait_log("listening on");"#,
            |w: &mut Worker, text: &str| rt(w.wait_log(text, 1, WAIT_LOG_DEFAULT)),
        )
        .overload(|w: &mut Worker, text: &str, count: i64| {
            rt(w.wait_log(text, log_count(count)?, WAIT_LOG_DEFAULT))
        })
        .overload(|w: &mut Worker, text: &str, count: i64, seconds: i64| {
            rt(w.wait_log(text, log_count(count)?, log_seconds(seconds)?))
        })
        .method(
            "create_container",
            "create_container(pod, opts?) -> #{ name, worker, ip, ns, labels }",
            "Creates a pod: a namespace plus CNI ADD; opts #{ labels: #{ app: \"web\" } }",
            r#"C0w2.create_container("c2", #{ labels: #{ app: "web" } });"#,
            |w: &mut Worker, c: &str| -> RResult<Map> {
                rt(w.create_container(c, BTreeMap::new())).map(container_map)
            },
        )
        .overload(|w: &mut Worker, c: &str, opts: Map| -> RResult<Map> {
            let labels = labels_from_opts(&format!("create_container(\"{c}\", ...)"), &opts)?;
            rt(w.create_container(c, labels)).map(container_map)
        })
        .method(
            "container",
            "container(pod) -> #{ name, worker, ip, ns, labels }",
            "A pod of this worker as the simulator (the API server) knows it",
            r#"print(C0w2.container("c2").labels);"#,
            |w: &mut Worker, c: &str| -> RResult<Map> { rt(w.container(c)).map(container_map) },
        )
        .method(
            "set_labels",
            "set_labels(pod, labels)",
            "Replaces a pod's labels (kubectl label --overwrite): Services select it or stop selecting it",
            r#"C0w2.set_labels("c2", #{ app: "db" });"#,
            |w: &mut Worker, c: &str, labels: Map| -> RResult<()> {
                let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                rt(w.set_labels(c, labels))
            },
        )
        .method(
            "delete_container",
            "delete_container(pod)",
            "Deletes a pod: CNI DEL, then its namespace",
            r#"C0w3.delete_container("c3");"#,
            |w: &mut Worker, c: &str| rt(w.delete_container(c)),
        )
        .method(
            "containers",
            "containers() -> [string]",
            "The names of the pods on this worker",
            "print(C0w3.containers());",
            |w: &mut Worker| -> Array { w.containers().into_iter().map(Dynamic::from).collect() },
        )
        .method(
            "container_ip",
            "container_ip(pod) -> string",
            "A pod's IP address",
            r#"let ip = C0w2.container_ip("c2");"#,
            |w: &mut Worker, c: &str| rt(w.container_ip(c)),
        )
        .method(
            "container_ns",
            "container_ns(pod) -> string",
            "A pod's network namespace, as `ip netns exec` names it (prefixed under --instance)",
            r#"print(`sudo ip netns exec ${C0w1.container_ns("c1")} ip addr`);"#,
            |w: &mut Worker, c: &str| rt(w.container(c)).map(|i| i.ns),
        )
        .method(
            "exec_container",
            "exec_container(pod, cmd) -> string",
            "Runs cmd in a pod; returns its output (bounded by the exec timeout)",
            r#"print(C0w1.exec_container("c1", "ping -c 3 11.10.0.2"));"#,
            |w: &mut Worker, c: &str, cmd: &str| exec_result(w.exec_container(c, cmd)),
        )
        .method(
            "exec_container_async",
            "exec_container_async(pod, cmd) -> int",
            "Starts a long-running command in a pod (a server); returns its pid",
            r#"C0w1.exec_container_async("c1", "python3 -m http.server 80");"#,
            |w: &mut Worker, c: &str, cmd: &str| -> RResult<i64> {
                rt(w.exec_container_async(c, cmd)).map(|pid| pid as i64)
            },
        )
        .method(
            "stop_agent",
            "stop_agent(agent)",
            "Stops flanneld, kube-proxy or skrouterd on purpose: it is not restarted until start_agent",
            r#"C0w1.stop_agent("kube-proxy");"#,
            |w: &mut Worker, agent: &str| rt(w.stop_agent(agent)),
        )
        .method(
            "start_agent",
            "start_agent(agent) -> int",
            "Starts a stopped agent with its first arguments; returns its pid once the cluster caught up",
            r#"C0w1.start_agent("kube-proxy");"#,
            |w: &mut Worker, agent: &str| -> RResult<i64> {
                rt(w.start_agent(agent)).map(|pid| pid as i64)
            },
        )
        .method(
            "agent_pid",
            "agent_pid(agent) -> int | ()",
            "The pid of a running agent (it changes when the agent is restarted), () while it is stopped",
            r#"print(C0w1.agent_pid("flanneld"));"#,
            // () for a stopped agent, so `if pid == ()` reads naturally.
            |w: &mut Worker, agent: &str| -> RResult<Dynamic> {
                rt(w.agent_pid(agent))
                    .map(|p| p.map_or(Dynamic::UNIT, |p| Dynamic::from(p as i64)))
            },
        );
}

fn register_etcd(reg: &mut Registry) {
    reg.on::<EtcdNode>()
        .display(|e: &mut EtcdNode| format!("etcd member {} ({})", e.name(), e.ip()))
        .property(
            "name",
            "name -> string",
            "The member's name: C0e1, ...",
            "print(C0e1.name);",
            |e: &mut EtcdNode| e.name(),
        )
        .property(
            "ip",
            "ip -> string",
            "The member's underlay address (10.1.0.x in C0, 10.2.0.x in C1, ...)",
            "print(C0e1.ip);",
            |e: &mut EtcdNode| e.ip().to_string(),
        )
        .property(
            "ns",
            "ns -> string",
            "The member's network namespace, as `ip netns exec` names it",
            r#"print(`sudo ip netns exec ${C0e1.ns} ss -ltn`);"#,
            |e: &mut EtcdNode| e.ns(),
        )
        .method(
            "exec",
            "exec(cmd) -> string",
            "Runs a shell command on the member (etcdctl finds the cluster); returns its output",
            r#"print(C0e1.exec("etcdctl member list"));"#,
            |e: &mut EtcdNode, cmd: &str| exec_result(e.exec(cmd)),
        );
}

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
    fn options_maps_are_checked() {
        let mut m = Map::new();
        m.insert("workers".into(), Dynamic::from(2_i64));
        m.insert("etcd".into(), Dynamic::from(1_i64));
        let (s, _, _) = spec_from_map("0", &m).unwrap();
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
