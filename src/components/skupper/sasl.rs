//! SASL as skupper-router does it (AMQP 1.0 part 5.3): the SASL protocol header, then
//! `sasl-mechanisms` from the listener, `sasl-init` from the client and `sasl-outcome`,
//! then the AMQP header on the same stream.
//!
//! - Plain listeners offer `ANONYMOUS`. A client that skips SASL and sends the AMQP header
//!   straight away is still served, as a listener with `authenticatePeer: false` is.
//! - Mutual-TLS listeners offer only `EXTERNAL`: the peer is the subject of the certificate
//!   it presented in the TLS handshake, so SASL is required there.
//! - The router's own connectors use `ANONYMOUS` on plain links and `EXTERNAL` over TLS.
//!
//! fe2o3-amqp's client refuses `EXTERNAL` unless it also does the TLS itself (with an AMQP
//! TLS header skupper-router does not use), and its acceptor cannot serve a client that skips
//! SASL, so both ends are done here on the raw stream; fe2o3 then takes over at the AMQP
//! header.

use anyhow::{anyhow, bail, Result};
use fe2o3_amqp::frames::sasl::Frame;
use fe2o3_amqp::types::primitives::{Array, Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
pub const ANONYMOUS: &str = "ANONYMOUS";
pub const EXTERNAL: &str = "EXTERNAL";
/// SASL frames are small; the spec's smallest max-frame-size (512) bounds them.
const MAX_SASL_FRAME: u32 = 512;
const FRAME_TYPE_SASL: u8 = 1;

/// What a listener accepts.
#[derive(Debug, Clone)]
pub enum Offer {
    /// `ANONYMOUS`, or no SASL at all.
    Anonymous,
    /// `EXTERNAL` only; `identity` is the subject of the peer's verified certificate.
    External { identity: String },
}

/// How a peer was let in, for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// `ANONYMOUS`, `EXTERNAL`, or `none` (the client skipped SASL).
    pub mechanism: String,
    /// The certificate subject for `EXTERNAL`, `anonymous` otherwise.
    pub identity: String,
}

impl std::fmt::Display for Authenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.mechanism == "none" {
            write!(f, "no SASL")
        } else {
            write!(f, "SASL {} as {}", self.mechanism, self.identity)
        }
    }
}

async fn write_frame<Io: AsyncWrite + Unpin>(io: &mut Io, frame: Frame) -> Result<()> {
    let body = serde_amqp::ser::to_vec(&frame).map_err(|e| anyhow!("encoding SASL frame: {e}"))?;
    let mut buf = Vec::with_capacity(8 + body.len());
    buf.extend_from_slice(&((8 + body.len()) as u32).to_be_bytes());
    buf.extend_from_slice(&[2, FRAME_TYPE_SASL, 0, 0]);
    buf.extend_from_slice(&body);
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}

/// Reads exactly one SASL frame (never more bytes than it holds: what follows belongs to
/// the AMQP layer).
async fn read_frame<Io: AsyncRead + Unpin>(io: &mut Io) -> Result<Frame> {
    let mut head = [0u8; 8];
    io.read_exact(&mut head).await?;
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let doff = head[4] as u32 * 4;
    if head[5] != FRAME_TYPE_SASL {
        bail!("expected a SASL frame, got frame type {}", head[5]);
    }
    if !(8..=MAX_SASL_FRAME).contains(&size) || doff < 8 || doff > size {
        bail!("SASL frame of {size} bytes (data offset {doff}) is malformed");
    }
    let mut rest = vec![0u8; size as usize - 8];
    io.read_exact(&mut rest).await?;
    serde_amqp::de::from_slice(&rest[doff as usize - 8..])
        .map_err(|e| anyhow!("undecodable SASL frame: {e}"))
}

fn outcome(code: SaslCode) -> Frame {
    Frame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    })
}

