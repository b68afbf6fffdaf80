//! Bring-up: the underlay switch, hosts wired to it, etcd members, the flannel agents,
//! and the readiness waits between them (never fixed sleeps).

use super::addressing::{FLANNEL_PREFIX, UNDERLAY_PREFIX};
use super::{BringUpTimes, DaemonKind, DaemonSpec, Sim};
use crate::components::etcd;
use crate::netns::{self, netlink, process};
use crate::wait::{Poll, Wait};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const UNDERLAY_NODE: &str = "underlay";
pub const UNDERLAY_BRIDGE: &str = "s0";
const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
const FLANNEL_TIMEOUT: Duration = Duration::from_secs(30);

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
        nl.set_up(UNDERLAY_BRIDGE).await
    })?;
    sim.state().underlay_ready = true;
    Ok(ns)
}

/// A host (worker or etcd member): its namespace, `lo` up, and `eth0` on the underlay
/// with its address; the switch-side end is `<node>-eth0`, as Mininet names it.
fn create_host(sim: &Sim, underlay: &str, node: &str, ns: &str, ip: Ipv4Addr) -> Result<()> {
    sim.inner.record.create_namespace(ns)?;
    let peer = format!("{node}-eth0");
    let (peer2, underlay2) = (peer.clone(), underlay.to_string());
    netlink::with(ns, move |nl| async move {
        nl.set_up("lo").await?;
        nl.add_veth("eth0", &peer2).await?;
        nl.move_to_ns(&peer2, &underlay2).await?;
        nl.add_addr("eth0", ip, UNDERLAY_PREFIX).await?;
        nl.set_up("eth0").await
    })
    .with_context(|| format!("wiring {node} to the underlay"))?;
    netlink::with(underlay, move |nl| async move {
        nl.set_master(&peer, UNDERLAY_BRIDGE).await
    })?;
    // A worker routes between cni0 and flannel.N.
    netns::run_in(ns, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling ip_forward")
    })?;
    Ok(())
}

fn start_etcd_members(sim: &Sim, id: &str) -> Result<()> {
    let (members, states) = {
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
        (members, c.etcd.clone())
    };
    for (m, e) in members.iter().zip(&states) {
        let dir = sim.run_dir().join(&e.name);
        std::fs::create_dir_all(&dir)?;
        let data = etcd_data_dir(sim, &e.name)?;
        let args = etcd::member_args(m, &members, &data, &format!("knetsim-C{id}"));
        sim.spawn_daemon(DaemonSpec::new(
            DaemonKind::Etcd,
            &e.name,
            &e.ns,
            etcd::ETCD_BIN,
            args,
            dir.join("etcd.log"),
            format!("etcd {}", e.name),
        ))?;
    }
    Ok(())
}

