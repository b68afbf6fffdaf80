//! The console word `trace`: `trace C0w1 c1 100.64.10.1:80` walks one probe from pod c1 on
//! C0w1; `trace C0w1 100.64.10.1:80` from the worker itself; `trace C0e1 10.0.0.3:30080`
//! from an etcd member. An optional word picks the protocol (tcp, udp, icmp); a last
//! word `full` shows every hop.
//! `topo` prints the running simulation; `topo cluster.svg` also draws it.

use crate::sim::{Node, Sim, TraceOptions};

pub const USAGE: &str =
    "trace NODE [POD] DEST[:PORT][/PATH] [tcp|udp|icmp] [full], e.g. `trace C0w1 c1 100.64.10.1:80`";

/// The walk's text for a `trace ...` line, the picture for `topo [FILE]`, or None when
/// the line is neither.
pub fn console_line(sim: &Sim, line: &str) -> Option<Result<String, String>> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    match words.first() {
        Some(&"trace") => {
            words.remove(0);
            Some(run(sim, &words))
        }
        Some(&"topo") => Some(match words.as_slice() {
            [_] => Ok(sim.topology().text()),
            [_, file] => sim
                .write_topology(file)
                .map(|t| format!("{t}(drawn in {file})\n"))
                .map_err(|e| format!("{e:#}")),
            _ => Err("usage: topo [FILE.svg|FILE.html], e.g. `topo cluster.svg`".into()),
        }),
        _ => None,
    }
}

fn run(sim: &Sim, words: &[&str]) -> Result<String, String> {
    let mut words = words.to_vec();
    let mut opts = TraceOptions::default();
    if words.last().is_some_and(|w| w.eq_ignore_ascii_case("full")) {
        opts.full = true;
        words.pop();
    }
    if let Some(last) = words.last() {
        if ["tcp", "udp", "icmp"].contains(&last.to_ascii_lowercase().as_str()) {
            opts.proto = Some(last.to_string());
            words.pop();
        }
    }
    let (node, pod, dest) = match words.as_slice() {
        [node, dest] => (*node, None, *dest),
        [node, pod, dest] => (*node, Some(*pod), *dest),
        _ => return Err(format!("usage: {USAGE}")),
    };
    let walk = match (sim.node(node), pod) {
        (Some(Node::Worker(w)), pod) => w.trace(pod, dest, &opts),
        (Some(Node::Etcd(e)), None) => e.trace(dest, &opts),
        (Some(Node::Etcd(e)), Some(_)) => {
            return Err(format!(
                "{} is an etcd member: it runs no pods. Trace from it with `trace {} DEST`",
                e.name(),
                e.name()
            ))
        }
        (None, _) => {
            return Err(format!(
                "there is no node '{node}' (nodes: {}). Usage: {USAGE}",
                sim.node_names().join(", ")
            ))
        }
    };
    walk.map(|w| w.text).map_err(|e| format!("{e:#}"))
}
