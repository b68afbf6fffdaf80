//! The packet walk: one real probe from a pod or a node, followed through every namespace
//! of its cluster by the kernel's own nftables tracing. For each trace it adds the small
//! `knetsim-trace` table to each namespace, listens with `nft monitor trace` there (one
//! process per namespace, ended by its pid), sends the probe as a fresh flow (a new source
//! port or ICMP id), then removes every table it added and decodes the hops in path order.

mod assemble;
mod ingress;
mod monitor;
mod probe;
mod skupper;

use super::{EtcdNode, Sim, Worker};
use crate::components::nft as nftcmd;
use crate::components::trace::{self as tr, links, links::Link, Hop, Probe, Proto};
use crate::netns::process;
use anyhow::{bail, Context, Result};
use assemble::assemble;
use monitor::{Monitor, Tables};
use probe::{send_probe, Answer};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long a monitor may take to subscribe to trace events.
const MONITOR_READY: Duration = Duration::from_secs(3);
/// After the probe: output stops growing for this long, at most SETTLE_MAX.
const SETTLE_QUIET: Duration = Duration::from_millis(250);
const SETTLE_MAX: Duration = Duration::from_secs(3);
/// Source ports (and ICMP ids) for probes: above Linux's ephemeral range (32768-60999),
/// so no socket of the kernel's choosing has them.
const PROBE_TAGS: std::ops::RangeInclusive<u16> = 61000..=65000;

/// What to send: `#{ proto: "tcp", port: 80 }`.
#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    pub proto: Option<String>,
    pub port: Option<i64>,
    /// Print every hop, also the nft rules that only jump or return (the returned hops
    /// always hold every one).
    pub full: bool,
}

/// A finished walk: the hops in order and the annotated text.
#[derive(Debug, Clone)]
pub struct Walk {
    pub hops: Vec<Hop>,
    /// The probe got its answer (echo reply, SYN-ACK, a UDP reply).
    pub answered: bool,
    pub text: String,
    /// The kernel's own trace lines, by namespace (node or pod label), for a closer look.
    pub raw: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Pod { worker: String },
    Worker,
    Etcd,
}

/// A namespace the probe may pass.
#[derive(Debug, Clone)]
struct Place {
    label: String,
    name: String,
    ns: String,
    ip: Ipv4Addr,
    role: Role,
}

impl Worker {
    /// Traces one probe from pod `pod` on this worker (or, with `pod` None, from the
    /// worker itself) to `dest` (`IP` or `IP:PORT`).
    pub fn trace(&self, pod: Option<&str>, dest: &str, opts: &TraceOptions) -> Result<Walk> {
        self.require_started_for_trace()?;
        let places = places(&self.sim, &self.cluster);
        let src = match pod {
            Some(p) => {
                self.container(p)?;
                let name = format!("{p}@{}", self.name());
                places.iter().find(|pl| pl.label == name).cloned()
            }
            None => places.iter().find(|pl| pl.label == self.name()).cloned(),
        }
        .context("the source is not in the simulation's state")?;
        run(&self.sim, &self.cluster, places, src, dest, opts)
    }

    fn require_started_for_trace(&self) -> Result<()> {
        if !self.is_started() {
            bail!(
                "{} is not running yet: call start() first, then trace",
                self.name()
            );
        }
        Ok(())
    }
}

impl EtcdNode {
    /// Traces one probe from this etcd member (a machine outside the pod network, on the
    /// underlay) to `dest`, e.g. a NodePort on a worker.
    pub fn trace(&self, dest: &str, opts: &TraceOptions) -> Result<Walk> {
        let places = places(&self.sim, &self.cluster);
        let src = places
            .iter()
            .find(|p| p.label == self.name())
            .cloned()
            .context("the etcd member is not in the simulation's state")?;
        run(&self.sim, &self.cluster, places, src, dest, opts)
    }
}

