//! Bring-up: the underlay switch, hosts wired to it, etcd members, the flannel agents,
//! and the readiness waits between them (never fixed sleeps).

use super::addressing::{FLANNEL_PREFIX, UNDERLAY_PREFIX};
use super::{BringUpTimes, DaemonKind, DaemonSpec, Sim};
use crate::components::etcd;
use crate::netns::route_watch::Announcements;
use crate::netns::{self, netlink, process};
use crate::wait::{FileWatch, Poll, Wait};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const UNDERLAY_NODE: &str = "underlay";
pub const UNDERLAY_BRIDGE: &str = "s0";
const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
const FLANNEL_TIMEOUT: Duration = Duration::from_secs(30);
/// How many agents' readiness waits run at once during bring-up.
const AGENT_WAITS: usize = 32;

fn progress(sim: &Sim, len: u64) -> ProgressBar {
    if !sim.progress() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// A span timer for profiling bring-up: with `KNETSIM_PHASES=1` each phase's end is
/// printed to stderr with the time since the start and since the previous phase.
struct Phases {
    t0: Instant,
    last: Instant,
    on: bool,
}

impl Phases {
    fn start() -> Phases {
        let now = Instant::now();
        Phases {
            t0: now,
            last: now,
            on: std::env::var_os("KNETSIM_PHASES").is_some_and(|v| v == "1"),
        }
    }

    fn done(&mut self, what: &str) {
        let now = Instant::now();
        if self.on {
            // The wall clock as the agents' logs print it (UTC), to line phases up with them.
            eprintln!(
                "phase {what}: +{:.3} s (at {:.3} s, {} UTC)",
                (now - self.last).as_secs_f64(),
                (now - self.t0).as_secs_f64(),
                crate::ui::wall_clock()
            );
        }
        self.last = now;
    }
}

fn check_prerequisites() -> Result<()> {
    process::require_binary(etcd::ETCD_BIN, "etcd-server")?;
    for p in ["bridge", "host-local", "loopback"] {
        process::require_binary(
            &format!("{}/{p}", crate::components::cni::cni_path()),
            "containernetworking-plugins",
        )?;
    }
    Ok(())
}

/// The underlay: one Linux bridge `s0` in a namespace of its own.
fn ensure_underlay(sim: &Sim) -> Result<String> {
    let ns = sim.ns_name(UNDERLAY_NODE);
    if sim.state().underlay_ready {
        return Ok(ns);
    }
    sim.inner.record.create_namespace(&ns)?;
    netlink::with(&ns, |nl| async move {
        nl.set_up("lo").await?;
        nl.add_bridge(UNDERLAY_BRIDGE).await?;
        nl.set_up(UNDERLAY_BRIDGE).await?;
        // The underlay is a plain switch: with br_netfilter loaded, every frame it forwarded
        // (etcd's traffic, the VXLAN between workers) went through the IP hooks of a
        // namespace without rules. Only this namespace's own setting changes (the session's
        // thread is inside it); without the module there is nothing to turn off.
        for table in ["iptables", "ip6tables", "arptables"] {
            let knob = format!("/proc/sys/net/bridge/bridge-nf-call-{table}");
            if std::path::Path::new(&knob).exists() {
                std::fs::write(&knob, "0").with_context(|| format!("writing 0 to {knob}"))?;
            }
        }
        Ok(())
    })?;
    sim.state().underlay_ready = true;
    Ok(ns)
}

/// A host (worker or etcd member): its namespace (already in the record), `lo` up, and
/// `eth0` on the underlay with its address; the switch-side end is `<node>-eth0`, as
/// Mininet names it. Returns whether the namespace was made here: when it was not (the
/// name is taken), its record entry must be taken back.
fn create_host(underlay: &str, node: &str, ns: &str, ip: Ipv4Addr) -> (bool, Result<()>) {
    if let Err(e) = netns::create(ns) {
        return (false, Err(e));
    }
    (true, wire_host(underlay, node, ns, ip))
}

fn wire_host(underlay: &str, node: &str, ns: &str, ip: Ipv4Addr) -> Result<()> {
    let peer = format!("{node}-eth0");
    let (peer2, underlay2) = (peer.clone(), underlay.to_string());
    netlink::with(ns, move |nl| async move {
        nl.set_up("lo").await?;
        nl.add_veth_into("eth0", &peer2, &underlay2).await?;
        nl.add_addr("eth0", ip, UNDERLAY_PREFIX).await?;
        disable_ipv6("eth0")?;
        nl.set_up("eth0").await?;
        // A worker routes between cni0 and flannel.N; the session's thread is inside
        // the namespace, so /proc/sys/net is this namespace's.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling ip_forward")
    })
    .with_context(|| format!("wiring {node} to the underlay"))?;
    let port = peer.clone();
    netlink::with(underlay, move |nl| async move {
        nl.set_master(&port, UNDERLAY_BRIDGE).await
    })?;
    await_link_up(underlay, node, ns, &peer)
}

/// Waits until a host's `eth0` and its switch port are both operationally up. The kernel
/// brings a link into service in a work queue after its carrier comes (its queueing
/// discipline, the bridge port's forwarding); on a busy machine that can lag, and an
/// agent started meanwhile lost its first ARP request for etcd and waited out the 1 s
/// before the kernel asks again (a few of 200 workers, most runs).
fn await_link_up(underlay: &str, node: &str, ns: &str, port: &str) -> Result<()> {
    let links = Announcements::links();
    links.listen(ns)?;
    let up = |ns: &str, dev: &str| {
        let dev = dev.to_string();
        netlink::with(ns, move |nl| async move { nl.is_oper_up(&dev).await })
    };
    Wait::new(
        format!("{node}'s eth0 and switch port to come up"),
        LINK_UP_TIMEOUT,
    )
    .wake_on(&links)
    // The switch port's own change is announced in the underlay: checked this often.
    .every(Duration::from_millis(2))
    .until(|| {
        Ok(if up(ns, "eth0")? && up(underlay, port)? {
            Poll::Ready(())
        } else {
            Poll::Pending("not operationally up yet".into())
        })
    })
}

/// How long a new link may take to come up (the kernel's link watch runs at least once a
/// second).
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// Turns IPv6 off on `dev` of the calling thread's namespace, before the link comes up.
/// The underlay is IPv4 only, and an IPv6 link announces itself when it comes up
/// (duplicate-address probe, listener reports, router solicitations: five multicast
/// frames per host). The switch floods each to every port, so at 200 hosts that was
/// about 200,000 frame copies through the kernel's per-CPU receive backlog (1,000
/// frames), which then dropped etcd's own traffic and stalled agents for TCP's 1 s
/// retransmission timeout. A kernel without IPv6 has nothing to turn off.
fn disable_ipv6(dev: &str) -> Result<()> {
    let knob = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
    match std::fs::write(&knob, "1") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.with_context(|| format!("turning IPv6 off on {dev} ({knob})")),
    }
}

