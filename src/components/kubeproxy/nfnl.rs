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
use anyhow::{bail, Context, Result};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NFPROTO_IPV4: u8 = 2;

const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_MAP: u32 = 0x8;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const NFT_GOTO: i32 = -4;
/// nft's datatype number for `integer`, the type of a numgen result.
const TYPE_INTEGER: u32 = 4;
const NFT_NG_RANDOM: u32 = 1;
const NFT_REG_1: u32 = 1;
const NFT_REG_VERDICT: u32 = 0;

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

/// Builds netlink messages into one buffer (native byte order headers, as netlink wants).
struct Writer {
    buf: Vec<u8>,
    seq: u32,
    /// Start of each open nested attribute.
    nests: Vec<usize>,
    msg_start: usize,
    /// An attribute grew past the 65,535 bytes a netlink length can say.
    oversized: bool,
}

impl Writer {
    fn new() -> Writer {
        Writer {
            buf: Vec::new(),
            seq: 0,
            nests: Vec::new(),
            msg_start: 0,
            oversized: false,
        }
    }

    fn align(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// Starts a message: nlmsghdr + nfgenmsg.
    fn begin(&mut self, ty: u16, flags: u16, family: u8, res_id: u16) {
        self.align();
        self.msg_start = self.buf.len();
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in end()
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id
        self.buf.push(family);
        self.buf.push(0); // version
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.seq += 1;
    }

    fn end(&mut self) {
        self.align();
        let len = (self.buf.len() - self.msg_start) as u32;
        self.buf[self.msg_start..self.msg_start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        self.align();
        let len = u16::try_from(4 + data.len()).unwrap_or_else(|_| {
            self.oversized = true;
            0
        });
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
    }

    fn str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    fn be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    fn nest(&mut self, ty: u16) {
        self.align();
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    fn unnest(&mut self) {
        let start = self.nests.pop().expect("nest/unnest pairs");
        let len = u16::try_from(self.buf.len() - start).unwrap_or_else(|_| {
            self.oversized = true;
            0
        });
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// One expression of a rule: name and its attributes.
    fn expr(&mut self, name: &str, body: impl FnOnce(&mut Writer)) {
        self.nest(1); // NFTA_LIST_ELEM
        self.str(1, name); // NFTA_EXPR_NAME
        self.nest(2); // NFTA_EXPR_DATA
        body(self);
        self.unnest();
        self.unnest();
    }
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
pub fn encode(table: &str, rules: &[BalancerRule], first_set: u32) -> Result<Vec<u8>> {
    let mut w = Writer::new();
    w.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
    w.end();
    let ty = |m: u16| (NFNL_SUBSYS_NFTABLES << 8) | m;
    for (i, b) in rules.iter().enumerate() {
        check(table, b)?;
        let set = format!("__map{}", first_set as usize + i);
        let set_id = first_set.wrapping_add(i as u32).wrapping_add(1);
        let targets = &b.balancer.targets;
        let n = targets.len() as u32;
        // NEWSET
        w.begin(
            ty(NFT_MSG_NEWSET),
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL,
            NFPROTO_IPV4,
            0,
        );
        w.str(1, table); // NFTA_SET_TABLE
        w.str(2, &set); // NFTA_SET_NAME
        w.be32(3, NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP); // NFTA_SET_FLAGS
        w.be32(4, TYPE_INTEGER); // NFTA_SET_KEY_TYPE
        w.be32(5, 4); // NFTA_SET_KEY_LEN
        w.be32(6, NFT_DATA_VERDICT); // NFTA_SET_DATA_TYPE
        w.be32(7, 0); // NFTA_SET_DATA_LEN
        w.be32(10, set_id); // NFTA_SET_ID
        w.nest(9); // NFTA_SET_DESC
        w.be32(1, n); // NFTA_SET_DESC_SIZE
        w.unnest();
        w.attr(13, &SET_UDATA); // NFTA_SET_USERDATA
        w.end();
        // NEWSETELEM
        w.begin(
            ty(NFT_MSG_NEWSETELEM),
            NLM_F_REQUEST | NLM_F_CREATE,
            NFPROTO_IPV4,
            0,
        );
        w.str(1, table); // NFTA_SET_ELEM_LIST_TABLE
                         // No NFTA_SET_ELEM_LIST_SET: without a name the kernel finds the new set by its
                         // id in the transaction, instead of walking every set of the table by name.
        w.be32(4, set_id); // NFTA_SET_ELEM_LIST_SET_ID
        w.nest(3); // NFTA_SET_ELEM_LIST_ELEMENTS
        for (k, target) in targets.iter().enumerate() {
            w.nest(k as u16 + 1);
            w.nest(1); // NFTA_SET_ELEM_KEY
            w.attr(1, &(k as u32).to_ne_bytes()); // NFTA_DATA_VALUE, host order
            w.unnest();
            w.nest(2); // NFTA_SET_ELEM_DATA
            w.nest(2); // NFTA_DATA_VERDICT
            w.be32(1, NFT_GOTO as u32); // NFTA_VERDICT_CODE
            w.str(2, target); // NFTA_VERDICT_CHAIN
            w.unnest();
            w.unnest();
            w.unnest();
        }
        w.unnest();
        w.end();
        // NEWRULE
        let last = i + 1 == rules.len();
        let ack = if last { NLM_F_ACK } else { 0 };
        w.begin(
            ty(NFT_MSG_NEWRULE),
            NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | ack,
            NFPROTO_IPV4,
            0,
        );
        w.str(1, table); // NFTA_RULE_TABLE
        w.str(2, &b.chain); // NFTA_RULE_CHAIN
        w.nest(4); // NFTA_RULE_EXPRESSIONS
        w.expr("counter", |_| {});
        w.expr("numgen", |w| {
            w.be32(1, NFT_REG_1); // NFTA_NG_DREG
            w.be32(2, n); // NFTA_NG_MODULUS
            w.be32(3, NFT_NG_RANDOM); // NFTA_NG_TYPE
            w.be32(4, 0); // NFTA_NG_OFFSET
        });
        w.expr("lookup", |w| {
            w.be32(2, NFT_REG_1); // NFTA_LOOKUP_SREG
            w.be32(3, NFT_REG_VERDICT); // NFTA_LOOKUP_DREG
            w.str(1, &set); // NFTA_LOOKUP_SET
            w.be32(4, set_id); // NFTA_LOOKUP_SET_ID
        });
        w.unnest();
        if let Some(c) = &b.comment {
            // NFTA_RULE_USERDATA: nftnl udata TLV, type 0 (comment), length with the NUL.
            let mut u = vec![0u8, (c.len() + 1) as u8];
            u.extend_from_slice(c.as_bytes());
            u.push(0);
            w.attr(7, &u);
        }
        w.end();
    }
    w.begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
    w.end();
    if w.oversized {
        bail!(
            "a balancer rule has too many endpoints for one netlink attribute (65,535 bytes); \
             write it with nft -f instead"
        );
    }
    Ok(w.buf)
}

/// The last message's sequence number in a buffer from [`encode`] (it asks for an ack).
fn last_acked_seq(rules: usize) -> u32 {
    // batch begin (0), then 3 messages per rule; the last NEWRULE is 3 * rules.
    (3 * rules) as u32
}

/// Whether table `ip NAME` exists in this thread's network namespace: one nf_tables
/// GETTABLE request answered inside the kernel, where `nft -j list table` would be a
/// process of its own (at bring-up every new node's kube-proxy asks this at once).
pub fn table_exists(table: &str) -> Result<bool> {
    use rtnetlink::sys::{protocols::NETLINK_NETFILTER as PROTOCOL, Socket, SocketAddr};
    let mut w = Writer::new();
    w.begin(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
        NLM_F_REQUEST | NLM_F_ACK,
        NFPROTO_IPV4,
        0,
    );
    w.str(NFTA_TABLE_NAME, table);
    w.end();
    let mut socket = Socket::new(PROTOCOL)
        .context("opening an nf_tables netlink socket (is nf_tables available?)")?;
    socket.bind_auto().context("binding the netlink socket")?;
    socket
        .send_to(&w.buf, &SocketAddr::new(0, 0), 0)
        .context("asking nf_tables for a table")?;
    let mut answer = Vec::with_capacity(8192);
    socket
        .recv(&mut answer, 0)
        .context("reading nf_tables' answer")?;
    // The first message says it: the table itself, or an error (ENOENT: there is none).
    if answer.len() < 16 {
        bail!("a short answer from nf_tables ({} bytes)", answer.len());
    }
    let ty = u16::from_ne_bytes([answer[4], answer[5]]);
    if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE {
        return Ok(true);
    }
    if ty == NLMSG_ERROR && answer.len() >= 20 {
        let code = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
        if code == -libc::ENOENT {
            return Ok(false);
        }
        return Err(std::io::Error::from_raw_os_error(-code))
            .with_context(|| format!("asking nf_tables for table ip {table}"));
    }
    bail!("an unexpected answer from nf_tables (message type {ty:#x})")
}

struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor was returned by socket() and is closed once, here.
        unsafe { libc::close(self.0) };
    }
}

/// Sends one batch from [`encode`] (`rules` balancer rules) in the current network
/// namespace and waits for the kernel's verdict. All or nothing: an error means the
/// kernel aborted the whole transaction.
pub fn send(buf: &[u8], rules: usize) -> Result<()> {
    if rules == 0 {
        return Ok(());
    }
    // SAFETY: plain socket calls on a descriptor we own; buffers outlive the calls.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("opening an nf_tables netlink socket (is nf_tables available?)");
        }
        let fd = Fd(fd);
        let size: libc::c_int = (buf.len() + (1 << 20)).min(i32::MAX as usize) as libc::c_int;
        for opt in [libc::SO_SNDBUFFORCE, libc::SO_RCVBUFFORCE] {
            libc::setsockopt(
                fd.0,
                libc::SOL_SOCKET,
                opt,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // Never wait forever for an answer (the kernel answers inside sendto()).
        let tv = libc::timeval {
            tv_sec: 30,
            tv_usec: 0,
        };
        libc::setsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        if libc::bind(
            fd.0,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        ) < 0
        {
            return Err(std::io::Error::last_os_error()).context("binding the netlink socket");
        }
        let sent = libc::sendto(
            fd.0,
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        );
        if sent < 0 || sent as usize != buf.len() {
            return Err(std::io::Error::last_os_error())
                .context(format!("sending an nf_tables batch of {} bytes", buf.len()));
        }
        // The kernel processed the batch inside sendto(); its answers are queued. The
        // last rule asked for an ack; any failure comes as an error message.
        let want = last_acked_seq(rules);
        let mut rbuf = vec![0u8; 1 << 16];
        let mut errors = Vec::new();
        loop {
            let n = libc::recv(fd.0, rbuf.as_mut_ptr() as *mut libc::c_void, rbuf.len(), 0);
            if n < 0 {
                return Err(std::io::Error::last_os_error())
                    .context("reading the kernel's answer to an nf_tables batch");
            }
            let mut off = 0usize;
            let n = n as usize;
            let mut acked = false;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(rbuf[off..off + 4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes(rbuf[off + 4..off + 6].try_into().unwrap());
                let seq = u32::from_ne_bytes(rbuf[off + 8..off + 12].try_into().unwrap());
                if len < 16 || off + len > n {
                    break;
                }
                if ty == NLMSG_ERROR && len >= 20 {
                    let code = i32::from_ne_bytes(rbuf[off + 16..off + 20].try_into().unwrap());
                    if code != 0 {
                        errors.push((seq, std::io::Error::from_raw_os_error(-code)));
                    } else if seq == want {
                        acked = true;
                    }
                }
                off += (len + 3) & !3;
            }
            if !errors.is_empty() {
                let (seq, e) = &errors[0];
                let what = match seq % 3 {
                    1 => "creating an anonymous set",
                    2 => "adding its elements",
                    _ => "adding a balancer rule",
                };
                let idx = (seq.saturating_sub(1) / 3) as usize;
                bail!(
                    "the kernel refused the nf_tables batch (nothing of it was applied): {what} (message {seq}, rule {} of {rules}): {e}",
                    idx + 1
                );
            }
            if acked {
                return Ok(());
            }
        }
    }
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
        let m = messages(&buf);
        let types: Vec<u16> = m.iter().map(|x| x.0).collect();
        assert_eq!(
            types,
            vec![16, 0x0a09, 0x0a0c, 0x0a06, 0x0a09, 0x0a0c, 0x0a06, 17]
        );
        let seqs: Vec<u32> = m.iter().map(|x| x.2).collect();
        assert_eq!(seqs, (0..8).collect::<Vec<u32>>());
        // Only the last rule asks for an ack, and its sequence number is the one awaited.
        assert!(m[6].1 & NLM_F_ACK != 0 && m[3].1 & NLM_F_ACK == 0);
        assert_eq!(last_acked_seq(2), 6);
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
