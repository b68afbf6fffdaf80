//! The TCP adaptor: tcpListeners accept connections and carry them to the router that has
//! a tcpConnector for the same address, which connects to the real server.
//!
//! Each direction of a connection is a sequence of `data` messages numbered from 1, ended
//! by `fin` (half-close) or `reset`. Flow control is end to end: a side may have at most
//! [`WINDOW`] bytes sent and not yet written to the far socket; the far side returns credit
//! with `ack` messages as it writes. A gap in the numbering (a message lost when a link
//! dropped) resets the connection rather than corrupting the stream.

use super::config::{TcpConnector, TcpListener};
use super::log;
use super::router::{Kind, Msg, Router};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

/// Bytes a side may have in flight per direction. It must exceed what the path buffers
/// (the link's socket buffers, several MiB each way, plus the far socket's): with 4 MiB the
/// flow stalled waiting for acks while both routers idled, and `bench_skupper_sim` measured
/// 27% of direct throughput against 36% with 16 MiB (same machine, loaded, medians of 5).
pub const WINDOW: usize = 16 * 1024 * 1024;
/// Largest payload of one data message. 256 KiB measured a few points of direct TCP
/// better than 64 or 128 KiB in `bench_skupper_sim` (fewer messages, frames and wakeups).
pub const CHUNK: usize = 256 * 1024;

#[derive(Debug)]
pub enum FlowEvent {
    OpenOk { peer: String },
    Data { seq: u64, bytes: Vec<u8> },
    Fin { seq: u64 },
    Reset { why: String },
    Ack { bytes: u64 },
}

impl FlowEvent {
    pub fn from_msg(m: Msg) -> FlowEvent {
        match m.kind {
            Kind::OpenOk => FlowEvent::OpenOk { peer: m.reply_to },
            Kind::Data => FlowEvent::Data {
                seq: m.seq,
                bytes: m.body,
            },
            Kind::Fin => FlowEvent::Fin { seq: m.seq },
            Kind::Ack => FlowEvent::Ack {
                bytes: m
                    .body
                    .get(..8)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
                    .unwrap_or(0),
            },
            Kind::Reset => FlowEvent::Reset {
                why: String::from_utf8_lossy(&m.body).to_string(),
            },
            other => FlowEvent::Reset {
                why: format!("unexpected {} message for a flow", other.as_str()),
            },
        }
    }
}

fn msg(kind: Kind, to: &str, from: &str, seq: u64, body: Vec<u8>) -> Msg {
    Msg {
        kind,
        to: to.to_string(),
        reply_to: from.to_string(),
        seq,
        body,
    }
}