/// A host to wire: its node name, namespace and underlay address.
type Host = (String, String, Ipv4Addr);

/// Wires `hosts` (node, namespace, address) to the underlay concurrently, all recorded
/// in one write before any exists, and runs `then(i)` for each host `i` as soon as it is
/// wired (its agents start there, while the others are still being wired). Entries of
/// namespaces not made here are taken back, so teardown never deletes a namespace this
/// run did not make.
fn wire_hosts<T: Send>(
    sim: &Sim,
    underlay: &str,
    hosts: &[(String, String, Ipv4Addr)],
    pb: &ProgressBar,
    then: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let names: Vec<String> = hosts.iter().map(|h| h.1.clone()).collect();
    sim.inner.record.add_namespaces(&names)?;
    let indexed: Vec<(usize, &(String, String, Ipv4Addr))> = hosts.iter().enumerate().collect();
    let results = crate::parallel::each(
        &indexed,
        crate::parallel::default_limit(),
        |(i, (node, ns, ip))| {
            if crate::interrupt::is_set() {
                return (
                    false,
                    Err(anyhow::anyhow!("interrupted before wiring {node}")),
                );
            }
            let (made, wired) = create_host(underlay, node, ns, *ip);
            pb.inc(1);
            (made, wired.and_then(|()| then(*i)))
        },
    );
    let unmade: Vec<String> = names
        .iter()
        .zip(&results)
        .filter(|(_, (made, _))| !made)
        .map(|(n, _)| n.clone())
        .collect();
    sim.inner.record.forget_namespaces(&unmade)?;
    results.into_iter().map(|(_, r)| r).collect()
}

