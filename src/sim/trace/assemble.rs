//! From the namespaces' trace text to the walk: the namespaces in the order the packet
//! went, the veth steps between a pod and its worker, the answer, and where it was lost.

use super::probe::{Answer, ANSWER_WAIT};
use super::{Place, Role};
use crate::components::trace::{links::Link, nft, walk, Hop, NodeView, NodeWalk, Proto, Vxlan};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Orders the namespaces as the packet went (following where it left each one), decodes
/// each, and adds the veth steps, the answer, and where it was lost.
#[allow(clippy::too_many_arguments)]
pub(super) fn assemble(
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
            // Only a DNAT on the way makes the reply's source differ from the pod's own.
            let via = if cur.ip != dest && hops.iter().any(|h| h.what == "dnat") {
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
pub(super) fn drop_reason_note() -> &'static str {
    if std::path::Path::new("/sys/kernel/tracing/events/skb/kfree_skb").exists() {
        " (the kernel's drop reason: see the skb:kfree_skb tracepoint in /sys/kernel/tracing)"
    } else {
        " (the kernel's own drop reason is not shown: tracefs is not mounted at /sys/kernel/tracing)"
    }
}

/// Where the packet went after leaving `cur`.
pub(super) fn next_place(traced: &[Place], cur: &Place, w: &NodeWalk) -> Option<Place> {
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
pub(super) fn veth_hop(
    from: &Place,
    to: &Place,
    link_map: &BTreeMap<String, Vec<Link>>,
) -> Option<Hop> {
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
