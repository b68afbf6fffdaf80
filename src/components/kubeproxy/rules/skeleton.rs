//! The fixed part of the table: the table itself, its maps and set, base chains with the
//! jumps from them, and the fixed chains with their rules.

use super::table::{MapName, Match, Rule, Statement, Verdict, MASQ_MARK, SET_CLUSTER_IPS, TABLE};
use crate::components::nft::batch::{self, Batch, Encoded, NftError};
use crate::components::nft::expr::{self, CmpOp, Expr, IpField, MetaKey, PayloadBase};
use crate::components::nft::wire::comment_udata;
use std::fmt;
use std::net::Ipv4Addr;

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

/// [`skeleton_text`] as one nf_tables netlink batch, message for message what nft sends
/// for that text, so a new node's empty table needs no nft process.
pub fn skeleton_batch() -> Result<Encoded, NftError> {
    let t = TABLE;
    let mut b = Batch::new();
    b.add_table(t, 0, Some(TABLE_COMMENT));
    for (id, m) in (1u32..).zip(MapName::ALL) {
        add_set(&mut b, m.name(), Some(m), id, m.comment());
    }
    add_set(&mut b, SET_CLUSTER_IPS, None, 6, CLUSTER_IPS_COMMENT);
    for c in BASE_CHAINS {
        b.add_chain(t, c.name, Some(c.hooked()?), None);
        b.flush_chain(t, c.name);
    }
    let rule = |b: &mut Batch, chain: &str, r: &Rule| -> Result<(), NftError> {
        let exprs = rule_exprs(r).ok_or_else(|| NftError::Invalid {
            what: format!("rule `{r}` of chain {chain}"),
            cause: "the netlink form of the fixed chains has no such match or statement".into(),
        })?;
        b.add_rule(t, chain, &exprs, r.comment.as_deref(), None);
        Ok(())
    };
    for (name, rules) in fixed_chains() {
        b.add_chain(t, name, None, None);
        b.flush_chain(t, name);
        for r in &rules {
            rule(&mut b, name, r)?;
        }
    }
    for (from, r) in jumps() {
        rule(&mut b, from, &r)?;
    }
    b.finish()
}

impl BaseChain {
    fn hooked(&self) -> Result<batch::BaseChain, NftError> {
        let priority = match self.priority {
            "dstnat" => batch::PRIORITY_DSTNAT,
            "srcnat" => batch::PRIORITY_SRCNAT,
            "filter" => batch::PRIORITY_FILTER,
            n => n.parse().map_err(|_| NftError::Invalid {
                what: format!("priority {n:?} of chain {}", self.name),
                cause: "not a number nor dstnat, srcnat or filter".into(),
            })?,
        };
        Ok(batch::BaseChain {
            kind: self.kind,
            hook: self.hook,
            priority,
            policy_accept: true,
        })
    }
}

/// nft's set user data: TLVs of key byte order (0), data byte order (1), for a
/// concatenation its key description (3, the bytes nft 1.0.6 writes for one ending in
/// inet_service), for a map whether its data are intervals (6), and the comment (7).
fn set_udata(map: Option<MapName>, comment: &str) -> Vec<u8> {
    const CONCAT_KEY: [u8; 10] = [3, 8, 0, 4, 13, 0, 0, 0, 1, 0];
    let tlv = |ty: u8, v: u32| {
        let mut t = vec![ty, 4];
        t.extend_from_slice(&v.to_ne_bytes());
        t
    };
    // BYTEORDER_BIG_ENDIAN for an address; a concatenation has none of its own.
    let concat = map.is_some_and(|m| m.key_type().contains(" . "));
    let mut u = tlv(0, if concat { 0 } else { 2 });
    if map.is_some() {
        u.extend(tlv(1, 0));
        if concat {
            u.extend_from_slice(&CONCAT_KEY);
        }
        u.extend(tlv(6, 0));
    }
    let c = comment_udata(comment);
    u.push(7);
    u.extend_from_slice(&c[1..]);
    u
}

/// `add map ip kube-proxy NAME { type KEY : verdict ; comment ... }`, or for `map` None
/// `add set ... { type ipv4_addr ; comment ... }`.
fn add_set(b: &mut Batch, name: &str, map: Option<MapName>, id: u32, comment: &str) {
    // nft's datatype numbers: ipv4_addr 7, inet_proto 12, inet_service 13; a concatenation
    // is their numbers 6 bits apart, each field 4 bytes in the key.
    let (key_type, key_len) = match map.map(MapName::key_type) {
        Some("ipv4_addr . inet_proto . inet_service") => ((7 << 12) | (12 << 6) | 13, 12),
        Some("inet_proto . inet_service") => ((12 << 6) | 13, 8),
        _ => (7, 4),
    };
    let kind = if map.is_some() { "map" } else { "set" };
    let set = batch::Set {
        name,
        flags: if map.is_some() { 0x8 } else { 0 }, // NFT_SET_MAP
        key_type,
        key_len,
        verdict_map: map.is_some(),
        id,
        size: None,
        udata: &set_udata(map, comment),
    };
    b.add_set(
        TABLE,
        &set,
        false,
        format!("adding {kind} {name} to table ip {TABLE}"),
    );
}

