//! The ingress part of the script API: real nginx on a worker, and the lessons' echo
//! servers in pods.
//!
//! ```rhai
//! let ing = C0.get("w1").run_ingress("grp1", 8001, [
//!     #{ path: "/svc1", endpoint: "100.64.11.1:8000" },
//!     #{ path: "/svc2", endpoint: "100.64.11.2:8000" },
//! ]);
//! print(ing.conf);                        // <run dir>/C0w1/ingress/grp1/nginx.conf
//! C0.get("w2").echo_server("c2", 8000, "S1-W2");
//! ```

use super::registry::{rt, RResult, Registry};
use crate::sim::{IngressInfo, IngressRule, Worker};
use rhai::{Array, Dynamic, Map};

const RULE_EXAMPLE: &str = "#{ path: \"/svc1\", endpoint: \"100.64.11.1:8000\" }";
const SERVICE_EXAMPLE: &str = "#{ path: \"/svc1\", service: \"svc1\", port: 8000 }";

fn rules_from(name: &str, a: &Array) -> RResult<Vec<IngressRule>> {
    let ctx = format!("run_ingress(\"{name}\", ...)");
    let mut out = Vec::new();
    for (i, v) in a.iter().enumerate() {
        let m = v.read_lock::<Map>().ok_or_else(|| {
            format!(
                "{ctx}: rule {} is a {}, not a map; each rule looks like {RULE_EXAMPLE}",
                i + 1,
                v.type_name()
            )
        })?;
        let mut path = None;
        let mut endpoint = None;
        let mut service = None;
        let mut service_port = None;
        for (k, v) in m.iter() {
            if k.as_str() == "port" {
                let p = v.as_int().map_err(|t| {
                    format!("{ctx}: rule {}: 'port' must be a whole number (the Service's port), got a {t}; e.g. {SERVICE_EXAMPLE}", i + 1)
                })?;
                service_port = Some(p);
                continue;
            }
            let text = v.clone().into_string().map_err(|t| {
                format!(
                    "{ctx}: rule {}: '{k}' must be a string, got a {t}; e.g. {RULE_EXAMPLE}",
                    i + 1
                )
            })?;
            match k.as_str() {
                "path" => path = Some(text),
                "endpoint" => endpoint = Some(text),
                "service" => service = Some(text),
                other => {
                    return Err(format!(
                        "{ctx}: rule {}: unknown field '{other}' (a rule has 'path' and 'endpoint', e.g. {RULE_EXAMPLE}, or 'path', 'service' and 'port', e.g. {SERVICE_EXAMPLE})",
                        i + 1
                    )
                    .into())
                }
            }
        }
        let endpoint = match (endpoint, service, service_port) {
            (e, None, None) => e,
            (None, Some(s), Some(p)) => Some(format!("{s}:{p}")),
            _ => {
                return Err(format!(
                    "{ctx}: rule {}: give either 'endpoint' (an address, e.g. {RULE_EXAMPLE}) or 'service' and 'port' (e.g. {SERVICE_EXAMPLE})",
                    i + 1
                )
                .into())
            }
        };
        match (path, endpoint) {
            (Some(path), Some(endpoint)) => out.push(IngressRule { path, endpoint }),
            (None, _) => {
                return Err(
                    format!("{ctx}: rule {} has no 'path'; e.g. {RULE_EXAMPLE}", i + 1).into(),
                )
            }
            (_, None) => {
                return Err(format!(
                    "{ctx}: rule {} has no 'endpoint'; e.g. {RULE_EXAMPLE}",
                    i + 1
                )
                .into())
            }
        }
    }
    Ok(out)
}

fn info_map(i: IngressInfo) -> Map {
    let mut m = Map::new();
    m.insert("name".into(), i.name.into());
    m.insert("worker".into(), i.worker.into());
    m.insert("port".into(), (i.port as i64).into());
    m.insert("pid".into(), (i.pid as i64).into());
    m.insert("conf".into(), i.conf.display().to_string().into());
    let rules: Array = i
        .rules
        .into_iter()
        .map(|r| {
            let mut rm = Map::new();
            rm.insert("path".into(), r.path.into());
            rm.insert("endpoint".into(), r.endpoint.to_string().into());
            Dynamic::from_map(rm)
        })
        .collect();
    m.insert("rules".into(), rules.into());
    m
}

