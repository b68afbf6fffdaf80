//! The bulk path of a large first sync: the balancer rules (`counter numgen random mod N
//! vmap { 0 : goto A, 1 : goto B }`) written as nf_tables netlink messages, not as `nft -f`.
//!
//! Why: every such rule carries an anonymous set, and the kernel (6.18 measured) does
//! work per new set that grows with the table or the transaction: `nf_tables_newset`
//! looks the name up by walking every set of the table and, for a name like nft's
//! `__map%d`, numbers it by `sscanf`-ing every set name (`nf_tables_set_alloc_name`);
//! `nft_set_lookup_global` walks them by name again for the elements and for the rule's
//! lookup (nft's `__map%d` never matches, so the walk always runs to the end before the
//! lookup by id); and `__nft_set_trans_bind` walks the whole transaction per set. nft
//! itself also dumps every chain of the table for its cache on each run. Here each set
//! gets a concrete name (`__map0`, `__map1`, ...), so no `sscanf` numbering; its elements
//! name it by id only, so no walk for them; batches stay short, so the transaction walk
//! does too; and no nft process or cache dump is involved. Two walks over the table's
//! sets in `nf_tables_newset` and one for the rule's lookup (whose set name the kernel
//! requires) remain: they are the floor (see examples/bench_services.rs).
//!
//! The messages are the ones nft 1.0.6 sends for the same rule text (`nft --debug=mnl`):
//! the set has flags anonymous|constant|map, key type integer (4 bytes, host byte
//! order), verdict data, the same set user data, and the rule the same counter, numgen,
//! lookup expressions and comment, so `nft list` prints the table exactly as if `nft -f`
//! had written it (tests/kubeproxy_firstsync.rs compares the two listings).

use super::rules::table::Balancer;
use crate::components::nft::batch::{flags, Batch, Encoded, Msg, Set};
use crate::components::nft::expr::{Expr, Verdict};
use anyhow::{bail, Result};

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_MAP: u32 = 0x8;
/// nft's datatype number for `integer`, the type of a numgen result.
const TYPE_INTEGER: u32 = 4;

/// The set user data nft writes for `numgen ... vmap { }`: key in host byte order, data
/// typeof verdict, no interval data (identical for every such set).
const SET_UDATA: [u8; 28] = [
    0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x04, 0x08, 0x00, 0x04,
    0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00,
];

/// The most endpoints a balancer written here may have: each element takes up to about 100
/// bytes of the set's element list, whose netlink length field stops at 65,535.
pub const MAX_TARGETS: usize = 256;

/// One balancer rule: `counter numgen random mod N vmap { i : goto targets[i] }`, alone
/// in `chain`, with `comment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancerRule {
    pub chain: String,
    pub comment: Option<String>,
    pub balancer: Balancer,
}

/// Checks what the kernel would refuse less clearly (names nft would also refuse).
fn check(table: &str, b: &BalancerRule) -> Result<()> {
    let targets = &b.balancer.targets;
    if targets.is_empty() {
        bail!(
            "balancer rule of chain {} has no endpoint to go to",
            b.chain
        );
    }
    for name in std::iter::once(&b.chain)
        .chain(targets)
        .chain(std::iter::once(&table.to_string()))
    {
        if name.is_empty() || name.len() > 255 || name.contains('\0') {
            bail!("invalid nftables name {name:?} (1 to 255 bytes, no NUL)");
        }
    }
    if let Some(c) = &b.comment {
        if c.len() > 128 || c.contains('\0') {
            bail!("invalid rule comment {c:?} (at most 128 bytes, no NUL)");
        }
    }
    Ok(())
}

/// One nf_tables batch (one transaction) adding each balancer rule with its anonymous
/// set, named `__map{first_set + i}`, to table `ip TABLE`.
pub fn encode(table: &str, rules: &[BalancerRule], first_set: u32) -> Result<Encoded> {
    let mut batch = Batch::new();
    let count = rules.len();
    for (i, b) in rules.iter().enumerate() {
        check(table, b)?;
        let set = format!("__map{}", first_set as usize + i);
        let set_id = first_set.wrapping_add(i as u32).wrapping_add(1);
        let targets = &b.balancer.targets;
        let n = targets.len() as u32;
        let rule = format!("balancer rule {} of {count} (chain {})", i + 1, b.chain);
        let anonymous = Set {
            name: &set,
            flags: NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP,
            key_type: TYPE_INTEGER,
            key_len: 4,
            verdict_map: true,
            id: set_id,
            size: Some(n),
            udata: &SET_UDATA,
        };
        let what = format!("creating the anonymous set of {rule}");
        batch.add_set(table, &anonymous, true, what);
        batch.message(
            Msg::NewSetElem,
            flags::CREATE,
            format!("adding the elements of {rule}"),
            |w| {
                w.str(1, table); // NFTA_SET_ELEM_LIST_TABLE
                                 // No NFTA_SET_ELEM_LIST_SET: without a name the kernel finds the new set by
                                 // its id in the transaction, instead of walking every set of the table by name.
                w.be32(4, set_id); // NFTA_SET_ELEM_LIST_SET_ID
                w.nested(3, |w| {
                    // NFTA_SET_ELEM_LIST_ELEMENTS
                    for (k, target) in targets.iter().enumerate() {
                        w.nested(k as u16 + 1, |w| {
                            // NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE, host order }
                            w.data(1, &(k as u32).to_ne_bytes());
                            // NFTA_SET_ELEM_DATA { NFTA_DATA_VERDICT }
                            w.nested(2, |w| Verdict::Goto(target.clone()).write(w));
                        });
                    }
                });
            },
        );
        let exprs = [
            Expr::Counter,
            Expr::NumgenRandom { modulus: n },
            Expr::Lookup {
                set,
                vmap: true,
                id: Some(set_id),
            },
        ];
        batch.add_rule(table, &b.chain, &exprs, b.comment.as_deref(), Some(rule));
    }
    match batch.finish() {
        Ok(e) => Ok(e),
        Err(_) => bail!(
            "a balancer rule has too many endpoints for one netlink attribute (65,535 bytes); \
             write it with nft -f instead"
        ),
    }
}

