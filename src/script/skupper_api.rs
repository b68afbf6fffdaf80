//! The multi-cluster part of the script API, shaped like the skupper CLI:
//! `C0.skupper_init()`, `let t = C0.skupper_token()`, `C1.skupper_link(t)`,
//! `let port = C0.skupper_expose("svc1", "c4", 80)`, `C0.skupper_delete()`, plus the paths
//! of a site's configuration and log for a lesson to print.

use crate::sim::{Cluster, LinkOptions, SiteOptions};
use rhai::{Dynamic, Engine, EvalAltResult, Map};

type RResult<T> = Result<T, Box<EvalAltResult>>;

fn rt<T>(r: anyhow::Result<T>) -> RResult<T> {
    r.map_err(|e| format!("{e:#}").into())
}

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

pub fn register(engine: &mut Engine) {
    engine.register_fn("skupper_init", |c: &mut Cluster| {
        rt(c.skupper_init(SiteOptions::default()))
    });
    engine.register_fn("skupper_init", |c: &mut Cluster, m: Map| -> RResult<()> {
        let o = site_options(&m)?;
        rt(c.skupper_init(o))
    });
    engine.register_fn("skupper_token", |c: &mut Cluster| rt(c.skupper_token()));
    engine.register_fn("skupper_link", |c: &mut Cluster, t: &str| {
        rt(c.skupper_link(t, LinkOptions::default()))
    });
    engine.register_fn(
        "skupper_link",
        |c: &mut Cluster, t: &str, m: Map| -> RResult<()> {
            let o = link_options(&m)?;
            rt(c.skupper_link(t, o))
        },
    );
    engine.register_fn(
        "skupper_expose",
        |c: &mut Cluster, svc: &str, container: &str, port: i64| -> RResult<i64> {
            rt(c.skupper_expose(svc, container, port)).map(i64::from)
        },
    );
    engine.register_fn("skupper_delete", |c: &mut Cluster| rt(c.skupper_delete()));
    engine.register_get("skupper_config", |c: &mut Cluster| {
        c.skupper_config_path().display().to_string()
    });
    engine.register_get("skupper_log", |c: &mut Cluster| {
        c.skupper_log_path().display().to_string()
    });
    engine.register_fn("skupper_router_pid", |c: &mut Cluster| -> Dynamic {
        c.skupper_router_pid()
            .map(|p| Dynamic::from(p as i64))
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn("skupper_services", |c: &mut Cluster| -> Map {
        c.skupper_services()
            .into_iter()
            .map(|(n, p)| (n.into(), (p as i64).into()))
            .collect()
    });
}
