//! Names and addresses, reproducing the original simulator's (Mininet's) numbering:
//! every host takes the next number in creation order; workers get 10.0.0.<n> from that
//! counter, etcd members keep their fixed 10.<cluster+1>.0.<k>.

use crate::components::flannel::config::NetConfig;
use crate::components::flannel::subnet::Ipv4Net;
use std::net::Ipv4Addr;

pub const UNDERLAY_PREFIX: u8 = 8;
pub const FLANNEL_PREFIX: &str = "/coreos.com/network";

/// Refuses a pod network that would share addresses with the underlay (10.0.0.0/8, the
/// hosts) or the Service range (100.64.0.0/16): a pod address there would be routed to a
/// host or caught by kube-proxy's rules. Two clusters may share one pod network, as the
/// original's do: each has its own etcd and leases.
pub fn check_pod_network(cluster: &str, cfg: &NetConfig) -> Result<(), String> {
    let (svc_ip, svc_len) = crate::components::kubeproxy::model::SERVICE_CIDR;
    let taken = [
        (
            Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), UNDERLAY_PREFIX),
            "the underlay (the hosts' addresses)",
        ),
        (Ipv4Net::new(svc_ip, svc_len), "the Service range"),
    ];
    for (net, what) in taken {
        if cfg.network.overlaps(&net) {
            return Err(format!(
                "{cluster}'s flannel network {} overlaps {net}, {what}: pods and those addresses would be indistinguishable; \
                 pick a pod network outside 10.0.0.0/8 and 100.64.0.0/16, e.g. network: \"11.0.0.0/8\" or \"172.16.0.0/12\"",
                cfg.network
            ));
        }
    }
    Ok(())
}

/// Cluster N's etcd members get 10.<N+1>.0.k, so N+1 must be a second octet (1..=255).
pub const MAX_CLUSTER_ID: u32 = 254;
/// Host numbers give workers 10.0.x.y; from 65536 on they would reach 10.1.0.0, C0's etcd.
pub const MAX_HOSTS: u32 = 65535;

/// Checks a cluster id and returns its number. An id is a decimal number from 0 to
/// [`MAX_CLUSTER_ID`] written without leading zeros, so one cluster has one spelling and
/// two ids never share addresses. `declared` are the ids of clusters declared so far;
/// a clash names both ids.
pub fn cluster_number(id: &str, declared: &[String]) -> Result<u32, String> {
    let range = format!("use a whole number from 0 to {MAX_CLUSTER_ID}, such as \"0\" or \"1\" (the cluster is then named C0, C1, ...)");
    if let Some(rest) = id.strip_prefix(['C', 'c']) {
        if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "cluster id '{id}' is a cluster's name, not its id: write cluster(\"{rest}\") and the cluster is named C{rest}"
            ));
        }
    }
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("cluster id '{id}' is not valid: {range}"));
    }
    let canonical = id.trim_start_matches('0');
    let canonical = if canonical.is_empty() { "0" } else { canonical };
    if canonical != id {
        if declared.iter().any(|d| d == canonical) {
            return Err(format!(
                "cluster id '{id}' is C{canonical}'s id \"{canonical}\" with leading zeros, and C{canonical} is already declared: \
                 \"{id}\" and \"{canonical}\" would be one cluster with one etcd; pick another number"
            ));
        }
        return Err(format!(
            "cluster id '{id}' has leading zeros: did you mean \"{canonical}\"? Each cluster has one spelling, \
             so \"{id}\" and \"{canonical}\" cannot name two clusters that share addresses"
        ));
    }
    let number = match id.parse::<u32>() {
        Ok(n) if n <= MAX_CLUSTER_ID => n,
        Ok(n) => {
            let wraps_to = (n as u64 + 1) % 256;
            let clash = if wraps_to == 0 {
                let worker = declared
                    .first()
                    .map(|d| format!(", e.g. C{d}'s workers"))
                    .unwrap_or_default();
                format!(" (10.256 does not exist: it would wrap to 10.0.0.x, the workers' addresses{worker})")
            } else {
                let other = (wraps_to - 1).to_string();
                if declared.contains(&other) {
                    format!(" (it would wrap to 10.{wraps_to}.0.x, the addresses of C{other}'s etcd members: '{id}' and '{other}' would share one etcd)")
                } else {
                    format!(" (it would wrap to 10.{wraps_to}.0.x, the etcd addresses of a cluster \"{other}\")")
                }
            };
            return Err(format!(
                "cluster id '{id}' does not fit the address plan: cluster N's etcd members get 10.<N+1>.0.x{clash}; {range}"
            ));
        }
        Err(_) => {
            return Err(format!(
                "cluster id '{id}' does not fit the address plan: cluster N's etcd members get 10.<N+1>.0.x; {range}"
            ))
        }
    };
    if declared.iter().any(|d| d == id) {
        return Err(format!(
            "cluster C{id} is already declared: use a different id, or get it with get_cluster(\"C{id}\")"
        ));
    }
    Ok(number)
}

