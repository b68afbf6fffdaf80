//! The packet walk: one real probe from a pod or a node, followed through every namespace
//! of its cluster by the kernel's own nftables tracing. For each trace it adds the small
//! `knetsim-trace` table to each namespace, listens with `nft monitor trace` there (one
//! process per namespace, ended by its pid), sends the probe as a fresh flow (a new source
//! port or ICMP id), then removes every table it added and decodes the hops in path order.

use super::{EtcdNode, Sim, Worker};
use crate::components::nft as nftcmd;
use crate::components::trace::{
    self as tr, links, links::Link, nft, walk, Hop, NodeView, NodeWalk, Probe, Proto, Vxlan,
};
use crate::netns::{self, process};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the probe waits for its answer (below TCP's first SYN retransmission, 1 s,
/// so the walk shows one packet).
const ANSWER_WAIT: Duration = Duration::from_millis(900);
/// How long a monitor may take to subscribe to trace events.
const MONITOR_READY: Duration = Duration::from_secs(3);
/// After the probe: output stops growing for this long, at most SETTLE_MAX.
const SETTLE_QUIET: Duration = Duration::from_millis(250);
const SETTLE_MAX: Duration = Duration::from_secs(3);
/// Source ports (and ICMP ids) for probes: above Linux's ephemeral range (32768-60999),
/// so no socket of the kernel's choosing has them.
const PROBE_TAGS: std::ops::RangeInclusive<u16> = 61000..=65000;
/// The probe's TOS byte: its DSCP (by which the trace table knows it after NAT), no ECN.
const PROBE_TOS: u32 = (tr::PROBE_DSCP as u32) << 2;
/// NFNLGRP_NFTRACE (9) as a bit of /proc/net/netlink's group mask.
const NFTRACE_GROUP_BIT: u32 = 1 << 8;

/// What to send: `#{ proto: "tcp", port: 80 }`.
#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    pub proto: Option<String>,
    pub port: Option<i64>,
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
        run(places, src, dest, opts)
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
        run(places, src, dest, opts)
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

/// An `nft monitor trace` running in one namespace, its output collected by a thread.
struct Monitor {
    ns: String,
    child: Child,
    out: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(ns: &str) -> Result<Monitor> {
        // Line-buffered: a killed nft would lose a block-buffered tail.
        let mut cmd = process::command_in(Some(ns), "stdbuf")?;
        let (reader, writer) = std::io::pipe().context("creating a pipe")?;
        let writer2 = writer.try_clone()?;
        cmd.args(["-oL", "nft", "monitor", "trace"])
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2);
        let child = cmd
            .spawn()
            .context("starting `nft monitor trace` (install nftables and coreutils)")?;
        drop(cmd);
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Ok(Monitor {
            ns: ns.to_string(),
            child,
            out,
            reader: Some(reader),
        })
    }

    /// True once the process holds a netlink socket subscribed to trace events.
    fn subscribed(&self) -> bool {
        let pid = self.child.id();
        let mut inodes = Vec::new();
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for e in dir.flatten() {
                if let Ok(t) = std::fs::read_link(e.path()) {
                    let t = t.to_string_lossy().into_owned();
                    if let Some(i) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                        inodes.push(i.to_string());
                    }
                }
            }
        }
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")) else {
            return false;
        };
        table.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 10
                && f[1] == "12"
                && u32::from_str_radix(f[3], 16).is_ok_and(|g| g & NFTRACE_GROUP_BIT != 0)
                && inodes.iter().any(|i| i == f[9])
        })
    }

    fn len(&self) -> usize {
        self.out.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Ends the monitor (its process group, by the pid we started) and returns its output.
    fn stop(mut self) -> String {
        self.kill();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let s = self.out.lock().unwrap_or_else(|e| e.into_inner());
        s.clone()
    }

    fn kill(&mut self) {
        process::kill_group(self.child.id() as i32);
        let _ = self.child.wait();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if self.reader.is_some() {
            self.kill();
        }
    }
}

/// Removes the trace table from every namespace it was added to, even when the walk fails.
struct Tables(Vec<String>);

