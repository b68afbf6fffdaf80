//! The expressions of a rule, typed, each written as nft 1.0.6 writes it (its
//! `--debug=netlink` form in the comments), and the helpers that turn a match of the rule
//! language into the expressions nft makes of it.

use super::wire::Writer;
use std::net::Ipv4Addr;

/// The verdict register.
pub const REG_VERDICT: u32 = 0;
/// The first 16-byte register (nft's `reg 1`).
pub const REG_1: u32 = 1;
/// 4-byte registers after the first, as nft numbers them in a concatenation (`reg 9`...).
pub const REG32_01: u32 = 9;
pub const REG32_02: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Network = 1,
    Transport = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Neq = 1,
}

/// The meta keys used here (NFT_META_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    Mark = 3,
    L4proto = 16,
}

/// The final verdict of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Accept => 1,
            Verdict::Drop => 0,
            Verdict::Return => -5,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
        }
    }

    /// NFTA_DATA_VERDICT { code [, chain] }.
    pub fn write(&self, w: &mut Writer) {
        w.nested(2, |w| {
            w.be32(1, self.code() as u32); // NFTA_VERDICT_CODE
            if let Verdict::Jump(c) | Verdict::Goto(c) = self {
                w.str(2, c); // NFTA_VERDICT_CHAIN
            }
        });
    }
}

/// One expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `payload load LEN @ BASE + OFFSET => reg DREG`
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    /// `bitwise reg 1 = (reg 1 & MASK) ^ XOR`
    Bitwise { mask: Vec<u8>, xor: Vec<u8> },
    /// `cmp OP reg 1 DATA`
    Cmp { op: CmpOp, data: Vec<u8> },
    /// `meta load KEY => reg DREG`
    Meta { key: MetaKey, dreg: u32 },
    /// `meta set KEY with reg 1`
    MetaSet { key: MetaKey },
    /// `ct load state => reg 1`
    CtState,
    /// `fib daddr type => reg 1`
    FibDaddrType,
    /// `lookup reg 1 set NAME [dreg 0]`: a set match, or a verdict map when `vmap`;
    /// `id`: the set's id when the same batch creates it.
    Lookup {
        set: String,
        vmap: bool,
        id: Option<u32>,
    },
    /// `numgen reg 1 = random mod N`
    NumgenRandom { modulus: u32 },
    /// `immediate reg 0 VERDICT`
    Immediate(Verdict),
    /// `masq [flags 0x10]`
    Masq { fully_random: bool },
    /// `reject type 0 code 3` (ICMP port unreachable, nft's default for family ip)
    Reject,
    /// `counter`
    Counter,
}

/// NF_NAT_RANGE_PROTO_RANDOM_FULLY.
const NAT_RANGE_PROTO_RANDOM_FULLY: u32 = 0x10;

impl Expr {
    /// NFTA_LIST_ELEM { name, data }.
    pub fn write(&self, w: &mut Writer) {
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => w.expr("payload", |w| {
                w.be32(1, *dreg); // NFTA_PAYLOAD_DREG
                w.be32(2, *base as u32); // NFTA_PAYLOAD_BASE
                w.be32(3, *offset); // NFTA_PAYLOAD_OFFSET
                w.be32(4, *len); // NFTA_PAYLOAD_LEN
            }),
            Expr::Bitwise { mask, xor } => w.expr("bitwise", |w| {
                w.be32(1, REG_1); // NFTA_BITWISE_SREG
                w.be32(2, REG_1); // NFTA_BITWISE_DREG
                w.be32(3, mask.len() as u32); // NFTA_BITWISE_LEN
                w.data(4, mask); // NFTA_BITWISE_MASK
                w.data(5, xor); // NFTA_BITWISE_XOR
            }),
            Expr::Cmp { op, data } => w.expr("cmp", |w| {
                w.be32(1, REG_1); // NFTA_CMP_SREG
                w.be32(2, *op as u32); // NFTA_CMP_OP
                w.data(3, data); // NFTA_CMP_DATA
            }),
            Expr::Meta { key, dreg } => w.expr("meta", |w| {
                w.be32(2, *key as u32); // NFTA_META_KEY
                w.be32(1, *dreg); // NFTA_META_DREG
            }),
            Expr::MetaSet { key } => w.expr("meta", |w| {
                w.be32(2, *key as u32); // NFTA_META_KEY
                w.be32(3, REG_1); // NFTA_META_SREG
            }),
            Expr::CtState => w.expr("ct", |w| {
                w.be32(2, 0); // NFTA_CT_KEY: NFT_CT_STATE
                w.be32(1, REG_1); // NFTA_CT_DREG
            }),
            Expr::FibDaddrType => w.expr("fib", |w| {
                w.be32(1, REG_1); // NFTA_FIB_DREG
                w.be32(2, 3); // NFTA_FIB_RESULT: NFT_FIB_RESULT_ADDRTYPE
                w.be32(3, 2); // NFTA_FIB_FLAGS: NFTA_FIB_F_DADDR
            }),
            Expr::Lookup { set, vmap, id } => w.expr("lookup", |w| {
                w.be32(2, REG_1); // NFTA_LOOKUP_SREG
                if *vmap {
                    w.be32(3, REG_VERDICT); // NFTA_LOOKUP_DREG
                }
                w.str(1, set); // NFTA_LOOKUP_SET
                if let Some(id) = id {
                    w.be32(4, *id); // NFTA_LOOKUP_SET_ID
                }
            }),
            Expr::NumgenRandom { modulus } => w.expr("numgen", |w| {
                w.be32(1, REG_1); // NFTA_NG_DREG
                w.be32(2, *modulus); // NFTA_NG_MODULUS
                w.be32(3, 1); // NFTA_NG_TYPE: NFT_NG_RANDOM
                w.be32(4, 0); // NFTA_NG_OFFSET
            }),
            Expr::Immediate(v) => w.expr("immediate", |w| {
                w.be32(1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
                w.nested(2, |w| v.write(w)); // NFTA_IMMEDIATE_DATA
            }),
            Expr::Masq { fully_random } => w.expr("masq", |w| {
                if *fully_random {
                    w.be32(1, NAT_RANGE_PROTO_RANDOM_FULLY); // NFTA_MASQ_FLAGS
                }
            }),
            Expr::Reject => w.expr("reject", |w| {
                w.be32(1, 0); // NFTA_REJECT_TYPE: NFT_REJECT_ICMP_UNREACH
                w.attr(2, &[3]); // NFTA_REJECT_ICMP_CODE: port unreachable
            }),
            Expr::Counter => w.expr("counter", |_| {}),
        }
    }
}

