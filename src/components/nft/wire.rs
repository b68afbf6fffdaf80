//! Netlink messages and attributes written into one buffer (native byte order headers, as
//! netlink wants; nf_tables values in network byte order where the kernel says so).

/// NLA_F_NESTED: the attribute holds attributes.
const NLA_F_NESTED: u16 = 0x8000;

/// Builds netlink messages into one buffer.
pub struct Writer {
    pub(super) buf: Vec<u8>,
    seq: u32,
    /// Start of each open nested attribute.
    nests: Vec<usize>,
    msg_start: usize,
    /// An attribute grew past the 65,535 bytes a netlink length can say.
    pub(super) oversized: bool,
}

impl Writer {
    pub(super) fn new() -> Writer {
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

    /// Starts a message: nlmsghdr + nfgenmsg. Returns its sequence number.
    pub(super) fn begin(&mut self, ty: u16, flags: u16, family: u8, res_id: u16) -> u32 {
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
        self.seq - 1
    }

    pub(super) fn end(&mut self) {
        self.align();
        let len = (self.buf.len() - self.msg_start) as u32;
        self.buf[self.msg_start..self.msg_start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    /// Adds `flags` to the header of the message written last.
    pub(super) fn add_flags(&mut self, flags: u16) {
        let at = self.msg_start + 6;
        let old = u16::from_ne_bytes([self.buf[at], self.buf[at + 1]]);
        self.buf[at..at + 2].copy_from_slice(&(old | flags).to_ne_bytes());
    }

    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        self.align();
        let len = u16::try_from(4 + data.len()).unwrap_or_else(|_| {
            self.oversized = true;
            0
        });
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    pub fn be32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    pub fn nest(&mut self, ty: u16) {
        self.align();
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    }

    pub fn unnest(&mut self) {
        let start = self.nests.pop().expect("nest/unnest pairs");
        let len = u16::try_from(self.buf.len() - start).unwrap_or_else(|_| {
            self.oversized = true;
            0
        });
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// `ty { body }`.
    pub fn nested(&mut self, ty: u16, body: impl FnOnce(&mut Writer)) {
        self.nest(ty);
        body(self);
        self.unnest();
    }

    /// `NFTA_DATA_VALUE` inside attribute `ty` (cmp data, bitwise mask and xor, keys).
    pub fn data(&mut self, ty: u16, value: &[u8]) {
        self.nested(ty, |w| w.attr(1, value));
    }

    /// One expression of a rule: name and its attributes.
    pub fn expr(&mut self, name: &str, body: impl FnOnce(&mut Writer)) {
        self.nest(1); // NFTA_LIST_ELEM
        self.str(1, name); // NFTA_EXPR_NAME
        self.nest(2); // NFTA_EXPR_DATA
        body(self);
        self.unnest();
        self.unnest();
    }
}

/// nftnl's user data TLV for a comment (type 0, length with the NUL), as nft writes for a
/// table's, chain's or rule's `comment "..."`.
pub fn comment_udata(c: &str) -> Vec<u8> {
    let mut u = vec![0u8, (c.len() + 1) as u8];
    u.extend_from_slice(c.as_bytes());
    u.push(0);
    u
}
