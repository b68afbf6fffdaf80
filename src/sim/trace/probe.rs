//! The probe itself: one TCP SYN, UDP datagram or ICMP echo request, sent as a fresh
//! flow from inside a namespace, with its DSCP set, and what came back to it.

use crate::components::trace::{self as tr, Proto};
use crate::netns;
use anyhow::{Context, Result};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// How long the probe waits for its answer (below TCP's first SYN retransmission, 1 s,
/// so the walk shows one packet).
/// How long an HTTP request through a proxy may take, each way.
const HTTP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
pub(super) const ANSWER_WAIT: Duration = Duration::from_millis(900);
/// The probe's TOS byte: its DSCP (by which the trace table knows it after NAT), no ECN.
const PROBE_TOS: u32 = (tr::PROBE_DSCP as u32) << 2;

/// What came back to the probe.
#[derive(Debug, Clone)]
pub(super) enum Answer {
    Answered(String),
    Refused(String),
    Nothing,
}

/// Sends the probe from namespace `ns` and waits briefly for its answer.
pub(super) fn send_probe(
    ns: &str,
    ip: Ipv4Addr,
    proto: Proto,
    port: Option<u16>,
    tag: u16,
) -> Result<Answer> {
    netns::run_in(ns, move || match proto {
        Proto::Icmp => icmp_probe(ip, tag),
        Proto::Tcp => tcp_probe(ip, port.unwrap_or(80), tag),
        Proto::Udp => udp_probe(ip, port.unwrap_or(53), tag),
    })
}

/// A real HTTP GET from namespace `ns` (an ordinary connection: not the probe), for a
/// proxy to forward; its answer is the status line and the first line of the body.
pub(super) fn http_get(ns: &str, ip: Ipv4Addr, port: u16, path: &str) -> Result<Answer> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n");
    netns::run_in(ns, move || {
        use std::io::Write;
        let addr = std::net::SocketAddr::from(SocketAddrV4::new(ip, port));
        let mut s = match std::net::TcpStream::connect_timeout(&addr, HTTP_WAIT) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Ok(Answer::Refused("connection refused (RST)".into()))
            }
            Err(_) => return Ok(Answer::Nothing),
        };
        s.set_read_timeout(Some(HTTP_WAIT))?;
        s.write_all(request.as_bytes())?;
        let mut body = Vec::new();
        let _ = s.take(64 * 1024).read_to_end(&mut body);
        let text = String::from_utf8_lossy(&body);
        let status = text.lines().next().unwrap_or("").trim().to_string();
        if !status.starts_with("HTTP/") {
            return Ok(Answer::Nothing);
        }
        let first = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| b.lines().next())
            .unwrap_or("")
            .trim()
            .to_string();
        Ok(Answer::Answered(format!("{status}, body {first:?}")))
    })
}

pub(super) fn tcp_probe(ip: Ipv4Addr, port: u16, tag: u16) -> Result<Answer> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_tos_v4(PROBE_TOS)?;
    s.bind(&SockAddr::from(SocketAddrV4::new(
        Ipv4Addr::UNSPECIFIED,
        tag,
    )))
    .with_context(|| format!("binding the probe to source port {tag}"))?;
    let r = s.connect_timeout(&SockAddr::from(SocketAddrV4::new(ip, port)), ANSWER_WAIT);
    // Close with a reset: no FIN exchange, no TIME_WAIT holding the port.
    let _ = s.set_linger(Some(Duration::ZERO));
    Ok(match r {
        Ok(()) => Answer::Answered("SYN-ACK, the connection opened".into()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Answer::Refused(format!("a TCP reset: nothing listens on port {port}"))
        }
        Err(e) => silence_or_error(e),
    })
}

pub(super) fn udp_probe(ip: Ipv4Addr, port: u16, tag: u16) -> Result<Answer> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, tag))
        .with_context(|| format!("binding the probe to source port {tag}"))?;
    socket2::SockRef::from(&s).set_tos_v4(PROBE_TOS)?;
    s.connect((ip, port))?;
    s.send(b"knetsim trace probe\n")?;
    s.set_read_timeout(Some(ANSWER_WAIT))?;
    let mut buf = [0u8; 2048];
    Ok(match s.recv(&mut buf) {
        Ok(n) => Answer::Answered(format!("a UDP reply of {n} bytes")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Answer::Refused(format!(
            "ICMP port unreachable: nothing listens on UDP {port}"
        )),
        Err(e) => silence_or_error(e),
    })
}

/// No answer in time is silence; any other error is what came back.
fn silence_or_error(e: std::io::Error) -> Answer {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Answer::Nothing,
        _ => Answer::Refused(format!("{e}")),
    }
}

pub(super) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub(super) fn icmp_probe(ip: Ipv4Addr, id: u16) -> Result<Answer> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        .context("opening a raw ICMP socket (needs root)")?;
    s.set_tos_v4(PROBE_TOS)?;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"knetsim trace probe");
    let c = checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    s.send_to(&pkt, &SockAddr::from(SocketAddrV4::new(ip, 0)))?;
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Answer::Nothing);
        }
        s.set_read_timeout(Some(left))?;
        let n = match (&s).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                return Ok(Answer::Nothing)
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(a) = icmp_answer(&buf[..n], id) {
            return Ok(a);
        }
    }
}

/// An echo reply to `id`, or an error about our echo request; None for other ICMP.
pub(super) fn icmp_answer(pkt: &[u8], id: u16) -> Option<Answer> {
    let ihl = usize::from(*pkt.first()? & 0x0f) * 4;
    let icmp = pkt.get(ihl..)?;
    let from = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
    match *icmp.first()? {
        0 if icmp.get(4..6)? == id.to_be_bytes() => {
            Some(Answer::Answered(format!("an echo reply (from {from})")))
        }
        3 | 11 => {
            let inner = icmp.get(8..)?;
            let iihl = usize::from(*inner.first()? & 0x0f) * 4;
            let iicmp = inner.get(iihl..)?;
            (iicmp.first() == Some(&8) && iicmp.get(4..6)? == id.to_be_bytes()).then(|| {
                let why = if icmp[0] == 11 {
                    "time exceeded".to_string()
                } else {
                    format!("destination unreachable (code {})", icmp[1])
                };
                Answer::Refused(format!("ICMP {why} from {from}"))
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_answers_are_matched_by_id() {
        let mut reply = vec![0x45u8; 20];
        reply[12..16].copy_from_slice(&[11, 11, 0, 2]);
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert!(matches!(
            icmp_answer(&reply, 0x1234),
            Some(Answer::Answered(_))
        ));
        assert!(icmp_answer(&reply, 0x1235).is_none());
        let mut unreach = vec![0x45u8; 20];
        unreach.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
        unreach.extend_from_slice(&[0x45u8; 20]);
        unreach.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
        assert!(
            matches!(icmp_answer(&unreach, 0x1234), Some(Answer::Refused(m)) if m.contains("unreachable (code 1)"))
        );
    }

    #[test]
    fn checksum_of_an_echo_request() {
        // Type 8, id 1, seq 1, no payload: the one's complement sum is known.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }
}
