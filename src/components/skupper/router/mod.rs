//! The router core: neighbours, the link-state routing table, and message forwarding.
//!
//! ## Addressing
//!
//! Every message carries `to`, `reply-to`, `subject` (its kind) and `message-id` (a per-flow
//! sequence number) in its AMQP properties, and its payload as one data section.
//!
//! - A *service address* (`svc1`) is the `address` of tcpListeners and tcpConnectors. It is
//!   routed to the closest router that has a tcpConnector for it.
//! - A *router-scoped address* `_topo/<router-id>/temp.<n>` names one end of one TCP flow
//!   (skupper-router's dynamic reply-to addresses look the same). It is routed to that router.
//!
//! A TCP flow opens with an `open` message to the service address whose reply-to is the
//! ingress end's dynamic address; the egress router connects to the server and answers
//! `open-ok` from its own dynamic address. From then on each side sends `data` (bytes),
//! `fin` (half-close), `reset` and `ack` (flow-control credit) to the other's address.
//!
//! ## Routing
//!
//! Link state: each router floods a record `{id, seq, neighbours with costs, addresses}`
//! over its inter-router links (subject `lsa`). A link counts only when both ends list it.
//! Each router runs Dijkstra from itself; the next hop toward a router is the neighbour on
//! the cheapest path, and a service address goes to the nearest router advertising it.

use super::client::ClientDelivery;
use super::config::{Mode, RouterConfig, SslProfile};
use super::log;
use super::tcp::FlowEvent;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

mod delivery;
mod link_state;
mod metrics;
#[cfg(test)]
mod tests;

pub use delivery::Distribution;
pub use metrics::{AddressCounters, Metrics};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hello,
    Lsa,
    Open,
    OpenOk,
    Data,
    Fin,
    Reset,
    Ack,
    /// A client's AMQP message (the whole encoded message is the body).
    Message,
    /// The outcome of a client's message, on its way back to the sender's router.
    Disposition,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Lsa => "lsa",
            Kind::Open => "open",
            Kind::OpenOk => "open-ok",
            Kind::Data => "data",
            Kind::Fin => "fin",
            Kind::Reset => "reset",
            Kind::Ack => "ack",
            Kind::Message => "message",
            Kind::Disposition => "disposition",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "hello" => Kind::Hello,
            "lsa" => Kind::Lsa,
            "open" => Kind::Open,
            "open-ok" => Kind::OpenOk,
            "data" => Kind::Data,
            "fin" => Kind::Fin,
            "reset" => Kind::Reset,
            "ack" => Kind::Ack,
            "message" => Kind::Message,
            "disposition" => Kind::Disposition,
            _ => return None,
        })
    }
}

/// A message as the router handles it.
#[derive(Debug, Clone)]
pub struct Msg {
    pub kind: Kind,
    pub to: String,
    pub reply_to: String,
    pub seq: u64,
    pub body: Vec<u8>,
}

/// A router's link-state record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lsa {
    pub id: String,
    pub seq: u64,
    pub neighbors: BTreeMap<String, u32>,
    pub addresses: BTreeSet<String>,
    /// Addresses with AMQP client consumers on this router.
    #[serde(default)]
    pub consumers: BTreeSet<String>,
    /// An edge router: reachable, but never a path to anyone else.
    #[serde(default)]
    pub edge: bool,
}

pub struct Neighbor {
    pub router: String,
    pub cost: u32,
    pub tx: mpsc::UnboundedSender<Msg>,
    pub describe: String,
    /// How the peer authenticated (SASL mechanism and identity).
    pub auth: String,
}

#[derive(Debug, Clone, PartialEq)]
enum AddrRoute {
    Local,
    Via(u64, String, u32),
}

#[derive(Default)]
struct State {
    neighbors: HashMap<u64, Neighbor>,
    lsas: HashMap<String, Lsa>,
    my_seq: u64,
    /// Router id -> neighbour connection of the next hop.
    next_hop: HashMap<String, u64>,
    addr_routes: HashMap<String, AddrRoute>,
    flows: HashMap<u64, mpsc::UnboundedSender<FlowEvent>>,
    /// Cost to every reachable router.
    dist: HashMap<String, u32>,
    /// Local client consumers per address.
    consumers: HashMap<String, Vec<(u64, mpsc::UnboundedSender<ClientDelivery>)>>,
    /// Client deliveries sent from here and not settled yet: where the outcome goes, and
    /// the destination counted in `inflight`.
    settlements: HashMap<u64, (mpsc::UnboundedSender<(u64, String)>, String)>,
    /// Unsettled deliveries per destination router, for `balanced`.
    inflight: HashMap<String, u32>,
    /// Round-robin counter for ties between routers.
    turn: usize,
    /// Round-robin counter among local consumers.
    local_turn: usize,
    /// (address, router) pairs with consumers last computed, to log changes.
    consumers_seen: BTreeSet<(String, String)>,
}

