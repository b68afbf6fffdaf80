//! skupper-router's configuration format: a JSON list of `[type, {attributes}]` entries.
//!
//! Only the entity types and attributes knetsim's router understands are accepted; anything
//! else is refused with a message naming the entry's index, its type, the attribute and what
//! is allowed, so a typo never silently changes behaviour. [`RouterConfig::render`] writes
//! the same format back, so the simulator can generate configuration files.

use serde_json::{json, Map, Value};
use std::fmt;
use std::path::Path;

/// Default inter-router port (skupper-router's).
pub const INTER_ROUTER_PORT: u16 = 55671;
/// Default edge port.
pub const EDGE_PORT: u16 = 45671;
/// Default health/metrics HTTP port.
pub const HTTP_PORT: u16 = 9090;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Interior,
    Edge,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Interior => "interior",
            Mode::Edge => "edge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Normal,
    InterRouter,
    Edge,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Normal => "normal",
            Role::InterRouter => "inter-router",
            Role::Edge => "edge",
        }
    }
    /// Whether a connection in this role joins two routers.
    pub fn is_router_link(&self) -> bool {
        matches!(self, Role::InterRouter | Role::Edge)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    pub id: String,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: Option<String>,
    pub host: String,
    pub port: u16,
    pub role: Role,
    pub ssl_profile: Option<String>,
    pub cost: Option<u32>,
    /// An HTTP listener (health and metrics) instead of an AMQP one.
    pub http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connector {
    pub name: String,
    pub role: Role,
    pub host: String,
    pub port: u16,
    pub cost: u32,
    pub ssl_profile: Option<String>,
    pub verify_hostname: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpListener {
    pub name: String,
    pub address: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpConnector {
    pub name: String,
    pub address: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslProfile {
    pub name: String,
    pub ca_cert_file: String,
    pub cert_file: Option<String>,
    pub private_key_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub prefix: String,
    pub distribution: String,
}

/// A whole router configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub router: Router,
    pub listeners: Vec<Listener>,
    pub connectors: Vec<Connector>,
    pub tcp_listeners: Vec<TcpListener>,
    pub tcp_connectors: Vec<TcpConnector>,
    pub ssl_profiles: Vec<SslProfile>,
    pub addresses: Vec<Address>,
}

/// A configuration error, naming where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Str,
    Port,
    Int,
    Bool,
}

impl Kind {
    fn describe(&self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Port => "a port number 1-65535 (number or string)",
            Kind::Int => "a non-negative integer",
            Kind::Bool => "true or false",
        }
    }
}

/// The entity types, and per type its attributes: (name, kind, required).
/// An attribute: name, kind, required.
type Attr = (&'static str, Kind, bool);

const SCHEMA: &[(&str, &[Attr])] = &[
    (
        "router",
        &[
            ("id", Kind::Str, true),
            ("mode", Kind::Str, false),
            ("workerThreads", Kind::Int, false),
        ],
    ),
    (
        "listener",
        &[
            ("name", Kind::Str, false),
            ("host", Kind::Str, false),
            ("port", Kind::Port, true),
            ("role", Kind::Str, false),
            ("sslProfile", Kind::Str, false),
            ("cost", Kind::Int, false),
            ("saslMechanisms", Kind::Str, false),
            ("authenticatePeer", Kind::Bool, false),
            ("requireSsl", Kind::Bool, false),
            ("http", Kind::Bool, false),
            ("healthz", Kind::Bool, false),
            ("metrics", Kind::Bool, false),
            ("websockets", Kind::Bool, false),
        ],
    ),
    (
        "connector",
        &[
            ("name", Kind::Str, true),
            ("role", Kind::Str, false),
            ("host", Kind::Str, true),
            ("port", Kind::Port, true),
            ("cost", Kind::Int, false),
            ("sslProfile", Kind::Str, false),
            ("verifyHostname", Kind::Bool, false),
            ("saslMechanisms", Kind::Str, false),
        ],
    ),
    (
        "tcpListener",
        &[
            ("name", Kind::Str, true),
            ("address", Kind::Str, true),
            ("host", Kind::Str, false),
            ("port", Kind::Port, true),
            ("siteId", Kind::Str, false),
        ],
    ),
    (
        "tcpConnector",
        &[
            ("name", Kind::Str, true),
            ("address", Kind::Str, true),
            ("host", Kind::Str, true),
            ("port", Kind::Port, true),
            ("siteId", Kind::Str, false),
        ],
    ),
    (
        "sslProfile",
        &[
            ("name", Kind::Str, true),
            ("caCertFile", Kind::Str, true),
            ("certFile", Kind::Str, false),
            ("privateKeyFile", Kind::Str, false),
        ],
    ),
    (
        "address",
        &[
            ("prefix", Kind::Str, true),
            ("pattern", Kind::Str, false),
            ("distribution", Kind::Str, false),
        ],
    ),
];

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

fn port_of(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse::<u64>().ok()?,
        _ => return None,
    };
    if (1..=65535).contains(&n) {
        Some(n as u16)
    } else {
        None
    }
}

fn kind_ok(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::Str => v.is_string(),
        Kind::Port => port_of(v).is_some(),
        Kind::Int => v.as_u64().is_some_and(|n| n <= u32::MAX as u64),
        Kind::Bool => v.is_boolean(),
    }
}