/// Mininet's address for host number `n` (1-based) in 10.0.0.0/8.
pub fn host_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + n)
}

/// The fixed address of etcd member `k` (1-based) of cluster number `cluster`
/// (at most [`MAX_CLUSTER_ID`], checked by [`cluster_number`]).
pub fn etcd_ip(cluster: u32, k: u32) -> Ipv4Addr {
    debug_assert!(cluster <= MAX_CLUSTER_ID && k < 255);
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
    fn one_spelling_per_cluster_id() {
        let none: Vec<String> = vec![];
        assert_eq!(cluster_number("0", &none), Ok(0));
        assert_eq!(cluster_number("7", &none), Ok(7));
        assert_eq!(cluster_number("254", &none), Ok(254));
        assert_eq!(etcd_ip(254, 1), Ipv4Addr::new(10, 255, 0, 1));
        let e = cluster_number("007", &none).unwrap_err();
        assert!(
            e.contains("leading zeros") && e.contains("did you mean \"7\""),
            "{e}"
        );
        let e = cluster_number("007", &["7".to_string()]).unwrap_err();
        assert!(
            e.contains("C7") && e.contains("'007'") && e.contains("already declared"),
            "{e}"
        );
        let e = cluster_number("00", &none).unwrap_err();
        assert!(e.contains("did you mean \"0\""), "{e}");
        for bad in ["", "x", "-1", "1.5", " 1", "1e3", "٣"] {
            let e = cluster_number(bad, &none).unwrap_err();
            assert!(
                e.contains("is not valid") && e.contains("0 to 254"),
                "{bad}: {e}"
            );
        }
        let e = cluster_number("C0", &none).unwrap_err();
        assert!(e.contains("cluster(\"0\")"), "{e}");
        let e = cluster_number("0", &["0".to_string()]).unwrap_err();
        assert!(e.contains("C0 is already declared"), "{e}");
    }

    #[test]
    fn ids_outside_the_address_plan_name_the_cluster_they_would_clash_with() {
        let e = cluster_number("257", &["1".to_string()]).unwrap_err();
        assert!(
            e.contains("'257'") && e.contains("C1's etcd") && e.contains("10.2.0.x"),
            "{e}"
        );
        let e = cluster_number("255", &["0".to_string()]).unwrap_err();
        assert!(
            e.contains("'255'") && e.contains("workers' addresses") && e.contains("C0's workers"),
            "{e}"
        );
        let e = cluster_number("300", &[]).unwrap_err();
        assert!(e.contains("does not fit the address plan"), "{e}");
        let e = cluster_number("99999999999999999999", &[]).unwrap_err();
        assert!(e.contains("does not fit the address plan"), "{e}");
    }

    #[test]
    fn pod_networks_stay_clear_of_the_underlay_and_the_services() {
        use crate::components::flannel::config::{from_options, OptValue};
        let net = |n: &str| from_options(&[("network".into(), OptValue::Text(n.into()))]).unwrap();
        assert!(check_pod_network("C0", &net("11.0.0.0/8")).is_ok());
        assert!(check_pod_network("C0", &net("172.16.0.0/12")).is_ok());
        let e = check_pod_network("C0", &net("10.244.0.0/16")).unwrap_err();
        assert!(
            e.contains("C0's flannel network 10.244.0.0/16 overlaps 10.0.0.0/8, the underlay"),
            "{e}"
        );
        let e = check_pod_network("C1", &net("100.0.0.0/8")).unwrap_err();
        assert!(
            e.contains("overlaps 100.64.0.0/16, the Service range"),
            "{e}"
        );
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
