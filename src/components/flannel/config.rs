//! The flannel network configuration, stored in etcd at `<prefix>/config`, e.g.
//!
//! ```json
//! {"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.99.0.0",
//!  "Backend":{"Type":"vxlan","VNI":100,"Port":8472}}
//! ```
//!
//! Missing fields get flannel's defaults: SubnetLen 24 when the network is a /22 or larger
//! (else the network's prefix + 2), SubnetMin = the network plus one subnet (the first
//! subnet is skipped), SubnetMax = the last subnet; backend VNI 1, port 8472 (the Linux
//! kernel's VXLAN port, which flannel leaves to the kernel). The `host-gw` backend has no
//! options: it routes each remote subnet via the remote node's address.

use super::subnet::Ipv4Net;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::net::Ipv4Addr;

/// The port the Linux kernel uses for VXLAN when none is given (not IANA's 4789).
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// flannel's vxlan backend default VNI.
pub const DEFAULT_VNI: u32 = 1;

/// The validated configuration with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub backend: Backend,
}

/// The backends this agent implements: each lives in its own file ([`super::vxlan`],
/// [`super::hostgw`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Vxlan(VxlanConfig),
    HostGw,
}

/// The backend types this agent implements, as flannel spells them.
pub const BACKEND_TYPES: [&str; 2] = ["vxlan", "host-gw"];

impl Backend {
    /// flannel's name of the backend type (`Backend.Type`, a lease's `BackendType`).
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Vxlan(_) => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }

    /// The device pod traffic to other nodes leaves by: `flannel.<VNI>` for vxlan, the
    /// external interface (`eth0`) for host-gw.
    pub fn device(&self, ext_iface: &str) -> String {
        match self {
            Backend::Vxlan(v) => v.device_name(),
            Backend::HostGw => ext_iface.to_string(),
        }
    }

    /// Bytes each packet to another node carries on top of the pod's packet: the VXLAN
    /// encapsulation (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14), nothing for host-gw.
    pub fn overhead(&self) -> u32 {
        match self {
            Backend::Vxlan(_) => 50,
            Backend::HostGw => 0,
        }
    }
}

impl NetConfig {
    /// The JSON flannel reads from `<prefix>/config`, every default written out, in the
    /// order of the original's conf/flannel-network-config.json.
    pub fn to_json(&self) -> String {
        let backend = match &self.backend {
            Backend::Vxlan(v) => format!(r#"{{"Type":"vxlan","VNI":{},"Port":{}}}"#, v.vni, v.port),
            Backend::HostGw => r#"{"Type":"host-gw"}"#.to_string(),
        };
        format!(
            r#"{{"Network":"{}","SubnetLen":{},"SubnetMin":"{}","SubnetMax":"{}","Backend":{backend}}}"#,
            self.network, self.subnet_len, self.subnet_min, self.subnet_max
        )
    }

    /// The VXLAN part, if the backend is vxlan.
    pub fn vxlan(&self) -> Option<&VxlanConfig> {
        match &self.backend {
            Backend::Vxlan(v) => Some(v),
            Backend::HostGw => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    pub vni: u32,
    pub port: u16,
    pub learning: bool,
    pub gbp: bool,
}

impl VxlanConfig {
    /// The device name flannel uses: `flannel.<VNI>`.
    pub fn device_name(&self) -> String {
        format!("flannel.{}", self.vni)
    }
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(rename = "Network")]
    network: Option<String>,
    #[serde(rename = "SubnetLen")]
    subnet_len: Option<u32>,
    #[serde(rename = "SubnetMin")]
    subnet_min: Option<String>,
    #[serde(rename = "SubnetMax")]
    subnet_max: Option<String>,
    #[serde(rename = "Backend")]
    backend: Option<RawBackend>,
}

#[derive(Deserialize)]
struct RawBackend {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "VNI")]
    vni: Option<i64>,
    #[serde(rename = "Port")]
    port: Option<i64>,
    #[serde(rename = "Learning")]
    learning: Option<bool>,
    #[serde(rename = "GBP")]
    gbp: Option<bool>,
}

