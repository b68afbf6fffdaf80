//! Inter-router links: AMQP 1.0 connections (fe2o3-amqp), over mutual TLS when the listener
//! or connector names an sslProfile, plain otherwise.
//!
//! On each connection the connecting router begins one session and attaches two links:
//! a sender and a receiver, both named after the routers and addressed
//! `_router/inter-router`, pre-settled (the TCP adaptor has its own end-to-end flow control
//! and loss detection). The first message each way is `hello` (router id, link cost); then
//! link-state records and TCP flow messages share the link.

use super::certs;
use super::config::{Connector, Listener, Mode, Role};
use super::listen;
use super::log;
use super::router::{Kind, Msg, Neighbor, Router};
use super::sasl;
use anyhow::{anyhow, bail, Context, Result};
use fe2o3_amqp::acceptor::{ConnectionAcceptor, LinkAcceptor, LinkEndpoint, SessionAcceptor};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{Body, Message, MessageId, Properties};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const LINK_ADDRESS: &str = "_router/inter-router";
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Largest AMQP frame: one data message (a [`crate::components::skupper::tcp::CHUNK`] plus
/// headers) fits in one frame.
const MAX_FRAME: u32 = 1024 * 1024;
/// Link credit (messages) each receiver grants.
const CREDIT: u32 = 1000;

#[derive(Serialize, Deserialize)]
struct Hello {
    id: String,
    cost: u32,
    mode: String,
    /// The role of the link as the sender configured it (connector or listener).
    #[serde(default)]
    role: String,
}

fn to_amqp(m: Msg) -> Message<fe2o3_amqp::types::messaging::Data> {
    let mut p = Properties::builder()
        .message_id(MessageId::Ulong(m.seq))
        .to(m.to)
        .subject(m.kind.as_str());
    if !m.reply_to.is_empty() {
        p = p.reply_to(m.reply_to);
    }
    Message::builder()
        .properties(p.build())
        .data(Binary::from(m.body))
        .build()
}

fn from_amqp(m: Message<Body<Value>>) -> Option<Msg> {
    let p = m.properties?;
    let kind = Kind::parse(p.subject.as_deref()?)?;
    let seq = match p.message_id {
        Some(MessageId::Ulong(n)) => n,
        _ => 0,
    };
    let body = match m.body {
        Body::Data(batch) => {
            let mut v: Vec<Vec<u8>> = batch.into_iter().map(|d| d.0.into_vec()).collect();
            if v.len() == 1 {
                v.pop().unwrap_or_default()
            } else {
                v.concat()
            }
        }
        _ => vec![],
    };
    Some(Msg {
        kind,
        to: p.to.unwrap_or_default(),
        reply_to: p.reply_to.unwrap_or_default(),
        seq,
        body,
    })
}

fn hello_msg(router: &Router, cost: u32, role: Role) -> Msg {
    let h = Hello {
        id: router.id.clone(),
        cost,
        mode: router.mode().as_str().into(),
        role: role.as_str().into(),
    };
    Msg {
        kind: Kind::Hello,
        to: "_control".into(),
        reply_to: String::new(),
        seq: 0,
        body: serde_json::to_vec(&h).unwrap_or_default(),
    }
}

/// skupper-router's rule for who links with whom: inter-router links join interior
/// routers; an edge link joins an edge router (connecting) to an interior one.
fn check_roles(role: Role, me: Mode, peer: &Hello) -> Result<()> {
    let peer_edge = peer.mode == Mode::Edge.as_str();
    let me_edge = me == Mode::Edge;
    if !peer.role.is_empty() && peer.role != role.as_str() {
        bail!(
            "this end of the link has role {}, router {}'s end has role {}; connect to a listener of the same role (inter-router 55671, edge 45671)",
            role.as_str(),
            peer.id,
            peer.role
        );
    }
    match role {
        Role::InterRouter if me_edge || peer_edge => bail!(
            "router {} is in edge mode; inter-router links join interior routers only (an edge router connects with role edge)",
            if me_edge { "this one" } else { peer.id.as_str() }
        ),
        Role::Edge if me_edge == peer_edge => bail!(
            "an edge link joins an edge router to an interior one, but both this router and {} are {}",
            peer.id,
            if me_edge { "edge routers" } else { "interior routers" }
        ),
        _ => Ok(()),
    }
}

async fn recv_hello(rx: &mut Receiver) -> Result<Hello> {
    let d = rx
        .recv::<Body<Value>>()
        .await
        .map_err(|e| anyhow!("no hello from the peer: {e}"))?;
    let m = from_amqp(d.into_message())
        .ok_or_else(|| anyhow!("the peer's first message is not a hello"))?;
    if m.kind != Kind::Hello {
        bail!("the peer's first message is {}, not hello", m.kind.as_str());
    }
    serde_json::from_slice(&m.body).map_err(|e| anyhow!("bad hello from the peer: {e}"))
}

/// Runs an established link until it drops.
async fn run_link(
    router: Arc<Router>,
    mut sender: Sender,
    mut receiver: Receiver,
    peer: Hello,
    cost: u32,
    describe: String,
    auth: String,
) -> String {
    let conn = router.next_id();
    // A link ends either here or by its task being aborted (a connector removed on
    // reload): either way the neighbour goes, and with it the sender task's channel.
    struct Down(Arc<Router>, u64, &'static str);
    impl Drop for Down {
        fn drop(&mut self) {
            self.0.neighbor_down(self.1, self.2);
        }
    }
    let _down = Down(router.clone(), conn, "link closed");
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let send_task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if let Err(e) = sender.send(to_amqp(m)).await {
                return format!("send failed: {e}");
            }
        }
        let _ = sender.close().await;
        "closed".to_string()
    });
    router.neighbor_up(
        conn,
        Neighbor {
            router: peer.id.clone(),
            cost: cost.max(peer.cost),
            tx,
            describe,
            auth,
        },
    );
    // Deliveries are pre-settled, so fe2o3's automatic credit (refreshed on dispositions)
    // never comes back: grant link credit ourselves, topping up every CREDIT/2 messages.
    if let Err(e) = receiver.set_credit(CREDIT).await {
        log!("cannot grant link credit: {e}");
    }
    let mut since_credit = 0u32;
    let why = loop {
        match receiver.recv::<Body<Value>>().await {
            Ok(d) => {
                since_credit += 1;
                if since_credit >= CREDIT / 2 {
                    since_credit = 0;
                    if let Err(e) = receiver.set_credit(CREDIT).await {
                        break format!("cannot grant link credit: {e}");
                    }
                }
                let Some(m) = from_amqp(d.into_message()) else {
                    continue;
                };
                match m.kind {
                    Kind::Lsa => router.handle_lsa(conn, &m.body),
                    Kind::Hello => {}
                    _ => router.route(m),
                }
            }
            Err(e) => break format!("{e}"),
        }
    };
    router.neighbor_down(conn, &why);
    send_task.abort();
    let _ = receiver.close().await;
    why
}

