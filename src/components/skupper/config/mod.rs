//! skupper-router's configuration format: a JSON list of `[type, {attributes}]` entries.
//!
//! Only the entity types and attributes knetsim's router understands are accepted; anything
//! else is refused with a message naming the entry's index, its type, the attribute and what
//! is allowed, so a typo never silently changes behaviour. [`RouterConfig::render`] writes
//! the same format back, so the simulator can generate configuration files.

use std::fmt;
use std::path::Path;

mod parse;
mod render;
mod schema;
#[cfg(test)]
mod tests;

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

    pub fn ssl_profile(&self, name: &str) -> Option<&SslProfile> {
        self.ssl_profiles.iter().find(|p| p.name == name)
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
