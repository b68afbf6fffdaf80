//! nf_tables transactions written as netlink messages and sent in one `sendmsg`, instead of
//! an `nft -f` process: one batch (begin, the messages, end) is one atomic transaction, and
//! the kernel's answers are read until the last message's ack, so an error names the
//! message it belongs to.
//!
//! Why: at bring-up every new node's agents write their tables at once, and each `nft`
//! process (exec, its cache dump, the parse) cost more than the whole transaction does in
//! the kernel. The messages are the ones nft 1.0.6 sends for the same text (compare with
//! `nft --debug=mnl -f FILE`), so `nft list` prints the table as if `nft -f` had written it
//! (tests/nft_netlink.rs compares both listings). Everything here is in family `ip`;
//! [`super::session`] sends a batch.

use super::expr::Expr;
pub use super::session::{apply, Session};
use super::wire::{comment_udata, Writer};
use std::fmt;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// NFNL_MSG_BATCH_BEGIN and NFNL_MSG_BATCH_END.
const BATCH: [u16; 2] = [16, 17];
pub(super) const NFPROTO_IPV4: u8 = 2;

/// The nf_tables message types used here (NFT_MSG_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    NewTable = 0,
    GetTable = 1,
    DelTable = 2,
    NewChain = 3,
    NewRule = 6,
    DelRule = 8,
    NewSet = 9,
    NewSetElem = 12,
}

impl Msg {
    pub(super) fn netlink_type(self) -> u16 {
        (NFNL_SUBSYS_NFTABLES << 8) | self as u16
    }
}

pub(super) const REQUEST: u16 = 0x1;
pub(super) const ACK: u16 = 0x4;

/// Netlink message flags (NLM_F_*) of a [`Batch::message`].
pub mod flags {
    pub const EXCL: u16 = 0x200;
    pub const CREATE: u16 = 0x400;
    pub const APPEND: u16 = 0x800;
}
use flags::{APPEND, CREATE};

/// nftnl's limit for a comment (NFTNL_UDATA_COMMENT_MAXLEN); nft refuses longer ones.
const MAX_COMMENT: usize = 128;

/// The netfilter hooks of family ip, by nft's names, in their kernel order (NF_INET_*).
const HOOKS: [&str; 5] = ["prerouting", "input", "forward", "output", "postrouting"];

/// A base chain's type, hook and priority (`type nat hook postrouting priority srcnat`),
/// and whether `policy accept` was written (nft sends the policy only then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: &'static str,
    /// One of nft's hook names: prerouting, input, forward, output, postrouting.
    pub hook: &'static str,
    pub priority: i32,
    pub policy_accept: bool,
}

/// Priority names nft knows for family ip: filter 0, dstnat -100, srcnat 100.
pub const PRIORITY_FILTER: i32 = 0;
pub const PRIORITY_DSTNAT: i32 = -100;
pub const PRIORITY_SRCNAT: i32 = 100;

/// Why an nf_tables batch was not applied: the thing, the cause, and what to do.
#[derive(Debug)]
pub enum NftError {
    /// Found before sending: a name or comment the kernel or nft would refuse, or a
    /// message too large for netlink. Nothing was sent.
    Invalid { what: String, cause: String },
    /// The netlink socket could not be opened, bound, written or read.
    Socket {
        what: &'static str,
        cause: std::io::Error,
    },
    /// The kernel refused one message of the batch and aborted all of it.
    Refused {
        what: String,
        message: u32,
        messages: u32,
        cause: std::io::Error,
    },
}

impl NftError {
    /// What to do about a refusal, by the kernel's error number.
    fn fix(cause: &std::io::Error) -> &'static str {
        match cause.raw_os_error() {
            Some(libc::EPERM) => {
                "it needs CAP_NET_ADMIN in this namespace, or another program owns the table (nft list tables shows it; its owner must remove it)"
            }
            Some(libc::ENOENT) => {
                "something it names does not exist: a table, chain or set, or the kernel lacks that nf_tables module"
            }
            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => {
                "this kernel does not support it (an older kernel lacks, for example, masquerade fully-random)"
            }
            Some(libc::EEXIST) => "it exists already; delete it first or choose another name",
            Some(libc::EBUSY) => "it is still in use (a rule jumps to it or looks it up)",
            _ => "see the kernel's reason above; `nft -c -f` checks the same rules as text",
        }
    }
}