async fn connector_side<Io>(
    router: &Arc<Router>,
    io: Io,
    c: &Connector,
) -> Result<(
    ConnectionHandle<()>,
    SessionHandle<()>,
    Sender,
    Receiver,
    Hello,
)>
where
    Io: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static,
{
    let mut conn = Connection::builder()
        .container_id(router.id.clone())
        .max_frame_size(MAX_FRAME)
        .open_with_stream(io)
        .await
        .map_err(|e| anyhow!("AMQP open failed: {e}"))?;
    let mut session = Session::begin(&mut conn)
        .await
        .map_err(|e| anyhow!("AMQP begin failed: {e}"))?;
    let mut sender = Sender::builder()
        .name(format!("{}-to-{}", router.id, c.name))
        .target(LINK_ADDRESS)
        .sender_settle_mode(SenderSettleMode::Settled)
        .attach(&mut session)
        .await
        .map_err(|e| anyhow!("AMQP attach (sender) failed: {e}"))?;
    let mut receiver = Receiver::builder()
        .name(format!("{}-from-{}", router.id, c.name))
        .source(LINK_ADDRESS)
        .sender_settle_mode(SenderSettleMode::Settled)
        .attach(&mut session)
        .await
        .map_err(|e| anyhow!("AMQP attach (receiver) failed: {e}"))?;
    sender
        .send(to_amqp(hello_msg(router, c.cost, c.role)))
        .await
        .map_err(|e| anyhow!("sending hello failed: {e}"))?;
    let peer = recv_hello(&mut receiver).await?;
    check_roles(c.role, router.mode(), &peer)?;
    Ok((conn, session, sender, receiver, peer))
}

