//! Through the ingress: a client's HTTP request to an ingress (nginx on a worker), and
//! nginx's own connection to the endpoint its location names (usually a Service). Two TCP
//! flows, as in a real cluster, where nginx ends the client's connection and opens its
//! own: first the client's SYN to nginx is traced, then a real GET is sent whose upstream
//! SYN, leaving nginx's namespace for the endpoint, is marked as the probe.

use super::probe::http_get;
use super::{client_leg, parse_target, proxy_leg, render, Place, TraceOptions, Walk};
use crate::components::ingress::Backend;
use crate::components::trace::Hop;
use crate::sim::{Cluster, Sim};
use anyhow::{anyhow, bail, Result};

pub(super) fn walk(
    sim: &Sim,
    cluster: &str,
    places: &[Place],
    src: &Place,
    dest: &str,
    path: &str,
    opts: &TraceOptions,
) -> Result<Walk> {
    if opts
        .proto
        .as_deref()
        .is_some_and(|p| !p.eq_ignore_ascii_case("tcp"))
    {
        bail!("trace: '{dest}{path}' is an HTTP request through an ingress, which is tcp: drop the proto option");
    }
    let tcp = TraceOptions {
        proto: Some("tcp".into()),
        port: opts.port,
        full: opts.full,
    };
    let (ip, _, port) = parse_target(dest, &tcp)?;
    let port = port.unwrap_or(80);
    let c = Cluster::handle(sim, cluster);
    let mut listening = Vec::new();
    let mut found = None;
    for w in c.workers() {
        for name in w.ingresses() {
            let Some(i) = w.ingress(&name) else { continue };
            listening.push(format!("{}:{} ({})", w.ip(), i.port, i.name));
            if w.ip() == ip && i.port == port {
                found = Some((w.clone(), i));
            }
        }
    }
    let (worker, info) = found.ok_or_else(|| {
        anyhow!(
            "trace: no ingress of {} listens on {ip}:{port} (listening: {}); a path after IP:PORT means an HTTP request through an ingress, e.g. trace(\"c1\", \"10.0.0.3:8001/svc1\")",
            c.name(),
            crate::sim::listed(&listening, "none: start one with run_ingress")
        )
    })?;
    // nginx's prefix locations: the longest prefix of the path wins.
    let rule = info
        .rules
        .iter()
        .filter(|r| path.starts_with(&r.path))
        .max_by_key(|r| r.path.len())
        .ok_or_else(|| {
            let paths: Vec<String> = info.rules.iter().map(|r| r.path.clone()).collect();
            anyhow!(
                "trace: ingress {} routes no location that {path} starts with (its paths: {}): nginx answers 404 itself",
                info.name,
                paths.join(", ")
            )
        })?
        .clone();
    let proxy = places
        .iter()
        .find(|p| p.label == worker.name())
        .ok_or_else(|| anyhow!("{} is not in the simulation's state", worker.name()))?;
    let up = rule.endpoint;
    let (leg1, tag1) = client_leg(places, src, ip, port)?;
    // An address is proxied to as it is (a ClusterIP is then DNATed on the way); a
    // Service backend is balanced by nginx itself over the Service's endpoints.
    let (targets, how) = match &up {
        Backend::Address(a) => (vec![*a], format!("{a}")),
        Backend::Service {
            name,
            port,
            endpoints,
        } => (
            endpoints.clone(),
            format!("one of the Service {name}:{port}'s endpoints, which nginx picks itself (as ingress-nginx does)"),
        ),
    };
    if targets.is_empty() {
        bail!("trace: the location {} of ingress {} proxies to {up}, which has no endpoints: nginx answers 502 itself", rule.path, info.name);
    }
    let leg2 = proxy_leg(places, proxy, &targets, || {
        http_get(&src.ns, ip, port, path)
    })?;
    let mut hops = leg1.hops;
    hops.push(Hop::new(
        &proxy.label,
        "",
        "proxy",
        format!(
            "nginx (ingress {}) ends the client's connection, reads GET {path}, and for location {} opens its own connection to {how}: a second TCP flow, from {} itself",
            info.name, rule.path, proxy.label
        ),
    ));
    let second = hops.len();
    hops.extend(leg2.hops);
    let mut raw = leg1.raw;
    for (k, v) in leg2.raw {
        raw.entry(k)
            .and_modify(|t| {
                t.push_str(&v);
            })
            .or_insert(v);
    }
    let text = format!(
        "Packet walk through the ingress {}: GET http://{ip}:{port}{path} from {} ({})\n  \
         flow 1: the client to nginx (source port {tag1}), hops 1-{second}; flow 2: nginx to {up}, from hop {}\n{}",
        info.name,
        src.label,
        src.ip,
        second + 1,
        render(&hops, opts.full)
    );
    Ok(Walk {
        hops,
        answered: leg2.answered,
        text,
        raw,
    })
}