impl RouterConfig {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<RouterConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read router config {}: {e}; pass an existing file with -c",
                path.display()
            ))
        })?;
        Self::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

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
        let mut cfg = RouterConfig {
            router: Router {
                id: String::new(),
                mode: Mode::Interior,
            },
            listeners: vec![],
            connectors: vec![],
            tcp_listeners: vec![],
            tcp_connectors: vec![],
            ssl_profiles: vec![],
            addresses: vec![],
        };
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

    pub fn ssl_profile(&self, name: &str) -> Option<&SslProfile> {
        self.ssl_profiles.iter().find(|p| p.name == name)
    }

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

    /// A new configuration holding just the router entry.
    pub fn new(id: &str, mode: Mode) -> RouterConfig {
        RouterConfig {
            router: Router {
                id: id.to_string(),
                mode,
            },
            listeners: vec![],
            connectors: vec![],
            tcp_listeners: vec![],
            tcp_connectors: vec![],
            ssl_profiles: vec![],
            addresses: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"[
      ["router", {"id": "C0", "mode": "interior"}],
      ["sslProfile", {"name": "site", "caCertFile": "/x/ca.crt", "certFile": "/x/tls.crt", "privateKeyFile": "/x/tls.key"}],
      ["listener", {"name": "ir", "host": "0.0.0.0", "port": "55671", "role": "inter-router", "sslProfile": "site"}],
      ["listener", {"port": 9090, "http": true, "healthz": true, "metrics": true}],
      ["connector", {"name": "to-C1", "role": "inter-router", "host": "10.0.0.8", "port": 55671, "cost": 3}],
      ["tcpListener", {"name": "svc1", "address": "svc1", "port": 1028}],
      ["tcpConnector", {"name": "svc1", "address": "svc1", "host": "11.10.0.2", "port": 80}],
      ["address", {"prefix": "svc", "distribution": "closest"}]
    ]"#;

    #[test]
    fn parses_every_entity_type() {
        let c = RouterConfig::parse(SAMPLE).unwrap();
        assert_eq!(c.router.id, "C0");
        assert_eq!(c.router.mode, Mode::Interior);
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].port, 55671);
        assert_eq!(c.listeners[0].role, Role::InterRouter);
        assert_eq!(c.listeners[0].ssl_profile.as_deref(), Some("site"));
        assert!(c.listeners[1].http);
        assert_eq!(c.listeners[1].host, "0.0.0.0");
        assert_eq!(c.connectors[0].cost, 3);
        assert_eq!(c.connectors[0].host, "10.0.0.8");
        assert_eq!(c.tcp_listeners[0].port, 1028);
        assert_eq!(c.tcp_listeners[0].host, "0.0.0.0");
        assert_eq!(c.tcp_connectors[0].host, "11.10.0.2");
        assert_eq!(c.ssl_profiles[0].cert_file.as_deref(), Some("/x/tls.crt"));
        assert_eq!(c.addresses[0].distribution, "closest");
    }

    #[test]
    fn render_round_trips() {
        let c = RouterConfig::parse(SAMPLE).unwrap();
        let text = c.render();
        let again = RouterConfig::parse(&text).unwrap();
        assert_eq!(c, again);
        assert!(text.contains("\"tcpConnector\""), "{text}");
    }

    fn err(text: &str) -> String {
        RouterConfig::parse(text).unwrap_err().0
    }

    #[test]
    fn unknown_type_is_named() {
        let e = err(r#"[["router", {"id": "a"}], ["tcpListner", {"name": "x"}]]"#);
        assert!(e.contains("entry 1"), "{e}");
        assert!(e.contains("unknown entity type \"tcpListner\""), "{e}");
        assert!(e.contains("tcpListener"), "{e}");
    }

    #[test]
    fn unknown_attribute_is_named() {
        let e = err(
            r#"[["router", {"id": "a"}], ["connector", {"name": "c", "host": "h", "port": 1, "costt": 2}]]"#,
        );
        assert!(e.contains("entry 1 (connector)"), "{e}");
        assert!(e.contains("unknown attribute \"costt\""), "{e}");
        assert!(e.contains("cost"), "{e}");
    }

    #[test]
    fn ill_typed_attribute_is_named() {
        let e = err(
            r#"[["router", {"id": "a"}], ["tcpListener", {"name": "s", "address": "s", "port": "http"}]]"#,
        );
        assert!(e.contains("entry 1 (tcpListener)"), "{e}");
        assert!(e.contains("\"port\""), "{e}");
        assert!(e.contains("port number"), "{e}");
        let e = err(
            r#"[["router", {"id": "a"}], ["connector", {"name": "c", "host": "h", "port": 1, "cost": "x"}]]"#,
        );
        assert!(e.contains("\"cost\""), "{e}");
        let e = err(r#"[["router", {"id": "a"}], ["listener", {"port": 70000}]]"#);
        assert!(e.contains("\"port\""), "{e}");
    }

    #[test]
    fn bad_enums_and_structure() {
        let e = err(r#"[["router", {"id": "a", "mode": "core"}]]"#);
        assert!(
            e.contains("\"mode\"") && e.contains("interior, edge"),
            "{e}"
        );
        let e = err(r#"[["router", {"id": "a"}], ["listener", {"port": 1, "role": "router"}]]"#);
        assert!(e.contains("inter-router"), "{e}");
        let e = err(
            r#"[["router", {"id": "a"}], ["address", {"prefix": "a", "distribution": "any"}]]"#,
        );
        assert!(e.contains("distribution"), "{e}");
        let e = err(r#"{"router": {}}"#);
        assert!(e.contains("JSON list"), "{e}");
        let e = err(r#"[["router"]]"#);
        assert!(e.contains("entry 0"), "{e}");
        let e = err("[[\"router\", {\"id\": \"a\"}],");
        assert!(e.contains("not valid JSON"), "{e}");
        let e = err(r#"[["listener", {"port": 1}]]"#);
        assert!(e.contains("no router entry"), "{e}");
        let e = err(r#"[["router", {"id": "a"}], ["router", {"id": "b"}]]"#);
        assert!(e.contains("second router"), "{e}");
        let e = err(r#"[["router", {"id": "a"}], ["connector", {"name": "c", "port": 1}]]"#);
        assert!(e.contains("missing required attribute \"host\""), "{e}");
    }

    #[test]
    fn edge_mode_roles_are_checked() {
        let e = err(
            r#"[["router", {"id": "e", "mode": "edge"}], ["connector", {"name": "up", "host": "h", "port": 1, "role": "inter-router"}]]"#,
        );
        assert!(
            e.contains("connector \"up\"") && e.contains("role edge"),
            "{e}"
        );
        let e = err(
            r#"[["router", {"id": "e", "mode": "edge"}], ["listener", {"port": 1, "role": "inter-router"}]]"#,
        );
        assert!(e.contains("edge mode") && e.contains("port 1"), "{e}");
        let e = err(
            r#"[["router", {"id": "i"}], ["connector", {"name": "up", "host": "h", "port": 1, "role": "edge"}]]"#,
        );
        assert!(e.contains("belongs to edge routers"), "{e}");
        RouterConfig::parse(
            r#"[["router", {"id": "e", "mode": "edge"}], ["connector", {"name": "up", "host": "h", "port": 1, "role": "edge"}], ["listener", {"port": 5672}]]"#,
        )
        .unwrap();
    }

    #[test]
    fn undefined_ssl_profile_is_named() {
        let e = err(
            r#"[["router", {"id": "a"}], ["connector", {"name": "c", "host": "h", "port": 1, "sslProfile": "nope"}]]"#,
        );
        assert!(
            e.contains("connector \"c\"") && e.contains("\"nope\""),
            "{e}"
        );
        let e = err(
            r#"[["router", {"id": "a"}], ["sslProfile", {"name": "p", "caCertFile": "c", "certFile": "x"}]]"#,
        );
        assert!(e.contains("privateKeyFile"), "{e}");
    }
}