/// The listener side. Returns the stream positioned at the AMQP header (re-supplying it
/// when the client skipped SASL) and who the peer is.
pub async fn accept<Io>(mut io: Io, offer: &Offer) -> Result<(Prefixed<Io>, Authenticated)>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    let mut header = [0u8; 8];
    io.read_exact(&mut header).await?;
    if header == AMQP_HEADER {
        if let Offer::External { .. } = offer {
            // Tell the client which layer we wanted, as a protocol-header mismatch does.
            let _ = io.write_all(&SASL_HEADER).await;
            bail!("the client skipped SASL, but this listener requires SASL EXTERNAL");
        }
        let who = Authenticated {
            mechanism: "none".into(),
            identity: "anonymous".into(),
        };
        return Ok((Prefixed::new(io, Some(header)), who));
    }
    if header != SASL_HEADER {
        let _ = io.write_all(&SASL_HEADER).await;
        bail!("expected an AMQP protocol header, got {:?}", header);
    }
    io.write_all(&SASL_HEADER).await?;
    let offered = match offer {
        Offer::Anonymous => ANONYMOUS,
        Offer::External { .. } => EXTERNAL,
    };
    let mechanisms = SaslMechanisms {
        sasl_server_mechanisms: Array::from(vec![Symbol::from(offered)]),
    };
    write_frame(&mut io, Frame::Mechanisms(mechanisms)).await?;
    let init = match read_frame(&mut io).await? {
        Frame::Init(init) => init,
        other => {
            write_frame(&mut io, outcome(SaslCode::Sys)).await?;
            bail!("expected sasl-init, got {other:?}");
        }
    };
    let chosen = init.mechanism.as_str();
    if chosen != offered {
        write_frame(&mut io, outcome(SaslCode::Auth)).await?;
        bail!("the client chose SASL {chosen}; this listener offers only {offered}");
    }
    let identity = match offer {
        Offer::Anonymous => "anonymous".to_string(),
        Offer::External { identity } => {
            // EXTERNAL's response is an authorization identity: empty means "the one the
            // certificate proves"; anything else must be that same identity.
            let asked = init
                .initial_response
                .map(|b| String::from_utf8_lossy(&b.into_vec()).to_string())
                .unwrap_or_default();
            if !asked.is_empty() && asked != *identity {
                write_frame(&mut io, outcome(SaslCode::Auth)).await?;
                bail!("SASL EXTERNAL asked for identity {asked:?}, but the certificate is {identity:?}");
            }
            identity.clone()
        }
    };
    write_frame(&mut io, outcome(SaslCode::Ok)).await?;
    Ok((
        Prefixed::new(io, None),
        Authenticated {
            mechanism: offered.to_string(),
            identity,
        },
    ))
}

/// The connecting side: SASL header, pick `mechanism` from the listener's list, init,
/// outcome. The stream is then ready for the AMQP header.
pub async fn connect<Io>(io: &mut Io, mechanism: &str) -> Result<()>
where
    Io: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(&SASL_HEADER).await?;
    io.flush().await?;
    let mut header = [0u8; 8];
    io.read_exact(&mut header).await?;
    if header != SASL_HEADER {
        bail!("the peer answered the SASL header with {:?}", header);
    }
    let offered: Vec<String> = match read_frame(io).await? {
        Frame::Mechanisms(m) => m
            .sasl_server_mechanisms
            .0
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        other => bail!("expected sasl-mechanisms, got {other:?}"),
    };
    if !offered.iter().any(|m| m == mechanism) {
        bail!(
            "the peer offers SASL [{}], not {mechanism}",
            offered.join(", ")
        );
    }
    let init = SaslInit {
        mechanism: Symbol::from(mechanism),
        initial_response: Some(Binary::from(Vec::new())),
        hostname: None,
    };
    write_frame(io, Frame::Init(init)).await?;
    match read_frame(io).await? {
        Frame::Outcome(o) if o.code == SaslCode::Ok => Ok(()),
        Frame::Outcome(o) => bail!("SASL {mechanism} refused by the peer ({:?})", o.code),
        other => bail!("expected sasl-outcome, got {other:?}"),
    }
}

/// The subject common name of a DER certificate, as `CN=...`. The subject follows the
/// issuer in a certificate, so it is the last common name in the to-be-signed part.
pub fn subject_cn(der: &[u8]) -> Option<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let mut found = None;
    let mut i = 0;
    let mut seen = 0;
    while i + CN_OID.len() + 2 <= der.len() {
        if der[i..i + CN_OID.len()] == CN_OID {
            let tag = der[i + 5];
            let len = der[i + 6] as usize;
            let start = i + 7;
            if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) && len < 0x80 && start + len <= der.len() {
                found = Some(String::from_utf8_lossy(&der[start..start + len]).to_string());
                seen += 1;
                if seen == 2 {
                    break;
                }
            }
            i = start;
        } else {
            i += 1;
        }
    }
    found.map(|cn| format!("CN={cn}"))
}

