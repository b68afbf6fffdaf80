//! `topology()`: the running simulation gathered into a [`Topology`] for the console text
//! and the SVG. What the kernel knows is read from the kernel (addresses, the overlay
//! device and its MAC, the pod subnet on cni0, the routers' established links), so a
//! learner who changed something by hand sees the change; Services and ingresses come
//! from the simulator, which plays the API server.

use super::{Cluster, Sim, Worker};
use crate::components::skupper::config::INTER_ROUTER_PORT;
use crate::components::topology::{
    ClusterView, Host, IngressView, ServiceView, SkupperLink, Topology, WorkerView,
};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// What `ip -j -d -4 addr show` says about one worker.
#[derive(Default)]
struct Links {
    subnet: String,
    vtep: Option<(String, String)>,
    /// `vxlan flannel.100 (VNI 100, UDP 8472)`
    backend: String,
}

fn parse_links(json: &str) -> Links {
    let mut out = Links::default();
    let Ok(Value::Array(links)) = serde_json::from_str::<Value>(json) else {
        return out;
    };
    for l in &links {
        let name = l["ifname"].as_str().unwrap_or("");
        let info = &l["linkinfo"];
        if info["info_kind"] == "vxlan" {
            let mac = l["address"].as_str().unwrap_or("").to_string();
            out.vtep = Some((name.to_string(), mac));
            out.backend = format!(
                "vxlan {name} (VNI {}, UDP {})",
                info["info_data"]["id"], info["info_data"]["port"]
            );
        }
        if name == "cni0" {
            if let Some(a) = l["addr_info"].as_array().and_then(|a| a.first()) {
                let ip: std::net::Ipv4Addr = a["local"]
                    .as_str()
                    .unwrap_or("")
                    .parse()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                let len = a["prefixlen"].as_u64().unwrap_or(32).min(32) as u32;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let net = std::net::Ipv4Addr::from(u32::from(ip) & mask);
                out.subnet = format!("{net}/{len}");
            }
        }
    }
    if out.vtep.is_none() && !links.is_empty() {
        out.backend = "host-gw (routes via the other workers' underlay addresses)".into();
    }
    out
}

/// `FLANNEL_NETWORK` from a worker's subnet.env.
fn flannel_network(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("FLANNEL_NETWORK="))
        .map(|v| v.trim().to_string())
}

/// The first IPv4 address of a pod's eth0, as the pod's kernel has it.
fn pod_ip(w: &Worker, pod: &str) -> String {
    let out = w
        .exec_container(pod, "ip -4 -o addr show dev eth0")
        .unwrap_or_default();
    out.split_whitespace()
        .skip_while(|t| *t != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .unwrap_or_else(|| "(no address)".into())
}

fn worker_view(w: &Worker, network: &mut String) -> WorkerView {
    let links = parse_links(&w.exec("ip -j -d -4 addr show").unwrap_or_default());
    if network.is_empty() {
        if let Some(net) = flannel_network(&w.subnet_file()) {
            *network = format!("{net} {}", links.backend);
        }
    }
    let agents_down = ["flanneld", "kube-proxy"]
        .iter()
        .filter(|a| matches!(w.agent_pid(a), Ok(None)))
        .map(|a| a.to_string())
        .collect();
    WorkerView {
        name: w.name(),
        ip: w.ip().to_string(),
        subnet: links.subnet,
        vtep: links.vtep,
        pods: w
            .containers()
            .into_iter()
            .map(|p| Host {
                ip: pod_ip(w, &p),
                name: p,
            })
            .collect(),
        agents_down,
    }
}

fn services(c: &Cluster) -> Vec<ServiceView> {
    let st = c.service_state();
    let mut out: Vec<ServiceView> = st
        .services
        .iter()
        .map(|s| {
            let endpoints = st
                .endpoints
                .iter()
                .filter(|e| e.service == s.name && e.namespace == s.namespace)
                .flat_map(|e| e.addresses.iter().map(|a| format!("{} {}", a.pod, a.ip)))
                .collect();
            ServiceView {
                name: s.name.clone(),
                ip: s.cluster_ip.to_string(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| {
                        let node = p
                            .node_port
                            .map(|n| format!(" node {n}"))
                            .unwrap_or_default();
                        format!("{} {}→{}{node}", p.protocol, p.port, p.target_port)
                    })
                    .collect(),
                endpoints,
            }
        })
        .collect();
    out.extend(st.vips.iter().map(|v| ServiceView {
        name: "vip".into(),
        ip: v.vip.to_string(),
        ports: vec!["all".into()],
        endpoints: v.ips.iter().map(|ip| ip.to_string()).collect(),
    }));
    out
}

fn ingresses(c: &Cluster) -> Vec<IngressView> {
    let mut out = Vec::new();
    for w in c.workers() {
        for name in w.ingresses() {
            if let Some(i) = w.ingress(&name) {
                out.push(IngressView {
                    name: i.name,
                    at: format!("{}:{}", w.name(), i.port),
                    rules: i
                        .rules
                        .iter()
                        .map(|r| format!("{} → {}", r.path, r.endpoint))
                        .collect(),
                });
            }
        }
    }
    out
}

/// The routers' links, from the listening side's established connections on the
/// inter-router port (each link once), named by the nodes that own the addresses.
fn skupper_links(sim: &Sim, clusters: &[ClusterView]) -> Vec<SkupperLink> {
    let by_ip: BTreeMap<String, String> = clusters
        .iter()
        .flat_map(|c| c.workers.iter().map(|w| (w.ip.clone(), w.name.clone())))
        .collect();
    let mut out = Vec::new();
    for c in clusters {
        let Some(router) = &c.router_on else { continue };
        let Some(super::Node::Worker(w)) = sim.node(router) else {
            continue;
        };
        let cmd = format!("ss -Htn state established '( sport = :{INTER_ROUTER_PORT} )'");
        for line in w.exec(&cmd).unwrap_or_default().lines() {
            // Recv-Q Send-Q Local:Port Peer:Port
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(peer)) = (cols.get(2), cols.get(3)) else {
                continue;
            };
            let peer_ip = peer.rsplit_once(':').map(|p| p.0).unwrap_or(peer);
            let name = |ip: &str| by_ip.get(ip).cloned().unwrap_or_else(|| ip.to_string());
            out.push(SkupperLink {
                from: Host {
                    name: name(peer_ip),
                    ip: peer_ip.to_string(),
                },
                to: Host {
                    name: w.name(),
                    ip: local.to_string(),
                },
            });
        }
    }
    out
}