/// etcd fsyncs its WAL on every write; on a busy disk that stalls elections for seconds.
/// The data is throwaway, so it lives in memory (/dev/shm/knetsim/<instance>, a private
/// directory of root's, checked like the run directory) when there is room for the WAL's
/// 64 MB preallocation, else in the run directory.
fn etcd_data_dir(sim: &Sim, member: &str) -> Result<std::path::PathBuf> {
    use crate::netns::{record, state};
    let roomy = nix::sys::statvfs::statvfs("/dev/shm")
        .map(|s| s.blocks_available() * s.fragment_size() > 1 << 30)
        .unwrap_or(false);
    if roomy {
        let shm_base = std::path::Path::new(state::SHM_BASE);
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
fn wait_subnet(sim: &Sim, id: &str, short: &str, agent: super::DaemonId) -> Result<()> {
    let w = super::Worker::handle(sim, id, short);
    let file = w.subnet_file();
    let log = w.dir().join("flanneld.log");
    Wait::new(
        format!(
            "the flannel agent on {} to write {}",
            w.name(),
            file.display()
        ),
        FLANNEL_TIMEOUT,
    )
    .every(Duration::from_millis(10))
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
    // Workers already seen complete are not asked again.
    let mut done = 0;
    Wait::new(
        format!("the overlay routes of C{id} (each worker to the other {want} workers' subnets)"),
        FLANNEL_TIMEOUT,
    )
    .hint(|| "see the workers' flanneld.log".into())
    .until(|| {
        while let Some((ns, name)) = workers.get(done) {
            // A flanneld stopped on purpose programs the new routes once started again;
            // one in a crash loop ends the wait with its error.
            if !sim.agent_wait(name, DaemonKind::Flanneld)? {
                done += 1;
                continue;
            }
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

/// Waits until cluster `id`'s etcd answers a linearizable read (so it has a leader).
fn wait_etcd(id: &str, ns: &str, endpoints: &str) -> Result<()> {
    Wait::new(
        format!("etcd of C{id} ({endpoints}) to elect a leader"),
        ETCD_TIMEOUT,
    )
    .hint(|| "see the etcd.log of its members in the run directory".into())
    .until(|| {
        Ok(match etcd::health_read(ns, endpoints) {
            Ok(()) => Poll::Ready(()),
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

/// Brings up clusters `ids` together: hosts, then every etcd, then every flannel agent.
pub(super) fn start_clusters(sim: &Sim, ids: &[String]) -> Result<()> {
    check_prerequisites()?;
    let t0 = Instant::now();
    let hosts: Vec<(String, String, Ipv4Addr)> = {
        let st = sim.state();
        st.clusters
            .iter()
            .filter(|c| ids.contains(&c.id))
            .flat_map(|c| {
                c.etcd
                    .iter()
                    .map(|e| (e.name.clone(), e.ns.clone(), e.ip))
                    .chain(
                        c.workers
                            .iter()
                            .map(|w| (w.name.clone(), w.ns.clone(), w.ip)),
                    )
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let pb = progress(sim, hosts.len() as u64 + 3);
    pb.set_message("wiring hosts to the underlay");
    let underlay = ensure_underlay(sim)?;
    for (name, ns, ip) in &hosts {
        create_host(sim, &underlay, name, ns, *ip)?;
        pb.inc(1);
    }
    pb.set_message("starting etcd");
    for id in ids {
        start_etcd_members(sim, id)?;
    }
    let waits: Vec<_> = ids
        .iter()
        .map(|id| {
            let c = super::Cluster::handle(sim, id);
            let (id, ns, eps) = (id.clone(), c.etcd_ns(), c.etcd_endpoints());
            std::thread::spawn(move || wait_etcd(&id, &ns, &eps))
        })
        .collect();
    for w in waits {
        w.join()
            .map_err(|_| anyhow::anyhow!("etcd wait panicked"))??;
    }
    let etcd_healthy = t0.elapsed();
    for id in ids {
        let c = super::Cluster::handle(sim, id);
        etcd::put(
            &c.etcd_ns(),
            &c.etcd_endpoints(),
            &format!("{FLANNEL_PREFIX}/config"),
            &c.flannel().to_json(),
        )?;
    }
    pb.inc(1);
    pb.set_message("starting flannel agents");
    let mut started = Vec::new();
    for id in ids {
        for w in super::Cluster::handle(sim, id).workers() {
            let agent = start_flannel(sim, id, w.short())?;
            started.push((id.clone(), w.short().to_string(), agent));
        }
    }
    for (id, short, agent) in &started {
        wait_subnet(sim, id, short, *agent)?;
        set_worker_started(sim, id, short);
        super::services::start_kube_proxy(sim, &super::Worker::handle(sim, id, short))?;
    }
    pb.inc(1);
    let flannel_ready = t0.elapsed();
    pb.set_message("waiting for the overlay routes");
    for id in ids {
        wait_converged(sim, id)?;
        let mut st = sim.state();
        st.clusters
            .iter_mut()
            .find(|c| &c.id == id)
            .unwrap()
            .started = true;
    }
    pb.inc(1);
    pb.finish_and_clear();
    let times = BringUpTimes {
        total: t0.elapsed(),
        etcd_healthy,
        flannel_ready,
    };
    sim.state().last_bringup = Some(times);
    if sim.progress() {
        let names: Vec<String> = ids.iter().map(|i| format!("C{i}")).collect();
        eprintln!(
            "{} {} up in {:.2} s (etcd healthy after {:.2} s)",
            crate::ui::green("✓"),
            names.join(", "),
            times.total.as_secs_f64(),
            etcd_healthy.as_secs_f64()
        );
    }
    Ok(())
}

/// Joins a worker to a running cluster.
pub(super) fn join_worker(sim: &Sim, id: &str, short: &str) -> Result<()> {
    let underlay = ensure_underlay(sim)?;
    let w = super::Worker::handle(sim, id, short);
    create_host(sim, &underlay, &w.name(), &w.ns(), w.ip())?;
    let agent = start_flannel(sim, id, short)?;
    wait_subnet(sim, id, short, agent)?;
    set_worker_started(sim, id, short);
    super::services::start_kube_proxy(sim, &w)?;
    wait_converged(sim, id)?;
    // The new worker programs the cluster's existing Services before it counts as joined.
    super::Cluster::handle(sim, id).wait_converged()
}