fn parse_ip(field: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| anyhow!("{field} \"{s}\" is not an IPv4 address"))
}

/// Parses and validates the JSON text of `<prefix>/config` (`key` is only used in messages).
pub fn parse(text: &str, key: &str) -> Result<NetConfig> {
    let raw: RawConfig = serde_json::from_str(text).with_context(|| {
        format!("the flannel network config in etcd key {key} is not valid JSON: {text}")
    })?;
    let network_s = raw.network.ok_or_else(|| {
        anyhow!("the flannel network config in {key} has no \"Network\" field; please define a correct Network parameter, e.g. \"Network\":\"11.0.0.0/8\"")
    })?;
    let network: Ipv4Net = network_s
        .parse()
        .with_context(|| format!("\"Network\" in {key}"))?;
    let network = network.normalized();

    let subnet_len: u8 = match raw.subnet_len {
        Some(0) | None => {
            if network.prefix_len > 28 {
                bail!("network {network} is too small: the minimum useful network prefix is /28");
            } else if network.prefix_len <= 22 {
                24
            } else {
                network.prefix_len + 2
            }
        }
        Some(l) => {
            if l > 30 {
                bail!("SubnetLen {l} is too long: it must be less than /31");
            }
            let l = l as u8;
            if l < network.prefix_len + 2 {
                bail!("SubnetLen /{l} is too short for network {network}: the network must be able to accommodate at least four subnets, so give a SubnetLen of /{} to /30", network.prefix_len + 2);
            }
            l
        }
    };
    let size = 1u32 << (32 - subnet_len);
    let subnet_min = match raw.subnet_min.as_deref() {
        None | Some("") => Ipv4Addr::from(u32::from(network.ip) + size),
        Some(s) => {
            let ip = parse_ip("SubnetMin", s)?;
            if !network.contains(ip) {
                bail!("SubnetMin {ip} is not in the range of the Network {network}: give an address inside it, or leave SubnetMin out (flannel then starts at the second subnet)");
            }
            ip
        }
    };
    let subnet_max = match raw.subnet_max.as_deref() {
        None | Some("") => Ipv4Addr::from(network.last_u32().wrapping_add(1).wrapping_sub(size)),
        Some(s) => {
            let ip = parse_ip("SubnetMax", s)?;
            if !network.contains(ip) {
                bail!("SubnetMax {ip} is not in the range of the Network {network}: give an address inside it, or leave SubnetMax out (flannel then ends at the last subnet)");
            }
            ip
        }
    };
    let mask = u32::MAX << (32 - subnet_len);
    if u32::from(subnet_min) & mask != u32::from(subnet_min) {
        bail!("SubnetMin is not on a SubnetLen (/{subnet_len}) boundary: {subnet_min}");
    }
    if u32::from(subnet_max) & mask != u32::from(subnet_max) {
        bail!("SubnetMax is not on a SubnetLen (/{subnet_len}) boundary: {subnet_max}");
    }
    if subnet_min > subnet_max {
        bail!("SubnetMin {subnet_min} is above SubnetMax {subnet_max} in {key}: no subnet could be leased; swap them or widen the range");
    }

    let backend = match raw.backend {
        None => bail!("the flannel network config in {key} has no \"Backend\"; flannel would default to \"udp\", but this agent implements only the vxlan and host-gw backends: add \"Backend\":{{\"Type\":\"vxlan\"}}"),
        Some(b) => {
            let kind = b.kind.unwrap_or_default();
            match kind.as_str() {
                "vxlan" => {
                    let vni = b.vni.unwrap_or(DEFAULT_VNI.into());
                    if !(1..=0xFF_FFFF).contains(&vni) {
                        bail!("VNI {vni} in {key} is out of range: a VXLAN network identifier is 24 bits, give 1 to 16777215");
                    }
                    let port = match b.port {
                        None | Some(0) => DEFAULT_VXLAN_PORT,
                        Some(p) if (1..=65535).contains(&p) => p as u16,
                        Some(p) => bail!("Port {p} in {key} is out of range: a UDP port is 1 to 65535 (0 or none: the Linux default {DEFAULT_VXLAN_PORT})"),
                    };
                    Backend::Vxlan(VxlanConfig {
                        vni: vni as u32,
                        port,
                        learning: b.learning.unwrap_or(false),
                        gbp: b.gbp.unwrap_or(false),
                    })
                }
                "host-gw" => Backend::HostGw,
                _ => bail!("backend type \"{kind}\" in {key} is not supported: this agent implements the vxlan and host-gw backends (\"Backend\":{{\"Type\":\"vxlan\"}} or {{\"Type\":\"host-gw\"}})"),
            }
        }
    };
    Ok(NetConfig {
        network,
        subnet_len,
        subnet_min,
        subnet_max,
        backend,
    })
}

