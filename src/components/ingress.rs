//! The ingress controller: real nginx (Debian's nginx-light) with a generated
//! configuration. One `server` listens on the ingress port; each rule proxies requests
//! whose path matches it to its endpoint (usually a Service's ClusterIP:port). A rule's
//! path matches as an Ingress `pathType: Prefix` does, element by element: `/svc1`
//! matches `/svc1` and `/svc1/...` but not `/svc1x`, so each rule becomes two locations,
//! `location = /svc1` and `location /svc1/` (nginx's plain `location /svc1` would match
//! `/svc1x` too).
//!
//! Everything nginx writes (pid file, error and access logs, the five temp directories)
//! lives in the ingress's own directory, so nothing touches the host's /var or /run.
//! nginx is started as `nginx -p DIR -e DIR/error.log -c DIR/nginx.conf -g 'daemon off;'`
//! so the pid the simulator starts is the master's pid; a reload is SIGHUP to that pid.

use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

pub const NGINX_BIN: &str = "/usr/sbin/nginx";
pub const NGINX_PACKAGE: &str = "nginx-light";

/// The nginx binary: `KNETSIM_NGINX` if set, else Debian's /usr/sbin/nginx.
pub fn nginx_bin() -> String {
    std::env::var("KNETSIM_NGINX")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| NGINX_BIN.to_string())
}

/// The temp directories nginx-light would otherwise create under /var/lib/nginx.
pub const TEMP_PATHS: &[(&str, &str)] = &[
    ("client_body_temp_path", "body"),
    ("proxy_temp_path", "proxy"),
    ("fastcgi_temp_path", "fastcgi"),
    ("uwsgi_temp_path", "uwsgi"),
    ("scgi_temp_path", "scgi"),
];

/// One routing rule: requests whose path matches `path` go to `endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub path: String,
    pub endpoint: Backend,
}

/// Where a rule sends its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A fixed address, such as the original's static VIPs: nginx proxies to it as it is.
    Address(SocketAddrV4),
    /// A Service by name and port. As ingress-nginx does by default, nginx proxies
    /// straight to the Service's endpoints (pod IP and target port, balanced by nginx),
    /// not to its ClusterIP; the simulator rewrites them and reloads nginx when they change.
    Service {
        name: String,
        port: u16,
        endpoints: Vec<SocketAddrV4>,
    },
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Address(a) => write!(f, "{a}"),
            Backend::Service { name, port, .. } => write!(f, "{name}:{port}"),
        }
    }
}

impl Backend {
    /// The nginx upstream of a Service backend: `<name>-<port>`.
    fn upstream(&self) -> Option<String> {
        match self {
            Backend::Address(_) => None,
            Backend::Service { name, port, .. } => Some(format!("{name}-{port}")),
        }
    }
}

/// An ingress as the simulator renders it.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub name: String,
    pub port: u16,
    pub rules: Vec<Rule>,
    /// The ingress's own directory: config, pid, logs, temp paths.
    pub dir: PathBuf,
}

/// An ingress name is a plain word: letters, digits, '-' and '_', starting with a letter.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!(
            "ingress name '{name}' is not a plain word: use letters, digits, '-' or '_', starting with a letter (at most 40), e.g. \"grp1\""
        );
    }
    Ok(())
}

/// A rule's path: starts with '/', and carries nothing nginx would read as syntax.
pub fn check_path(path: &str) -> Result<()> {
    if !path.starts_with('/') {
        bail!(
            "ingress path '{path}' does not start with '/': nginx matches request paths, which always do; write \"/{}\"",
            path.trim_start_matches('/')
        );
    }
    if let Some(c) = path.chars().find(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, ';' | '{' | '}' | '"' | '\'' | '\\' | '$' | '#')
    }) {
        bail!(
            "ingress path '{path}' contains {c:?}, which nginx would read as configuration syntax: use a plain URL path such as \"/svc1\""
        );
    }
    if path.len() > 200 {
        bail!("ingress path '{path}' is longer than 200 characters: use a shorter prefix");
    }
    // nginx matches the normalized request path, so a rule with "." or ".." segments or
    // an empty one ("//") would never match what a client sends (or, worse, look like a
    // way out of the prefix it seems to name).
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if *seg == "." || *seg == ".." {
            bail!(
                "ingress path '{path}' has a '{seg}' segment: nginx resolves those before matching, so the rule would never match; write the path without it, e.g. \"/svc1\""
            );
        }
        // A trailing '/' ("/svc1/") is a normal prefix; only empty segments inside count.
        if seg.is_empty() && i != last {
            bail!(
                "ingress path '{path}' has an empty segment ('//'): nginx merges slashes before matching, so write it with single slashes, e.g. \"{}\"",
                collapse_slashes(path)
            );
        }
    }
    Ok(())
}

