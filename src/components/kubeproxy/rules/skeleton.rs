//! The fixed part of the table: the table itself, its maps and set, base chains with the
//! jumps from them, and the fixed chains with their rules.

use super::table::{MapName, Match, Rule, Statement, Verdict, MASQ_MARK, SET_CLUSTER_IPS, TABLE};
use std::fmt;

const CLUSTER_IPS_COMMENT: &str = "Active ClusterIPs";
const TABLE_COMMENT: &str = "rules for kube-proxy (knetsim)";

/// A base chain: attached to a netfilter hook.
pub struct BaseChain {
    pub name: &'static str,
    pub kind: &'static str,
    pub hook: &'static str,
    pub priority: &'static str,
}

/// Base chains. Filter chains run before DNAT (dstnat-10). Priorities off the prerouting
/// hook are numbers (dstnat = -100) because nft 1.0.6 accepts the name `dstnat` only there.
pub const BASE_CHAINS: &[BaseChain] = &[
    base("filter-input", "filter", "input", "-110"),
    base("filter-forward", "filter", "forward", "-110"),
    base("filter-output", "filter", "output", "-110"),
    base("filter-output-post-dnat", "filter", "output", "-90"),
    base("nat-prerouting", "nat", "prerouting", "dstnat"),
    base("nat-output", "nat", "output", "-100"),
    base("nat-postrouting", "nat", "postrouting", "srcnat"),
];

const fn base(
    name: &'static str,
    kind: &'static str,
    hook: &'static str,
    priority: &'static str,
) -> BaseChain {
    BaseChain {
        name,
        kind,
        hook,
        priority,
    }
}

impl fmt::Display for BaseChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {{ type {} hook {} priority {} ; policy accept ; }}",
            self.name, self.kind, self.hook, self.priority
        )
    }
}

/// Regular chains that exist whatever the Services are, with their fixed rules.
pub fn fixed_chains() -> Vec<(&'static str, Vec<Rule>)> {
    let dispatch = |m| Rule::new(Statement::Dispatch(m));
    vec![
        (
            "services",
            vec![
                dispatch(MapName::ServiceIps),
                dispatch(MapName::StaticVips),
                dispatch(MapName::ServiceNodeports)
                    .matching(Match::LocalDaddr)
                    .matching(Match::NotLoopback),
            ],
        ),
        (
            "masquerading",
            vec![
                Rule::verdict(Verdict::Return).matching(Match::MarkClear(MASQ_MARK)),
                Rule::new(Statement::MarkXor(MASQ_MARK)),
                Rule::new(Statement::MasqueradeFullyRandom),
            ],
        ),
        (
            "mark-for-masquerade",
            vec![Rule::new(Statement::MarkOr(MASQ_MARK))],
        ),
        (
            "service-endpoints-check",
            vec![dispatch(MapName::NoEndpointServices)],
        ),
        (
            "nodeport-endpoints-check",
            vec![dispatch(MapName::NoEndpointNodeports).matching(Match::NotLoopback)],
        ),
        (
            "cluster-ips-check",
            vec![Rule::verdict(Verdict::Reject)
                .matching(Match::ClusterIp)
                .commented("Reject traffic to invalid ports of ClusterIPs")],
        ),
        ("reject-chain", vec![Rule::verdict(Verdict::Reject)]),
    ]
}

/// The rules of base chains: (base chain, rule), in order.
pub fn jumps() -> Vec<(&'static str, Rule)> {
    let new_flow = |to: &str| Rule::verdict(Verdict::Jump(to.into())).matching(Match::CtStateNew);
    let always = |to: &str| Rule::verdict(Verdict::Jump(to.into()));
    vec![
        ("filter-input", new_flow("nodeport-endpoints-check")),
        ("filter-input", new_flow("service-endpoints-check")),
        ("filter-forward", new_flow("service-endpoints-check")),
        ("filter-forward", new_flow("cluster-ips-check")),
        ("filter-output", new_flow("service-endpoints-check")),
        ("filter-output-post-dnat", new_flow("cluster-ips-check")),
        ("nat-prerouting", always("services")),
        ("nat-output", always("services")),
        ("nat-postrouting", always("masquerading")),
    ]
}

/// The `add` commands of the fixed part of the table: table, maps, set, base chains with
/// their jumps, fixed chains with their rules. Base and fixed chains are flushed first,
/// so writing this again over an existing table does not double their rules.
pub fn skeleton_text() -> String {
    let t = TABLE;
    let mut out = format!("add table ip {t} {{ comment \"{TABLE_COMMENT}\" ; }}\n");
    for m in MapName::ALL {
        out += &format!(
            "add map ip {t} {m} {{ type {} : verdict ; comment \"{}\" ; }}\n",
            m.key_type(),
            m.comment()
        );
    }
    out += &format!(
        "add set ip {t} {SET_CLUSTER_IPS} {{ type ipv4_addr ; comment \"{CLUSTER_IPS_COMMENT}\" ; }}\n"
    );
    for b in BASE_CHAINS {
        out += &format!("add chain ip {t} {b}\nflush chain ip {t} {}\n", b.name);
    }
    for (name, rules) in fixed_chains() {
        out += &format!("add chain ip {t} {name}\nflush chain ip {t} {name}\n");
        for r in rules {
            out += &format!("add rule ip {t} {name} {r}\n");
        }
    }
    for (from, r) in jumps() {
        out += &format!("add rule ip {t} {from} {r}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeleton_lists_maps_chains_and_jumps() {
        let t = skeleton_text();
        for want in [
            "add table ip kube-proxy { comment \"rules for kube-proxy (knetsim)\" ; }\n",
            "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP traffic\" ; }\n",
            "add map ip kube-proxy static-vips { type ipv4_addr : verdict ;",
            "add set ip kube-proxy cluster-ips { type ipv4_addr ; comment \"Active ClusterIPs\" ; }\n",
            "add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority srcnat ; policy accept ; }\nflush chain ip kube-proxy nat-postrouting\n",
            "add chain ip kube-proxy reject-chain\nflush chain ip kube-proxy reject-chain\nadd rule ip kube-proxy reject-chain reject\n",
            "add rule ip kube-proxy filter-output-post-dnat ct state new jump cluster-ips-check\n",
            "add rule ip kube-proxy nat-postrouting jump masquerading\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