/// A stream that first yields the protocol header already read from it.
#[derive(Debug)]
pub struct Prefixed<Io> {
    head: Option<[u8; 8]>,
    pos: usize,
    io: Io,
}

impl<Io> Prefixed<Io> {
    fn new(io: Io, head: Option<[u8; 8]>) -> Self {
        Prefixed { head, pos: 0, io }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Prefixed<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(h) = self.head {
            let n = (h.len() - self.pos).min(buf.remaining());
            buf.put_slice(&h[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == h.len() {
                self.head = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Prefixed<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(offer: Offer, mech: &'static str) -> (Result<Authenticated>, Result<()>) {
        let (a, mut b) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let (mut s, who) = accept(a, &offer).await?;
            // What follows SASL reaches the AMQP layer intact.
            let mut h = [0u8; 8];
            s.read_exact(&mut h).await?;
            anyhow::ensure!(h == AMQP_HEADER, "got {h:?}");
            Ok(who)
        });
        let c = connect(&mut b, mech).await;
        if c.is_ok() {
            b.write_all(&AMQP_HEADER).await.unwrap();
        } else {
            // A client that gives up closes its connection.
            drop(b);
        }
        (server.await.unwrap(), c)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn anonymous_and_external_succeed() {
        rt().block_on(async {
            let (s, c) = pair(Offer::Anonymous, ANONYMOUS).await;
            c.unwrap();
            assert_eq!(s.unwrap().mechanism, ANONYMOUS);
            let offer = Offer::External {
                identity: "CN=A".into(),
            };
            let (s, c) = pair(offer, EXTERNAL).await;
            c.unwrap();
            let who = s.unwrap();
            assert_eq!(
                (who.mechanism.as_str(), who.identity.as_str()),
                (EXTERNAL, "CN=A")
            );
        });
    }

    #[test]
    fn a_mechanism_not_offered_is_refused_both_ways() {
        rt().block_on(async {
            let offer = Offer::External {
                identity: "CN=A".into(),
            };
            let (s, c) = pair(offer, ANONYMOUS).await;
            let c = c.unwrap_err().to_string();
            assert!(c.contains("not ANONYMOUS"), "{c}");
            assert!(s.is_err());
        });
    }

    #[test]
    fn skipping_sasl_is_served_on_plain_and_refused_on_external() {
        rt().block_on(async {
            let (a, mut b) = tokio::io::duplex(4096);
            b.write_all(&AMQP_HEADER).await.unwrap();
            let (mut s, who) = accept(a, &Offer::Anonymous).await.unwrap();
            assert_eq!(who.mechanism, "none");
            let mut h = [0u8; 8];
            s.read_exact(&mut h).await.unwrap();
            assert_eq!(h, AMQP_HEADER, "the header is handed on to the AMQP layer");

            let (a, mut b) = tokio::io::duplex(4096);
            b.write_all(&AMQP_HEADER).await.unwrap();
            let offer = Offer::External {
                identity: "CN=A".into(),
            };
            let e = accept(a, &offer).await.unwrap_err().to_string();
            assert!(e.contains("requires SASL EXTERNAL"), "{e}");
            let mut h = [0u8; 8];
            b.read_exact(&mut h).await.unwrap();
            assert_eq!(h, SASL_HEADER);
        });
    }

    #[test]
    fn garbage_header_is_refused() {
        rt().block_on(async {
            let (a, mut b) = tokio::io::duplex(4096);
            b.write_all(b"GET / HT").await.unwrap();
            let e = accept(a, &Offer::Anonymous).await.unwrap_err().to_string();
            assert!(e.contains("expected an AMQP protocol header"), "{e}");
        });
    }

    #[test]
    fn subject_common_name_is_the_second() {
        let dir = std::env::temp_dir().join(format!("knetsim-sasl-cn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = dir.join("ca");
        super::super::create_site_ca(&ca, "B").unwrap();
        let t = super::super::create_token(&ca, &dir.join("t"), "A", "127.0.0.1", 1).unwrap();
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(&t.files.cert).unwrap();
        let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(subject_cn(&der).as_deref(), Some("CN=A"));
    }
}