fn collapse_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// A Prefix path without its trailing '/' ("/svc1/" and "/svc1" match the same requests);
/// "" for "/".
fn prefix_base(path: &str) -> &str {
    path.trim_end_matches('/')
}

/// A rule's endpoint: `IPv4:port` with a port from 1 to 65535, e.g. "100.64.11.1:8000".
pub fn parse_endpoint(endpoint: &str) -> Result<SocketAddrV4> {
    let hint = "an endpoint is an IPv4 address and a port, e.g. \"100.64.11.1:8000\" (a Service's ClusterIP and port)";
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        bail!("ingress endpoint '{endpoint}' has no port: {hint}");
    };
    let ip: Ipv4Addr = host.parse().map_err(|_| {
        anyhow::anyhow!("ingress endpoint '{endpoint}': '{host}' is not an IPv4 address; {hint}")
    })?;
    let port: u32 = port.parse().map_err(|_| {
        anyhow::anyhow!("ingress endpoint '{endpoint}': '{port}' is not a port number; {hint}")
    })?;
    if !(1..=65535).contains(&port) {
        bail!("ingress endpoint '{endpoint}': port {port} is outside 1-65535; {hint}");
    }
    Ok(SocketAddrV4::new(ip, port as u16))
}

/// The ingress's listening port: 1-65535.
pub fn check_port(port: i64) -> Result<u16> {
    if !(1..=65535).contains(&port) {
        bail!("ingress port {port} is not a port: use a number from 1 to 65535, e.g. 8001");
    }
    Ok(port as u16)
}

/// Checks a whole rule list: at least one rule, valid paths, no path twice.
pub fn check_rules(rules: &[Rule]) -> Result<()> {
    if rules.is_empty() {
        bail!("an ingress needs at least one rule, e.g. [#{{ path: \"/svc1\", endpoint: \"100.64.11.1:8000\" }}]");
    }
    for (i, r) in rules.iter().enumerate() {
        check_path(&r.path)?;
        if let Some(o) = rules[..i]
            .iter()
            .find(|o| prefix_base(&o.path) == prefix_base(&r.path))
        {
            bail!(
                "ingress path '{}' appears twice ('{}' matches the same paths, a trailing '/' aside): nginx refuses duplicate locations; keep one rule per path",
                r.path,
                o.path
            );
        }
    }
    Ok(())
}