/// Every namespace of cluster `id`: its workers, their pods, its etcd members.
fn places(sim: &Sim, id: &str) -> Vec<Place> {
    let st = sim.state();
    let Some(c) = st.clusters.iter().find(|c| c.id == id) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for w in c.workers.iter().filter(|w| w.started) {
        out.push(Place {
            label: w.name.clone(),
            name: w.name.clone(),
            ns: w.ns.clone(),
            ip: w.ip,
            role: Role::Worker,
        });
        for (name, ct) in &w.containers {
            if let Ok(ip) = ct.ip.parse() {
                out.push(Place {
                    label: format!("{name}@{}", w.name),
                    name: name.clone(),
                    ns: ct.ns.clone(),
                    ip,
                    role: Role::Pod {
                        worker: w.name.clone(),
                    },
                });
            }
        }
    }
    for e in &c.etcd {
        out.push(Place {
            label: e.name.clone(),
            name: e.name.clone(),
            ns: e.ns.clone(),
            ip: e.ip,
            role: Role::Etcd,
        });
    }
    out
}

/// `dest` and the options as a destination, protocol and port, or a message saying what to write.
fn parse_target(dest: &str, opts: &TraceOptions) -> Result<(Ipv4Addr, Proto, Option<u16>)> {
    let example = "e.g. trace(\"c1\", \"100.64.10.1:80\") or trace(\"c1\", \"11.10.0.2\", #{ proto: \"udp\", port: 53 })";
    let (host, port_text) = match dest.trim().split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (dest.trim(), None),
    };
    let ip: Ipv4Addr = host.parse().map_err(|_| {
        anyhow::anyhow!("trace: '{dest}' is not an IPv4 address or IP:PORT ({example})")
    })?;
    let port_in_dest =
        match port_text {
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                anyhow::anyhow!("trace: '{p}' in '{dest}' is not a port (1-65535)")
            })?),
            None => None,
        };
    let port_opt = match opts.port {
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        Some(p) => bail!("trace: port {p} is not a port (1-65535)"),
        None => None,
    };
    let port = match (port_in_dest, port_opt) {
        (Some(a), Some(b)) if a != b => {
            bail!("trace: '{dest}' says port {a} but the options say port {b}: give the port once")
        }
        (a, b) => a.or(b),
    };
    let proto = match &opts.proto {
        Some(p) => Proto::parse(p)
            .ok_or_else(|| anyhow::anyhow!("trace: proto '{p}' is not one of tcp, udp, icmp"))?,
        None if port.is_some() => Proto::Tcp,
        None => Proto::Icmp,
    };
    match (proto, port) {
        (Proto::Icmp, Some(p)) => bail!(
            "trace: icmp has no ports, but port {p} was given: drop the port, or say #{{ proto: \"tcp\" }}"
        ),
        (Proto::Tcp | Proto::Udp, None) => bail!(
            "trace: {} needs a port: write the destination as {ip}:PORT or pass #{{ port: 80 }}",
            proto.name()
        ),
        _ => {}
    }
    Ok((ip, proto, port))
}

fn run(
    sim: &Sim,
    cluster: &str,
    places: Vec<Place>,
    src: Place,
    dest: &str,
    opts: &TraceOptions,
) -> Result<Walk> {
    if let Some((dest, path)) = dest.split_once('/') {
        return ingress::walk(sim, cluster, &places, &src, dest, &format!("/{path}"), opts);
    }
    let (ip, proto, port) = parse_target(dest, opts)?;
    if let (Proto::Tcp, Some(p)) = (proto, port) {
        if let Some(route) = skupper::route(sim, cluster, ip, p) {
            return skupper::walk(sim, &src, ip, p, route, opts.full);
        }
    }
    let tag = rand::random_range(PROBE_TAGS);
    let mut leg = walk_leg(&places, &src, (ip, proto, port), tag, None, || {
        send_probe(&src.ns, ip, proto, port, tag)
    })?;
    explain_missing_dnat(sim, cluster, ip, &mut leg.hops);
    let what = match port {
        Some(p) => format!("{} {ip}:{p}", proto.name()),
        None => format!("{} {ip}", proto.name()),
    };
    let tag_name = if proto == Proto::Icmp {
        "id"
    } else {
        "source port"
    };
    let header = format!(
        "Packet walk: {what} from {} ({}), a fresh flow ({tag_name} {tag})\n",
        src.label, src.ip
    );
    Ok(Walk {
        text: header + render(&leg.hops, opts.full).as_str(),
        hops: leg.hops,
        answered: leg.answered,
        raw: leg.raw,
    })
}

