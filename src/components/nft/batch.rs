//! nf_tables transactions written as netlink messages and sent in one `sendmsg`, instead of
//! an `nft -f` process: one batch (begin, the messages, end) is one atomic transaction, and
//! the kernel's answers are read until the last message's ack, so an error names the
//! message it belongs to.
//!
//! Why: at bring-up every new node's agents write their tables at once, and each `nft`
//! process (exec, its cache dump, the parse) cost more than the whole transaction does in
//! the kernel. The messages are the ones nft 1.0.6 sends for the same text (compare with
//! `nft --debug=mnl -f FILE`), so `nft list` prints the table as if `nft -f` had written it
//! (tests/nft_netlink.rs compares both listings). Everything here is in family `ip`.

use super::expr::Expr;
use super::wire::{comment_udata, Writer};
use std::fmt;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
pub(crate) const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
pub(crate) const NFT_MSG_NEWSET: u16 = 9;
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;

pub(crate) const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
const NLMSG_ERROR: u16 = 2;
const NFPROTO_IPV4: u8 = 2;
const NETLINK_NETFILTER: libc::c_int = 12;

/// nftnl's limit for a comment (NFTNL_UDATA_COMMENT_MAXLEN); nft refuses longer ones.
const MAX_COMMENT: usize = 128;

/// The netfilter hook a base chain is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Prerouting = 0,
    Input = 1,
    Forward = 2,
    Output = 3,
    Postrouting = 4,
}

/// A base chain's type, hook and priority (`type nat hook postrouting priority srcnat`),
/// and whether `policy accept` was written (nft sends the policy only then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: &'static str,
    pub hook: Hook,
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
        w.begin(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
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

    /// One nf_tables message of type `msg` (NFT_MSG_*), described by `what` in errors;
    /// `body` writes its attributes.
    pub fn message(
        &mut self,
        msg: u16,
        flags: u16,
        what: impl Into<String>,
        body: impl FnOnce(&mut Writer),
    ) {
        self.w.begin(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            NLM_F_REQUEST | flags,
            NFPROTO_IPV4,
            0,
        );
        body(&mut self.w);
        self.w.end();
        self.what.push(what.into());
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
        self.check_name("table", table);
        self.check_comment(comment);
        self.message(
            NFT_MSG_NEWTABLE,
            NLM_F_CREATE,
            format!("adding table ip {table}"),
            |w| {
                w.str(1, table); // NFTA_TABLE_NAME
                w.be32(2, flags); // NFTA_TABLE_FLAGS
                if let Some(c) = comment {
                    w.attr(6, &comment_udata(c)); // NFTA_TABLE_USERDATA
                }
            },
        );
    }

    /// `delete table ip NAME`.
    pub fn delete_table(&mut self, table: &str) {
        self.check_name("table", table);
        self.message(
            NFT_MSG_DELTABLE,
            0,
            format!("deleting table ip {table}"),
            |w| w.str(1, table),
        );
    }

    /// `add chain ip TABLE NAME [{ type .. hook .. priority .. ; [policy accept ;] [comment ..] }]`.
    pub fn add_chain(
        &mut self,
        table: &str,
        chain: &str,
        base: Option<BaseChain>,
        comment: Option<&str>,
    ) {
        self.check_name("chain", chain);
        self.check_comment(comment);
        self.message(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            format!("adding chain {chain} to table ip {table}"),
            |w| {
                w.str(1, table); // NFTA_CHAIN_TABLE
                w.str(3, chain); // NFTA_CHAIN_NAME
                if let Some(b) = base {
                    w.str(7, b.kind); // NFTA_CHAIN_TYPE
                    w.nested(4, |w| {
                        // NFTA_CHAIN_HOOK
                        w.be32(1, b.hook as u32); // NFTA_HOOK_HOOKNUM
                        w.be32(2, b.priority as u32); // NFTA_HOOK_PRIORITY
                    });
                    if b.policy_accept {
                        w.be32(5, 1); // NFTA_CHAIN_POLICY: NF_ACCEPT
                    }
                }
                if let Some(c) = comment {
                    w.attr(12, &comment_udata(c)); // NFTA_CHAIN_USERDATA
                }
            },
        );
    }

    /// `flush chain ip TABLE NAME`: deletes its rules.
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        self.message(
            NFT_MSG_DELRULE,
            0,
            format!("flushing chain {chain} of table ip {table}"),
            |w| {
                w.str(1, table); // NFTA_RULE_TABLE
                w.str(2, chain); // NFTA_RULE_CHAIN
            },
        );
    }

    /// `add rule ip TABLE CHAIN EXPRESSIONS [comment "..."]`, appended.
    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr], comment: Option<&str>) {
        self.check_comment(comment);
        self.message(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            format!("adding a rule to chain {chain} of table ip {table}"),
            |w| {
                w.str(1, table); // NFTA_RULE_TABLE
                w.str(2, chain); // NFTA_RULE_CHAIN
                w.nested(4, |w| {
                    // NFTA_RULE_EXPRESSIONS
                    for e in exprs {
                        e.write(w);
                    }
                });
                if let Some(c) = comment {
                    w.attr(7, &comment_udata(c)); // NFTA_RULE_USERDATA
                }
            },
        );
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
            self.w.add_flags(NLM_F_ACK);
        }
        self.w
            .begin(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.w.end();
        Ok(Encoded {
            buf: self.w.buf,
            what: self.what,
        })
    }
}