/// Accept loop of one tcpListener.
pub async fn run_listener(
    router: Arc<Router>,
    l: TcpListener,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let sock = tokio::net::TcpListener::bind((l.host.as_str(), l.port))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "tcpListener {} cannot listen on {}:{}: {e}; choose a free port",
                l.name,
                l.host,
                l.port
            )
        })?;
    log!(
        "tcpListener {} on {}:{} -> address {}",
        l.name,
        l.host,
        l.port,
        l.address
    );
    Ok(tokio::spawn(async move {
        loop {
            match sock.accept().await {
                Ok((s, _)) => {
                    router.metrics.tcp_accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(ingress(router.clone(), s, l.address.clone()));
                }
                Err(e) => {
                    log!("tcpListener {}: accept failed: {e}", l.name);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

async fn ingress(router: Arc<Router>, s: TcpStream, address: String) {
    let _ = s.set_nodelay(true);
    let n = router.next_id();
    let me = router.flow_address(n);
    let (tx, mut rx) = mpsc::unbounded_channel();
    router.register_flow(n, tx);
    router.count_address(&address, |c| c.connections += 1);
    router.route(msg(Kind::Open, &address, &me, 0, vec![]));
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    match first {
        Ok(Some(FlowEvent::OpenOk { peer })) => {
            run_flow(router.clone(), n, me, peer, s, rx, address).await;
        }
        other => {
            let why = match other {
                Ok(Some(FlowEvent::Reset { why })) => why,
                Err(_) => "no answer within 10 s".into(),
                _ => "unexpected answer".into(),
            };
            router.metrics.tcp_refused.fetch_add(1, Ordering::Relaxed);
            log!("connection to address {address} refused: {why}");
            reset_socket(&s);
            router.unregister_flow(n);
        }
    }
}

fn reset_socket(s: &TcpStream) {
    let _ = socket_zero_linger(s);
}

/// SO_LINGER 0: closing the socket sends a reset instead of a FIN.
pub fn socket_zero_linger(s: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a live socket descriptor and a linger struct of exactly the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// An `open` for an address served by a local tcpConnector.
pub fn open_local(router: Arc<Router>, m: Msg) {
    let Some(c) = router
        .cfg()
        .tcp_connectors
        .iter()
        .find(|c| c.address == m.to)
        .cloned()
    else {
        return;
    };
    tokio::spawn(egress(router, c, m.reply_to));
}

async fn egress(router: Arc<Router>, c: TcpConnector, peer: String) {
    let n = router.next_id();
    let me = router.flow_address(n);
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect((c.host.as_str(), c.port)),
    )
    .await;
    let s = match conn {
        Ok(Ok(s)) => s,
        other => {
            let why = match other {
                Ok(Err(e)) => format!(
                    "tcpConnector {} cannot reach {}:{}: {e}",
                    c.name, c.host, c.port
                ),
                _ => format!(
                    "tcpConnector {}: connect to {}:{} timed out",
                    c.name, c.host, c.port
                ),
            };
            log!("{why}");
            router.metrics.tcp_refused.fetch_add(1, Ordering::Relaxed);
            router.route(msg(Kind::Reset, &peer, "", 0, why.into_bytes()));
            return;
        }
    };
    let _ = s.set_nodelay(true);
    router.metrics.tcp_connected.fetch_add(1, Ordering::Relaxed);
    router.count_address(&c.address, |a| a.connections += 1);
    let (tx, rx) = mpsc::unbounded_channel();
    router.register_flow(n, tx);
    router.route(msg(Kind::OpenOk, &peer, &me, 0, vec![]));
    run_flow(router, n, me, peer, s, rx, c.address).await;
}

/// Streams bytes both ways between a socket and the flow's peer until both directions end.
async fn run_flow(
    router: Arc<Router>,
    n: u64,
    me: String,
    peer: String,
    s: TcpStream,
    mut rx: mpsc::UnboundedReceiver<FlowEvent>,
    address: String,
) {
    // The write half reaches the socket for SO_LINGER (no duplicate descriptor: that cost
    // five of the twenty-odd system calls a router made per connection).
    let (mut rd, mut wr) = s.into_split();
    let credit = Arc::new(Semaphore::new(WINDOW));
    // Socket -> peer.
    let reader = {
        let (router, me, peer, credit, address) = (
            router.clone(),
            me.clone(),
            peer.clone(),
            credit.clone(),
            address.clone(),
        );
        tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                let Ok(permit) = credit.acquire_many(CHUNK as u32).await else {
                    return false;
                };
                permit.forget();
                // Read into spare capacity: no zeroing pass over the chunk.
                let mut buf = Vec::with_capacity(CHUNK);
                match rd.read_buf(&mut buf).await {
                    Ok(0) => {
                        seq += 1;
                        router.route(msg(Kind::Fin, &peer, &me, seq, vec![]));
                        return true;
                    }
                    Ok(k) => {
                        credit.add_permits(CHUNK - k);
                        seq += 1;
                        router
                            .metrics
                            .bytes_in
                            .fetch_add(k as u64, Ordering::Relaxed);
                        router.count_address(&address, |a| a.bytes_in += k as u64);
                        router.route(msg(Kind::Data, &peer, &me, seq, buf));
                    }
                    Err(e) => {
                        router.route(msg(Kind::Reset, &peer, &me, 0, e.to_string().into_bytes()));
                        return false;
                    }
                }
            }
        })
    };
    tokio::pin!(reader);
    let mut reader_done: Option<bool> = None;
    let mut fin_received = false;
    let mut expect = 1u64;
    let mut unacked = 0usize;
    let mut written_total = 0u64;
    let mut hard = false;
    let reset = |wr: &tokio::net::tcp::OwnedWriteHalf, hard: &mut bool| {
        let _ = socket_zero_linger(wr.as_ref());
        *hard = true;
    };
    loop {
        if fin_received && reader_done.is_some() {
            break;
        }
        tokio::select! {
            r = &mut reader, if reader_done.is_none() => {
                let clean = r.unwrap_or(false);
                reader_done = Some(clean);
                if !clean {
                    // The local socket failed: the peer was told; close ours hard.
                    reset(&wr, &mut hard);
                    break;
                }
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    FlowEvent::Data { seq, bytes } => {
                        if seq != expect {
                            let why = format!("message {seq} arrived, {expect} expected (a link dropped)");
                            log!("connection on address {address}: {why}; resetting");
                            router.route(msg(Kind::Reset, &peer, &me, 0, why.into_bytes()));
                            reset(&wr, &mut hard);
                            break;
                        }
                        expect += 1;
                        let k = bytes.len();
                        if let Err(e) = wr.write_all(&bytes).await {
                            router.route(msg(Kind::Reset, &peer, &me, 0, e.to_string().into_bytes()));
                            reset(&wr, &mut hard);
                            break;
                        }
                        written_total += k as u64;
                        router.metrics.bytes_out.fetch_add(k as u64, Ordering::Relaxed);
                        router.count_address(&address, |a| a.bytes_out += k as u64);
                        unacked += k;
                        // Credit goes back in steps well under the window, so the sender
                        // never waits for a whole window's worth to drain.
                        if unacked >= WINDOW / 8 {
                            router.route(msg(Kind::Ack, &peer, &me, 0, (unacked as u64).to_be_bytes().to_vec()));
                            unacked = 0;
                        }
                    }
                    FlowEvent::Fin { seq } => {
                        if seq != expect {
                            router.route(msg(Kind::Reset, &peer, &me, 0, b"fin out of order".to_vec()));
                            reset(&wr, &mut hard);
                            break;
                        }
                        let _ = wr.shutdown().await;
                        fin_received = true;
                    }
                    FlowEvent::Ack { bytes } => credit.add_permits(bytes as usize),
                    FlowEvent::Reset { .. } => {
                        reset(&wr, &mut hard);
                        break;
                    }
                    FlowEvent::OpenOk { .. } => {}
                }
            }
        }
    }
    if reader_done.is_none() {
        reader.abort();
    }
    if hard {
        // Dropping the write half would send FIN first; close with RST instead.
        wr.forget();
    }
    let _ = written_total;
    router.unregister_flow(n);
}