impl fmt::Display for NftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NftError::Invalid { what, cause } => {
                write!(f, "{what}: {cause} (nothing was sent to the kernel)")
            }
            NftError::Socket { what, cause } => write!(
                f,
                "{what}: {cause} (nf_tables over netlink needs root and a kernel with nf_tables)"
            ),
            NftError::Refused {
                what,
                message,
                messages,
                cause,
            } => write!(
                f,
                "the kernel refused {what} (message {message} of {messages} of one nf_tables batch, so nothing of it was applied): {cause}; {}",
                NftError::fix(cause)
            ),
        }
    }
}

impl std::error::Error for NftError {}

/// One nf_tables transaction being written.
pub struct Batch {
    w: Writer,
    /// What each message does, by sequence number (0: the batch's beginning).
    what: Vec<String>,
    /// The first name or comment the kernel would refuse.
    invalid: Option<NftError>,
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new()
    }
}

impl Batch {
    pub fn new() -> Batch {
        let mut w = Writer::new();
        w.begin(BATCH[0], REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        w.end();
        Batch {
            w,
            what: vec!["the beginning of the batch".into()],
            invalid: None,
        }
    }

    /// Messages written so far, the batch's beginning not counted.
    pub fn len(&self) -> usize {
        self.what.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One nf_tables message, described by `what` in errors; `body` writes its attributes.
    pub fn message(
        &mut self,
        msg: Msg,
        flags: u16,
        what: impl Into<String>,
        body: impl FnOnce(&mut Writer),
    ) {
        self.w
            .begin(msg.netlink_type(), REQUEST | flags, NFPROTO_IPV4, 0);
        body(&mut self.w);
        self.w.end();
        self.what.push(what.into());
    }

    /// A message that names `table` (attribute 1) and a `(kind, attribute, name)` in it, with
    /// an optional comment as user data in `(attribute, text)`; both checked first.
    fn named(
        &mut self,
        (msg, flags): (Msg, u16),
        what: String,
        table: &str,
        name: Option<(&str, u16, &str)>,
        comment: Option<(u16, &str)>,
        body: impl FnOnce(&mut Writer),
    ) {
        self.check_name("table", table);
        if let Some((kind, _, n)) = name {
            self.check_name(kind, n);
        }
        self.check_comment(comment.map(|c| c.1));
        self.message(msg, flags, what, |w| {
            w.str(1, table);
            if let Some((_, ty, n)) = name {
                w.str(ty, n);
            }
            body(w);
            if let Some((ty, c)) = comment {
                w.attr(ty, &comment_udata(c));
            }
        });
    }

    /// Checks a name (table, chain, set) as the kernel would, remembering the first bad one.
    pub fn check_name(&mut self, kind: &str, name: &str) {
        if self.invalid.is_none() && (name.is_empty() || name.len() > 255 || name.contains('\0')) {
            self.invalid = Some(NftError::Invalid {
                what: format!("{kind} name {name:?}"),
                cause: "an nftables name has 1 to 255 bytes and no NUL".into(),
            });
        }
    }

    /// Checks a comment as nft would, remembering the first bad one.
    pub fn check_comment(&mut self, comment: Option<&str>) {
        if let Some(c) = comment {
            if self.invalid.is_none() && (c.len() > MAX_COMMENT || c.contains('\0')) {
                self.invalid = Some(NftError::Invalid {
                    what: format!("comment {c:?}"),
                    cause: format!(
                        "an nftables comment has at most {MAX_COMMENT} bytes and no NUL"
                    ),
                });
            }
        }
    }

    /// `add table ip NAME [{ flags ...; comment "..." ; }]` (`flags`: NFT_TABLE_F_*).
    pub fn add_table(&mut self, table: &str, flags: u32, comment: Option<&str>) {
        let what = format!("adding table ip {table}");
        // NFTA_TABLE_FLAGS; the comment is NFTA_TABLE_USERDATA
        let c = comment.map(|c| (6, c));
        self.named((Msg::NewTable, CREATE), what, table, None, c, |w| {
            w.be32(2, flags)
        });
    }

    /// `delete table ip NAME`.
    pub fn delete_table(&mut self, table: &str) {
        let what = format!("deleting table ip {table}");
        self.named((Msg::DelTable, 0), what, table, None, None, |_| {});
    }

    /// `add chain ip TABLE NAME [{ type .. hook .. priority .. ; [policy accept ;] [comment ..] }]`.
    pub fn add_chain(
        &mut self,
        table: &str,
        chain: &str,
        base: Option<BaseChain>,
        comment: Option<&str>,
    ) {
        let what = format!("adding chain {chain} to table ip {table}");
        // NFTA_CHAIN_NAME; the comment is NFTA_CHAIN_USERDATA
        let (name, c) = (Some(("chain", 3, chain)), comment.map(|c| (12, c)));
        let hook = base.map(|b| HOOKS.iter().position(|h| *h == b.hook));
        if let (Some(None), Some(b)) = (hook, base) {
            self.invalid.get_or_insert(NftError::Invalid {
                what: format!("hook {:?} of chain {chain}", b.hook),
                cause: format!("family ip has the hooks {}", HOOKS.join(", ")),
            });
        }
        self.named((Msg::NewChain, CREATE), what, table, name, c, |w| {
            let (Some(b), Some(Some(hook))) = (base, hook) else {
                return;
            };
            w.str(7, b.kind); // NFTA_CHAIN_TYPE
            w.nested(4, |w| {
                // NFTA_CHAIN_HOOK
                w.be32(1, hook as u32); // NFTA_HOOK_HOOKNUM
                w.be32(2, b.priority as u32); // NFTA_HOOK_PRIORITY
            });
            if b.policy_accept {
                w.be32(5, 1); // NFTA_CHAIN_POLICY: NF_ACCEPT
            }
        });
    }

    /// `flush chain ip TABLE NAME`: deletes its rules.
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        let what = format!("flushing chain {chain} of table ip {table}");
        // NFTA_RULE_CHAIN
        self.named(
            (Msg::DelRule, 0),
            what,
            table,
            Some(("chain", 2, chain)),
            None,
            |_| {},
        );
    }

    /// `add rule ip TABLE CHAIN EXPRESSIONS [comment "..."]`, appended; `what` names it in
    /// errors (None: "a rule to chain ...").
    pub fn add_rule(
        &mut self,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        comment: Option<&str>,
        what: Option<String>,
    ) {
        let what = what.unwrap_or_else(|| format!("a rule to chain {chain} of table ip {table}"));
        // NFTA_RULE_CHAIN; the comment is NFTA_RULE_USERDATA
        let (name, c) = (Some(("chain", 2, chain)), comment.map(|c| (7, c)));
        let op = (Msg::NewRule, CREATE | APPEND);
        self.named(op, format!("adding {what}"), table, name, c, |w| {
            // NFTA_RULE_EXPRESSIONS
            w.nested(4, |w| exprs.iter().for_each(|e| e.write(w)));
        });
    }

    /// `add set|map ip TABLE NAME { ... }` as nft describes it ([`Set`]); `exclusive`: fail
    /// when it exists (nft's anonymous sets), else keep an existing one (`add`).
    pub fn add_set(&mut self, table: &str, set: &Set, exclusive: bool, what: String) {
        let flags = CREATE | if exclusive { flags::EXCL } else { 0 };
        let name = Some(("set", 2, set.name)); // NFTA_SET_NAME
        self.named((Msg::NewSet, flags), what, table, name, None, |w| {
            w.be32(3, set.flags); // NFTA_SET_FLAGS
            w.be32(4, set.key_type); // NFTA_SET_KEY_TYPE
            w.be32(5, set.key_len); // NFTA_SET_KEY_LEN
            if set.verdict_map {
                w.be32(6, 0xffff_ff00); // NFTA_SET_DATA_TYPE: NFT_DATA_VERDICT
                w.be32(7, 0); // NFTA_SET_DATA_LEN
            }
            w.be32(10, set.id); // NFTA_SET_ID
            if let Some(n) = set.size {
                w.nested(9, |w| w.be32(1, n)); // NFTA_SET_DESC { NFTA_SET_DESC_SIZE }
            }
            w.attr(13, set.udata); // NFTA_SET_USERDATA
        });
    }

    /// Ends the batch; the last message asks for the ack [`Session::apply`] waits for.
    pub fn finish(mut self) -> Result<Encoded, NftError> {
        if let Some(e) = self.invalid.take() {
            return Err(e);
        }
        if self.w.oversized {
            return Err(NftError::Invalid {
                what: "an nf_tables batch".into(),
                cause: "one of its attributes is larger than the 65,535 bytes a netlink attribute can hold".into(),
            });
        }
        let last = (self.what.len() - 1) as u32;
        if last > 0 {
            self.w.add_flags(ACK);
        }
        self.w.begin(BATCH[1], REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.w.end();
        Ok(Encoded {
            buf: self.w.buf,
            what: self.what,
        })
    }
}

/// A set or map as nft describes it to the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Set<'a> {
    pub name: &'a str,
    /// NFT_SET_* flags: anonymous 0x1, constant 0x2, map 0x8.
    pub flags: u32,
    /// nft's datatype number of the key (a concatenation: its parts' numbers 6 bits apart).
    pub key_type: u32,
    pub key_len: u32,
    /// A verdict map: its data are verdicts.
    pub verdict_map: bool,
    /// Its id in the batch: elements and lookups of the same batch may name it by id.
    pub id: u32,
    /// The number of elements, when nft gives it (anonymous sets).
    pub size: Option<u32>,
    /// nft's user data: key and data byte order, key description, comment.
    pub udata: &'a [u8],
}

/// A finished batch, ready to send.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub(crate) buf: Vec<u8>,
    pub(super) what: Vec<String>,
}