/// A lost probe to a Service address that nothing rewrote: the likely cause is not the
/// device it was last seen on but kube-proxy's rules (missing, flushed, or never written
/// on that node), so the last hop says so.
fn explain_missing_dnat(sim: &Sim, cluster: &str, dest: Ipv4Addr, hops: &mut [Hop]) {
    let st = super::Cluster::handle(sim, cluster).service_state();
    let is_service =
        st.services.iter().any(|s| s.cluster_ip == dest) || st.vips.iter().any(|v| v.vip == dest);
    if !is_service || hops.iter().any(|h| h.what == "dnat") {
        return;
    }
    let Some(last) = hops.last_mut().filter(|h| h.what == "lost") else {
        return;
    };
    let first = last.node.clone();
    last.detail = format!(
        "no answer: {dest} is a Service address, but no rule rewrote it to an endpoint (the walk has no DNAT). \
         kube-proxy's rules for it are missing where the packet passed (`nft list table ip kube-proxy` on {first} and the nodes before it), \
         or kube-proxy is not running there; without the DNAT the packet is routed towards {dest} itself, where nothing answers. \
         (Last seen on {first}: {})",
        last.detail
    );
}

/// One traced packet's walk.
struct Leg {
    hops: Vec<Hop>,
    answered: bool,
    raw: BTreeMap<String, String>,
}

/// The hops, one numbered line each; without `full`, the nft rules that only jump or
/// return are left out (the numbers keep counting them) and a last line says how many.
fn render(hops: &[Hop], full: bool) -> String {
    let mut text = String::new();
    let mut hidden = 0;
    for (i, h) in hops.iter().enumerate() {
        if !full && h.is_plumbing() {
            hidden += 1;
            continue;
        }
        text.push_str(&format!(
            "{:>3}. {:<12} {:<14} {:<12} {}\n",
            i + 1,
            h.node,
            h.dev,
            h.what,
            h.detail
        ));
    }
    if hidden > 0 {
        text.push_str(&format!(
            "     ({hidden} nft rules that only jump or return are not shown: trace(..., #{{ full: true }}), or `full` at the end of the console's trace line)\n"
        ));
    }
    text
}

/// The first flow of a walk through a proxy: the probe's own TCP SYN from `src` to the
/// proxy's `ip:port`.
fn client_leg(places: &[Place], src: &Place, ip: Ipv4Addr, port: u16) -> Result<(Leg, u16)> {
    let tag = rand::random_range(PROBE_TAGS);
    let leg = walk_leg(places, src, (ip, Proto::Tcp, Some(port)), tag, None, || {
        send_probe(&src.ns, ip, Proto::Tcp, Some(port), tag)
    })?;
    Ok((leg, tag))
}

/// The proxy's own flow: its first packet to one of `targets` (the addresses it may pick),
/// leaving `proxy`, is marked as the probe while `trigger` makes the proxy send it.
fn proxy_leg(
    places: &[Place],
    proxy: &Place,
    targets: &[std::net::SocketAddrV4],
    trigger: impl FnOnce() -> Result<Answer>,
) -> Result<Leg> {
    let first = targets
        .first()
        .context("the proxy has nowhere to send the request (no endpoint)")?;
    let upstream = tr::upstream_rules(targets);
    let tag = rand::random_range(PROBE_TAGS);
    let target = (*first.ip(), Proto::Tcp, Some(first.port()));
    walk_leg(places, proxy, target, tag, Some(&upstream), trigger)
}

