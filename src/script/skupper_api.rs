//! The multi-cluster part of the script API, shaped like the skupper CLI:
//! `C0.skupper_init()`, `let t = C0.skupper_token()`, `C1.skupper_link(t)`,
//! `let port = C0.skupper_expose("svc1", "c4", 80)`, `C0.skupper_delete()`, plus the paths
//! of a site's configuration and log for a lesson to print. Also the original's list form:
//! `create_conf(C1, [C0], svcs)` then `C1.start_skupper()`, with
//! `svcs = [#{ name: "svc1", cluster: "0", host: ip, port: 80, lport: 1028 }]`.

use super::registry::{rt, RResult, Registry};
use crate::sim::{Cluster, LinkOptions, ListService, SiteOptions};
use rhai::{Array, Dynamic, Map};

fn site_options(m: &Map) -> RResult<SiteOptions> {
    let mut o = SiteOptions::default();
    for (k, v) in m {
        match k.as_str() {
            "tls" => {
                o.tls = v.as_bool().map_err(|t| {
                    format!("skupper_init(#{{ tls: ... }}): 'tls' is true or false, got a {t}")
                })?
            }
            other => {
                return Err(format!(
                    "skupper_init: unknown option '{other}'; the only option is 'tls', e.g. #{{ tls: false }}"
                )
                .into())
            }
        }
    }
    Ok(o)
}

fn link_options(m: &Map) -> RResult<LinkOptions> {
    let mut o = LinkOptions::default();
    for (k, v) in m {
        match k.as_str() {
            "cost" => {
                let c = v.as_int().map_err(|t| {
                    format!("skupper_link(t, #{{ cost: ... }}): 'cost' is a number, got a {t}")
                })?;
                if !(1..=1_000_000).contains(&c) {
                    return Err(format!(
                        "skupper_link(t, #{{ cost: {c} }}): the cost must be between 1 and 1000000"
                    )
                    .into());
                }
                o.cost = c as u32;
            }
            other => {
                return Err(format!(
                    "skupper_link: unknown option '{other}'; the only option is 'cost', e.g. #{{ cost: 5 }}"
                )
                .into())
            }
        }
    }
    Ok(o)
}