/// Starts the first etcd member of cluster `id`; [`start_later_etcd_members`] starts the
/// others.
fn start_etcd_members(sim: &Sim, id: &str) -> Result<()> {
    spawn_etcd_member(sim, id, 0)
}

/// Starts etcd member `k` of cluster `id`.
fn spawn_etcd_member(sim: &Sim, id: &str, k: usize) -> Result<()> {
    let (members, e) = {
        let st = sim.state();
        let c = st.clusters.iter().find(|c| c.id == id).unwrap();
        let members: Vec<etcd::Member> = c
            .etcd
            .iter()
            .map(|e| etcd::Member {
                name: e.name.clone(),
                ip: e.ip,
            })
            .collect();
        (members, c.etcd[k].clone())
    };
    let dir = sim.run_dir().join(&e.name);
    std::fs::create_dir_all(&dir)?;
    let data = etcd_data_dir(sim, &e.name)?;
    let args = etcd::member_args(&members[k], &members, &data, &format!("knetsim-C{id}"));
    let mut spec = DaemonSpec::new(
        DaemonKind::Etcd,
        &e.name,
        &e.ns,
        etcd::ETCD_BIN,
        args,
        dir.join("etcd.log"),
        format!("etcd {}", e.name),
    );
    spec.env = etcd::member_env();
    // Its WAL segments sparse on the run directory's tmpfs, not 125 MB of memory a member.
    spec.start = process::DaemonStart::Datastore {
        nice: etcd::ELECTION_NICE,
    };
    sim.spawn_daemon(spec)?;
    Ok(())
}

/// How long a member is given to get past its bootstrap check (about 0.1 s) before the
/// next is started anyway: one that died meanwhile is reported by the election wait, so
/// it should not also hold the next member back for the election's whole timeout.
const ETCD_MEMBER_START: Duration = Duration::from_secs(3);

/// What etcd 3.4 logs once it has checked whether it was bootstrapped before.
const ETCD_BOOTSTRAP_CHECKED: &str = "etcdserver: starting member";

/// Starts the members of cluster `id` after the first, each once the one before has asked
/// the others whether it was bootstrapped already. A new member asks every other member's
/// peer port, for up to 1 s (etcd's bootstrap timeout); a member that has opened that port
/// answers only once past its own question. Started together, two members could each wait
/// on the other for the whole second (one election in five here took 1.2 s instead of
/// 0.25 s). Started in turn, a member's question finds the later ones' ports closed and
/// is refused at once; the later ones are still up within the first election timeout.
fn start_later_etcd_members(sim: &Sim, id: &str, stop: &AtomicBool) -> Result<()> {
    let names = etcd_member_names(sim, id);
    for k in 1..names.len() {
        let log = sim.run_dir().join(&names[k - 1]).join("etcd.log");
        let watch = FileWatch::appends(&log)?;
        let checked = Wait::new(
            format!("etcd member {} to start", names[k - 1]),
            ETCD_MEMBER_START,
        )
        .hint(|| format!("see {}", log.display()))
        .also_stop_on(stop)
        .wake_on(&watch)
        .every(Duration::from_millis(50))
        .until(|| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(if text.contains(ETCD_BOOTSTRAP_CHECKED) {
                Poll::Ready(())
            } else {
                Poll::Pending("not yet past its bootstrap check".into())
            })
        });
        if stop.load(std::sync::atomic::Ordering::SeqCst) || crate::interrupt::is_set() {
            return checked;
        }
        // A member that never got there (another etcd version, a crash) does not hold up
        // the rest: the election wait reports what went wrong.
        spawn_etcd_member(sim, id, k)?;
    }
    Ok(())
}

/// The names of cluster `id`'s etcd members, in order (`C0e1`, `C0e2`).
fn etcd_member_names(sim: &Sim, id: &str) -> Vec<String> {
    let st = sim.state();
    let c = st.clusters.iter().find(|c| c.id == id).unwrap();
    c.etcd.iter().map(|e| e.name.clone()).collect()
}

