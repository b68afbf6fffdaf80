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
//! kernel's VXLAN port, which flannel leaves to the kernel).

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
    pub backend: VxlanConfig,
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
    vni: Option<u32>,
    #[serde(rename = "Port")]
    port: Option<u16>,
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
                bail!("SubnetLen /{l} is too short for network {network}: the network must be able to accommodate at least four subnets");
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
                bail!("SubnetMin {ip} is not in the range of the Network {network}");
            }
            ip
        }
    };
    let subnet_max = match raw.subnet_max.as_deref() {
        None | Some("") => Ipv4Addr::from(network.last_u32().wrapping_add(1).wrapping_sub(size)),
        Some(s) => {
            let ip = parse_ip("SubnetMax", s)?;
            if !network.contains(ip) {
                bail!("SubnetMax {ip} is not in the range of the Network {network}");
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

    let backend = match raw.backend {
        None => bail!("the flannel network config in {key} has no \"Backend\"; flannel would default to \"udp\", but this agent implements only the vxlan backend: add \"Backend\":{{\"Type\":\"vxlan\"}}"),
        Some(b) => {
            let kind = b.kind.unwrap_or_default();
            if kind != "vxlan" {
                bail!("backend type \"{kind}\" in {key} is not supported: this agent implements only the vxlan backend (\"Backend\":{{\"Type\":\"vxlan\"}})");
            }
            let vni = b.vni.unwrap_or(DEFAULT_VNI);
            if vni == 0 || vni > 0xFF_FFFF {
                bail!("VNI {vni} in {key} is out of range (1..16777215)");
            }
            VxlanConfig {
                vni,
                port: match b.port {
                    None | Some(0) => DEFAULT_VXLAN_PORT,
                    Some(p) => p,
                },
                learning: b.learning.unwrap_or(false),
                gbp: b.gbp.unwrap_or(false),
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
        assert_eq!(c.backend.vni, 100);
        assert_eq!(c.backend.port, 8472);
        assert!(!c.backend.learning);
        assert_eq!(c.backend.device_name(), "flannel.100");
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
        assert_eq!(c.backend.vni, 1);
        assert_eq!(c.backend.port, 8472);
        assert_eq!(c.backend.device_name(), "flannel.1");
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
        let e = parse(
            r#"{"Network":"10.0.0.0/16","Backend":{"Type":"host-gw"}}"#,
            K,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("host-gw") && e.contains("vxlan"), "{e}");
        let e = parse(r#"{"Network":"10.0.0.0/16"}"#, K)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Backend"), "{e}");
    }
}
