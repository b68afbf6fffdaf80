//! Which entity types and attributes the router accepts, and of which kind each is.

use serde_json::Value;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Str,
    Port,
    Int,
    Bool,
}

impl Kind {
    pub(super) fn describe(&self) -> &'static str {
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
pub(super) type Attr = (&'static str, Kind, bool);

pub(super) const SCHEMA: &[(&str, &[Attr])] = &[
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

pub(super) fn port_of(v: &Value) -> Option<u16> {
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

pub(super) fn kind_ok(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::Str => v.is_string(),
        Kind::Port => port_of(v).is_some(),
        Kind::Int => v.as_u64().is_some_and(|n| n <= u32::MAX as u64),
        Kind::Bool => v.is_boolean(),
    }
}