/// Gives cluster `id`'s etcd members the simulator's priority again once they have
/// elected (they start ahead of it: [`etcd::ELECTION_NICE`]). Best effort: a member that
/// keeps its priority only runs ahead of the rest.
fn end_election_priority(sim: &Sim, id: &str) {
    let names = etcd_member_names(sim, id);
    for name in names {
        let pid = sim
            .inner
            .daemons
            .daemon_on(&name, DaemonKind::Etcd)
            .and_then(|d| sim.daemon_pid(d));
        if let Some(pid) = pid {
            let _ = process::renice(pid, 0);
        }
    }
}

/// etcd fsyncs its WAL on every write; on a busy disk that stalls elections for seconds.
/// The data is throwaway, so it lives in memory: in /dev/shm/knetsim/<instance> (a private
/// directory of root's, checked like the run directory) when there is room for the WAL's
/// 64 MB preallocation, else in the run directory (itself in /dev/shm where /run is on disk).
fn etcd_data_dir(sim: &Sim, member: &str) -> Result<std::path::PathBuf> {
    use crate::netns::{record, state};
    if let Some(shm_base) = state::etcd_data_base() {
        let base = record::shm_dir(sim.instance());
        // A planted directory or link is refused before it is recorded, so teardown never
        // touches it; ours is recorded before it exists, so a crash leaves nothing unrecorded.
        let check = || -> Result<()> {
            if state::existing_private_dir(shm_base)? {
                state::existing_private_dir(&base)?;
            }
            Ok(())
        };
        check().context("preparing etcd's data directory")?;
        sim.inner.record.add_path(&base)?;
        let base = state::ensure_instance_dir(shm_base, sim.instance())
            .context("preparing etcd's data directory")?;
        let dir = base.join(member);
        std::fs::create_dir_all(&dir)?;
        return Ok(dir);
    }
    Ok(sim.run_dir().join(member).join("data"))
}

fn flanneld_args(sim: &Sim, id: &str, short: &str) -> (String, Vec<String>, std::path::PathBuf) {
    let w = super::Worker::handle(sim, id, short);
    let eps = w.cluster().etcd_endpoints();
    let args = vec![
        "flanneld".to_string(),
        "--etcd-endpoints".into(),
        eps,
        "--iface".into(),
        w.ip().to_string(),
        "--subnet-file".into(),
        w.subnet_file().display().to_string(),
        "--etcd-prefix".into(),
        FLANNEL_PREFIX.into(),
        "--ip-masq".into(),
    ];
    (w.ns(), args, w.dir().join("flanneld.log"))
}

fn start_flannel(sim: &Sim, id: &str, short: &str) -> Result<super::DaemonId> {
    let w = super::Worker::handle(sim, id, short);
    std::fs::create_dir_all(w.dir())?;
    // What a kubelet's runtime would find in /etc/cni/net.d on this node.
    let net_d = w.dir().join("cni").join("net.d");
    std::fs::create_dir_all(&net_d)?;
    std::fs::write(
        net_d.join("10-flannel.conf"),
        serde_json::to_vec_pretty(&w.cni().conf())?,
    )?;
    let (ns, args, log) = flanneld_args(sim, id, short);
    let spawned = sim.spawn_daemon(DaemonSpec::new(
        DaemonKind::Flanneld,
        &w.name(),
        &ns,
        &sim.knetsim_exe(),
        args,
        log,
        format!("flanneld {}", w.name()),
    ))?;
    Ok(spawned.id)
}