impl Tables {
    fn remove(&mut self) -> Result<()> {
        let mut first_err = None;
        for ns in self.0.drain(..) {
            if let Err(e) = nftcmd::apply(Some(&ns), &tr::delete_text(), "removing the trace table")
            {
                first_err.get_or_insert(e.context(format!("in namespace {ns}")));
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Tables {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// What came back to the probe.
#[derive(Debug, Clone)]
enum Answer {
    Answered(String),
    Refused(String),
    Nothing,
}

fn run(places: Vec<Place>, src: Place, dest: &str, opts: &TraceOptions) -> Result<Walk> {
    let (ip, proto, port) = parse_target(dest, opts)?;
    // Only the source's etcd member takes part among the etcd members (or the one
    // addressed): the others are never on a path.
    let traced: Vec<Place> = places
        .into_iter()
        .filter(|p| p.role != Role::Etcd || p.label == src.label || p.ip == ip)
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
    let probe = Probe {
        proto,
        tag: rand::random_range(PROBE_TAGS),
    };
    let table = tr::table_text(&probe, vxlan.as_ref());
    let mut tables = Tables(Vec::new());
    for p in &traced {
        nftcmd::apply(Some(&p.ns), &table, "the trace table")
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
    let answer = send_probe(&src.ns, ip, proto, port, probe.tag)?;
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
        &src,
        &link_map,
        &outputs,
        vxlan.as_ref(),
        &answer,
        ip,
        proto,
        port,
    );
    let answered = matches!(answer, Answer::Answered(_));
    let what = match port {
        Some(p) => format!("{} {ip}:{p}", proto.name()),
        None => format!("{} {ip}", proto.name()),
    };
    let tag = if proto == Proto::Icmp {
        "id"
    } else {
        "source port"
    };
    let mut text = format!(
        "Packet walk: {what} from {} ({}), a fresh flow ({tag} {})\n",
        src.label, src.ip, probe.tag
    );
    for (i, h) in hops.iter().enumerate() {
        text.push_str(&format!(
            "{:>3}. {:<12} {:<14} {:<12} {}\n",
            i + 1,
            h.node,
            h.dev,
            h.what,
            h.detail
        ));
    }
    let raw = traced
        .iter()
        .filter_map(|p| Some((p.label.clone(), outputs.get(&p.ns)?.clone())))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    Ok(Walk {
        hops,
        answered,
        text,
        raw,
    })
}

/// Orders the namespaces as the packet went (following where it left each one), decodes
/// each, and adds the veth steps, the answer, and where it was lost.
#[allow(clippy::too_many_arguments)]
fn assemble(
    traced: &[Place],
    src: &Place,
    link_map: &BTreeMap<String, Vec<Link>>,
    outputs: &BTreeMap<String, String>,
    vxlan: Option<&Vxlan>,
    answer: &Answer,
    dest: Ipv4Addr,
    proto: Proto,
    port: Option<u16>,
) -> Vec<Hop> {
    let empty = Vec::new();
    let decode = |p: &Place| -> NodeWalk {
        let links = link_map.get(&p.ns).unwrap_or(&empty);
        let view = NodeView {
            node: &p.label,
            links,
            vxlan,
        };
        let lines = nft::parse(outputs.get(&p.ns).map_or("", String::as_str));
        walk::decode(&view, &lines)
    };
    let mut hops = Vec::new();
    let mut visited = vec![src.label.clone()];
    let mut cur = src.clone();
    let mut w = decode(&cur);
    loop {
        hops.extend(w.hops.iter().cloned());
        if w.dropped || w.delivered {
            break;
        }
        let Some(next) = next_place(traced, &cur, &w) else {
            break;
        };
        if visited.contains(&next.label) {
            break;
        }
        let nw = decode(&next);
        if nw.hops.is_empty() {
            break;
        }
        if let Some(h) = veth_hop(&cur, &next, link_map) {
            hops.push(h);
        }
        visited.push(next.label.clone());
        cur = next;
        w = nw;
    }
    match answer {
        Answer::Answered(how) if w.delivered => {
            let who = match &cur.role {
                Role::Pod { worker } => format!("the pod {} on {worker} ({})", cur.name, cur.ip),
                _ => format!("{} ({})", cur.name, cur.ip),
            };
            let via = if cur.ip != dest {
                format!("; conntrack turns the reply's source back into {dest}, so the client sees {dest} answer")
            } else {
                String::new()
            };
            hops.push(Hop::new(
                &cur.label,
                "",
                "answer",
                format!("{who} answers: {how}{via}"),
            ));
        }
        Answer::Answered(how) => hops.push(Hop::new(
            &cur.label,
            "",
            "answer",
            format!(
                "an answer came back ({how}), though the walk lost the packet after {}",
                cur.label
            ),
        )),
        Answer::Refused(how) if w.delivered => hops.push(Hop::new(
            &cur.label,
            "",
            "answer",
            format!("{} refuses it: {how}", cur.name),
        )),
        Answer::Refused(how) => hops.push(Hop::new(
            &cur.label,
            "",
            "drop",
            format!("refused on the way: {how} (last seen on {})", cur.label),
        )),
        Answer::Nothing => {
            let (dev, cause) = if w.dropped {
                (
                    w.hops.last().map_or(String::new(), |h| h.dev.clone()),
                    "an nftables verdict dropped it (the step above)".to_string(),
                )
            } else if w.delivered {
                (
                    String::new(),
                    format!(
                        "it reached {}, but nothing answered: does anything listen on {} {}?",
                        cur.label,
                        proto.name(),
                        port.map_or("echo".into(), |p| p.to_string())
                    ),
                )
            } else {
                (
                    w.hops.last().map_or(String::new(), |h| h.dev.clone()),
                    walk::likely_cause(&cur.label, &w, vxlan),
                )
            };
            hops.push(Hop::new(
                &cur.label,
                &dev,
                "lost",
                format!(
                    "no answer within {} ms. Last seen on {}: {cause}.{}",
                    ANSWER_WAIT.as_millis(),
                    cur.label,
                    drop_reason_note()
                ),
            ));
        }
    }
    hops
}

/// The kernel's own drop reasons (the skb:kfree_skb tracepoint) need tracefs; it is not
/// mounted on every machine, and mounting it would change the host.
fn drop_reason_note() -> &'static str {
    if std::path::Path::new("/sys/kernel/tracing/events/skb/kfree_skb").exists() {
        " (the kernel's drop reason: see the skb:kfree_skb tracepoint in /sys/kernel/tracing)"
    } else {
        " (the kernel's own drop reason is not shown: tracefs is not mounted at /sys/kernel/tracing)"
    }
}

/// Where the packet went after leaving `cur`.
fn next_place(traced: &[Place], cur: &Place, w: &NodeWalk) -> Option<Place> {
    if let Role::Pod { worker } = &cur.role {
        return traced.iter().find(|p| &p.label == worker).cloned();
    }
    let exit = w.exit.as_ref()?;
    if let Some(outer) = &exit.outer_daddr {
        return traced
            .iter()
            .find(|p| !matches!(p.role, Role::Pod { .. }) && p.ip.to_string() == *outer)
            .cloned();
    }
    let by_ip = traced.iter().find(|p| p.ip.to_string() == exit.daddr)?;
    match &by_ip.role {
        // A pod on another node: first that node (routed without an overlay).
        Role::Pod { worker } if *worker != cur.label => {
            traced.iter().find(|p| &p.label == worker).cloned()
        }
        _ => Some(by_ip.clone()),
    }
}

/// The veth pair between a pod and its worker, named from both ends' links.
fn veth_hop(from: &Place, to: &Place, link_map: &BTreeMap<String, Vec<Link>>) -> Option<Hop> {
    let (pod, worker, outward) = match (&from.role, &to.role) {
        (Role::Pod { worker }, Role::Worker) if *worker == to.label => (from, to, true),
        (Role::Worker, Role::Pod { worker }) if *worker == from.label => (to, from, false),
        _ => return None,
    };
    let eth0 = link_map.get(&pod.ns)?.iter().find(|l| l.name == "eth0")?;
    let veth = link_map
        .get(&worker.ns)?
        .iter()
        .find(|l| Some(l.index) == eth0.peer_index)?;
    let bridge = veth.master.as_deref().unwrap_or("no bridge");
    let detail = if outward {
        format!(
            "{}'s eth0 is one end of a veth pair; it comes out of the other end, {}, on {} (a port of {bridge})",
            pod.name, veth.name, worker.label
        )
    } else {
        format!(
            "{bridge} sends the frame out of its port {}, the veth whose other end is {}'s eth0",
            veth.name, pod.name
        )
    };
    Some(Hop::new(&worker.label, &veth.name, "veth", detail))
}

/// Sends the probe from namespace `ns` and waits briefly for its answer.
fn send_probe(ns: &str, ip: Ipv4Addr, proto: Proto, port: Option<u16>, tag: u16) -> Result<Answer> {
    netns::run_in(ns, move || match proto {
        Proto::Icmp => icmp_probe(ip, tag),
        Proto::Tcp => tcp_probe(ip, port.unwrap_or(80), tag),
        Proto::Udp => udp_probe(ip, port.unwrap_or(53), tag),
    })
}

fn tcp_probe(ip: Ipv4Addr, port: u16, tag: u16) -> Result<Answer> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_tos_v4(PROBE_TOS)?;
    s.bind(&SockAddr::from(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        tag,
    )))
    .with_context(|| format!("binding the probe to source port {tag}"))?;
    let r = s.connect_timeout(&SockAddr::from(SocketAddrV4::new(ip, port)), ANSWER_WAIT);
    // Close with a reset: no FIN exchange, no TIME_WAIT holding the port.
    let _ = s.set_linger(Some(Duration::ZERO));
    Ok(match r {
        Ok(()) => Answer::Answered("SYN-ACK, the connection opened".into()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Answer::Refused(format!("a TCP reset: nothing listens on port {port}"))
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            Answer::Nothing
        }
        Err(e) => Answer::Refused(format!("{e}")),
    })
}

fn udp_probe(ip: Ipv4Addr, port: u16, tag: u16) -> Result<Answer> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, tag))
        .with_context(|| format!("binding the probe to source port {tag}"))?;
    socket2::SockRef::from(&s).set_tos_v4(PROBE_TOS)?;
    s.connect((ip, port))?;
    s.send(b"knetsim trace probe\n")?;
    s.set_read_timeout(Some(ANSWER_WAIT))?;
    let mut buf = [0u8; 2048];
    Ok(match s.recv(&mut buf) {
        Ok(n) => Answer::Answered(format!("a UDP reply of {n} bytes")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Answer::Refused(format!(
            "ICMP port unreachable: nothing listens on UDP {port}"
        )),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            Answer::Nothing
        }
        Err(e) => Answer::Refused(format!("{e}")),
    })
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn icmp_probe(ip: Ipv4Addr, id: u16) -> Result<Answer> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .context("opening a raw ICMP socket (needs root)")?;
    s.set_tos_v4(PROBE_TOS)?;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"knetsim trace probe");
    let c = checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    s.send_to(&pkt, &SockAddr::from(SocketAddrV4::new(ip, 0)))?;
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Answer::Nothing);
        }
        s.set_read_timeout(Some(left))?;
        let n = match (&s).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                return Ok(Answer::Nothing)
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(a) = icmp_answer(&buf[..n], id) {
            return Ok(a);
        }
    }
}