impl IngressConfig {
    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("nginx.pid")
    }
    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }
    pub fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }
    pub fn temp_dir(&self) -> PathBuf {
        self.dir.join("temp")
    }

    /// Validates every field.
    pub fn check(&self) -> Result<()> {
        check_name(&self.name)?;
        check_port(self.port as i64)?;
        check_rules(&self.rules)
    }

    /// The nginx.conf text.
    pub fn render(&self) -> String {
        let d = |p: &Path| p.display().to_string();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Ingress '{}', generated by knetsim: one server on port {}, one location per rule.",
            self.name, self.port
        );
        let _ = writeln!(
            s,
            "# Reload after editing: kill -HUP $(cat {})",
            d(&self.pid_path())
        );
        s.push_str("worker_processes 1;\n");
        let _ = writeln!(s, "pid {};", d(&self.pid_path()));
        let _ = writeln!(s, "error_log {} notice;", d(&self.error_log()));
        s.push('\n');
        s.push_str("events {\n    worker_connections 256;\n}\n\n");
        s.push_str("http {\n");
        let _ = writeln!(s, "    access_log {};", d(&self.access_log()));
        for (directive, sub) in TEMP_PATHS {
            let _ = writeln!(s, "    {directive} {};", d(&self.temp_dir().join(sub)));
        }
        s.push_str("    default_type text/plain;\n\n");
        // Services: their endpoints, balanced by nginx (round robin), as ingress-nginx does.
        let mut upstreams = Vec::new();
        for r in &self.rules {
            if let (
                Some(u),
                Backend::Service {
                    name, endpoints, ..
                },
            ) = (r.endpoint.upstream(), &r.endpoint)
            {
                if endpoints.is_empty() || upstreams.contains(&u) {
                    continue;
                }
                let _ = writeln!(
                    s,
                    "    # Service {name}: its endpoints, rewritten when they change"
                );
                let _ = writeln!(s, "    upstream {u} {{");
                for e in endpoints {
                    let _ = writeln!(s, "        server {e};");
                }
                s.push_str("    }\n\n");
                upstreams.push(u);
            }
        }
        s.push_str("    server {\n");
        let _ = writeln!(s, "        listen {};", self.port);
        if !self.rules.iter().any(|r| r.path == "/") {
            s.push_str(
                "        # Any path without a rule: 404, as an ingress controller's default backend.\n",
            );
            s.push_str("        location / {\n            return 404 \"no ingress rule matches $uri\\n\";\n        }\n");
        }
        for r in &self.rules {
            let base = prefix_base(&r.path);
            let locations = if base.is_empty() {
                vec!["/".to_string()]
            } else {
                // The path itself, and everything below it: Prefix matches by element.
                vec![format!("= {base}"), format!("{base}/")]
            };
            let body = match &r.endpoint {
                Backend::Address(a) => format!("proxy_pass http://{a};"),
                Backend::Service {
                    name, endpoints, ..
                } if endpoints.is_empty() => {
                    format!("return 503 \"Service {name} has no endpoints\\n\";")
                }
                Backend::Service { .. } => {
                    format!(
                        "proxy_pass http://{};",
                        r.endpoint.upstream().unwrap_or_default()
                    )
                }
            };
            for l in locations {
                let _ = writeln!(s, "        location {l} {{");
                let _ = writeln!(s, "            {body}");
                s.push_str("        }\n");
            }
        }
        s.push_str("    }\n}\n");
        s
    }

    /// Arguments for nginx: the prefix, the early error log and the config, in the
    /// foreground (`daemon off`) so the started pid is the master's.
    pub fn nginx_args(&self, conf: &Path) -> Vec<String> {
        let mut args = self.file_args(conf);
        args.extend(["-g".into(), "daemon off;".into()]);
        args
    }

    /// Arguments for `nginx -t` against `conf`.
    pub fn test_args(&self, conf: &Path) -> Vec<String> {
        let mut args = vec!["-t".into(), "-q".into()];
        args.extend(self.file_args(conf));
        args
    }

    /// The prefix, the early error log and the config `conf`.
    fn file_args(&self, conf: &Path) -> Vec<String> {
        vec![
            "-p".into(),
            format!("{}/", self.dir.display()),
            "-e".into(),
            self.error_log().display().to_string(),
            "-c".into(),
            conf.display().to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> IngressConfig {
        IngressConfig {
            name: "grp1".into(),
            port: 8001,
            rules: vec![
                Rule {
                    path: "/svc1".into(),
                    endpoint: Backend::Address("100.64.11.1:8000".parse().unwrap()),
                },
                Rule {
                    path: "/svc2".into(),
                    endpoint: Backend::Address("100.64.11.2:8000".parse().unwrap()),
                },
            ],
            dir: "/run/knetsim/x/C0w1/ingress/grp1".into(),
        }
    }

    #[test]
    fn renders_one_location_per_rule_and_keeps_paths_in_the_dir() {
        let text = cfg().render();
        assert!(text.contains("listen 8001;"));
        // Prefix by path element: exactly /svc1, and everything under /svc1/ (not /svc1x)
        assert!(text.contains(
            "location = /svc1 {\n            proxy_pass http://100.64.11.1:8000;\n        }\n        \
             location /svc1/ {\n            proxy_pass http://100.64.11.1:8000;\n        }"
        ));
        assert!(!text.contains("location /svc1 {"), "{text}");
        assert!(text.contains("proxy_pass http://100.64.11.2:8000;"));
        assert!(text.contains("pid /run/knetsim/x/C0w1/ingress/grp1/nginx.pid;"));
        // Every path nginx writes is inside the ingress directory.
        for line in text
            .lines()
            .filter(|l| l.contains("/tmp") || l.contains("/var"))
        {
            if line.trim_start().starts_with('#') {
                continue;
            }
            assert!(
                line.contains("/run/knetsim/x/C0w1/ingress/grp1/"),
                "a path outside the ingress dir: {line}"
            );
        }
        for (d, _) in TEMP_PATHS {
            assert!(text.contains(d), "{d} is not overridden");
        }
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn validates_names_paths_endpoints_ports() {
        assert!(check_name("grp1").is_ok());
        assert!(check_name("web-in_1").is_ok());
        for bad in ["", "1grp", "grp 1", "a/b", "x;y"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("plain word"), "{bad}: {e}");
        }
        assert!(check_path("/svc1").is_ok());
        let e = check_path("svc1").unwrap_err().to_string();
        assert!(
            e.contains("does not start with '/'") && e.contains("\"/svc1\""),
            "{e}"
        );
        for bad in ["/a b", "/a;b", "/a{", "/$x"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for ok in ["/", "/svc1/", "/a/b.c/..d"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("/../x", "'..' segment"),
            ("/a/..", "'..' segment"),
            ("/./x", "'.' segment"),
            ("//x", "empty segment"),
            ("/a//b", "\"/a/b\""),
            ("..", "does not start with '/'"),
        ] {
            let e = check_path(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(
            parse_endpoint("100.64.11.1:8000").unwrap(),
            "100.64.11.1:8000".parse().unwrap()
        );
        for (bad, why) in [
            ("100.64.11.1", "has no port"),
            ("svc1:8000", "not an IPv4 address"),
            ("100.64.11.1:http", "not a port number"),
            ("100.64.11.1:0", "outside 1-65535"),
            ("100.64.11.1:70000", "outside 1-65535"),
            ("100.64.11.300:80", "not an IPv4 address"),
        ] {
            let e = parse_endpoint(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("e.g."), "{bad}: {e}");
        }
        assert_eq!(check_port(8001).unwrap(), 8001);
        assert!(check_port(0).is_err());
        assert!(check_port(65536).is_err());
    }

    #[test]
    fn a_service_rule_proxies_to_its_endpoints_through_an_upstream() {
        let mut c = cfg();
        c.rules[0].endpoint = Backend::Service {
            name: "web".into(),
            port: 80,
            endpoints: vec![
                "11.10.0.2:8000".parse().unwrap(),
                "11.11.0.2:8000".parse().unwrap(),
            ],
        };
        c.rules[1].endpoint = Backend::Service {
            name: "empty".into(),
            port: 80,
            endpoints: vec![],
        };
        let text = c.render();
        assert!(
            text.contains("upstream web-80 {\n        server 11.10.0.2:8000;\n        server 11.11.0.2:8000;\n    }"),
            "{text}"
        );
        assert!(
            text.contains("location = /svc1 {\n            proxy_pass http://web-80;"),
            "{text}"
        );
        assert!(!text.contains("upstream empty-80"), "{text}");
        assert!(
            text.contains(
                "location /svc2/ {\n            return 503 \"Service empty has no endpoints\\n\";"
            ),
            "{text}"
        );
        assert_eq!(c.rules[0].endpoint.to_string(), "web:80");
    }

    #[test]
    fn a_rule_for_slash_replaces_the_default_404() {
        let mut c = cfg();
        assert!(c.render().contains("return 404"));
        c.rules[0].path = "/".into();
        let text = c.render();
        assert!(!text.contains("return 404"));
        assert_eq!(text.matches("location / {").count(), 1);
    }

    #[test]
    fn rejects_empty_and_duplicate_rules() {
        assert!(check_rules(&[]).is_err());
        let mut c = cfg();
        c.rules[1].path = "/svc1".into();
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{e}");
        c.rules[1].path = "/svc1/".into();
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("'/svc1/' appears twice ('/svc1' matches"), "{e}");
    }
}