/// Waits until the worker's agent has written subnet.env. The supervisor restarts an
/// agent that exits meanwhile; a crash loop ends the wait at once with its error.
/// `stop` ends the wait early (something beside it failed).
fn wait_subnet(
    sim: &Sim,
    id: &str,
    short: &str,
    agent: super::DaemonId,
    stop: &AtomicBool,
) -> Result<()> {
    let w = super::Worker::handle(sim, id, short);
    let file = w.subnet_file();
    let log = w.dir().join("flanneld.log");
    let watch = FileWatch::dir(file.parent().unwrap_or(&w.dir()))?;
    Wait::new(
        format!(
            "the flannel agent on {} to write {}",
            w.name(),
            file.display()
        ),
        FLANNEL_TIMEOUT,
    )
    // The file event wakes it; the interval only catches an agent that died meanwhile.
    .every(Duration::from_millis(250))
    .wake_on(&watch)
    .also_stop_on(stop)
    .hint(|| {
        format!(
            "its log ({}) ends with:\n{}",
            log.display(),
            super::supervise::log_tail(&log, 5)
        )
    })
    .until(|| {
        if file.exists() {
            return Ok(Poll::Ready(()));
        }
        match sim.inner.daemons.health(agent) {
            Some(super::supervise::Health::Failed(m)) => {
                bail!(
                    "the flannel agent on {} wrote no {}: {m}",
                    w.name(),
                    file.display()
                )
            }
            Some(super::supervise::Health::Stopped) | None => bail!(
                "the flannel agent on {} was stopped before it wrote {}",
                w.name(),
                file.display()
            ),
            _ => {}
        }
        Ok(Poll::Pending(
            "the agent runs and has written no subnet.env yet".into(),
        ))
    })
}

/// Waits until every started worker of cluster `id` has an overlay route to each other
/// worker's subnet.
fn wait_converged(sim: &Sim, id: &str) -> Result<()> {
    let workers: Vec<(String, String)> = {
        let st = sim.state();
        let c = st.clusters.iter().find(|c| c.id == id).unwrap();
        c.workers
            .iter()
            .filter(|w| w.started)
            .map(|w| (w.ns.clone(), w.name.clone()))
            .collect()
    };
    let want = workers.len().saturating_sub(1);
    let device = super::Cluster::handle(sim, id).flannel_device();
    // Workers already seen complete are not asked again; the wait sleeps on the route
    // announcements of the worker it looks at.
    let mut done = 0;
    let routes = Announcements::routes();
    Wait::new(
        format!("the overlay routes of C{id} (each worker to the other {want} workers' subnets)"),
        FLANNEL_TIMEOUT,
    )
    // The announcements wake it; the interval only catches an agent that died meanwhile.
    .every(Duration::from_millis(250))
    .wake_on(&routes)
    .hint(|| "see the workers' flanneld.log".into())
    .until(|| {
        while let Some((ns, name)) = workers.get(done) {
            // A flanneld stopped on purpose programs the new routes once started again;
            // one in a crash loop ends the wait with its error.
            if !sim.agent_wait(name, DaemonKind::Flanneld)? {
                done += 1;
                continue;
            }
            routes.listen(ns)?;
            let dev = device.clone();
            let n = netlink::with(ns, |nl| async move { nl.routes_via(&dev).await })?;
            if n < want {
                return Ok(Poll::Pending(format!(
                    "{name} has routes to {n} of the {want} other workers' subnets"
                )));
            }
            done += 1;
        }
        Ok(Poll::Ready(()))
    })
}

/// Puts cluster `id`'s flannel network `config` as soon as its etcd has a leader: the put
/// itself is the test (it waits out an election under way; a member not listening yet
/// refuses at once and is tried again), so the agents waiting on the key get it one round
/// trip after the election instead of after a health read and a second connection.
/// `stop` ends the wait early (the wiring beside it failed).
fn put_config_once_elected(
    id: &str,
    ns: &str,
    endpoints: &str,
    config: &str,
    stop: &AtomicBool,
) -> Result<()> {
    let members = etcd::Members::parse(endpoints)?;
    let key = format!("{FLANNEL_PREFIX}/config");
    Wait::new(
        format!("etcd of C{id} ({endpoints}) to elect a leader"),
        ETCD_TIMEOUT,
    )
    .hint(|| "see the etcd.log of its members in the run directory".into())
    .also_stop_on(stop)
    .until(|| {
        let (k, v) = (key.clone(), config.to_string());
        let put = etcd::with_client(ns, &members, move |c| async move {
            // One round over the members: the wait is the retry.
            let mut c = c.with_timing(etcd::Timing {
                budget: Duration::ZERO,
                ..etcd::Timing::default()
            });
            c.call(&format!("writing {k}"), |mut c| {
                let (k, v) = (k.clone(), v.clone());
                async move { c.put(k, v, None).await }
            })
            .await
        });
        Ok(match put {
            Ok(_) => Poll::Ready(()),
            Err(e) => Poll::Pending(format!("{e:#}")),
        })
    })
}

