//! Parsing and checking a configuration against the schema.

use super::schema::{kind_ok, port_of, SCHEMA};
use super::{
    Address, ConfigError, Connector, Listener, Mode, Role, Router, RouterConfig, SslProfile,
    TcpConnector, TcpListener, INTER_ROUTER_PORT,
};
use serde_json::{Map, Value};
use std::fmt;

/// One checked entry: its attributes, known to be of the right kinds.
struct Entry<'a> {
    index: usize,
    ty: &'a str,
    attrs: &'a Map<String, Value>,
}

impl Entry<'_> {
    fn err(&self, msg: impl fmt::Display) -> ConfigError {
        ConfigError(format!("entry {} ({}): {}", self.index, self.ty, msg))
    }
    fn str(&self, k: &str) -> Option<String> {
        self.attrs
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }
    fn req_str(&self, k: &str) -> String {
        // Presence was checked against the schema.
        self.str(k).unwrap_or_default()
    }
    fn port(&self, k: &str) -> Option<u16> {
        self.attrs.get(k).and_then(port_of)
    }
    fn int(&self, k: &str) -> Option<u32> {
        self.attrs.get(k).and_then(|v| v.as_u64()).map(|v| v as u32)
    }
    fn bool(&self, k: &str) -> Option<bool> {
        self.attrs.get(k).and_then(|v| v.as_bool())
    }
    fn role(&self, default: Role) -> Result<Role, ConfigError> {
        match self.str("role").as_deref() {
            None => Ok(default),
            Some("normal") => Ok(Role::Normal),
            Some("inter-router") => Ok(Role::InterRouter),
            Some("edge") => Ok(Role::Edge),
            Some(other) => Err(self.err(format!(
                "attribute \"role\" is \"{other}\"; allowed: normal, inter-router, edge"
            ))),
        }
    }
}

