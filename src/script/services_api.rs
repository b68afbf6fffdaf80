//! The Services part of the script API: the original's `kp_vip_add`, Kubernetes-shaped
//! Services with selectors, and the nft counters a lesson prints and checks.

use super::registry::{rt, RResult, Registry};
use crate::sim::{Cluster, PortSpec, ServiceSpec, Worker};
use rhai::{Array, Dynamic, Map};
use std::collections::BTreeMap;

fn strings(what: &str, a: &Array) -> RResult<Vec<String>> {
    a.iter()
        .map(|v| {
            v.clone().into_string().map_err(|t| {
                format!("{what}: expected container names such as [\"c2\", \"c3\"], found a {t}")
                    .into()
            })
        })
        .collect()
}

fn int(ctx: &str, key: &str, v: &Dynamic) -> RResult<i64> {
    v.as_int()
        .map_err(|t| format!("{ctx}: '{key}' must be a number, got a {t}").into())
}

fn port_spec(ctx: &str, v: &Dynamic) -> RResult<PortSpec> {
    let m = v.read_lock::<Map>().ok_or_else(|| {
        format!("{ctx}: each port is a map such as #{{ port: 80, target: 8000 }}")
    })?;
    let mut p = PortSpec::default();
    let mut has_port = false;
    for (k, v) in m.iter() {
        match k.as_str() {
            "port" => {
                p.port = int(ctx, "port", v)?;
                has_port = true;
            }
            "target" | "target_port" | "targetPort" => p.target = Some(int(ctx, "target", v)?),
            "node_port" | "nodePort" => p.node_port = Some(int(ctx, "node_port", v)?),
            "protocol" => p.protocol = Some(v.to_string()),
            "name" => p.name = Some(v.to_string()),
            other => {
                return Err(format!(
                "{ctx}: unknown port field '{other}' (use port, target, protocol, name, node_port)"
            )
                .into())
            }
        }
    }
    if !has_port {
        return Err(
            format!("{ctx}: a port needs 'port', e.g. #{{ port: 80, target: 8000 }}").into(),
        );
    }
    Ok(p)
}

fn service_spec(name: &str, m: &Map) -> RResult<ServiceSpec> {
    let ctx = format!("service(\"{name}\", ...)");
    let mut spec = ServiceSpec::default();
    for (k, v) in m.iter() {
        match k.as_str() {
            "selector" => {
                let sel = v.read_lock::<Map>().ok_or_else(|| {
                    format!("{ctx}: 'selector' is a map such as #{{ app: \"web\" }}")
                })?;
                for (lk, lv) in sel.iter() {
                    spec.selector.insert(lk.to_string(), lv.to_string());
                }
            }
            "ports" => {
                let ports = v.read_lock::<Array>().ok_or_else(|| {
                    format!("{ctx}: 'ports' is a list such as [#{{ port: 80, target: 8000 }}]")
                })?;
                for p in ports.iter() {
                    spec.ports.push(port_spec(&ctx, p)?);
                }
            }
            "type" => spec.type_ = Some(v.to_string()),
            "cluster_ip" | "clusterIP" => spec.cluster_ip = Some(v.to_string()),
            other => {
                return Err(format!(
                    "{ctx}: unknown field '{other}' (use selector, ports, type, cluster_ip)"
                )
                .into())
            }
        }
    }
    if spec.selector.is_empty() {
        return Err(format!(
            "{ctx}: give a selector, e.g. selector: #{{ app: \"web\" }}, matching pod labels"
        )
        .into());
    }
    Ok(spec)
}

pub fn register(reg: &mut Registry) {
    reg.on::<Cluster>()
        .method(
            "kp_vip_add",
            "kp_vip_add(vip, pods)",
            "The original's static VIP: every protocol to vip is DNATed to one of pods, chosen per flow",
            r#"C0.kp_vip_add("100.64.10.1", ["c2", "c3"]);"#,
            |c: &mut Cluster, vip: &str, names: Array| -> RResult<()> {
                let names = strings("kp_vip_add", &names)?;
                rt(c.kp_vip_add(vip, &names))
            },
        )
        .method(
            "kp_vip_del",
            "kp_vip_del(vip)",
            "Removes a static VIP from every worker",
            r#"C0.kp_vip_del("100.64.10.1");"#,
            |c: &mut Cluster, vip: &str| rt(c.kp_vip_del(vip)),
        )
        .method(
            "service",
            "service(name, #{ selector, ports, type?, cluster_ip? }) -> string",
            "Creates or updates a Service whose endpoints follow its pods' labels; returns its ClusterIP",
            r#"let ip = C0.service("web", #{ selector: #{ app: "web" }, ports: [#{ port: 80, target: 8000 }] });"#,
            |c: &mut Cluster, name: &str, m: Map| -> RResult<String> {
                let spec = service_spec(name, &m)?;
                rt(c.service(name, &spec)).map(|ip| ip.to_string())
            },
        )
        .method(
            "delete_service",
            "delete_service(name)",
            "Deletes a Service and its rules",
            r#"C0.delete_service("web");"#,
            |c: &mut Cluster, name: &str| rt(c.delete_service(name)),
        )
        .method(
            "service_ip",
            "service_ip(name) -> string",
            "A Service's ClusterIP",
            r#"print(C0.service_ip("web"));"#,
            |c: &mut Cluster, name: &str| -> RResult<String> {
                rt(c.service_ip(name)).map(|ip| ip.to_string())
            },
        );
    reg.on::<Worker>()
        .method(
            "nft_counters",
            "nft_counters() -> [#{ kind, service, endpoint, packets, bytes }]",
            "The kube-proxy table's counters on this worker: flows per Service (or VIP) and endpoint",
            "print(C0w1.nft_counters());",
            |w: &mut Worker| -> RResult<Array> {
                let rows = rt(w.nft_counters())?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        let mut m = Map::new();
                        m.insert("kind".into(), r.kind.into());
                        m.insert("service".into(), r.service.into());
                        m.insert("endpoint".into(), r.endpoint.to_string().into());
                        m.insert("packets".into(), (r.packets as i64).into());
                        m.insert("bytes".into(), (r.bytes as i64).into());
                        Dynamic::from_map(m)
                    })
                    .collect())
            },
        )
        .method(
            "flows_by_endpoint",
            "flows_by_endpoint(service) -> #{ endpoint: flows }",
            "Flows per endpoint IP of one Service or VIP on this worker (from nft_counters)",
            r#"print(C0w1.flows_by_endpoint("100.64.10.1"));"#,
            |w: &mut Worker, service: &str| -> RResult<Map> {
                let rows = rt(w.nft_counters())?;
                let mut by: BTreeMap<String, i64> = BTreeMap::new();
                for r in rows
                    .into_iter()
                    .filter(|r| r.service == service || r.service.contains(&format!("/{service}/")))
                {
                    *by.entry(r.endpoint.to_string()).or_default() += r.packets as i64;
                }
                Ok(by.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
            },
        );
}