/// [`wait_converged`] for a restarted agent.
pub(super) fn wait_routes(sim: &Sim, id: &str) -> Result<()> {
    wait_converged(sim, id)
}

fn set_worker_started(sim: &Sim, id: &str, short: &str) {
    let mut st = sim.state();
    let c = st.clusters.iter_mut().find(|c| c.id == id).unwrap();
    if let Some(w) = c.workers.iter_mut().find(|w| w.short == short) {
        w.started = true;
    }
}

/// Starts a wired worker's agents: its flannel agent and its kube-proxy. Both wait for
/// etcd (and flannel for its network config) themselves, so they are started as soon as
/// the worker is wired, while etcd still elects. Returns the flannel agent.
fn start_agents(sim: &Sim, id: &str, short: &str) -> Result<super::DaemonId> {
    let agent = start_flannel(sim, id, short)?;
    super::services::start_kube_proxy(sim, &super::Worker::handle(sim, id, short))?;
    Ok(agent)
}

/// Each cluster's etcd election by cluster id, as [`BringUpTimes::elections`] has it.
type Elections = Vec<(String, Duration)>;

/// Wires the workers and starts their agents, announcing each worker whose kube-proxy
/// started on `kube_proxies`, while each cluster's etcd election is awaited beside it
/// (its flannel config put as soon as it has a leader). Returns the flannel agents and
/// when each cluster's etcd became healthy (since `t0`), in the order of `ids`. `failed`
/// is set when the wiring fails and stops the election waits.
fn wire_workers(
    sim: &Sim,
    ids: &[String],
    underlay: &str,
    (hosts, workers): (&[Host], &[(String, String)]),
    pb: &ProgressBar,
    (t0, failed): (Instant, &AtomicBool),
    (kube_proxies, agents): (Sender<usize>, Sender<(usize, super::DaemonId)>),
) -> (Result<Vec<super::DaemonId>>, Result<Elections>) {
    std::thread::scope(|s| {
        let waits: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(move || elect(sim, id, t0, failed)))
            .collect();
        let wired = wire_hosts(sim, underlay, hosts, pb, |i| {
            let (id, short) = &workers[i];
            let agent = start_agents(sim, id, short)?;
            // The receivers are gone only when their waits failed, which ends bring-up.
            let _ = kube_proxies.send(i);
            let _ = agents.send((i, agent));
            Ok(agent)
        });
        drop(kube_proxies);
        drop(agents);
        if wired.is_err() {
            failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        (wired, join_elections(ids, waits))
    })
}

/// Starts cluster `id`'s etcd members after the first and waits for its election; its
/// flannel config goes in as soon as its own etcd has a leader (its agents are waiting on
/// the key, whatever the other clusters do). Returns the time since `t0`.
fn elect(sim: &Sim, id: &str, t0: Instant, failed: &AtomicBool) -> Result<Duration> {
    let c = super::Cluster::handle(sim, id);
    let (ns, eps, config) = (c.etcd_ns(), c.etcd_endpoints(), c.flannel().to_json());
    let elected = start_later_etcd_members(sim, id, failed)
        .and_then(|()| put_config_once_elected(id, &ns, &eps, &config, failed))
        .map(|()| t0.elapsed());
    // Elected or not, the members are ordinary processes from here on.
    end_election_priority(sim, id);
    elected
}

/// The results of [`elect`] for each of `ids`, in order; the first error if any failed.
fn join_elections(
    ids: &[String],
    waits: Vec<std::thread::ScopedJoinHandle<'_, Result<Duration>>>,
) -> Result<Elections> {
    let mut healthy = Ok(Vec::new());
    for (id, w) in ids.iter().zip(waits) {
        let r = w
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("etcd wait panicked")));
        healthy = match (healthy, r) {
            (Ok(mut each), Ok(t)) => {
                each.push((id.clone(), t));
                Ok(each)
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    healthy
}

/// What start() does for clusters `ids` up to their etcd elections, and nothing else:
/// the underlay switch, the etcd hosts, the members started the same way, each cluster's
/// config put once it has elected. No worker is wired and no agent started. The
/// benchmarks' baseline for start(): the etcd election alone. Each cluster's election
/// since the call.
pub(super) fn elect_alone(sim: &Sim, ids: &[String]) -> Result<Elections> {
    check_prerequisites()?;
    let t0 = Instant::now();
    let etcd_hosts: Vec<Host> = {
        let st = sim.state();
        st.clusters
            .iter()
            .filter(|c| ids.contains(&c.id))
            .flat_map(|c| c.etcd.iter().map(|e| (e.name.clone(), e.ns.clone(), e.ip)))
            .collect()
    };
    let underlay = ensure_underlay(sim)?;
    wire_hosts(sim, &underlay, &etcd_hosts, &ProgressBar::hidden(), |_| {
        Ok(())
    })?;
    for id in ids {
        start_etcd_members(sim, id)?;
    }
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let waits: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(|| elect(sim, id, t0, &failed)))
            .collect();
        join_elections(ids, waits)
    })
}