async fn connect_once(router: &Arc<Router>, c: &Connector) -> Result<String> {
    let tcp = TcpStream::connect((c.host.as_str(), c.port))
        .await
        .with_context(|| format!("connect to {}:{}", c.host, c.port))?;
    let _ = tcp.set_nodelay(true);
    let role = c.role.as_str();
    let (conn, session, sender, receiver, peer, describe) = match &c.ssl_profile {
        Some(p) => {
            let prof = router.ssl_profile(p)?;
            let tls = certs::client_config(&prof)?;
            let name = certs::server_name(&c.host, c.verify_hostname)?;
            let mut io = tokio_rustls::TlsConnector::from(tls)
                .connect(name, read_buffered(tcp))
                .await
                .map_err(|e| anyhow!("TLS handshake with {}:{} failed: {e}", c.host, c.port))?;
            room_for_a_frame(io.get_mut().1);
            let (a, b, s, r, h) = tokio::time::timeout(HANDSHAKE, async {
                sasl::connect(&mut io, sasl::EXTERNAL).await?;
                connector_side(router, io, c).await
            })
            .await
            .map_err(|_| anyhow!("AMQP handshake timed out"))??;
            (a, b, s, r, h, format!("{role}, TLS"))
        }
        None => {
            let mut tcp = tcp;
            let (a, b, s, r, h) = tokio::time::timeout(HANDSHAKE, async {
                sasl::connect(&mut tcp, sasl::ANONYMOUS).await?;
                connector_side(router, buffered(tcp), c).await
            })
            .await
            .map_err(|_| anyhow!("AMQP handshake timed out"))??;
            (a, b, s, r, h, format!("{role}, plain"))
        }
    };
    let auth = if c.ssl_profile.is_some() {
        "SASL EXTERNAL (our certificate)"
    } else {
        "SASL ANONYMOUS"
    };
    let why = run_link(
        router.clone(),
        sender,
        receiver,
        peer,
        c.cost,
        describe,
        auth.to_string(),
    )
    .await;
    drop(session);
    drop(conn);
    Ok(why)
}

/// Keeps a connector's link up, reconnecting with backoff (1 s doubling to 16 s).
pub async fn run_connector(router: Arc<Router>, c: Connector) {
    if !c.role.is_router_link() {
        log!(
            "connector {}: role {} is not served by this router (only inter-router and edge links); ignored",
            c.name,
            c.role.as_str()
        );
        return;
    }
    log!(
        "connector {} -> {}:{} ({}, cost {}, {})",
        c.name,
        c.host,
        c.port,
        c.role.as_str(),
        c.cost,
        if c.ssl_profile.is_some() {
            "TLS"
        } else {
            "plain"
        }
    );
    let mut backoff = Duration::from_secs(1);
    loop {
        match connect_once(&router, &c).await {
            Ok(why) => {
                log!(
                    "connector {}: link lost ({why}); reconnecting in 1s",
                    c.name
                );
                backoff = Duration::from_secs(1);
                tokio::time::sleep(backoff).await;
            }
            Err(e) => {
                log!(
                    "connector {}: {e:#}; retrying in {}s",
                    c.name,
                    backoff.as_secs()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(16));
            }
        }
    }
}

async fn acceptor_side<Io>(
    router: &Arc<Router>,
    io: Io,
    role: Role,
) -> Result<(
    fe2o3_amqp::acceptor::ListenerConnectionHandle,
    fe2o3_amqp::acceptor::ListenerSessionHandle,
    Sender,
    Receiver,
    Hello,
)>
where
    Io: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug + 'static,
{
    let acceptor = ConnectionAcceptor::builder()
        .container_id(router.id.clone())
        .max_frame_size(MAX_FRAME)
        .build();
    let mut conn = acceptor
        .accept(io)
        .await
        .map_err(|e| anyhow!("AMQP open failed: {e}"))?;
    let mut session = SessionAcceptor::new()
        .accept(&mut conn)
        .await
        .map_err(|e| anyhow!("AMQP begin failed: {e}"))?;
    let la = LinkAcceptor::new();
    let (mut sender, mut receiver) = (None, None);
    while sender.is_none() || receiver.is_none() {
        match la
            .accept(&mut session)
            .await
            .map_err(|e| anyhow!("AMQP attach failed: {e}"))?
        {
            LinkEndpoint::Sender(s) => sender = Some(s),
            LinkEndpoint::Receiver(r) => receiver = Some(r),
        }
    }
    let (mut sender, mut receiver) = (sender.unwrap(), receiver.unwrap());
    let peer = recv_hello(&mut receiver).await?;
    // The hello goes back even to a peer refused below, so it can say why too.
    sender
        .send(to_amqp(hello_msg(router, peer.cost, role)))
        .await
        .map_err(|e| anyhow!("sending hello failed: {e}"))?;
    check_roles(role, router.mode(), &peer)?;
    Ok((conn, session, sender, receiver, peer))
}