/// The expressions nft makes of a rule of the fixed part of the table. The per-Service
/// rules never come here (they go through `nft -f`, or [`super::super::nfnl`]).
fn rule_exprs(r: &Rule) -> Option<Vec<Expr>> {
    let reg1 = expr::REG_1;
    let load_daddr = |dreg| Expr::Payload {
        base: PayloadBase::Network,
        offset: 16,
        len: 4,
        dreg,
    };
    let dport = |dreg| Expr::Payload {
        base: PayloadBase::Transport,
        offset: 2,
        len: 2,
        dreg,
    };
    let l4proto = |dreg| Expr::Meta {
        key: MetaKey::L4proto,
        dreg,
    };
    let mark = Expr::Meta {
        key: MetaKey::Mark,
        dreg: reg1,
    };
    let bitwise = |mask: u32, xor: u32| Expr::Bitwise {
        mask: mask.to_ne_bytes().to_vec(),
        xor: xor.to_ne_bytes().to_vec(),
    };
    let cmp = |op, v: u32| Expr::Cmp {
        op,
        data: v.to_ne_bytes().to_vec(),
    };
    let mut out = Vec::new();
    for m in &r.matches {
        match m {
            // ct state new: the state bits masked with NEW (8)
            Match::CtStateNew => out.extend([Expr::CtState, bitwise(8, 0), cmp(CmpOp::Neq, 0)]),
            Match::ClusterIp => out.extend([
                load_daddr(reg1),
                Expr::Lookup {
                    set: SET_CLUSTER_IPS.into(),
                    vmap: false,
                    id: None,
                },
            ]),
            // RTN_LOCAL is 2
            Match::LocalDaddr => out.extend([Expr::FibDaddrType, cmp(CmpOp::Eq, 2)]),
            Match::NotLoopback => out.extend(expr::ip_prefix(
                IpField::Daddr,
                CmpOp::Neq,
                Ipv4Addr::new(127, 0, 0, 0),
                8,
            )),
            Match::MarkClear(m) => out.extend([mark.clone(), bitwise(*m, 0), cmp(CmpOp::Eq, 0)]),
            Match::Saddr(_) | Match::L4Proto(_) => return None,
        }
    }
    if r.counter {
        out.push(Expr::Counter);
    }
    let set = |m: &MapName| Expr::Lookup {
        set: m.name().into(),
        vmap: true,
        id: None,
    };
    match &r.statement {
        Statement::Verdict(Verdict::Return) => out.push(Expr::Immediate(expr::Verdict::Return)),
        Statement::Verdict(Verdict::Jump(c)) => {
            out.push(Expr::Immediate(expr::Verdict::Jump(c.clone())))
        }
        Statement::Verdict(Verdict::Goto(c)) => {
            out.push(Expr::Immediate(expr::Verdict::Goto(c.clone())))
        }
        Statement::Verdict(Verdict::Reject) => out.push(Expr::Reject),
        Statement::Dispatch(m) => match m.key_type() {
            "ipv4_addr . inet_proto . inet_service" => out.extend([
                load_daddr(reg1),
                l4proto(expr::REG32_01),
                dport(expr::REG32_02),
                set(m),
            ]),
            "inet_proto . inet_service" => {
                out.extend([l4proto(reg1), dport(expr::REG32_01), set(m)])
            }
            _ => out.extend([load_daddr(reg1), set(m)]),
        },
        Statement::MarkXor(m) => out.extend([
            mark,
            bitwise(u32::MAX, *m),
            Expr::MetaSet { key: MetaKey::Mark },
        ]),
        Statement::MarkOr(m) => {
            out.extend([mark, bitwise(!*m, *m), Expr::MetaSet { key: MetaKey::Mark }])
        }
        Statement::MasqueradeFullyRandom => out.push(Expr::Masq { fully_random: true }),
        Statement::Dnat { .. } | Statement::Balance(_) => return None,
    }
    Some(out)
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

    #[test]
    fn skeleton_batch_has_a_message_per_command_of_the_text() {
        let b = skeleton_batch().unwrap();
        let commands = skeleton_text().lines().count();
        assert_eq!(b.messages(), commands);
        // A rule the netlink form does not know is named, not sent.
        let r = Rule::new(Statement::Dnat {
            addr: Ipv4Addr::new(11, 0, 0, 1),
            port: None,
        });
        assert!(rule_exprs(&r).is_none());
    }
}