/// Runs `wait` for each item that comes on `started` (a pool of these share it), until it
/// closes. The first error ends this one's waits and sets `failed`; `failed` set elsewhere
/// stops them too, and a wait stopped that way returns quietly: the first failure is the
/// one start() reports.
fn serve_waits<T>(
    started: &Mutex<Receiver<T>>,
    failed: &AtomicBool,
    wait: impl Fn(T) -> Result<()>,
) -> Result<()> {
    loop {
        let next = started
            .lock()
            .map_err(|_| anyhow::anyhow!("bring-up waits poisoned"))?
            .recv();
        let Ok(item) = next else {
            return Ok(());
        };
        if let Err(e) = wait(item) {
            if failed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
            return Err(e);
        }
    }
}

/// A pool of `n` threads running [`serve_waits`] on `started`.
fn wait_pool<'s, T: Send + 's>(
    s: &'s std::thread::Scope<'s, '_>,
    n: usize,
    started: &'s Mutex<Receiver<T>>,
    failed: &'s AtomicBool,
    wait: impl Fn(T) -> Result<()> + Send + Sync + 's,
) -> Vec<std::thread::ScopedJoinHandle<'s, Result<()>>> {
    let wait = std::sync::Arc::new(wait);
    (0..n)
        .map(|_| {
            let wait = wait.clone();
            s.spawn(move || serve_waits(started, failed, |item| wait(item)))
        })
        .collect()
}

fn join_pool(pool: Vec<std::thread::ScopedJoinHandle<'_, Result<()>>>, what: &str) -> Result<()> {
    pool.into_iter()
        .map(|t| {
            t.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("{what} wait panicked")))
        })
        .collect::<Result<Vec<()>>>()
        .map(|_| ())
}

