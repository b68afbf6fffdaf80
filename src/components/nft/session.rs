//! The socket a [`super::batch::Batch`] goes through: one nf_tables netlink socket per
//! namespace it is opened in, one `sendmsg` per batch, and the kernel's answers read until
//! the last message's ack (an error names the message it answers).

use super::batch::{Encoded, Msg, NftError, ACK, NFPROTO_IPV4, REQUEST};
use super::wire::Writer;

const NLMSG_ERROR: u16 = 2;
const NETLINK_NETFILTER: libc::c_int = 12;

/// An nf_tables netlink socket of the network namespace it was opened in. A table created
/// with flag owner (NFT_TABLE_F_OWNER) through it lives as long as the socket does: until
/// [`Session::close`] returns, or shortly after the session is dropped (a dropped session's
/// socket is closed on [`crate::closer`]'s thread, because that close can wait a grace
/// period of the kernel's).
#[derive(Debug)]
pub struct Session {
    /// Always `Some` until closed or dropped.
    fd: Option<std::os::fd::OwnedFd>,
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
                fd: Some(std::os::fd::OwnedFd::from_raw_fd(fd)),
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
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// Closes the socket now, on this thread: tables with flag owner made through it are
    /// gone when this returns.
    pub fn close(mut self) {
        drop(self.fd.take());
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
        // SAFETY: sockaddr_nl is plain data; all zeros is the kernel's address.
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
        w.begin(Msg::GetTable.netlink_type(), REQUEST | ACK, NFPROTO_IPV4, 0);
        w.str(1, table); // NFTA_TABLE_NAME
        w.end();
        self.send(&w.buf)?;
        let mut rbuf = vec![0u8; 1 << 16];
        let n = self.recv(&mut rbuf)?;
        // The first message says it: the table itself, or an error (ENOENT: there is none).
        let first = answers(&rbuf[..n]).next();
        match first {
            Some((ty, _, _)) if ty == Msg::NewTable.netlink_type() => Ok(true),
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

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            crate::closer::close_later(fd);
        }
    }
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