async fn serve_one(
    router: Arc<Router>,
    l: Arc<Listener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    tcp: TcpStream,
    from: std::net::SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let role = l.role.as_str();
    let res = async {
        match tls {
            Some(cfg) => {
                let mut io = tokio_rustls::TlsAcceptor::from(cfg)
                    .accept(read_buffered(tcp))
                    .await
                    .map_err(|e| anyhow!("TLS handshake failed: {e} (the peer's certificate must be issued by this site's CA: link with a token from this site)"))?;
                room_for_a_frame(io.get_mut().1);
                let offer = sasl::Offer::External { identity: peer_identity(&io) };
                let (c, s, snd, rcv, h, who) = tokio::time::timeout(HANDSHAKE, async {
                    let (io, who) = sasl::accept(io, &offer).await?;
                    let (c, s, snd, rcv, h) = acceptor_side(&router, io, l.role).await?;
                    Ok::<_, anyhow::Error>((c, s, snd, rcv, h, who))
                })
                .await
                .map_err(|_| anyhow!("AMQP handshake timed out"))??;
                Ok::<_, anyhow::Error>((c, s, snd, rcv, h, format!("{role}, TLS"), who))
            }
            None => {
                let (c, s, snd, rcv, h, who) = tokio::time::timeout(HANDSHAKE, async {
                    let (io, who) = sasl::accept(tcp, &sasl::Offer::Anonymous).await?;
                    let (c, s, snd, rcv, h) = acceptor_side(&router, buffered(io), l.role).await?;
                    Ok::<_, anyhow::Error>((c, s, snd, rcv, h, who))
                })
                .await
                .map_err(|_| anyhow!("AMQP handshake timed out"))??;
                Ok((c, s, snd, rcv, h, format!("{role}, plain"), who))
            }
        }
    }
    .await;
    match res {
        Ok((conn, session, sender, receiver, peer, describe, who)) => {
            let cost = l.cost.unwrap_or(1);
            let _ = run_link(
                router,
                sender,
                receiver,
                peer,
                cost,
                describe,
                who.to_string(),
            )
            .await;
            drop(session);
            drop(conn);
        }
        Err(e) => {
            router.metrics.links_refused.fetch_add(1, Ordering::Relaxed);
            log!("refused inter-router connection from {from}: {e:#}");
        }
    }
}

/// Listens for inter-router (or edge) links.
pub async fn run_listener(router: Arc<Router>, l: Listener) -> Result<()> {
    let (tls, sock) = listen::bind(&router, &l).await?;
    log!(
        "listening for {} links on {}:{} ({})",
        l.role.as_str(),
        l.host,
        l.port,
        if tls.is_some() { "mutual TLS" } else { "plain" }
    );
    let l = Arc::new(l);
    listen::accept_each(sock, l.port, move |s, from| {
        tokio::spawn(serve_one(router.clone(), l.clone(), tls.clone(), s, from));
    });
    Ok(())
}

/// Whether a listener role carries router links.
pub fn serves(role: Role) -> bool {
    role.is_router_link()
}

/// The subject of the certificate a TLS peer presented (verified against the site CA).
pub fn peer_identity<Io>(io: &tokio_rustls::server::TlsStream<Io>) -> String {
    io.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| sasl::subject_cn(c))
        .unwrap_or_else(|| "an unnamed certificate".into())
}

/// A TLS link's socket with a read buffer: rustls reads at most 4 KiB per call, so without
/// it a 256 KiB message costs dozens of `recv` calls; with it, a few. (Its writes are
/// already gathered into one `writev` per batch of records.)
fn read_buffered(tcp: TcpStream) -> tokio::io::BufReader<TcpStream> {
    tokio::io::BufReader::with_capacity(256 * 1024, tcp)
}

/// rustls holds at most 64 KiB of records waiting for the socket, so a 256 KiB data message
/// left a TLS link in four `writev` calls, each a trip through the socket and the network
/// stack; with room for two whole frames it leaves in one when the socket has room.
fn room_for_a_frame<D>(tls: &mut rustls::ConnectionCommon<D>) {
    tls.set_buffer_limit(Some(2 * MAX_FRAME as usize));
}

/// A plain link's socket with read and write buffers, so frames cost fewer system calls.
fn buffered<Io: AsyncRead + AsyncWrite>(tcp: Io) -> tokio::io::BufStream<Io> {
    tokio::io::BufStream::with_capacity(256 * 1024, 256 * 1024, tcp)
}