/// Which address of the IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpField {
    Saddr,
    Daddr,
}

impl IpField {
    fn offset(self) -> u32 {
        match self {
            IpField::Saddr => 12,
            IpField::Daddr => 16,
        }
    }
}

/// `ip saddr|daddr [!=] ADDR/LEN` as nft makes it: a prefix on a byte boundary loads and
/// compares only its bytes (`/8`: one byte); any other loads the whole address and masks
/// it. A `/0` matches every address; nft then writes no expression for `==` (and
/// nothing can differ from it, so `!=` never matches: an impossible mask-and-compare).
pub fn ip_prefix(field: IpField, op: CmpOp, addr: Ipv4Addr, len: u8) -> Vec<Expr> {
    let len = len.min(32);
    let bytes = addr.octets();
    let load = |n: u32| Expr::Payload {
        base: PayloadBase::Network,
        offset: field.offset(),
        len: n,
        dreg: REG_1,
    };
    if len == 0 && op == CmpOp::Eq {
        return Vec::new();
    }
    if len > 0 && len.is_multiple_of(8) {
        let n = (len / 8) as usize;
        return vec![
            load(n as u32),
            Expr::Cmp {
                op,
                data: bytes[..n].to_vec(),
            },
        ];
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    let masked = u32::from_be_bytes(bytes) & mask;
    vec![
        load(4),
        Expr::Bitwise {
            mask: mask.to_be_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            op,
            data: masked.to_be_bytes().to_vec(),
        },
    ]
}

/// `meta mark VALUE`: the mark equals `value`.
pub fn meta_mark_eq(value: u32) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::Mark,
            dreg: REG_1,
        },
        Expr::Cmp {
            op: CmpOp::Eq,
            data: value.to_ne_bytes().to_vec(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_aligned_prefix_compares_only_its_bytes() {
        let e = ip_prefix(IpField::Saddr, CmpOp::Neq, Ipv4Addr::new(11, 0, 0, 0), 8);
        let one_byte_of_saddr = PayloadBase::Network as u32 + 12 + 1;
        match e.as_slice() {
            [Expr::Payload {
                base, offset, len, ..
            }, Expr::Cmp { op, data }] => {
                assert_eq!(*base as u32 + offset + len, one_byte_of_saddr);
                assert_eq!((*op, data.as_slice()), (CmpOp::Neq, &[11u8][..]));
            }
            other => panic!("not a load and a compare: {other:?}"),
        }
    }

    #[test]
    fn other_prefixes_load_the_address_and_mask_it() {
        // nft --debug=netlink: bitwise reg 1 = ( reg 1 & 0x00f0ffff ) ^ 0x00000000,
        // cmp eq reg 1 0x00100c0b (little-endian registers print the bytes reversed)
        let e = ip_prefix(IpField::Daddr, CmpOp::Eq, Ipv4Addr::new(11, 12, 16, 0), 20);
        assert_eq!(
            e[1],
            Expr::Bitwise {
                mask: vec![255, 255, 240, 0],
                xor: vec![0; 4]
            }
        );
        assert_eq!(
            e[2],
            Expr::Cmp {
                op: CmpOp::Eq,
                data: vec![11, 12, 16, 0]
            }
        );
        let multicast = ip_prefix(IpField::Daddr, CmpOp::Neq, Ipv4Addr::new(224, 0, 0, 0), 4);
        assert_eq!(multicast.len(), 3);
        assert!(ip_prefix(IpField::Saddr, CmpOp::Eq, Ipv4Addr::UNSPECIFIED, 0).is_empty());
    }
}
