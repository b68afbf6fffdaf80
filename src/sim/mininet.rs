//! Mininet's habits as queries on the simulation: `pingall` (every pod pings every other
//! pod of its cluster once), `net` (the links) and `dump` (nodes, addresses, pids). The
//! console prints them; scripts get them as values.

use super::Sim;
use crate::netns::process::Interrupted;
use std::sync::atomic::{AtomicBool, Ordering};

/// One ping of [`Sim::pingall`]: `ok` is None when Ctrl-C stopped the round first.
#[derive(Debug, Clone)]
pub struct PingPair {
    pub cluster: String,
    pub from: String,
    pub to: String,
    pub ok: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct PingAll {
    /// Per cluster (in order), its pods and the pings each sent.
    pub clusters: Vec<(String, Vec<String>, Vec<PingPair>)>,
    pub interrupted: bool,
}

impl PingAll {
    pub fn sent(&self) -> usize {
        self.pairs().filter(|p| p.ok.is_some()).count()
    }
    pub fn received(&self) -> usize {
        self.pairs().filter(|p| p.ok == Some(true)).count()
    }
    pub fn pairs(&self) -> impl Iterator<Item = &PingPair> {
        self.clusters.iter().flat_map(|(_, _, p)| p.iter())
    }
    /// Lost pings in percent of those sent (0 when none were sent).
    pub fn loss_percent(&self) -> usize {
        let sent = self.sent();
        ((sent - self.received()) * 100)
            .checked_div(sent)
            .unwrap_or(0)
    }
}

/// One link of [`Sim::links`]: `node`'s device `dev` and what its other end is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub node: String,
    pub dev: String,
    pub peer: String,
}

/// One node of [`Sim::dump`].
#[derive(Debug, Clone)]
pub struct NodeDump {
    pub name: String,
    pub kind: String,
    pub ns: String,
    pub ip: String,
    /// (pid, what) of the processes knetsim started for it.
    pub pids: Vec<(u32, String)>,
}

impl Sim {
    /// In each cluster, every pod pings every other pod once (in parallel per source).
    /// Ctrl-C stops the round; the pings not run are None.
    pub fn pingall(&self) -> PingAll {
        let stop = AtomicBool::new(false);
        let mut result = PingAll::default();
        for c in self.clusters() {
            let mut members = Vec::new();
            for (name, short) in c.containers() {
                if let Ok(w) = c.worker(&short) {
                    if let Ok(ip) = w.container_ip(&name) {
                        members.push((name, w, ip));
                    }
                }
            }
            let pairs: Vec<Vec<PingPair>> = std::thread::scope(|scope| {
                let handles: Vec<_> = members
                    .iter()
                    .map(|(src, w, _)| {
                        let (members, stop, cname) = (&members, &stop, c.name());
                        scope.spawn(move || {
                            members
                                .iter()
                                .filter(|(dst, _, _)| dst != src)
                                .map(|(dst, _, ip)| {
                                    let ok = if stop.load(Ordering::SeqCst) {
                                        None
                                    } else {
                                        let cmd = format!(
                                            "ping -c 1 -W 1 {ip} >/dev/null 2>&1 && echo ok || echo lost"
                                        );
                                        match w.exec_container(src, &cmd) {
                                            Ok(o) => Some(o.trim() == "ok"),
                                            Err(e) if e.is::<Interrupted>() => {
                                                stop.store(true, Ordering::SeqCst);
                                                None
                                            }
                                            Err(_) => Some(false),
                                        }
                                    };
                                    PingPair {
                                        cluster: cname.clone(),
                                        from: src.clone(),
                                        to: dst.clone(),
                                        ok,
                                    }
                                })
                                .collect()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            result.clusters.push((
                c.name(),
                members.iter().map(|(n, _, _)| n.clone()).collect(),
                pairs.into_iter().flatten().collect(),
            ));
        }
        result.interrupted = stop.load(Ordering::SeqCst);
        result
    }

    /// Every link, as the model knows it: each host's eth0 to the underlay switch, the
    /// flannel VXLAN device and the cni0 bridge of each started worker, each pod's eth0 to
    /// its worker's cni0 (through a veth).
    pub fn links(&self) -> Vec<Link> {
        let st = self.state();
        let mut out = Vec::new();
        let link = |node: &str, dev: &str, peer: String| Link {
            node: node.to_string(),
            dev: dev.to_string(),
            peer,
        };
        let sw = super::bringup::UNDERLAY_BRIDGE;
        for c in &st.clusters {
            for e in &c.etcd {
                out.push(link(&e.name, "eth0", format!("{sw}:{}-eth0", e.name)));
            }
            for w in &c.workers {
                out.push(link(&w.name, "eth0", format!("{sw}:{}-eth0", w.name)));
                if let (true, Some(v)) = (w.started, c.flannel.vxlan()) {
                    out.push(link(
                        &w.name,
                        &v.device_name(),
                        format!("vxlan VNI {} over eth0, udp {}", v.vni, v.port),
                    ));
                }
                for name in w.containers.keys() {
                    out.push(link(
                        &format!("{}-{name}", c.name()),
                        "eth0",
                        format!("{}:cni0 (veth)", w.name),
                    ));
                }
            }
        }
        out
    }

    /// Every node and pod with its namespace, address and the processes started for it.
    pub fn dump(&self) -> Vec<NodeDump> {
        let procs = self.inner.record.snapshot().processes;
        let pids_of = |name: &str| -> Vec<(u32, String)> {
            procs
                .iter()
                .filter(|p| {
                    p.what
                        .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                        .any(|w| w == name)
                })
                .map(|p| (p.pid, p.what.clone()))
                .collect()
        };
        let st = self.state();
        let mut out = Vec::new();
        for c in &st.clusters {
            for e in &c.etcd {
                out.push(NodeDump {
                    name: e.name.clone(),
                    kind: "etcd member".into(),
                    ns: e.ns.clone(),
                    ip: e.ip.to_string(),
                    pids: pids_of(&e.name),
                });
            }
            for w in &c.workers {
                out.push(NodeDump {
                    name: w.name.clone(),
                    kind: "worker".into(),
                    ns: w.ns.clone(),
                    ip: w.ip.to_string(),
                    pids: pids_of(&w.name),
                });
                for (name, ct) in &w.containers {
                    out.push(NodeDump {
                        name: format!("{}-{name}", c.name()),
                        kind: format!("pod on {}", w.name),
                        ns: ct.ns.clone(),
                        ip: ct.ip.clone(),
                        pids: Vec::new(),
                    });
                }
            }
        }
        out
    }
}
