//! A picture of a running simulation: the data (gathered by `sim::topology` from the
//! kernel, etcd and the simulator), the console text, and a self-contained SVG or HTML
//! page. Everything here is pure: it draws what it is given.

mod svg;

pub use svg::{html, svg, well_formed};

/// The whole simulation, as seen right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topology {
    /// The underlay network every node is attached to, e.g. `10.0.0.0/8`.
    pub underlay: String,
    pub clusters: Vec<ClusterView>,
    /// Router-to-router links that are up (an established TCP connection on the
    /// inter-router port), each once.
    pub skupper_links: Vec<SkupperLink>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub name: String,
    /// `11.0.0.0/8 vxlan flannel.100 (VNI 100, UDP 8472)` or similar; empty when unknown.
    pub network: String,
    pub etcd: Vec<Host>,
    pub workers: Vec<WorkerView>,
    pub services: Vec<ServiceView>,
    pub ingresses: Vec<IngressView>,
    /// The worker running this cluster's Skupper router, if it has one.
    pub router_on: Option<String>,
    /// Services this cluster's Skupper site exposes: `web → port 1028 in the other sites`.
    pub skupper_exposed: Vec<String>,
}

/// A named machine or pod with its address.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    pub name: String,
    pub ip: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerView {
    pub name: String,
    pub ip: String,
    /// The pod subnet (from cni0's address), e.g. `11.10.0.0/20`.
    pub subnet: String,
    /// The overlay device and its MAC (`flannel.100`, `aa:bb:...`), if the backend has one.
    pub vtep: Option<(String, String)>,
    pub pods: Vec<Host>,
    /// Agents that are not running (stopped on purpose or failed).
    pub agents_down: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceView {
    pub name: String,
    pub ip: String,
    /// `tcp 80→8000`, `tcp 80→8000 node 30080`, or `all` for a static VIP.
    pub ports: Vec<String>,
    /// `c2 11.10.0.2`; empty when the Service has none.
    pub endpoints: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngressView {
    pub name: String,
    /// `C0w1:8001`
    pub at: String,
    /// `/svc1 → 100.64.0.1:80`
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SkupperLink {
    /// The dialing router's node and address.
    pub from: Host,
    /// The listening router's node and address (`C0w1`, `10.0.0.3:55671`).
    pub to: Host,
}

impl Topology {
    /// Every node and pod address in the picture (what a test looks for in the SVG).
    pub fn addresses(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.clusters {
            out.extend(c.etcd.iter().map(|e| e.ip.clone()));
            for w in &c.workers {
                out.push(w.ip.clone());
                out.extend(w.pods.iter().map(|p| p.ip.clone()));
            }
        }
        out
    }

    /// The picture as console text.
    pub fn text(&self) -> String {
        if self.clusters.is_empty() {
            return "no clusters yet: declare one, e.g. let C0 = cluster(\"0\"); start();\n".into();
        }
        let mut s = format!("underlay {} (one L2 switch)\n", self.underlay);
        for c in &self.clusters {
            s += &format!("\n{}", c.name);
            if !c.network.is_empty() {
                s += &format!("  pod network {}", c.network);
            }
            s.push('\n');
            let etcd: Vec<String> = c
                .etcd
                .iter()
                .map(|e| format!("{} {}", e.name, e.ip))
                .collect();
            s += &format!("  etcd      {}\n", etcd.join(", "));
            for w in &c.workers {
                s += &format!("  {:<9} {:<12} pods {}", w.name, w.ip, w.subnet);
                if let Some((dev, mac)) = &w.vtep {
                    s += &format!("  VTEP {dev} {mac}");
                }
                if c.router_on.as_deref() == Some(w.name.as_str()) {
                    s += "  skupper router";
                }
                if !w.agents_down.is_empty() {
                    s += &format!("  DOWN: {}", w.agents_down.join(", "));
                }
                s.push('\n');
                for p in &w.pods {
                    s += &format!("      {:<8} {}\n", p.name, p.ip);
                }
            }
            for v in &c.services {
                let eps = if v.endpoints.is_empty() {
                    "no endpoints".to_string()
                } else {
                    v.endpoints.join(", ")
                };
                s += &format!(
                    "  service {} {} [{}] → {eps}\n",
                    v.name,
                    v.ip,
                    v.ports.join(", ")
                );
            }
            for i in &c.ingresses {
                s += &format!("  ingress {} on {}: {}\n", i.name, i.at, i.rules.join(", "));
            }
            for e in &c.skupper_exposed {
                s += &format!("  skupper exposes {e}\n");
            }
        }
        for l in &self.skupper_links {
            s += &format!(
                "\nskupper link (AMQP) {} {} → {} {}\n",
                l.from.name, l.from.ip, l.to.name, l.to.ip
            );
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two clusters, a Service, an ingress and a link: enough to exercise every part.
    pub fn sample() -> Topology {
        let host = |n: &str, ip: &str| Host {
            name: n.into(),
            ip: ip.into(),
        };
        let worker = |n: &str, ip: &str, subnet: &str, pods: Vec<Host>| WorkerView {
            name: n.into(),
            ip: ip.into(),
            subnet: subnet.into(),
            vtep: Some(("flannel.100".into(), "aa:bb:cc:dd:ee:01".into())),
            pods,
            agents_down: vec![],
        };
        Topology {
            underlay: "10.0.0.0/8".into(),
            clusters: vec![
                ClusterView {
                    name: "C0".into(),
                    network: "11.0.0.0/8 vxlan flannel.100 (VNI 100, UDP 8472)".into(),
                    etcd: vec![host("C0e1", "10.1.0.1")],
                    workers: vec![
                        worker(
                            "C0w1",
                            "10.0.0.3",
                            "11.10.0.0/20",
                            vec![host("c1", "11.10.0.2")],
                        ),
                        worker(
                            "C0w2",
                            "10.0.0.4",
                            "11.11.0.0/20",
                            vec![host("c<2>", "11.11.0.2")],
                        ),
                    ],
                    services: vec![ServiceView {
                        name: "web".into(),
                        ip: "100.64.0.1".into(),
                        ports: vec!["tcp 80→8000".into()],
                        endpoints: vec!["c2 11.11.0.2".into()],
                    }],
                    ingresses: vec![IngressView {
                        name: "grp1".into(),
                        at: "C0w1:8001".into(),
                        rules: vec!["/svc1 → 100.64.0.1:80".into()],
                    }],
                    router_on: Some("C0w1".into()),
                    skupper_exposed: vec!["svc1 → port 1028 in the other sites".into()],
                },
                ClusterView {
                    name: "C1".into(),
                    etcd: vec![host("C1e1", "10.2.0.1")],
                    workers: vec![worker("C1w1", "10.0.0.8", "11.12.0.0/20", vec![])],
                    router_on: Some("C1w1".into()),
                    ..ClusterView::default()
                },
            ],
            skupper_links: vec![SkupperLink {
                from: host("C1w1", "10.0.0.8"),
                to: host("C0w1", "10.0.0.3:55671"),
            }],
        }
    }

    #[test]
    fn text_names_every_part() {
        let t = sample().text();
        for want in [
            "underlay 10.0.0.0/8",
            "C0w1      10.0.0.3",
            "pods 11.10.0.0/20",
            "VTEP flannel.100 aa:bb:cc:dd:ee:01",
            "c1       11.10.0.2",
            "service web 100.64.0.1 [tcp 80→8000] → c2 11.11.0.2",
            "ingress grp1 on C0w1:8001: /svc1 → 100.64.0.1:80",
            "skupper link (AMQP) C1w1 10.0.0.8 → C0w1 10.0.0.3:55671",
            "etcd      C1e1 10.2.0.1",
            "skupper exposes svc1 → port 1028 in the other sites",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(Topology::default().text().starts_with("no clusters yet"));
    }

    #[test]
    fn addresses_lists_nodes_and_pods() {
        let a = sample().addresses();
        for ip in [
            "10.1.0.1",
            "10.0.0.3",
            "11.10.0.2",
            "11.11.0.2",
            "10.2.0.1",
            "10.0.0.8",
        ] {
            assert!(a.contains(&ip.to_string()), "{ip} in {a:?}");
        }
    }
}
