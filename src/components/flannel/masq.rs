//! nftables rules shaped like flannel's nftables traffic manager: one table `ip flannel-ipv4`
//! with a `forward` chain (accept traffic from and to the flannel network) and, with
//! `--ip-masq`, a `postrtg` nat chain that masquerades pod traffic leaving the flannel
//! network but never pod-to-pod traffic.
//!
//! The whole table is replaced in one nf_tables transaction (add + delete + add makes it
//! idempotent: a restart without `--ip-masq` removes an old `postrtg` chain), sent as one
//! netlink batch ([`batch`]) rather than run through `nft -f` ([`ruleset`] is the same
//! transaction as text; tests/nft_netlink.rs checks that both list the same).

use super::log;
use super::subnet::Ipv4Net;
use crate::components::nft::batch::{self, BaseChain, Batch, Encoded, NftError, Session};
use crate::components::nft::expr::{self, CmpOp, Expr, IpField, Verdict};
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

const TABLE_COMMENT: &str = "rules for flannel-ipv4";
const FORWARD_COMMENT: &str = "chain to accept flannel traffic";
const POSTRTG_COMMENT: &str = "chain to manage traffic masquerading by flannel";

/// The transaction of [`ruleset`] as one nf_tables netlink batch.
pub fn batch(
    network: &Ipv4Net,
    subnet: &Ipv4Net,
    ip_masq: bool,
    fully_random: bool,
) -> Result<Encoded, NftError> {
    let mut b = Batch::new();
    b.add_table(TABLE, 0, None);
    b.delete_table(TABLE);
    b.add_table(TABLE, 0, Some(TABLE_COMMENT));
    let forward = BaseChain {
        kind: "filter",
        hook: "forward",
        priority: batch::PRIORITY_FILTER,
        policy_accept: false,
    };
    b.add_chain(TABLE, FORWARD_CHAIN, Some(forward), Some(FORWARD_COMMENT));
    let ip = |field, op, net: &Ipv4Net| expr::ip_prefix(field, op, net.ip, net.prefix_len);
    let accept = Expr::Immediate(Verdict::Accept);
    for field in [IpField::Saddr, IpField::Daddr] {
        let mut r = ip(field, CmpOp::Eq, network);
        r.push(accept.clone());
        b.add_rule(TABLE, FORWARD_CHAIN, &r, None, None);
    }
    if ip_masq {
        let postrouting = BaseChain {
            kind: "nat",
            hook: "postrouting",
            priority: batch::PRIORITY_SRCNAT,
            policy_accept: false,
        };
        b.add_chain(
            TABLE,
            POSTRTG_CHAIN,
            Some(postrouting),
            Some(POSTRTG_COMMENT),
        );
        let ret = Expr::Immediate(Verdict::Return);
        let masq = Expr::Masq { fully_random };
        let (eq, ne) = (CmpOp::Eq, CmpOp::Neq);
        let (s, d) = (IpField::Saddr, IpField::Daddr);
        let multicast: Ipv4Net = MULTICAST.parse().expect("a valid constant");
        let mark = u32::from_str_radix(KUBE_PROXY_MASQ_MARK.trim_start_matches("0x"), 16)
            .expect("a valid constant");
        // The six rules of [`ruleset`], in its order and with its reasons.
        let rules = [
            [expr::meta_mark_eq(mark), vec![ret.clone()]].concat(),
            [ip(s, eq, subnet), ip(d, eq, network), vec![ret.clone()]].concat(),
            [ip(s, eq, network), ip(d, eq, subnet), vec![ret.clone()]].concat(),
            [ip(s, ne, subnet), ip(d, eq, network), vec![ret]].concat(),
            [
                ip(s, eq, network),
                ip(d, ne, &multicast),
                vec![masq.clone()],
            ]
            .concat(),
            [ip(s, ne, network), ip(d, eq, network), vec![masq]].concat(),
        ];
        for r in rules {
            b.add_rule(TABLE, POSTRTG_CHAIN, &r, None, None);
        }
    }
    b.finish()
}

/// Sends [`batch`] in the current network namespace through a socket of its own (a retry
/// on the socket of a refused batch was refused at another message), and returns it.
fn apply(
    network: &Ipv4Net,
    subnet: &Ipv4Net,
    ip_masq: bool,
    fully_random: bool,
) -> Result<Session> {
    let b = batch(network, subnet, ip_masq, fully_random)?;
    let session = Session::open()?;
    session.apply(&b)?;
    Ok(session)
}

/// Programs the table in the current network namespace and logs what it did, falling back
/// to plain masquerade where the kernel lacks fully-random. An error only when `--ip-masq`
/// was asked for (the forward rules alone only warn), as flanneld does.
///
/// Returns the nf_tables socket that programmed it, for the agent to keep open while it
/// runs. Closing one waits out the kernel's freeing of recent commits while holding this
/// namespace's nf_tables commit lock, and the kernel registers every new veth under that
/// lock: closed here, just before subnet.env is written, it held up the bridge plugins
/// attaching the worker's first pods (about 5 ms each, from off-CPU stacks). None when
/// only a warning was logged.
pub fn program(network: &Ipv4Net, subnet: &Ipv4Net, ip_masq: bool) -> Result<Option<Session>> {
    let session = match apply(network, subnet, ip_masq, true) {
        Ok(s) if ip_masq => {
            log!("programmed nftables table ip {TABLE}: forward accept for {network} and masquerade for pod traffic leaving it");
            s
        }
        Ok(s) => {
            log!("programmed nftables table ip {TABLE}: forward accept for {network}");
            s
        }
        Err(e) => match apply(network, subnet, ip_masq, false) {
            Ok(s) => {
                log!("programmed nftables table ip {TABLE} (masquerade without fully-random)");
                s
            }
            Err(e2) if ip_masq => return Err(masq_failed(e, e2)),
            Err(e2) => {
                log!("warning: could not program the forward accept rules: {e2:#}");
                return Ok(None);
            }
        },
    };
    Ok(Some(session))
}

/// The --ip-masq error after both tries (fully-random, then plain masquerade): the cause
/// once when both failed alike (another owner, no permission), both when they differ.
fn masq_failed(first: anyhow::Error, retry: anyhow::Error) -> anyhow::Error {
    if format!("{first:#}") == format!("{retry:#}") {
        retry.context("setting up --ip-masq (tried with and without fully-random)")
    } else {
        retry.context(format!(
            "setting up --ip-masq (with fully-random: {first:#}; without it)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn a_cause_both_tries_share_is_said_once() {
        let same = || anyhow::anyhow!("the kernel refused adding table ip flannel-ipv4");
        let e = format!("{:#}", masq_failed(same(), same()));
        assert_eq!(
            e,
            "setting up --ip-masq (tried with and without fully-random): the kernel refused adding table ip flannel-ipv4"
        );
        let e = format!(
            "{:#}",
            masq_failed(anyhow::anyhow!("no fully-random here"), same())
        );
        assert_eq!(
            e,
            "setting up --ip-masq (with fully-random: no fully-random here; without it): the kernel refused adding table ip flannel-ipv4"
        );
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