/// Traces one packet that leaves `src` for `target` (ip, protocol, port): adds the trace
/// table everywhere (in `src` with the `upstream` rule first, when the traced packet is a
/// proxy's own connection), starts the monitors, runs `trigger` (which sends the packet or
/// makes the proxy send it), then removes the tables and decodes the hops.
fn walk_leg(
    places: &[Place],
    src: &Place,
    target: (Ipv4Addr, Proto, Option<u16>),
    tag: u16,
    upstream: Option<&str>,
    trigger: impl FnOnce() -> Result<Answer>,
) -> Result<Leg> {
    let (ip, proto, port) = target;
    // Only the source's etcd member takes part among the etcd members (or the one
    // addressed): the others are never on a path.
    let traced: Vec<Place> = places
        .iter()
        .filter(|p| p.role != Role::Etcd || p.label == src.label || p.ip == ip)
        .cloned()
        .collect();
    let mut link_map: BTreeMap<String, Vec<Link>> = BTreeMap::new();
    for p in &traced {
        let out = process::run_shell(
            Some(&p.ns),
            "ip -d -o link show",
            &[],
            Duration::from_secs(5),
            None,
        )?;
        link_map.insert(p.ns.clone(), links::parse(&out.text));
    }
    let vxlan = traced
        .iter()
        .filter(|p| p.role == Role::Worker)
        .find_map(|p| link_map.get(&p.ns).and_then(|l| links::vxlan(l)));
    let probe = Probe { proto, tag };
    let table = tr::table_text(&probe, vxlan.as_ref());
    let src_table = upstream.map(|rule| tr::upstream_table_text(&probe, vxlan.as_ref(), rule));
    let mut tables = Tables(Vec::new());
    for p in &traced {
        let text = match &src_table {
            Some(t) if p.label == src.label => t,
            _ => &table,
        };
        nftcmd::apply(Some(&p.ns), text, "the trace table")
            .with_context(|| format!("adding the trace table on {}", p.label))?;
        tables.0.push(p.ns.clone());
    }
    let mut monitors = Vec::new();
    for p in &traced {
        monitors.push(Monitor::start(&p.ns)?);
    }
    let started = Instant::now();
    while !monitors.iter().all(Monitor::subscribed) {
        if started.elapsed() > MONITOR_READY {
            let slow: Vec<&str> = monitors
                .iter()
                .filter(|m| !m.subscribed())
                .map(|m| m.ns.as_str())
                .collect();
            bail!(
                "`nft monitor trace` did not start listening within {} s in {}: is nftables installed (`nft --version`)?",
                MONITOR_READY.as_secs(),
                slow.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let answer = trigger()?;
    let mut last_len = 0;
    let mut quiet_since = Instant::now();
    let settle = Instant::now();
    while settle.elapsed() < SETTLE_MAX {
        std::thread::sleep(Duration::from_millis(50));
        let len: usize = monitors.iter().map(Monitor::len).sum();
        if len != last_len {
            last_len = len;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= SETTLE_QUIET {
            break;
        }
    }
    let mut outputs: BTreeMap<String, String> = BTreeMap::new();
    for m in monitors {
        let ns = m.ns.clone();
        outputs.insert(ns, m.stop());
    }
    tables.remove()?;
    let hops = assemble(
        &traced,
        src,
        &link_map,
        &outputs,
        vxlan.as_ref(),
        &answer,
        ip,
        proto,
        port,
    );
    let answered = matches!(answer, Answer::Answered(_));
    let raw = traced
        .iter()
        .filter_map(|p| Some((p.label.clone(), outputs.get(&p.ns)?.clone())))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    Ok(Leg {
        hops,
        answered,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(proto: Option<&str>, port: Option<i64>) -> TraceOptions {
        TraceOptions {
            proto: proto.map(str::to_string),
            port,
            ..Default::default()
        }
    }

    #[test]
    fn targets_and_their_defaults() {
        let ip: Ipv4Addr = "100.64.10.1".parse().unwrap();
        assert_eq!(
            parse_target("100.64.10.1:80", &opts(None, None)).unwrap(),
            (ip, Proto::Tcp, Some(80))
        );
        assert_eq!(
            parse_target("100.64.10.1", &opts(None, None)).unwrap(),
            (ip, Proto::Icmp, None)
        );
        assert_eq!(
            parse_target("100.64.10.1", &opts(Some("udp"), Some(53))).unwrap(),
            (ip, Proto::Udp, Some(53))
        );
    }

    #[test]
    fn bad_targets_say_what_to_write() {
        let e = |d: &str, o: TraceOptions| format!("{:#}", parse_target(d, &o).unwrap_err());
        assert!(e("c2", opts(None, None)).contains("not an IPv4 address"));
        assert!(e("1.2.3.4:http", opts(None, None)).contains("not a port"));
        assert!(e("1.2.3.4:80", opts(None, Some(81))).contains("give the port once"));
        assert!(e("1.2.3.4", opts(Some("tcp"), None)).contains("needs a port"));
        assert!(e("1.2.3.4:80", opts(Some("icmp"), None)).contains("icmp has no ports"));
        assert!(e("1.2.3.4", opts(Some("sctp"), None)).contains("not one of tcp, udp, icmp"));
        assert!(e("1.2.3.4", opts(None, Some(70000))).contains("not a port"));
    }
}