/// A port given as a number or as a string of digits (the original wrote "80").
fn port_of(ctx: &str, key: &str, v: &Dynamic) -> RResult<u16> {
    let n = if let Ok(i) = v.as_int() {
        Some(i)
    } else {
        v.clone()
            .into_string()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    match n {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => {
            Err(format!("{ctx}: '{key}' must be a port number between 1 and 65535, got {v}").into())
        }
    }
}

fn list_services(cluster: &str, svcs: &Array) -> RResult<Vec<ListService>> {
    let example = "#{ name: \"svc1\", cluster: \"0\", host: ip, port: 80, lport: 1028 }";
    let mut out = Vec::new();
    for (i, v) in svcs.iter().enumerate() {
        let ctx = format!("create_conf({cluster}, ..., svcs): service {i}");
        let m = v
            .read_lock::<Map>()
            .ok_or_else(|| format!("{ctx}: each service is a map such as {example}"))?;
        let text = |k: &str| -> RResult<String> {
            m.get(k)
                .map(|v| v.to_string())
                .ok_or_else(|| format!("{ctx}: '{k}' is missing, e.g. {example}").into())
        };
        for k in m.keys() {
            if !["name", "cluster", "host", "port", "lport"].contains(&k.as_str()) {
                return Err(format!(
                    "{ctx}: unknown field '{k}' (use name, cluster, host, port, lport)"
                )
                .into());
            }
        }
        let port = m
            .get("port")
            .ok_or_else(|| format!("{ctx}: 'port' is missing, e.g. {example}"))?;
        let lport = m
            .get("lport")
            .ok_or_else(|| format!("{ctx}: 'lport' is missing, e.g. {example}"))?;
        out.push(ListService {
            name: text("name")?,
            cluster: text("cluster")?,
            host: text("host")?,
            port: port_of(&ctx, "port", port)?,
            lport: port_of(&ctx, "lport", lport)?,
        });
    }
    Ok(out)
}

fn clusters_of(cluster: &str, remotes: &Array) -> RResult<Vec<Cluster>> {
    remotes
        .iter()
        .map(|r| {
            r.clone().try_cast::<Cluster>().ok_or_else(|| {
                format!(
                    "create_conf({cluster}, remotes, ...): remotes is a list of clusters such as [C0], found a {}",
                    r.type_name()
                )
                .into()
            })
        })
        .collect()
}

pub fn register(reg: &mut Registry) {
    reg.on::<Cluster>()
        .method(
            "skupper_init",
            "skupper_init(opts?)",
            "Creates the cluster's Skupper site: a CA, a router certificate, a router on its first worker; opts #{ tls: false }",
            "C0.skupper_init();",
            |c: &mut Cluster| rt(c.skupper_init(SiteOptions::default())),
        )
        .overload(|c: &mut Cluster, m: Map| -> RResult<()> {
            let o = site_options(&m)?;
            rt(c.skupper_init(o))
        })
        .method(
            "skupper_token",
            "skupper_token() -> string",
            "Writes a token another site links with (this site's CA and a client certificate); returns its path",
            "let t = C0.skupper_token();",
            |c: &mut Cluster| rt(c.skupper_token()),
        )
        .method(
            "skupper_link",
            "skupper_link(token, opts?)",
            "Links this site's router to the token's site over 55671; opts #{ cost: N }",
            "C1.skupper_link(C0.skupper_token());",
            |c: &mut Cluster, t: &str| rt(c.skupper_link(t, LinkOptions::default())),
        )
        .overload(|c: &mut Cluster, t: &str, m: Map| -> RResult<()> {
            let o = link_options(&m)?;
            rt(c.skupper_link(t, o))
        })
        .method(
            "skupper_expose",
            "skupper_expose(service, pod, port) -> int",
            "Exposes pod:port as service to every linked site; returns the port it listens on there (1028, 1029, ...)",
            r#"let port = C0.skupper_expose("svc1", "c4", 80);"#,
            |c: &mut Cluster, svc: &str, container: &str, port: i64| -> RResult<i64> {
                rt(c.skupper_expose(svc, container, port)).map(i64::from)
            },
        )
        .method(
            "skupper_delete",
            "skupper_delete()",
            "Stops the site's router and removes the links and listeners that name it",
            "C0.skupper_delete();",
            |c: &mut Cluster| rt(c.skupper_delete()),
        )
        .property(
            "skupper_config",
            "skupper_config -> string",
            "The path of the site's router configuration (JSON, skupper-router's shape)",
            r#"print(C0w1.exec("cat " + C0.skupper_config));"#,
            |c: &mut Cluster| c.skupper_config_path().display().to_string(),
        )
        .property(
            "skupper_log",
            "skupper_log -> string",
            "The path of the site's router log",
            r#"print(C0w1.exec("tail -3 " + C0.skupper_log));"#,
            |c: &mut Cluster| c.skupper_log_path().display().to_string(),
        )
        .method(
            "skupper_router_pid",
            "skupper_router_pid() -> int | ()",
            "The pid of the site's router, or () without a site",
            "print(C0.skupper_router_pid());",
            |c: &mut Cluster| -> Dynamic {
                c.skupper_router_pid()
                    .map(|p| Dynamic::from(p as i64))
                    .unwrap_or(Dynamic::UNIT)
            },
        )
        .method(
            "skupper_services",
            "skupper_services() -> #{ service: port }",
            "The exposed services and the port each listens on in every linked site",
            "print(C0.skupper_services());",
            |c: &mut Cluster| -> Map {
                c.skupper_services()
                    .into_iter()
                    .map(|(n, p)| (n.into(), (p as i64).into()))
                    .collect()
            },
        )
        .method(
            "create_conf",
            "create_conf(remotes, services) -> string",
            "The original's list form: writes the router config linking to remotes (plain links); returns its path",
            r#"create_conf(C1, [C0], [#{ name: "svc1", cluster: "0", host: ip, port: 80, lport: 1028 }]);"#,
            |c: &mut Cluster, remotes: Array, svcs: Array| -> RResult<String> {
                let name = c.name();
                let remotes = clusters_of(&name, &remotes)?;
                let svcs = list_services(&name, &svcs)?;
                rt(c.create_conf(&remotes, &svcs)).map(|p| p.display().to_string())
            },
        )
        .method(
            "start_skupper",
            "start_skupper()",
            "Starts the router create_conf configured; returns once its links and addresses are up",
            "C1.start_skupper();",
            |c: &mut Cluster| rt(c.start_skupper()),
        );
}
