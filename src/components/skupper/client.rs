//! Ordinary AMQP clients on `normal` listeners, as skupper-router serves them.
//!
//! A client's receiving link (the router sends) is a *consumer* of its source address; a
//! client's sending link (the router receives) is a *producer* to its target address. The
//! router network carries each message to a consumer anywhere, chosen by the address's
//! distribution (see [`super::router`]), and carries the consumer's outcome (accepted,
//! rejected, released, modified) back to the producer's router, which settles the client's
//! delivery with it: settlement is end to end.
//!
//! A producer gets link credit only while its address has a consumer somewhere in the
//! network; its credit is withdrawn when the last one goes.

use super::config::Listener;
use super::listen;
use super::log;
use super::router::{Kind, Msg, Router};
use super::sasl;
use anyhow::{anyhow, Result};
use fe2o3_amqp::acceptor::{ConnectionAcceptor, LinkAcceptor, LinkEndpoint, SessionAcceptor};
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::{CreditMode, TerminalDeliveryState};
// fe2o3-amqp encodes and decodes whole messages through these wrappers (its own name marks
// them internal, but they are public and the only way to a message's wire form).
use fe2o3_amqp::types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp::types::messaging::{
    Accepted, Body, Message, Modified, Outcome, Rejected, Released,
};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Receiver, Sender};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const HANDSHAKE: Duration = Duration::from_secs(10);
const MAX_FRAME: u32 = 1024 * 1024;
/// Credit a producer gets while its address has consumers.
const CLIENT_CREDIT: u32 = 250;

/// A message on its way to a local consumer, with where its outcome goes (empty: nowhere,
/// the message was settled before it left).
#[derive(Debug)]
pub struct ClientDelivery {
    pub message: Vec<u8>,
    pub settle_to: String,
}

/// The outcome of a delivery as it crosses the network.
pub fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Accepted(_) => "accepted",
        Outcome::Rejected(_) => "rejected",
        Outcome::Released(_) => "released",
        Outcome::Modified(_) => "modified",
        #[allow(unreachable_patterns)]
        _ => "released",
    }
}

fn outcome_of(name: &str) -> TerminalDeliveryState {
    match name {
        "accepted" => Accepted {}.into(),
        "rejected" => Rejected { error: None }.into(),
        "modified" => Modified {
            delivery_failed: Some(true),
            undeliverable_here: None,
            message_annotations: None,
        }
        .into(),
        _ => Released {}.into(),
    }
}

/// A disposition message carrying `outcome` to the settlement address `to`.
pub fn disposition(to: &str, outcome: &str) -> Msg {
    Msg {
        kind: Kind::Disposition,
        to: to.to_string(),
        reply_to: String::new(),
        seq: 0,
        body: outcome.as_bytes().to_vec(),
    }
}

fn encode(m: Message<Body<Value>>) -> Result<Vec<u8>> {
    serde_amqp::ser::to_vec(&Serializable(m)).map_err(|e| anyhow!("cannot encode message: {e}"))
}

fn decode(b: &[u8]) -> Result<Message<Body<Value>>> {
    let d: Deserializable<Message<Body<Value>>> =
        serde_amqp::de::from_slice(b).map_err(|e| anyhow!("cannot decode message: {e}"))?;
    Ok(d.0)
}

/// Listens for AMQP clients.
pub async fn run_listener(router: Arc<Router>, l: Listener) -> Result<()> {
    let (tls, sock) = listen::bind(&router, &l).await?;
    log!(
        "listening for AMQP clients on {}:{} ({})",
        l.host,
        l.port,
        if tls.is_some() {
            "mutual TLS, SASL EXTERNAL"
        } else {
            "plain, SASL ANONYMOUS"
        }
    );
    listen::accept_each(sock, l.port, move |s, from| {
        tokio::spawn(serve_client(router.clone(), tls.clone(), s, from));
    });
    Ok(())
}

async fn open<Io>(router: &Router, io: Io) -> Result<fe2o3_amqp::acceptor::ListenerConnectionHandle>
where
    Io: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static,
{
    ConnectionAcceptor::builder()
        .container_id(router.id.clone())
        .max_frame_size(MAX_FRAME)
        .build()
        .accept(io)
        .await
        .map_err(|e| anyhow!("AMQP open failed: {e}"))
}

async fn serve_client(
    router: Arc<Router>,
    tls: Option<Arc<rustls::ServerConfig>>,
    tcp: TcpStream,
    from: std::net::SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let res = tokio::time::timeout(HANDSHAKE, async {
        match tls {
            Some(cfg) => {
                let io = tokio_rustls::TlsAcceptor::from(cfg)
                    .accept(tcp)
                    .await
                    .map_err(|e| anyhow!("TLS handshake failed: {e}"))?;
                let offer = sasl::Offer::External {
                    identity: super::link::peer_identity(&io),
                };
                let (io, who) = sasl::accept(io, &offer).await?;
                Ok::<_, anyhow::Error>((open(&router, io).await?, who))
            }
            None => {
                let (io, who) = sasl::accept(tcp, &sasl::Offer::Anonymous).await?;
                Ok((open(&router, io).await?, who))
            }
        }
    })
    .await
    .map_err(|_| anyhow!("AMQP handshake timed out"))
    .and_then(|r| r);
    let (mut conn, who) = match res {
        Ok(c) => c,
        Err(e) => {
            log!("refused AMQP client {from}: {e:#}");
            return;
        }
    };
    log!("AMQP client {from} connected ({who})");
    while let Ok(session) = SessionAcceptor::new().accept(&mut conn).await {
        tokio::spawn(serve_session(router.clone(), session));
    }
    log!("AMQP client {from} disconnected");
}

