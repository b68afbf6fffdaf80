//! Names and addresses, reproducing the original simulator's (Mininet's) numbering:
//! every host takes the next number in creation order; workers get 10.0.0.<n> from that
//! counter, etcd members keep their fixed 10.<cluster+1>.0.<k>.

use std::net::Ipv4Addr;

pub const UNDERLAY_PREFIX: u8 = 8;
pub const FLANNEL_NETWORK_CONFIG: &str = r#"{"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.99.0.0","Backend":{"Type":"vxlan","VNI":100,"Port":8472}}"#;
pub const FLANNEL_PREFIX: &str = "/coreos.com/network";
pub const FLANNEL_DEVICE: &str = "flannel.100";
pub const SERVICE_RANGE: &str = "100.64.0.0/16";

/// Mininet's address for host number `n` (1-based) in 10.0.0.0/8.
pub fn host_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + n)
}

/// The fixed address of etcd member `k` (1-based) of cluster number `cluster`.
pub fn etcd_ip(cluster: u32, k: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, (cluster + 1) as u8, 0, k as u8)
}

/// Node name: `C0w1`, `C0e2`.
pub fn node_name(cluster: &str, short: &str) -> String {
    format!("C{cluster}{short}")
}

/// Namespace names carry the instance name unless it is the default one, so two
/// simulations can run side by side.
pub fn ns_name(instance: &str, node: &str) -> String {
    if instance == crate::sim::DEFAULT_INSTANCE {
        node.to_string()
    } else {
        format!("{instance}-{node}")
    }
}

/// A container's namespace name: `C0-c1` (cluster, dash, container).
pub fn container_node(cluster: &str, container: &str) -> String {
    format!("C{cluster}-{container}")
}

pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 20
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_the_original_numbering() {
        // Two clusters of 2 etcd + 3 workers: hosts 1..5 then 6..10.
        assert_eq!(etcd_ip(0, 1), Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(etcd_ip(0, 2), Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(host_ip(3), Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(host_ip(5), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(etcd_ip(1, 1), Ipv4Addr::new(10, 2, 0, 1));
        assert_eq!(host_ip(8), Ipv4Addr::new(10, 0, 0, 8));
        assert_eq!(host_ip(300), Ipv4Addr::new(10, 0, 1, 44));
    }

    #[test]
    fn names() {
        assert_eq!(node_name("0", "w1"), "C0w1");
        assert_eq!(ns_name("default", "C0w1"), "C0w1");
        assert_eq!(ns_name("t1", "C0w1"), "t1-C0w1");
        assert_eq!(container_node("0", "c1"), "C0-c1");
        assert!(valid_name("c1"));
        assert!(!valid_name("1c"));
        assert!(!valid_name("c 1"));
        assert!(!valid_name(""));
    }
}