impl Encoded {
    /// Messages in it, the batch's beginning and end not counted.
    pub fn messages(&self) -> usize {
        self.what.len() - 1
    }

    /// The raw bytes (for tests that look at the messages).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (type, flags, seq) of every message in a buffer.
    fn headers(buf: &[u8]) -> Vec<(u16, u16, u32)> {
        let mut v = Vec::new();
        let mut off = 0;
        while off < buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            let fl = u16::from_ne_bytes([buf[off + 6], buf[off + 7]]);
            let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
            assert_eq!(len % 4, 0);
            v.push((ty, fl, seq));
            off += len;
        }
        v
    }

    #[test]
    fn only_the_last_message_asks_for_the_ack() {
        let mut b = Batch::new();
        b.add_table("t", 0, Some("c"));
        b.delete_table("t");
        b.add_chain("t", "c", None, None);
        let e = b.finish().unwrap();
        let h = headers(e.bytes());
        let types: Vec<u16> = h.iter().map(|x| x.0).collect();
        assert_eq!(types, vec![16, 0x0a00, 0x0a02, 0x0a03, 17]);
        let acks: Vec<u32> = h.iter().filter(|x| x.1 & ACK != 0).map(|x| x.2).collect();
        assert_eq!(acks, vec![3]);
        assert_eq!(e.messages(), 3);
    }

    /// The error of a batch `build` writes, which must be refused before sending.
    fn refused(build: impl FnOnce(&mut Batch)) -> String {
        let mut b = Batch::new();
        build(&mut b);
        b.finish().unwrap_err().to_string()
    }

    #[test]
    fn bad_names_comments_and_hooks_are_refused_before_sending() {
        let long_name = refused(|b| b.add_table(&"x".repeat(300), 0, None));
        let long_comment = refused(|b| b.add_chain("t", "c", None, Some(&"y".repeat(200))));
        let base = BaseChain {
            kind: "filter",
            hook: "ingress",
            priority: PRIORITY_FILTER,
            policy_accept: false,
        };
        let hook = refused(|b| b.add_chain("t", "c", Some(base), None));
        for (e, want) in [
            (&long_name, ["table name", "1 to 255 bytes"]),
            (&long_comment, ["at most 128 bytes", "nothing was sent"]),
            (&hook, ["hook \"ingress\" of chain c", "prerouting, input"]),
        ] {
            assert!(want.iter().all(|w| e.contains(w)), "{e}");
        }
    }

    #[test]
    fn errors_say_the_thing_the_cause_and_the_fix() {
        let socket = NftError::Socket {
            what: "opening an nf_tables netlink socket",
            cause: std::io::Error::from_raw_os_error(libc::EPROTONOSUPPORT),
        };
        let refusal = NftError::Refused {
            what: "deleting table ip flannel-ipv4".into(),
            message: 2,
            messages: 9,
            cause: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        let (socket, refusal) = (socket.to_string(), refusal.to_string());
        assert!(
            socket.starts_with("opening an nf_tables netlink socket: ")
                && socket.contains("needs root and a kernel with nf_tables"),
            "{socket}"
        );
        assert!(
            refusal.contains("refused deleting table ip flannel-ipv4 (message 2 of 9")
                && refusal.contains("nothing of it was applied")
                && refusal.contains("another program owns the table"),
            "{refusal}"
        );
    }
}