async fn serve_session(
    router: Arc<Router>,
    mut session: fe2o3_amqp::acceptor::ListenerSessionHandle,
) {
    // Receiving links start without credit: a producer gets credit only once its address
    // has a consumer somewhere.
    let la = LinkAcceptor::builder()
        .credit_mode(CreditMode::Manual)
        .build();
    while let Ok(link) = la.accept(&mut session).await {
        match link {
            LinkEndpoint::Sender(s) => {
                tokio::spawn(consumer(router.clone(), s));
            }
            LinkEndpoint::Receiver(r) => {
                tokio::spawn(producer(router.clone(), r));
            }
        }
    }
}

/// A client's receiving link: messages for its address reach it here.
async fn consumer(router: Arc<Router>, mut s: Sender) {
    let Some(address) = s.source().as_ref().and_then(|src| src.address.clone()) else {
        log!("a client receiver without a source address; closing it");
        let _ = s.close().await;
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<ClientDelivery>();
    let id = router.add_consumer(&address, tx);
    log!("client receiver attached to address {address}");
    loop {
        tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else { break };
                let msg = match decode(&d.message) {
                    Ok(m) => m,
                    Err(e) => {
                        log!("address {address}: {e}; rejecting it");
                        if !d.settle_to.is_empty() {
                            router.route(disposition(&d.settle_to, "rejected"));
                        }
                        continue;
                    }
                };
                match s.send_batchable(msg).await {
                    Ok(fut) => {
                        let router = router.clone();
                        tokio::spawn(async move {
                            let name = match fut.await {
                                Ok(o) => outcome_name(&o),
                                Err(_) => "released",
                            };
                            if !d.settle_to.is_empty() {
                                router.route(disposition(&d.settle_to, name));
                            }
                        });
                    }
                    Err(e) => {
                        if !d.settle_to.is_empty() {
                            router.route(disposition(&d.settle_to, "released"));
                        }
                        log!("client receiver on {address}: {e}");
                        break;
                    }
                }
            }
            _ = s.on_detach() => break,
        }
    }
    router.remove_consumer(&address, id);
    // Whatever was queued for this consumer goes back to its senders.
    rx.close();
    while let Ok(d) = rx.try_recv() {
        if !d.settle_to.is_empty() {
            router.route(disposition(&d.settle_to, "released"));
        }
    }
    log!("client receiver detached from address {address}");
    let _ = s.close().await;
}

/// A client's sending link: its messages enter the router network here.
async fn producer(router: Arc<Router>, mut r: Receiver) {
    let Some(address) = r.target().as_ref().and_then(|t| t.address.clone()) else {
        log!("a client sender without a target address; closing it");
        let _ = r.close().await;
        return;
    };
    let mut has_credit = false;
    log!("client sender attached to address {address}");
    let (otx, mut orx) = mpsc::unbounded_channel::<(u64, String)>();
    let mut changes = router.consumer_changes();
    let mut pending: HashMap<u64, DeliveryInfo> = HashMap::new();
    // Deliveries that arrived while no consumer existed (sent on credit granted before the
    // last consumer left): held until one appears.
    let mut held: VecDeque<(DeliveryInfo, Vec<u8>)> = VecDeque::new();
    let mut since_credit = 0u32;
    let why = loop {
        let reachable = router.has_consumer(&address);
        if reachable {
            while let Some((info, bytes)) = held.pop_front() {
                forward(&router, &address, &otx, &mut pending, info, bytes);
            }
            if !has_credit || since_credit >= CLIENT_CREDIT / 2 {
                if let Err(e) = r.set_credit(CLIENT_CREDIT).await {
                    break format!("{e}");
                }
                has_credit = true;
                since_credit = 0;
            }
        } else if has_credit {
            if let Err(e) = r.set_credit(0).await {
                break format!("{e}");
            }
            has_credit = false;
        }
        tokio::select! {
            d = r.recv::<Body<Value>>() => {
                let d = match d {
                    Ok(d) => d,
                    Err(e) => break format!("{e}"),
                };
                since_credit += 1;
                let (info, msg) = d.into_parts();
                let bytes = match encode(msg) {
                    Ok(b) => b,
                    Err(e) => {
                        log!("address {address}: {e}");
                        let _ = r.dispose(info, outcome_of("rejected")).await;
                        continue;
                    }
                };
                if router.has_consumer(&address) {
                    forward(&router, &address, &otx, &mut pending, info, bytes);
                } else {
                    held.push_back((info, bytes));
                }
            }
            o = orx.recv() => {
                let Some((n, name)) = o else { continue };
                router.end_settlement(n);
                if let Some(info) = pending.remove(&n) {
                    let _ = r.dispose(info, outcome_of(&name)).await;
                }
            }
            _ = changes.changed() => {}
        }
    };
    for n in pending.keys() {
        router.end_settlement(*n);
    }
    log!("client sender detached from address {address} ({why})");
    let _ = r.close().await;
}

fn forward(
    router: &Arc<Router>,
    address: &str,
    otx: &mpsc::UnboundedSender<(u64, String)>,
    pending: &mut HashMap<u64, DeliveryInfo>,
    info: DeliveryInfo,
    bytes: Vec<u8>,
) {
    let n = router.next_id();
    router
        .metrics
        .client_deliveries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    pending.insert(n, info);
    let settle_to = router.begin_settlement(n, otx.clone());
    router.route(Msg {
        kind: Kind::Message,
        to: address.to_string(),
        reply_to: settle_to,
        seq: 0,
        body: bytes,
    });
}