pub struct Router {
    pub id: String,
    cfg: std::sync::RwLock<RouterConfig>,
    pub metrics: Metrics,
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Bumped whenever the set of consumers anywhere may have changed.
    consumer_watch: tokio::sync::watch::Sender<u64>,
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Router {
    pub fn new(cfg: RouterConfig) -> Arc<Router> {
        let r = Arc::new(Router {
            id: cfg.router.id.clone(),
            cfg: std::sync::RwLock::new(cfg),
            metrics: Metrics::default(),
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            consumer_watch: tokio::sync::watch::channel(0).0,
        });
        {
            let mut st = r.state.lock().unwrap();
            r.refresh_own_lsa(&mut st);
            r.recompute(&mut st);
        }
        r
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The dynamic address of local flow `n`.
    pub fn flow_address(&self, n: u64) -> String {
        format!("_topo/{}/temp.{n}", self.id)
    }

    /// The configuration in force (replaced on reload).
    pub fn cfg(&self) -> std::sync::RwLockReadGuard<'_, RouterConfig> {
        self.cfg.read().unwrap_or_else(|e| e.into_inner())
    }

    /// sslProfile `name` of the configuration in force.
    pub fn ssl_profile(&self, name: &str) -> anyhow::Result<SslProfile> {
        self.cfg()
            .ssl_profile(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("sslProfile {name} missing"))
    }

    /// Replaces the configuration and advertises the addresses it serves.
    pub fn set_cfg(&self, cfg: RouterConfig) {
        *self.cfg.write().unwrap_or_else(|e| e.into_inner()) = cfg;
        self.advertise(&mut self.state.lock().unwrap());
    }

    pub fn register_flow(&self, n: u64, tx: mpsc::UnboundedSender<FlowEvent>) {
        self.state.lock().unwrap().flows.insert(n, tx);
    }

    pub fn unregister_flow(&self, n: u64) {
        self.state.lock().unwrap().flows.remove(&n);
    }

    /// Routes a message: to a local flow, the local tcpConnector, or the next hop.
    pub fn route(self: &Arc<Self>, m: Msg) {
        self.metrics.messages_routed.fetch_add(1, Ordering::Relaxed);
        let st = self.state.lock().unwrap();
        if let Some(rest) = m.to.strip_prefix("_topo/") {
            let (rid, tail) = rest.split_once('/').unwrap_or((rest, ""));
            if rid == self.id {
                if let Some(address) = tail.strip_prefix("deliver/") {
                    let address = address.to_string();
                    self.deliver_local(st, &address, m);
                    return;
                }
                if let Some(n) = tail
                    .strip_prefix("dlv.")
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    if let Some((tx, _)) = st.settlements.get(&n) {
                        let _ = tx.send((n, String::from_utf8_lossy(&m.body).to_string()));
                    }
                    return;
                }
                let n = tail
                    .strip_prefix("temp.")
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(tx) = n.and_then(|n| st.flows.get(&n)) {
                    let ev = FlowEvent::from_msg(m);
                    let _ = tx.send(ev);
                } else {
                    drop(st);
                    self.undeliverable(m, "flow ended");
                }
                return;
            }
            if let Some(n) = st.next_hop.get(rid).and_then(|c| st.neighbors.get(c)) {
                let _ = n.tx.send(m);
                return;
            }
            drop(st);
            self.undeliverable(m, "no route to router");
            return;
        }
        if m.kind == Kind::Message {
            self.route_message(st, m);
            return;
        }
        match st.addr_routes.get(&m.to) {
            Some(AddrRoute::Local) if m.kind == Kind::Open => {
                drop(st);
                super::tcp::open_local(self.clone(), m);
            }
            Some(AddrRoute::Via(c, _, _)) => match st.neighbors.get(c) {
                Some(n) => {
                    let _ = n.tx.send(m);
                }
                None => {
                    drop(st);
                    self.undeliverable(m, "link down");
                }
            },
            _ => {
                drop(st);
                self.undeliverable(m, "no route to address");
            }
        }
    }

    /// Answers an undeliverable message with a reset to its sender (resets are dropped).
    fn undeliverable(self: &Arc<Self>, m: Msg, why: &str) {
        self.metrics
            .messages_dropped
            .fetch_add(1, Ordering::Relaxed);
        if matches!(m.kind, Kind::Reset | Kind::Ack | Kind::Disposition) || m.reply_to.is_empty() {
            return;
        }
        if m.kind == Kind::Message {
            // The sender's router settles the client's delivery as released: it may retry.
            self.route(super::client::disposition(&m.reply_to, "released"));
            return;
        }
        if m.kind == Kind::Open {
            log!(
                "no route for a connection to address {} ({why}): resetting it",
                m.to
            );
        }
        self.route(Msg {
            kind: Kind::Reset,
            to: m.reply_to,
            reply_to: String::new(),
            seq: 0,
            body: why.as_bytes().to_vec(),
        });
    }

    pub fn mode(&self) -> Mode {
        self.cfg().router.mode
    }
}