impl Sim {
    /// The running simulation, read now.
    pub fn topology(&self) -> Topology {
        let clusters: Vec<ClusterView> = self
            .clusters()
            .iter()
            .map(|c| {
                let started = c.is_started();
                let mut network = String::new();
                let workers = c
                    .workers()
                    .iter()
                    .map(|w| {
                        if started {
                            worker_view(w, &mut network)
                        } else {
                            WorkerView {
                                name: w.name(),
                                ip: w.ip().to_string(),
                                subnet: "(not started)".into(),
                                ..WorkerView::default()
                            }
                        }
                    })
                    .collect();
                ClusterView {
                    name: c.name(),
                    network,
                    etcd: c
                        .etcd_nodes()
                        .iter()
                        .map(|e| Host {
                            name: e.name(),
                            ip: e.ip().to_string(),
                        })
                        .collect(),
                    workers,
                    services: if started { services(c) } else { vec![] },
                    ingresses: ingresses(c),
                    router_on: c.skupper_router_worker(),
                    skupper_exposed: c
                        .skupper_services()
                        .iter()
                        .map(|(name, port)| format!("{name} → port {port} in the other sites"))
                        .collect(),
                }
            })
            .collect();
        let skupper_links = skupper_links(self, &clusters);
        Topology {
            underlay: format!("10.0.0.0/{}", super::addressing::UNDERLAY_PREFIX),
            clusters,
            skupper_links,
        }
    }

    /// Writes the picture to `path`: `.svg` or `.html`, by its extension. Returns the text
    /// shown in the console as well.
    pub fn write_topology(&self, path: &str) -> Result<String> {
        let t = self.topology();
        let body = match Path::new(path).extension().and_then(|e| e.to_str()) {
            Some("svg") => crate::components::topology::svg(&t),
            Some("html") | Some("htm") => crate::components::topology::html(&t),
            _ => bail!(
                "topology(\"{path}\"): the file must end in .svg or .html, e.g. topology(\"cluster.svg\")"
            ),
        };
        // Root writes where the learner says: never through a symlink someone else planted.
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(|mut f| f.write_all(body.as_bytes()))
            .with_context(|| {
                format!("topology(\"{path}\"): cannot write the picture (is the directory there and writable, and the path not a symlink?)")
            })?;
        Ok(t.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_give_the_subnet_the_vtep_and_the_backend() {
        let json = r#"[{"ifname":"lo","addr_info":[{"local":"127.0.0.1","prefixlen":8}]},
          {"ifname":"flannel.100","address":"aa:bb:cc:dd:ee:01","linkinfo":{"info_kind":"vxlan","info_data":{"id":100,"port":8472}},"addr_info":[{"local":"11.10.0.0","prefixlen":32}]},
          {"ifname":"cni0","address":"12:34:56:78:9a:bc","linkinfo":{"info_kind":"bridge"},"addr_info":[{"local":"11.10.0.1","prefixlen":20}]}]"#;
        let l = parse_links(json);
        assert_eq!(l.subnet, "11.10.0.0/20");
        assert_eq!(
            l.vtep,
            Some(("flannel.100".into(), "aa:bb:cc:dd:ee:01".into()))
        );
        assert_eq!(l.backend, "vxlan flannel.100 (VNI 100, UDP 8472)");
        let host_gw = parse_links(r#"[{"ifname":"cni0","addr_info":[]}]"#);
        assert!(host_gw.vtep.is_none() && host_gw.backend.starts_with("host-gw"));
        assert!(parse_links("not json").subnet.is_empty());
    }
}