/// Whether table `ip NAME` exists in this thread's network namespace: one nf_tables
/// GETTABLE request answered inside the kernel, where `nft -j list table` would be a
/// process of its own (at bring-up every new node's kube-proxy asks this at once).
pub fn table_exists(table: &str) -> Result<bool> {
    Ok(crate::components::nft::batch::Session::open()?.table_exists(table)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(chain: &str, targets: &[&str]) -> BalancerRule {
        BalancerRule {
            chain: chain.into(),
            comment: Some("c".into()),
            balancer: Balancer {
                targets: targets.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    /// Splits a buffer into (type, flags, seq, payload after the nfgenmsg).
    fn messages(buf: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut v = Vec::new();
        let mut off = 0;
        while off < buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            let fl = u16::from_ne_bytes(buf[off + 6..off + 8].try_into().unwrap());
            let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
            assert_eq!(len % 4, 0);
            v.push((ty, fl, seq, buf[off + 20..off + len].to_vec()));
            off += len;
        }
        v
    }

    #[test]
    fn a_set_too_large_for_netlink_is_refused_not_truncated() {
        let many: Vec<String> = (0..2000)
            .map(|i| {
                format!(
                    "endpoint-ABCDEFGH-default/web/tcp/http__11.0.{}.{}/8000",
                    i / 256,
                    i % 256
                )
            })
            .collect();
        let big = BalancerRule {
            chain: "service-X".into(),
            comment: None,
            balancer: Balancer { targets: many },
        };
        let e = encode("kube-proxy", &[big], 0).unwrap_err().to_string();
        assert!(e.contains("too many endpoints"), "{e}");
    }

    #[test]
    fn batch_layout() {
        let buf = encode("kube-proxy", &[b("s1", &["e1", "e2"]), b("s2", &["e3"])], 7).unwrap();
        let m = messages(buf.bytes());
        let types: Vec<u16> = m.iter().map(|x| x.0).collect();
        assert_eq!(
            types,
            vec![16, 0x0a09, 0x0a0c, 0x0a06, 0x0a09, 0x0a0c, 0x0a06, 17]
        );
        let seqs: Vec<u32> = m.iter().map(|x| x.2).collect();
        assert_eq!(seqs, (0..8).collect::<Vec<u32>>());
        // Only the last rule asks for an ack (NLM_F_ACK).
        assert!(m[6].1 & 0x4 != 0 && m[3].1 & 0x4 == 0);
        assert_eq!(buf.messages(), 6);
        // The set of the second rule is __map8 with id 9: the set and the rule name it,
        // its elements find it by id only.
        let has = |p: &[u8], s: &[u8]| p.windows(s.len()).any(|w| w == s);
        assert!(has(&m[4].3, b"__map8\0") && has(&m[6].3, b"__map8\0"));
        assert!(!has(&m[5].3, b"__map"));
        let id_attr = [8u8, 0, 4, 0, 0, 0, 0, 9]; // len 8, type 4 (SET_ID), be32 9
        assert!(has(&m[5].3, &id_attr[..2]) && has(&m[5].3, &id_attr[4..]));
        assert!(has(&m[2].3, b"e2\0") && has(&m[3].3, b"s1\0") && has(&m[3].3, b"numgen\0"));
        // The rule comment is nftnl udata: type 0, length with the NUL.
        assert!(has(&m[3].3, &[0, 2, b'c', 0]));
    }

    #[test]
    fn refuses_what_the_kernel_would() {
        let e = encode("kube-proxy", &[b("s1", &[])], 0).unwrap_err();
        assert!(format!("{e}").contains("s1 has no endpoint"), "{e}");
        let long = "x".repeat(300);
        let e = encode("kube-proxy", &[b(&long, &["e"])], 0).unwrap_err();
        assert!(format!("{e}").contains("invalid nftables name"), "{e}");
        let mut r = b("s1", &["e"]);
        r.comment = Some("y".repeat(200));
        let e = encode("kube-proxy", &[r], 0).unwrap_err();
        assert!(format!("{e}").contains("invalid rule comment"), "{e}");
    }
}