impl RouterConfig {
    /// Parses skupper-router's JSON configuration.
    pub fn parse(text: &str) -> Result<RouterConfig, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            ConfigError(format!(
                "not valid JSON ({e}); the config is a JSON list of [type, {{attributes}}] entries"
            ))
        })?;
        let list = v.as_array().ok_or_else(|| {
            ConfigError(
                "the top level must be a JSON list of [type, {attributes}] entries".to_string(),
            )
        })?;
        let allowed_types: Vec<&str> = SCHEMA.iter().map(|(t, _)| *t).collect();
        let mut router = None;
        // The router entry found below replaces this placeholder.
        let mut cfg = RouterConfig::new("", Mode::Interior);
        for (index, item) in list.iter().enumerate() {
            let pair = item.as_array().filter(|a| a.len() == 2);
            let (ty, attrs) = match pair.map(|a| (a[0].as_str(), a[1].as_object())) {
                Some((Some(t), Some(o))) => (t, o),
                _ => {
                    return Err(ConfigError(format!(
                        "entry {index}: expected [\"type\", {{attributes}}], found {item}"
                    )))
                }
            };
            let schema = SCHEMA
                .iter()
                .find(|(t, _)| *t == ty)
                .map(|(_, s)| *s)
                .ok_or_else(|| {
                    ConfigError(format!(
                        "entry {index}: unknown entity type \"{ty}\"; allowed: {}",
                        allowed_types.join(", ")
                    ))
                })?;
            let e = Entry { index, ty, attrs };
            for (k, v) in attrs {
                match schema.iter().find(|(n, _, _)| n == k) {
                    None => {
                        let names: Vec<&str> = schema.iter().map(|(n, _, _)| *n).collect();
                        return Err(e.err(format!(
                            "unknown attribute \"{k}\"; allowed: {}",
                            names.join(", ")
                        )));
                    }
                    Some((_, kind, _)) if !kind_ok(*kind, v) => {
                        return Err(e.err(format!(
                            "attribute \"{k}\" is {v}, but it must be {}",
                            kind.describe()
                        )));
                    }
                    _ => {}
                }
            }
            for (n, _, required) in schema {
                if *required && !attrs.contains_key(*n) {
                    return Err(e.err(format!("missing required attribute \"{n}\"")));
                }
            }
            match ty {
                "router" => {
                    if router.is_some() {
                        return Err(e.err("a second router entry; a config has exactly one"));
                    }
                    let mode = match e.str("mode").as_deref() {
                        None | Some("interior") => Mode::Interior,
                        Some("edge") => Mode::Edge,
                        Some(m) => {
                            return Err(e.err(format!(
                                "attribute \"mode\" is \"{m}\"; allowed: interior, edge"
                            )))
                        }
                    };
                    let id = e.req_str("id");
                    if id.is_empty() || id.contains('/') {
                        return Err(e.err("attribute \"id\" must be non-empty and without '/'"));
                    }
                    router = Some(Router { id, mode });
                }
                "listener" => cfg.listeners.push(Listener {
                    name: e.str("name"),
                    host: e.str("host").unwrap_or_else(|| "0.0.0.0".into()),
                    port: e.port("port").unwrap_or(INTER_ROUTER_PORT),
                    role: e.role(Role::Normal)?,
                    ssl_profile: e.str("sslProfile"),
                    cost: e.int("cost"),
                    http: e.bool("http").unwrap_or(false),
                }),
                "connector" => cfg.connectors.push(Connector {
                    name: e.req_str("name"),
                    role: e.role(Role::Normal)?,
                    host: e.req_str("host"),
                    port: e.port("port").unwrap_or(INTER_ROUTER_PORT),
                    cost: e.int("cost").unwrap_or(1).max(1),
                    ssl_profile: e.str("sslProfile"),
                    verify_hostname: e.bool("verifyHostname").unwrap_or(true),
                }),
                "tcpListener" => cfg.tcp_listeners.push(TcpListener {
                    name: e.req_str("name"),
                    address: e.req_str("address"),
                    host: e.str("host").unwrap_or_else(|| "0.0.0.0".into()),
                    port: e.port("port").unwrap_or(0),
                }),
                "tcpConnector" => cfg.tcp_connectors.push(TcpConnector {
                    name: e.req_str("name"),
                    address: e.req_str("address"),
                    host: e.req_str("host"),
                    port: e.port("port").unwrap_or(0),
                }),
                "sslProfile" => cfg.ssl_profiles.push(SslProfile {
                    name: e.req_str("name"),
                    ca_cert_file: e.req_str("caCertFile"),
                    cert_file: e.str("certFile"),
                    private_key_file: e.str("privateKeyFile"),
                }),
                "address" => {
                    let distribution = e.str("distribution").unwrap_or_else(|| "balanced".into());
                    if !["balanced", "closest", "multicast"].contains(&distribution.as_str()) {
                        return Err(e.err(format!(
                            "attribute \"distribution\" is \"{distribution}\"; allowed: balanced, closest, multicast"
                        )));
                    }
                    cfg.addresses.push(Address {
                        prefix: e.req_str("prefix"),
                        distribution,
                    })
                }
                _ => unreachable!("type checked against SCHEMA"),
            }
        }
        cfg.router = router.ok_or_else(|| {
            ConfigError(
                "no router entry; add [\"router\", {\"id\": \"NAME\", \"mode\": \"interior\"}]"
                    .into(),
            )
        })?;
        cfg.check_references()?;
        cfg.check_roles()?;
        Ok(cfg)
    }

    /// skupper-router's edge mode: an edge router links only through `edge`-role connectors
    /// to interior routers; only interior routers take edge links or join inter-router ones.
    fn check_roles(&self) -> Result<(), ConfigError> {
        let edge = self.router.mode == Mode::Edge;
        for l in self.listeners.iter().filter(|l| !l.http) {
            if edge && l.role.is_router_link() {
                return Err(ConfigError(format!(
                    "listener on port {} has role {}, but router {} is in edge mode: an edge router takes no router links; give it an edge-role connector to an interior router, or make it interior",
                    l.port,
                    l.role.as_str(),
                    self.router.id
                )));
            }
        }
        for c in &self.connectors {
            let ok = match c.role {
                Role::InterRouter => !edge,
                Role::Edge => edge,
                Role::Normal => true,
            };
            if !ok {
                return Err(ConfigError(format!(
                    "connector \"{}\" has role {} in a router in {} mode; {}",
                    c.name,
                    c.role.as_str(),
                    self.router.mode.as_str(),
                    if edge {
                        "an edge router connects with role edge (to an interior router's edge listener, port 45671)"
                    } else {
                        "an interior router connects with role inter-router; role edge belongs to edge routers"
                    }
                )));
            }
        }
        Ok(())
    }

    fn check_references(&self) -> Result<(), ConfigError> {
        let profiles: Vec<&str> = self.ssl_profiles.iter().map(|p| p.name.as_str()).collect();
        let check = |what: String, p: &Option<String>| -> Result<(), ConfigError> {
            match p {
                Some(p) if !profiles.contains(&p.as_str()) => Err(ConfigError(format!(
                    "{what} names sslProfile \"{p}\", which is not defined; defined: [{}]",
                    profiles.join(", ")
                ))),
                _ => Ok(()),
            }
        };
        for l in &self.listeners {
            check(format!("listener on port {}", l.port), &l.ssl_profile)?;
        }
        for c in &self.connectors {
            check(format!("connector \"{}\"", c.name), &c.ssl_profile)?;
        }
        for p in &self.ssl_profiles {
            if p.cert_file.is_some() != p.private_key_file.is_some() {
                return Err(ConfigError(format!(
                    "sslProfile \"{}\": certFile and privateKeyFile go together; give both or neither",
                    p.name
                )));
            }
        }
        Ok(())
    }
}
