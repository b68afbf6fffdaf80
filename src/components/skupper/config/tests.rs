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

/// Each configuration is refused with a message that holds every one of its fragments.
fn assert_refused(cases: &[(&str, &[&str])]) {
    for (text, fragments) in cases {
        let e = RouterConfig::parse(text).unwrap_err().0;
        for f in *fragments {
            assert!(e.contains(f), "config {text}: message {e:?} lacks {f:?}");
        }
    }
}

#[test]
fn unknown_type_is_named() {
    assert_refused(&[(
        r#"[["router", {"id": "a"}], ["tcpListner", {"name": "x"}]]"#,
        &[
            "entry 1",
            "unknown entity type \"tcpListner\"",
            "tcpListener",
        ],
    )]);
}

#[test]
fn unknown_attribute_is_named() {
    assert_refused(&[(
        r#"[["router", {"id": "a"}], ["connector", {"name": "c", "host": "h", "port": 1, "costt": 2}]]"#,
        &["entry 1 (connector)", "unknown attribute \"costt\"", "cost"],
    )]);
}

#[test]
fn ill_typed_attribute_is_named() {
    assert_refused(&[
        (
            r#"[["router", {"id": "a"}], ["tcpListener", {"name": "s", "address": "s", "port": "http"}]]"#,
            &["entry 1 (tcpListener)", "\"port\"", "port number"],
        ),
        (
            r#"[["router", {"id": "a"}], ["connector", {"name": "c", "host": "h", "port": 1, "cost": "x"}]]"#,
            &["\"cost\""],
        ),
        (
            r#"[["router", {"id": "a"}], ["listener", {"port": 70000}]]"#,
            &["\"port\""],
        ),
    ]);
}

#[test]
fn bad_enums_and_structure() {
    assert_refused(&[
        (
            r#"[["router", {"id": "a", "mode": "core"}]]"#,
            &["\"mode\"", "interior, edge"],
        ),
        (
            r#"[["router", {"id": "a"}], ["listener", {"port": 1, "role": "router"}]]"#,
            &["inter-router"],
        ),
        (
            r#"[["router", {"id": "a"}], ["address", {"prefix": "a", "distribution": "any"}]]"#,
            &["distribution"],
        ),
        (r#"{"router": {}}"#, &["JSON list"]),
        (r#"[["router"]]"#, &["entry 0"]),
        ("[[\"router\", {\"id\": \"a\"}],", &["not valid JSON"]),
        (r#"[["listener", {"port": 1}]]"#, &["no router entry"]),
        (
            r#"[["router", {"id": "a"}], ["router", {"id": "b"}]]"#,
            &["second router"],
        ),
        (
            r#"[["router", {"id": "a"}], ["connector", {"name": "c", "port": 1}]]"#,
            &["missing required attribute \"host\""],
        ),
    ]);
}

#[test]
fn edge_mode_roles_are_checked() {
    assert_refused(&[
        (
            r#"[["router", {"id": "e", "mode": "edge"}], ["connector", {"name": "up", "host": "h", "port": 1, "role": "inter-router"}]]"#,
            &["connector \"up\"", "role edge"],
        ),
        (
            r#"[["router", {"id": "e", "mode": "edge"}], ["listener", {"port": 1, "role": "inter-router"}]]"#,
            &["edge mode", "port 1"],
        ),
        (
            r#"[["router", {"id": "i"}], ["connector", {"name": "up", "host": "h", "port": 1, "role": "edge"}]]"#,
            &["belongs to edge routers"],
        ),
    ]);
    RouterConfig::parse(
        r#"[["router", {"id": "e", "mode": "edge"}], ["connector", {"name": "up", "host": "h", "port": 1, "role": "edge"}], ["listener", {"port": 5672}]]"#,
    )
    .unwrap();
}

#[test]
fn undefined_ssl_profile_is_named() {
    assert_refused(&[
        (
            r#"[["router", {"id": "a"}], ["connector", {"name": "c", "host": "h", "port": 1, "sslProfile": "nope"}]]"#,
            &["connector \"c\"", "\"nope\""],
        ),
        (
            r#"[["router", {"id": "a"}], ["sslProfile", {"name": "p", "caCertFile": "c", "certFile": "x"}]]"#,
            &["privateKeyFile"],
        ),
    ]);
}
