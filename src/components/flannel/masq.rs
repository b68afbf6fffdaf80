//! nftables rules shaped like flannel's nftables traffic manager: one table `ip flannel-ipv4`
//! with a `forward` chain (accept traffic from and to the flannel network) and, with
//! `--ip-masq`, a `postrtg` nat chain that masquerades pod traffic leaving the flannel
//! network but never pod-to-pod traffic.
//!
//! The whole table is replaced in one `nft -f -` transaction (add + delete + add makes it
//! idempotent: a restart without `--ip-masq` removes an old `postrtg` chain).

use super::subnet::Ipv4Net;
use anyhow::Result;

pub const TABLE: &str = "flannel-ipv4";
pub const FORWARD_CHAIN: &str = "forward";
pub const POSTRTG_CHAIN: &str = "postrtg";
/// kube-proxy's masquerade mark: packets kube-proxy already masquerades are left alone.
pub const KUBE_PROXY_MASQ_MARK: &str = "0x4000";
const MULTICAST: &str = "224.0.0.0/4";

/// The transaction text. `network` is the flannel network (cluster CIDR), `subnet` this
/// node's lease (pod CIDR).
pub fn ruleset(network: &Ipv4Net, subnet: &Ipv4Net, ip_masq: bool, fully_random: bool) -> String {
    let t = format!("ip {TABLE}");
    let mut s = String::new();
    s.push_str(&format!("add table {t}\ndelete table {t}\n"));
    s.push_str(&format!(
        "add table {t} {{ comment \"rules for {TABLE}\" ; }}\n"
    ));
    s.push_str(&format!(
        "add chain {t} {FORWARD_CHAIN} {{ type filter hook forward priority filter ; comment \"chain to accept flannel traffic\" ; }}\n"
    ));
    s.push_str(&format!(
        "add rule {t} {FORWARD_CHAIN} ip saddr {network} accept\n"
    ));
    s.push_str(&format!(
        "add rule {t} {FORWARD_CHAIN} ip daddr {network} accept\n"
    ));
    if ip_masq {
        let masq = if fully_random {
            "masquerade fully-random"
        } else {
            "masquerade"
        };
        s.push_str(&format!(
            "add chain {t} {POSTRTG_CHAIN} {{ type nat hook postrouting priority srcnat ; comment \"chain to manage traffic masquerading by flannel\" ; }}\n"
        ));
        let r = |rule: String| format!("add rule {t} {POSTRTG_CHAIN} {rule}\n");
        // already marked for masquerade by kube-proxy: avoid double NAT
        s.push_str(&r(format!("meta mark {KUBE_PROXY_MASQ_MARK} return")));
        // pod-to-pod inside the overlay: no NAT
        s.push_str(&r(format!("ip saddr {subnet} ip daddr {network} return")));
        s.push_str(&r(format!("ip saddr {network} ip daddr {subnet} return")));
        // traffic from elsewhere to a pod of another node: keep its source
        s.push_str(&r(format!(
            "ip saddr != {subnet} ip daddr {network} return"
        )));
        // pods talking to the outside world (not multicast): masquerade
        s.push_str(&r(format!(
            "ip saddr {network} ip daddr != {MULTICAST} {masq}"
        )));
        // the host talking into the overlay: masquerade
        s.push_str(&r(format!(
            "ip saddr != {network} ip daddr {network} {masq}"
        )));
    }
    s
}

/// Applies `text` with `nft -f -` in the current network namespace.
pub fn apply(text: &str) -> Result<()> {
    crate::components::nft::apply(None, text, "the flannel rules")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn forward_only_without_ip_masq() {
        let t = ruleset(&net("11.0.0.0/8"), &net("11.12.16.0/20"), false, true);
        assert!(t.contains("add rule ip flannel-ipv4 forward ip saddr 11.0.0.0/8 accept\n"));
        assert!(t.contains("add rule ip flannel-ipv4 forward ip daddr 11.0.0.0/8 accept\n"));
        assert!(!t.contains("postrtg"));
        assert!(!t.contains("masquerade"));
        assert!(t.starts_with("add table ip flannel-ipv4\ndelete table ip flannel-ipv4\n"));
    }

    #[test]
    fn masquerade_rules_in_flannel_order() {
        let t = ruleset(&net("11.0.0.0/8"), &net("11.12.16.0/20"), true, true);
        let rules: Vec<&str> = t
            .lines()
            .filter_map(|l| l.strip_prefix("add rule ip flannel-ipv4 postrtg "))
            .collect();
        assert_eq!(
            rules,
            vec![
                "meta mark 0x4000 return",
                "ip saddr 11.12.16.0/20 ip daddr 11.0.0.0/8 return",
                "ip saddr 11.0.0.0/8 ip daddr 11.12.16.0/20 return",
                "ip saddr != 11.12.16.0/20 ip daddr 11.0.0.0/8 return",
                "ip saddr 11.0.0.0/8 ip daddr != 224.0.0.0/4 masquerade fully-random",
                "ip saddr != 11.0.0.0/8 ip daddr 11.0.0.0/8 masquerade fully-random",
            ]
        );
        assert!(t.contains("type nat hook postrouting priority srcnat"));
        let plain = ruleset(&net("11.0.0.0/8"), &net("11.12.16.0/20"), true, false);
        assert!(!plain.contains("fully-random") && plain.contains(" masquerade\n"));
    }
}