/// The simulator's config, the original's conf/flannel-network-config.json.
pub const SIM_DEFAULT_JSON: &str = r#"{"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.99.0.0","Backend":{"Type":"vxlan","VNI":100,"Port":8472}}"#;

/// What a user wrote for one flannel option (the script's whole numbers and strings).
#[derive(Debug, Clone)]
pub enum OptValue {
    Int(i64),
    Text(String),
}

/// The script's names of flannel's fields, each with flannel's own name.
pub const OPTIONS: [(&str, &str); 7] = [
    ("network", "Network"),
    ("subnet_len", "SubnetLen"),
    ("subnet_min", "SubnetMin"),
    ("subnet_max", "SubnetMax"),
    ("backend", "Backend.Type"),
    ("vni", "Backend.VNI"),
    ("port", "Backend.Port"),
];

/// The config from the script's options map (`flannel: #{ network: "12.0.0.0/16", ... }`).
/// An option left out keeps the simulator's value (11.0.0.0/8, /20, 11.10.0.0 to
/// 11.99.0.0, vxlan, VNI 100, port 8472), except that with another `network` the subnet
/// options left out take flannel's own defaults for that network (SubnetLen 24, the
/// second to the last subnet), which is what flannel does with a JSON that omits them.
pub fn from_options(opts: &[(String, OptValue)]) -> Result<NetConfig> {
    let mut json = serde_json::Map::new();
    for (k, v) in opts {
        let Some((_, field)) = OPTIONS.iter().find(|(name, _)| name == k) else {
            let names: Vec<&str> = OPTIONS.iter().map(|(n, _)| *n).collect();
            bail!("unknown flannel option '{k}': the options are {}, e.g. #{{ network: \"12.0.0.0/16\", subnet_len: 24, backend: \"host-gw\" }}", names.join(", "));
        };
        let value = match (k.as_str(), v) {
            ("subnet_len" | "vni" | "port", OptValue::Int(n)) => serde_json::Value::from(*n),
            ("subnet_len" | "vni" | "port", OptValue::Text(t)) => {
                bail!("flannel option '{k}' ({field}) must be a whole number, got \"{t}\", e.g. {k}: 24")
            }
            (_, OptValue::Text(t)) => serde_json::Value::from(t.as_str()),
            (_, OptValue::Int(n)) => {
                bail!("flannel option '{k}' ({field}) must be a string, got {n}, e.g. network: \"12.0.0.0/16\"")
            }
        };
        json.insert(k.clone(), value);
    }
    let given = |k: &str| json.get(k).cloned();
    if given("backend").is_some_and(|b| b == "host-gw") {
        if let Some(k) = ["vni", "port"].into_iter().find(|k| json.contains_key(*k)) {
            bail!("flannel option '{k}' is the vxlan backend's: host-gw has no VXLAN device, so leave '{k}' out (or use backend: \"vxlan\")");
        }
    }
    let defaults: serde_json::Value =
        serde_json::from_str(SIM_DEFAULT_JSON).expect("the default config is JSON");
    let other_network = given("network").is_some_and(|n| n != defaults["Network"]);
    let pick = |k: &str, field: &str| -> serde_json::Value {
        given(k).unwrap_or_else(|| {
            if other_network {
                serde_json::Value::Null
            } else {
                defaults[field].clone()
            }
        })
    };
    let mut text = serde_json::json!({
        "Network": given("network").unwrap_or_else(|| defaults["Network"].clone()),
        "SubnetLen": pick("subnet_len", "SubnetLen"),
        "SubnetMin": pick("subnet_min", "SubnetMin"),
        "SubnetMax": pick("subnet_max", "SubnetMax"),
        "Backend": {
            "Type": given("backend").unwrap_or_else(|| defaults["Backend"]["Type"].clone()),
            "VNI": given("vni").unwrap_or_else(|| defaults["Backend"]["VNI"].clone()),
            "Port": given("port").unwrap_or_else(|| defaults["Backend"]["Port"].clone()),
        },
    });
    // null is how flannel's JSON says "not given"; drop the keys instead
    if let Some(m) = text.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    parse(&text.to_string(), "the flannel options").map_err(|e| anyhow!("{e:#}"))
}

