//! Writing a configuration back in skupper-router's format.

use super::RouterConfig;
use serde_json::{json, Map, Value};

impl RouterConfig {
    /// Renders the configuration in skupper-router's JSON format (parseable by [`parse`]).
    ///
    /// [`parse`]: RouterConfig::parse
    pub fn render(&self) -> String {
        let mut out: Vec<Value> =
            vec![json!(["router", {"id": self.router.id, "mode": self.router.mode.as_str()}])];
        for p in &self.ssl_profiles {
            let mut m = Map::new();
            m.insert("name".into(), json!(p.name));
            m.insert("caCertFile".into(), json!(p.ca_cert_file));
            if let Some(c) = &p.cert_file {
                m.insert("certFile".into(), json!(c));
            }
            if let Some(k) = &p.private_key_file {
                m.insert("privateKeyFile".into(), json!(k));
            }
            out.push(json!(["sslProfile", m]));
        }
        for l in &self.listeners {
            let mut m = Map::new();
            if let Some(n) = &l.name {
                m.insert("name".into(), json!(n));
            }
            m.insert("host".into(), json!(l.host));
            m.insert("port".into(), json!(l.port));
            m.insert("role".into(), json!(l.role.as_str()));
            if let Some(p) = &l.ssl_profile {
                m.insert("sslProfile".into(), json!(p));
            }
            if let Some(c) = l.cost {
                m.insert("cost".into(), json!(c));
            }
            if l.http {
                m.insert("http".into(), json!(true));
                m.insert("healthz".into(), json!(true));
                m.insert("metrics".into(), json!(true));
            }
            out.push(json!(["listener", m]));
        }
        for c in &self.connectors {
            let mut m = Map::new();
            m.insert("name".into(), json!(c.name));
            m.insert("role".into(), json!(c.role.as_str()));
            m.insert("host".into(), json!(c.host));
            m.insert("port".into(), json!(c.port));
            m.insert("cost".into(), json!(c.cost));
            if let Some(p) = &c.ssl_profile {
                m.insert("sslProfile".into(), json!(p));
            }
            if !c.verify_hostname {
                m.insert("verifyHostname".into(), json!(false));
            }
            out.push(json!(["connector", m]));
        }
        for t in &self.tcp_listeners {
            out.push(json!(["tcpListener", {"name": t.name, "address": t.address, "host": t.host, "port": t.port}]));
        }
        for t in &self.tcp_connectors {
            out.push(json!(["tcpConnector", {"name": t.name, "address": t.address, "host": t.host, "port": t.port}]));
        }
        for a in &self.addresses {
            out.push(json!(["address", {"prefix": a.prefix, "distribution": a.distribution}]));
        }
        let lines: Vec<String> = out.iter().map(|v| format!("  {v}")).collect();
        format!("[\n{}\n]\n", lines.join(",\n"))
    }
}