/// Brings up clusters `ids` together, as a pipeline: the etcd members are wired and
/// started first so their election overlaps the wiring of the workers (concurrent); each
/// worker's agents start as soon as it is wired and wait for etcd and the network config
/// themselves, so once the config is written only their leases and routes are left.
pub(super) fn start_clusters(sim: &Sim, ids: &[String]) -> Result<()> {
    check_prerequisites()?;
    let t0 = Instant::now();
    let mut phases = Phases::start();
    let (etcd_hosts, worker_hosts, workers) = {
        let st = sim.state();
        let mut etcd_hosts = Vec::new();
        let mut worker_hosts = Vec::new();
        let mut workers = Vec::new();
        for c in st.clusters.iter().filter(|c| ids.contains(&c.id)) {
            etcd_hosts.extend(c.etcd.iter().map(|e| (e.name.clone(), e.ns.clone(), e.ip)));
            for w in &c.workers {
                worker_hosts.push((w.name.clone(), w.ns.clone(), w.ip));
                workers.push((c.id.clone(), w.short.clone()));
            }
        }
        (etcd_hosts, worker_hosts, workers)
    };
    let pb = progress(sim, (etcd_hosts.len() + worker_hosts.len()) as u64 + 3);
    pb.set_message("starting etcd");
    let underlay = ensure_underlay(sim)?;
    phases.done("underlay switch made");
    wire_hosts(sim, &underlay, &etcd_hosts, &pb, |_| Ok(()))?;
    phases.done("etcd hosts wired");
    for id in ids {
        start_etcd_members(sim, id)?;
    }
    phases.done("etcd started");
    pb.set_message("wiring hosts and starting their agents (etcd elects meanwhile)");
    // The election is awaited beside the wiring, and each kube-proxy's table as soon as it
    // is started (it makes its table while etcd elects); a failure stops the others.
    let failed = AtomicBool::new(false);
    let (kube_proxies, kube_proxy_started) = channel::<usize>();
    let kube_proxy_started = Mutex::new(kube_proxy_started);
    let (agents, agent_started) = channel::<(usize, super::DaemonId)>();
    let agent_started = Mutex::new(agent_started);
    let pool = AGENT_WAITS.min(workers.len());
    let (rest, tables) = std::thread::scope(|s| {
        let tables = wait_pool(s, pool, &kube_proxy_started, &failed, |i: usize| {
            let (id, short) = &workers[i];
            let w = super::Worker::handle(sim, id, short);
            super::Cluster::handle(sim, id).wait_kube_proxy(&w, &failed)
        });
        // Each worker's subnet is awaited as soon as its agent starts, side by side, so one
        // slow agent does not hold up the others. Pods declared with the cluster need only
        // their own worker's subnet: their namespaces and plugins start up while the
        // election runs, and they are attached beside the other workers' agents.
        let subnets = wait_pool(s, pool, &agent_started, &failed, |(i, agent)| {
            let (id, short) = &workers[i];
            super::Cluster::handle(sim, id).make_planned_pods(short, &|| {
                wait_subnet(sim, id, short, agent, &failed)?;
                set_worker_started(sim, id, short);
                Ok(())
            })
        });
        let rest = (|| -> Result<(Elections, Duration)> {
            let (wired, elections) = wire_workers(
                sim,
                ids,
                &underlay,
                (&worker_hosts, &workers),
                &pb,
                (t0, &failed),
                (kube_proxies, agents),
            );
            wired?;
            phases.done("workers wired, their agents started");
            let elections = elections?;
            pb.inc(1);
            phases.done("etcd healthy, network config put");
            pb.set_message("waiting for the flannel agents' subnets");
            join_pool(subnets, "subnet")?;
            pb.inc(1);
            let flannel_ready = t0.elapsed();
            phases.done("subnets written, declared pods made");
            pb.set_message("waiting for the overlay routes");
            crate::parallel::each(ids, ids.len(), |id| wait_converged(sim, id))
                .into_iter()
                .collect::<Result<Vec<()>>>()?;
            phases.done("overlay converged");
            Ok((elections, flannel_ready))
        })();
        if rest.is_err() {
            failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        (rest, join_pool(tables, "kube-proxy"))
    });
    let (elections, flannel_ready) = rest?;
    let etcd_healthy = elections.iter().map(|(_, t)| *t).max().unwrap_or_default();
    tables?;
    for id in ids {
        let mut st = sim.state();
        st.clusters
            .iter_mut()
            .find(|c| &c.id == id)
            .unwrap()
            .started = true;
    }
    phases.done("kube-proxy tables programmed");
    pb.inc(1);
    pb.finish_and_clear();
    let total = t0.elapsed();
    sim.state().last_bringup = Some(BringUpTimes {
        total,
        etcd_healthy,
        elections,
        flannel_ready,
    });
    if sim.progress() {
        let names: Vec<String> = ids.iter().map(|i| format!("C{i}")).collect();
        eprintln!(
            "{} {} up in {:.2} s (etcd healthy after {:.2} s)",
            crate::ui::green("✓"),
            names.join(", "),
            total.as_secs_f64(),
            etcd_healthy.as_secs_f64()
        );
    }
    Ok(())
}

/// Joins a worker to a running cluster.
pub(super) fn join_worker(sim: &Sim, id: &str, short: &str) -> Result<()> {
    let underlay = ensure_underlay(sim)?;
    let w = super::Worker::handle(sim, id, short);
    let agents = wire_hosts(
        sim,
        &underlay,
        &[(w.name(), w.ns(), w.ip())],
        &ProgressBar::hidden(),
        |_| start_agents(sim, id, short),
    )?;
    wait_subnet(sim, id, short, agents[0], &AtomicBool::new(false))?;
    set_worker_started(sim, id, short);
    wait_converged(sim, id)?;
    // The new worker programs the cluster's existing Services before it counts as joined.
    super::Cluster::handle(sim, id).wait_converged()
}