/// The fields of flannel's JSON this agent implements; any other key is refused in a
/// user's file rather than ignored, so a misspelt key is not silently without effect.
const FILE_KEYS: [&str; 5] = ["Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend"];
const FILE_BACKEND_KEYS: [&str; 5] = ["Type", "VNI", "Port", "Learning", "GBP"];

/// The config from a file in flannel's own format (what flannel reads from etcd at
/// `<prefix>/config`, as the original's conf/flannel-network-config.json).
pub fn from_file(path: &std::path::Path) -> Result<NetConfig> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow!("cannot read the flannel config file {shown}: {e}; give the path of a JSON file such as {{\"Network\":\"12.0.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}} (relative paths start from the current directory)")
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        anyhow!("the flannel config file {shown} is not valid JSON ({e}); write it as flannel's network config, e.g. {{\"Network\":\"12.0.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}}")
    })?;
    let Some(top) = value.as_object() else {
        bail!("the flannel config file {shown} holds no JSON object; write it as flannel's network config, e.g. {{\"Network\":\"12.0.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}}");
    };
    let backend = top.get("Backend").and_then(|b| b.as_object());
    let unknown = top
        .keys()
        .filter(|k| !FILE_KEYS.contains(&k.as_str()))
        .chain(
            backend
                .into_iter()
                .flat_map(|b| b.keys())
                .filter(|k| !FILE_BACKEND_KEYS.contains(&k.as_str())),
        );
    if let Some(k) = unknown.into_iter().next() {
        bail!("the flannel config file {shown} has the key \"{k}\", which this simulator does not implement: use {} (and in Backend: {})", FILE_KEYS.join(", "), FILE_BACKEND_KEYS.join(", "));
    }
    parse(&text, &format!("the flannel config file {shown}")).map_err(|e| anyhow!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "/coreos.com/network/config";

    #[test]
    fn simulator_config_is_taken_as_given() {
        let c = parse(
            r#"{"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.99.0.0","Backend":{"Type":"vxlan","VNI":100,"Port":8472}}"#,
            K,
        )
        .unwrap();
        assert_eq!(c.network.to_string(), "11.0.0.0/8");
        assert_eq!(c.subnet_len, 20);
        assert_eq!(c.subnet_min, Ipv4Addr::new(11, 10, 0, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(11, 99, 0, 0));
        let v = c.vxlan().unwrap();
        assert_eq!(v.vni, 100);
        assert_eq!(v.port, 8472);
        assert!(!v.learning);
        assert_eq!(c.backend.device("eth0"), "flannel.100");
        // rendered back, it is the same config
        assert_eq!(parse(&c.to_json(), K).unwrap(), c);
    }

    #[test]
    fn host_gw_has_no_device_of_its_own_and_no_overhead() {
        let c = parse(
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#,
            K,
        )
        .unwrap();
        assert_eq!(c.backend, Backend::HostGw);
        assert_eq!(c.backend.device("eth0"), "eth0");
        assert_eq!(c.backend.overhead(), 0);
        assert!(
            c.to_json().contains(r#""Backend":{"Type":"host-gw"}"#),
            "{}",
            c.to_json()
        );
        assert_eq!(parse(&c.to_json(), K).unwrap(), c);
    }

    fn opts(pairs: &[(&str, OptValue)]) -> Result<NetConfig> {
        let v: Vec<(String, OptValue)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        from_options(&v)
    }

    #[test]
    fn options_keep_todays_values_unless_given() {
        use OptValue::{Int, Text};
        assert_eq!(opts(&[]).unwrap(), parse(SIM_DEFAULT_JSON, K).unwrap());
        let c = opts(&[("vni", Int(42)), ("port", Int(4789))]).unwrap();
        assert_eq!(
            (c.network.to_string(), c.subnet_len),
            ("11.0.0.0/8".into(), 20)
        );
        assert_eq!(c.backend.device("eth0"), "flannel.42");
        assert_eq!(c.vxlan().unwrap().port, 4789);
        // another network: the subnet options left out are flannel's defaults for it
        let c = opts(&[("network", Text("12.1.0.0/16".into()))]).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Ipv4Addr::new(12, 1, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(12, 1, 255, 0));
        let c = opts(&[("backend", Text("host-gw".into())), ("subnet_len", Int(22))]).unwrap();
        assert_eq!(c.backend, Backend::HostGw);
        assert_eq!(c.subnet_len, 22);
    }

    #[test]
    fn bad_options_say_which_and_how_to_fix() {
        use OptValue::{Int, Text};
        let t = |s: &str| Text(s.into());
        type Case<'a> = (Vec<(&'a str, OptValue)>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            (
                vec![("subnetlen", Int(24))],
                vec!["unknown flannel option 'subnetlen'", "subnet_len"],
            ),
            (vec![("vni", t("7"))], vec!["'vni'", "whole number"]),
            (
                vec![("network", Int(12))],
                vec!["'network'", "must be a string"],
            ),
            (
                vec![("subnet_len", Int(8))],
                vec!["too short", "/10 to /30"],
            ),
            (
                vec![
                    ("subnet_min", t("11.99.0.0")),
                    ("subnet_max", t("11.10.0.0")),
                ],
                vec!["above SubnetMax"],
            ),
            (
                vec![("subnet_min", t("12.0.0.0"))],
                vec!["not in the range"],
            ),
            (
                vec![("vni", Int(1 << 24))],
                vec!["VNI 16777216", "1 to 16777215"],
            ),
            (vec![("port", Int(70000))], vec!["Port 70000", "1 to 65535"]),
            (
                vec![("backend", t("host-gw")), ("vni", Int(7))],
                vec!["'vni' is the vxlan backend's"],
            ),
            (
                vec![("backend", t("wireguard"))],
                vec!["\"wireguard\"", "host-gw"],
            ),
        ];
        for (o, want) in cases {
            let e = opts(&o).unwrap_err().to_string();
            assert!(want.iter().all(|w| e.contains(w)), "{o:?}: {e}");
        }
    }

    #[test]
    fn files_are_read_strictly() {
        let dir = std::env::temp_dir().join(format!("flannel-conf-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let c = from_file(&write("ok.json", r#"{"Network":"12.0.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":7,"Port":4789}}"#)).unwrap();
        assert_eq!(c.backend.device("eth0"), "flannel.7");
        let e = from_file(&dir.join("missing.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read the flannel config file") && e.contains("missing.json"),
            "{e}"
        );
        for (name, text, want) in [
            ("bad.json", "{\"Network\":", vec!["is not valid JSON"]),
            ("list.json", "[1]", vec!["no JSON object"]),
            (
                "key.json",
                r#"{"Network":"12.0.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#,
                vec!["\"DirectRouting\"", "does not implement"],
            ),
            (
                "vni.json",
                r#"{"Network":"12.0.0.0/16","Backend":{"Type":"vxlan","VNI":0}}"#,
                vec!["VNI 0 in the flannel config file", "vni.json"],
            ),
        ] {
            let e = from_file(&write(name, text)).unwrap_err().to_string();
            assert!(want.iter().all(|w| e.contains(w)), "{name}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults_for_a_large_network() {
        let c = parse(
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
            K,
        )
        .unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 244, 255, 0));
        let v = c.vxlan().unwrap();
        assert_eq!(v.vni, 1);
        assert_eq!(v.port, 8472);
        assert_eq!(c.backend.device("eth0"), "flannel.1");
    }

    #[test]
    fn defaults_for_a_small_network_split_in_four() {
        let c = parse(r#"{"Network":"10.1.2.0/25","Backend":{"Type":"vxlan"}}"#, K).unwrap();
        assert_eq!(c.subnet_len, 27);
        assert_eq!(c.subnet_min, Ipv4Addr::new(10, 1, 2, 32));
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 1, 2, 96));
        // a /22 still gets /24 subnets
        let c = parse(r#"{"Network":"10.1.0.0/22","Backend":{"Type":"vxlan"}}"#, K).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_max, Ipv4Addr::new(10, 1, 3, 0));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse(r#"{"SubnetLen":20}"#, K).unwrap_err().to_string();
        assert!(e.contains("Network"), "{e}");
        let e = parse("not json", K).unwrap_err().to_string();
        assert!(e.contains("not valid JSON") && e.contains(K), "{e}");
        let e = format!(
            "{:#}",
            parse(r#"{"Network":"11.0.0.0/40","Backend":{"Type":"vxlan"}}"#, K).unwrap_err()
        );
        assert!(e.contains("Network"), "{e}");
        let e = parse(r#"{"Network":"10.0.0.0/29","Backend":{"Type":"vxlan"}}"#, K)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too small"), "{e}");
        let e = parse(
            r#"{"Network":"10.0.0.0/16","SubnetLen":17,"Backend":{"Type":"vxlan"}}"#,
            K,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("four subnets"), "{e}");
        let e = parse(
            r#"{"Network":"10.0.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}"#,
            K,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/31"), "{e}");
        let e = parse(
            r#"{"Network":"10.0.0.0/16","SubnetMin":"10.1.0.0","Backend":{"Type":"vxlan"}}"#,
            K,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("SubnetMin") && e.contains("range"), "{e}");
        let e = parse(
            r#"{"Network":"10.0.0.0/16","SubnetMax":"10.0.3.7","Backend":{"Type":"vxlan"}}"#,
            K,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("SubnetMax") && e.contains("boundary"), "{e}");
        let e = parse(r#"{"Network":"10.0.0.0/16","Backend":{"Type":"udp"}}"#, K)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"udp\"") && e.contains("host-gw"), "{e}");
        for (vni, ok) in [
            (0, false),
            (1, true),
            (16777215, true),
            (16777216, false),
            (-1, false),
        ] {
            let r = parse(
                &format!(r#"{{"Network":"10.0.0.0/16","Backend":{{"Type":"vxlan","VNI":{vni}}}}}"#),
                K,
            );
            assert_eq!(r.is_ok(), ok, "VNI {vni}: {r:?}");
        }
        for (port, ok) in [
            (0, true),
            (4789, true),
            (65535, true),
            (65536, false),
            (-5, false),
        ] {
            let r = parse(
                &format!(
                    r#"{{"Network":"10.0.0.0/16","Backend":{{"Type":"vxlan","Port":{port}}}}}"#
                ),
                K,
            );
            assert_eq!(r.is_ok(), ok, "Port {port}: {r:?}");
        }
        let e = parse(r#"{"Network":"10.0.0.0/16"}"#, K)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Backend"), "{e}");
    }
}