pub fn register(reg: &mut Registry) {
    reg.on::<Worker>()
        .method(
            "run_ingress",
            "run_ingress(name, port, rules) -> #{ name, worker, port, pid, conf, rules }",
            "Starts real nginx on the worker routing each rule's path (an Ingress Prefix: /svc1 and /svc1/..., not /svc1x) to its endpoint: an address as it is, or #{ path, service, port } to the Service's endpoints (pod IPs, balanced by nginx and updated as pods come and go, as ingress-nginx does); again with the same name reloads",
            r#"let ing = C0w1.run_ingress("grp1", 8001, [#{ path: "/svc1", endpoint: "100.64.11.1:8000" }]);"#,
            |w: &mut Worker, name: &str, port: i64, rules: Array| -> RResult<Map> {
                let rules = rules_from(name, &rules)?;
                rt(w.run_ingress(name, port, &rules)).map(info_map)
            },
        )
        .method(
            "stop_ingress",
            "stop_ingress(name)",
            "Stops an ingress's nginx (by its recorded pid)",
            r#"C0w1.stop_ingress("grp1");"#,
            |w: &mut Worker, name: &str| rt(w.stop_ingress(name)),
        )
        .method(
            "ingresses",
            "ingresses() -> [string]",
            "The names of the ingresses running on this worker",
            "print(C0w1.ingresses());",
            |w: &mut Worker| -> Array { w.ingresses().into_iter().map(Dynamic::from).collect() },
        )
        .method(
            "echo_server",
            "echo_server(pod, port, message) -> int",
            "Starts an HTTP server in a pod answering every GET with message; waits until it listens; returns its pid",
            r#"C0w2.echo_server("c2", 8000, "S1-W2");"#,
            |w: &mut Worker, container: &str, port: i64, message: &str| -> RResult<i64> {
                rt(w.echo_server(container, port, message)).map(|p| p as i64)
            },
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pairs: &[(&str, Dynamic)]) -> Dynamic {
        let mut m = Map::new();
        for (k, v) in pairs {
            m.insert((*k).into(), v.clone());
        }
        Dynamic::from_map(m)
    }

    #[test]
    fn rules_are_maps_with_a_path_and_an_endpoint() {
        let ok = rule(&[
            ("path", "/svc1".into()),
            ("endpoint", "100.64.11.1:8000".into()),
        ]);
        let r = rules_from("grp1", &vec![ok]).unwrap();
        assert_eq!(
            (r[0].path.as_str(), r[0].endpoint.as_str()),
            ("/svc1", "100.64.11.1:8000")
        );
        let by_service = rule(&[
            ("path", "/svc1".into()),
            ("service", "svc1".into()),
            ("port", Dynamic::from(8000_i64)),
        ]);
        let r = rules_from("grp1", &vec![by_service]).unwrap();
        assert_eq!(r[0].endpoint, "svc1:8000");
        for (bad, want) in [
            (
                rule(&[("path", "/a".into()), ("service", "svc1".into())]),
                "either 'endpoint'",
            ),
            (
                rule(&[
                    ("path", "/a".into()),
                    ("service", "svc1".into()),
                    ("port", "http".into()),
                ]),
                "'port' must be a whole number",
            ),
        ] {
            let e = rules_from("grp1", &vec![bad]).unwrap_err().to_string();
            assert!(
                e.contains(want) && e.contains(SERVICE_EXAMPLE),
                "{want}: {e}"
            );
        }
        for (bad, want) in [
            (Dynamic::from("/svc1"), "not a map"),
            (
                rule(&[("endpoint", "100.64.11.1:8000".into())]),
                "has no 'path'",
            ),
            (rule(&[("path", "/svc1".into())]), "has no 'endpoint'"),
            (
                rule(&[
                    ("path", "/a".into()),
                    ("endpoint", "1.2.3.4:5".into()),
                    ("host", "x".into()),
                ]),
                "unknown field 'host'",
            ),
            (
                rule(&[
                    ("path", Dynamic::from(1_i64)),
                    ("endpoint", "1.2.3.4:5".into()),
                ]),
                "must be a string",
            ),
        ] {
            let e = rules_from("grp1", &vec![bad]).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(RULE_EXAMPLE), "{want}: {e}");
        }
    }
}