/// A finished batch, ready to send.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub(crate) buf: Vec<u8>,
    what: Vec<String>,
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

/// An nf_tables netlink socket of the network namespace it was opened in. A table created
/// with flag owner (NFT_TABLE_F_OWNER) through it lives as long as the session does.
pub struct Session {
    fd: std::os::fd::OwnedFd,
}

fn os_err(what: &'static str) -> NftError {
    NftError::Socket {
        what,
        cause: std::io::Error::last_os_error(),
    }
}

impl Session {
    /// Opens the socket in this thread's network namespace.
    pub fn open() -> Result<Session, NftError> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls; the descriptor is owned by the OwnedFd from here on.
        unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            );
            if fd < 0 {
                return Err(os_err("opening an nf_tables netlink socket"));
            }
            let s = Session {
                fd: std::os::fd::OwnedFd::from_raw_fd(fd),
            };
            // Never wait forever for an answer (the kernel answers inside sendto()).
            let tv = libc::timeval {
                tv_sec: 30,
                tv_usec: 0,
            };
            s.setsockopt(libc::SO_RCVTIMEO, &tv);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            if libc::bind(
                s.raw(),
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            ) < 0
            {
                return Err(os_err("binding the nf_tables netlink socket"));
            }
            Ok(s)
        }
    }

    fn raw(&self) -> libc::c_int {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    fn setsockopt<T>(&self, opt: libc::c_int, value: &T) {
        // SAFETY: value outlives the call and its size is passed. A failure leaves the
        // default, which only matters for very large batches (the send then says so).
        unsafe {
            libc::setsockopt(
                self.raw(),
                libc::SOL_SOCKET,
                opt,
                value as *const T as *const libc::c_void,
                std::mem::size_of::<T>() as libc::socklen_t,
            );
        }
    }

    fn send(&self, buf: &[u8]) -> Result<(), NftError> {
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: the buffer and address outlive the call.
        let sent = unsafe {
            libc::sendto(
                self.raw(),
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 || sent as usize != buf.len() {
            return Err(os_err("sending an nf_tables batch"));
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> Result<usize, NftError> {
        // SAFETY: the buffer outlives the call and its length is passed.
        let n = unsafe {
            libc::recv(
                self.raw(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(os_err(
                "reading the kernel's answer to an nf_tables request",
            ));
        }
        Ok(n as usize)
    }

    /// Sends the batch in one `sendmsg` and waits for the kernel's verdict. All or
    /// nothing: an error means the kernel aborted the whole transaction.
    pub fn apply(&self, batch: &Encoded) -> Result<(), NftError> {
        let messages = batch.messages() as u32;
        if messages == 0 {
            return Ok(());
        }
        let size = (batch.buf.len() + (1 << 20)).min(i32::MAX as usize) as libc::c_int;
        self.setsockopt(libc::SO_SNDBUFFORCE, &size);
        self.setsockopt(libc::SO_RCVBUFFORCE, &size);
        self.send(&batch.buf)?;
        // The kernel processed the batch inside sendto(); its answers are queued: an error
        // for each refused message, then the ack the last message asked for.
        let mut rbuf = vec![0u8; 1 << 16];
        loop {
            let n = self.recv(&mut rbuf)?;
            let mut acked = false;
            let mut refused = None;
            for (ty, seq, code) in answers(&rbuf[..n]) {
                if ty != NLMSG_ERROR {
                    continue;
                }
                if code != 0 && refused.is_none() {
                    refused = Some((seq, code));
                } else if code == 0 && seq == messages {
                    acked = true;
                }
            }
            if let Some((seq, code)) = refused {
                let what = batch.what.get(seq as usize).cloned().unwrap_or_else(|| {
                    format!("message {seq} (the kernel named no message of this batch)")
                });
                return Err(NftError::Refused {
                    what,
                    message: seq,
                    messages,
                    cause: std::io::Error::from_raw_os_error(-code),
                });
            }
            if acked {
                return Ok(());
            }
        }
    }

    /// Whether table `ip NAME` exists: one GETTABLE request answered inside the kernel.
    pub fn table_exists(&self, table: &str) -> Result<bool, NftError> {
        let mut w = Writer::new();
        w.begin(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            NFPROTO_IPV4,
            0,
        );
        w.str(1, table); // NFTA_TABLE_NAME
        w.end();
        self.send(&w.buf)?;
        let mut rbuf = vec![0u8; 1 << 16];
        let n = self.recv(&mut rbuf)?;
        // The first message says it: the table itself, or an error (ENOENT: there is none).
        let first = answers(&rbuf[..n]).next();
        match first {
            Some((ty, _, _)) if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE => Ok(true),
            Some((NLMSG_ERROR, _, code)) if code == -libc::ENOENT => Ok(false),
            Some((NLMSG_ERROR, _, code)) => Err(NftError::Refused {
                what: format!("asking for table ip {table}"),
                message: 0,
                messages: 1,
                cause: std::io::Error::from_raw_os_error(-code),
            }),
            other => Err(NftError::Socket {
                what: "asking nf_tables for a table",
                cause: std::io::Error::other(format!(
                    "an unexpected answer ({:?})",
                    other.map(|a| a.0)
                )),
            }),
        }
    }
}

/// The netlink messages in one datagram from the kernel: (type, sequence number, error
/// code for an NLMSG_ERROR, else 0).
fn answers(buf: &[u8]) -> impl Iterator<Item = (u16, u32, i32)> + '_ {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        if off + 16 > buf.len() {
            return None;
        }
        let u32_at = |i: usize| u32::from_ne_bytes(buf[i..i + 4].try_into().unwrap());
        let len = u32_at(off) as usize;
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let seq = u32_at(off + 8);
        if len < 16 || off + len > buf.len() {
            return None;
        }
        let code = if ty == NLMSG_ERROR && len >= 20 {
            u32_at(off + 16) as i32
        } else {
            0
        };
        off += (len + 3) & !3;
        Some((ty, seq, code))
    })
}

/// Applies `batch` in namespace `ns` (None: this thread's).
pub fn apply(ns: Option<&str>, batch: Encoded) -> anyhow::Result<()> {
    let run = move || -> anyhow::Result<()> { Ok(Session::open()?.apply(&batch)?) };
    match ns {
        None => run(),
        Some(ns) => crate::netns::run_in(ns, run),
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
        let acks: Vec<u32> = h
            .iter()
            .filter(|x| x.1 & NLM_F_ACK != 0)
            .map(|x| x.2)
            .collect();
        assert_eq!(acks, vec![3]);
        assert_eq!(e.messages(), 3);
    }

    #[test]
    fn bad_names_and_comments_are_refused_before_sending() {
        let mut b = Batch::new();
        b.add_table(&"x".repeat(300), 0, None);
        let e = b.finish().unwrap_err().to_string();
        assert!(
            e.contains("table name") && e.contains("1 to 255 bytes"),
            "{e}"
        );
        let mut b = Batch::new();
        b.add_chain("t", "c", None, Some(&"y".repeat(200)));
        let e = b.finish().unwrap_err().to_string();
        assert!(
            e.contains("at most 128 bytes") && e.contains("nothing was sent"),
            "{e}"
        );
    }

    #[test]
    fn a_refusal_names_the_message_the_cause_and_a_fix() {
        let e = NftError::Refused {
            what: "deleting table ip flannel-ipv4".into(),
            message: 2,
            messages: 9,
            cause: std::io::Error::from_raw_os_error(libc::EPERM),
        }
        .to_string();
        assert!(
            e.contains("refused deleting table ip flannel-ipv4 (message 2 of 9")
                && e.contains("nothing of it was applied")
                && e.contains("another program owns the table"),
            "{e}"
        );
    }

    #[test]
    fn answers_are_split_with_their_error_codes() {
        let mut buf = Vec::new();
        for (seq, code) in [(3u32, -libc::ENOENT), (5, 0)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&code.to_ne_bytes());
            buf.extend_from_slice(&[0u8; 16]);
        }
        let a: Vec<_> = answers(&buf).collect();
        assert_eq!(
            a,
            vec![(NLMSG_ERROR, 3, -libc::ENOENT), (NLMSG_ERROR, 5, 0)]
        );
    }
}
