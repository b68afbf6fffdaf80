//! The packet walk in scripts: `w.trace(pod, dest)`, `w.trace(pod, dest, #{ proto, port })`,
//! `w.trace(dest)` from the worker itself, and `e.trace(dest)` from an etcd member (a
//! machine outside the pod network). Each prints the annotated walk and returns its hops
//! as an array of `#{ node, dev, what, detail }`. `topology()` prints the running
//! simulation; `topology("file.svg")` (or `.html`) also draws it into a file.

use super::registry::{rt, Env, RResult, Registry};
use crate::sim::{EtcdNode, TraceOptions, Walk, Worker};
use rhai::{Array, Dynamic, Map, NativeCallContext};

fn options(m: &Map) -> RResult<TraceOptions> {
    let mut o = TraceOptions::default();
    for (k, v) in m.iter() {
        match k.as_str() {
            "proto" | "protocol" => o.proto = Some(v.to_string()),
            "port" => {
                o.port = Some(v.as_int().map_err(|t| {
                    format!("trace(..., #{{ port: ... }}): the port is a whole number such as 80, got {t}")
                })?)
            }
            "full" => {
                o.full = v.as_bool().map_err(|t| {
                    format!("trace(..., #{{ full: ... }}): full is true or false, got {t}")
                })?
            }
            other => {
                return Err(format!(
                    "trace(..., #{{ {other}: ... }}): unknown option '{other}' (use proto: \"tcp\"|\"udp\"|\"icmp\", port: 80, full: true)"
                )
                .into())
            }
        }
    }
    Ok(o)
}

/// Prints the walk and hands back its hops.
fn shown(w: anyhow::Result<Walk>) -> RResult<Array> {
    let w = rt(w)?;
    print!("{}", w.text);
    Ok(w.hops
        .into_iter()
        .map(|h| {
            let mut m = Map::new();
            m.insert("node".into(), h.node.into());
            m.insert("dev".into(), h.dev.into());
            m.insert("what".into(), h.what.into());
            m.insert("detail".into(), h.detail.into());
            Dynamic::from(m)
        })
        .collect())
}

pub fn register(reg: &mut Registry) {
    reg.func(
        "topology",
        "topology([file])",
        "Prints the running simulation (underlay, workers, pods, subnets, VTEPs, Services, ingress, Skupper links); with a file ending in .svg or .html, draws it there too",
        r#"topology("cluster.svg");"#,
        |ctx: NativeCallContext| -> RResult<()> {
            print!("{}", Env::of(&ctx)?.sim.topology().text());
            Ok(())
        },
    )
    .overload(|ctx: NativeCallContext, file: &str| -> RResult<()> {
        let text = rt(Env::of(&ctx)?.sim.write_topology(file))?;
        print!("{text}");
        println!("(drawn in {file})");
        Ok(())
    });
    reg.on::<Worker>()
        .method(
            "trace",
            "trace([pod,] dest[, #{ proto, port }]) -> [#{ node, dev, what, detail }]",
            "Sends one real probe from a pod (or from the worker itself) to dest (IP or IP:PORT) and shows every hop the kernel reports: veth, bridge, nft chains and DNAT, VXLAN, the pod that answers",
            r#"let hops = C0w1.trace("c1", "100.64.10.1:80");"#,
            |w: &mut Worker, pod: &str, dest: &str| {
                shown(w.trace(Some(pod), dest, &TraceOptions::default()))
            },
        )
        .overload(|w: &mut Worker, pod: &str, dest: &str, o: Map| {
            shown(w.trace(Some(pod), dest, &options(&o)?))
        })
        .overload(|w: &mut Worker, dest: &str| {
            shown(w.trace(None, dest, &TraceOptions::default()))
        })
        .overload(|w: &mut Worker, dest: &str, o: Map| {
            shown(w.trace(None, dest, &options(&o)?))
        });
    reg.on::<EtcdNode>()
        .method(
            "trace",
            "trace(dest[, #{ proto, port }]) -> [#{ node, dev, what, detail }]",
            "Sends one real probe from this etcd member (a machine outside the pod network) to dest, e.g. a NodePort, and shows every hop",
            r#"let hops = C0e1.trace("10.0.0.3:30080");"#,
            |e: &mut EtcdNode, dest: &str| shown(e.trace(dest, &TraceOptions::default())),
        )
        .overload(|e: &mut EtcdNode, dest: &str, o: Map| {
            shown(e.trace(dest, &options(&o)?))
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_options_and_their_mistakes() {
        let mut m = Map::new();
        m.insert("proto".into(), "udp".into());
        m.insert("port".into(), Dynamic::from(53_i64));
        m.insert("full".into(), true.into());
        let o = options(&m).unwrap();
        assert_eq!(
            (o.proto.as_deref(), o.port, o.full),
            (Some("udp"), Some(53), true)
        );
        let bad = |k: &str, v: Dynamic| {
            let mut m = Map::new();
            m.insert(k.into(), v);
            options(&m).unwrap_err().to_string()
        };
        assert!(bad("full", "yes".into()).contains("full is true or false"));
        assert!(bad("port", "80".into()).contains("whole number"));
        assert!(bad("verbose", true.into()).contains("unknown option 'verbose'"));
    }
}