/// An echo reply to `id`, or an error about our echo request; None for other ICMP.
fn icmp_answer(pkt: &[u8], id: u16) -> Option<Answer> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    let icmp = pkt.get(ihl..)?;
    let from = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    match *icmp.first()? {
        0 if icmp.get(4..6)? == id.to_be_bytes() => {
            Some(Answer::Answered(format!("an echo reply (from {from})")))
        }
        3 | 11 => {
            let inner = icmp.get(8..)?;
            let iihl = usize::from(*inner.first()? & 0x0f) * 4;
            let iicmp = inner.get(iihl..)?;
            (iicmp.first() == Some(&8) && iicmp.get(4..6)? == id.to_be_bytes()).then(|| {
                let why = if icmp[0] == 11 {
                    "time exceeded".to_string()
                } else {
                    format!("destination unreachable (code {})", icmp[1])
                };
                Answer::Refused(format!("ICMP {why} from {from}"))
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(proto: Option<&str>, port: Option<i64>) -> TraceOptions {
        TraceOptions {
            proto: proto.map(str::to_string),
            port,
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

    #[test]
    fn icmp_answers_are_matched_by_id() {
        let mut reply = vec![0x45u8; 20];
        reply[12..16].copy_from_slice(&[11, 11, 0, 2]);
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert!(matches!(
            icmp_answer(&reply, 0x1234),
            Some(Answer::Answered(_))
        ));
        assert!(icmp_answer(&reply, 0x1235).is_none());
        let mut unreach = vec![0x45u8; 20];
        unreach.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
        unreach.extend_from_slice(&[0x45u8; 20]);
        unreach.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert!(
            matches!(icmp_answer(&unreach, 0x1234), Some(Answer::Refused(m)) if m.contains("unreachable (code 1)"))
        );
    }

    #[test]
    fn checksum_of_an_echo_request() {
        // Type 8, id 1, seq 1, no payload: the one's complement sum is known.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }
}
