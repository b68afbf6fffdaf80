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
use super::config::{Mode, RouterConfig};
use super::log;
use super::tcp::FlowEvent;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

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

/// How an address's messages are distributed (skupper-router's `address` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// To one consumer: the one with fewest unsettled deliveries, then the closest.
    Balanced,
    /// To one consumer among the closest.
    Closest,
    /// A copy to every consumer.
    Multicast,
}

/// Counters shown on /metrics.
#[derive(Default)]
pub struct Metrics {
    pub tcp_accepted: AtomicU64,
    pub tcp_connected: AtomicU64,
    pub tcp_refused: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_routed: AtomicU64,
    pub messages_dropped: AtomicU64,
    pub client_deliveries: AtomicU64,
    pub config_reloads: AtomicU64,
    pub links_up_total: AtomicU64,
    pub links_refused: AtomicU64,
    pub per_address: Mutex<BTreeMap<String, AddressCounters>>,
}

#[derive(Default, Clone)]
pub struct AddressCounters {
    pub connections: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
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

    /// Replaces the configuration and advertises the addresses it serves.
    pub fn set_cfg(&self, cfg: RouterConfig) {
        *self.cfg.write().unwrap_or_else(|e| e.into_inner()) = cfg;
        let mut st = self.state.lock().unwrap();
        self.refresh_own_lsa(&mut st);
        let mine = st.lsas[&self.id].clone();
        self.flood(&st, &mine, None);
        self.recompute(&mut st);
    }

    fn local_addresses(&self) -> BTreeSet<String> {
        self.cfg()
            .tcp_connectors
            .iter()
            .map(|c| c.address.clone())
            .collect()
    }

    fn refresh_own_lsa(&self, st: &mut State) {
        let mut neighbors = BTreeMap::new();
        for n in st.neighbors.values() {
            let e = neighbors.entry(n.router.clone()).or_insert(n.cost);
            *e = (*e).min(n.cost);
        }
        st.my_seq = (st.my_seq + 1).max(now_nanos());
        st.lsas.insert(
            self.id.clone(),
            Lsa {
                id: self.id.clone(),
                seq: st.my_seq,
                neighbors,
                addresses: self.local_addresses(),
                consumers: st.consumers.keys().cloned().collect(),
                edge: self.mode() == Mode::Edge,
            },
        );
    }

    fn lsa_msg(lsa: &Lsa) -> Msg {
        Msg {
            kind: Kind::Lsa,
            to: "_control".into(),
            reply_to: String::new(),
            seq: lsa.seq,
            body: serde_json::to_vec(lsa).unwrap_or_default(),
        }
    }

    fn flood(&self, st: &State, lsa: &Lsa, except: Option<u64>) {
        let m = Self::lsa_msg(lsa);
        for (id, n) in &st.neighbors {
            if Some(*id) != except {
                let _ = n.tx.send(m.clone());
            }
        }
    }

    /// A neighbour finished its hello: record it, tell it everything we know, flood our news.
    pub fn neighbor_up(&self, conn: u64, n: Neighbor) {
        log!(
            "link to router {} up ({}); {}",
            n.router,
            n.describe,
            n.auth
        );
        self.metrics.links_up_total.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock().unwrap();
        let tx = n.tx.clone();
        st.neighbors.insert(conn, n);
        self.refresh_own_lsa(&mut st);
        for l in st.lsas.values() {
            let _ = tx.send(Self::lsa_msg(l));
        }
        let mine = st.lsas[&self.id].clone();
        self.flood(&st, &mine, Some(conn));
        self.recompute(&mut st);
    }

    pub fn neighbor_down(&self, conn: u64, why: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(n) = st.neighbors.remove(&conn) {
            log!("link to router {} down: {why}", n.router);
            self.refresh_own_lsa(&mut st);
            let mine = st.lsas[&self.id].clone();
            self.flood(&st, &mine, None);
            self.recompute(&mut st);
        }
    }

    pub fn handle_lsa(&self, from: u64, body: &[u8]) {
        let lsa: Lsa = match serde_json::from_slice(body) {
            Ok(l) => l,
            Err(e) => {
                log!("ignoring a malformed link-state record: {e}");
                return;
            }
        };
        if lsa.id == self.id {
            return;
        }
        let mut st = self.state.lock().unwrap();
        if st.lsas.get(&lsa.id).is_some_and(|old| old.seq >= lsa.seq) {
            return;
        }
        self.flood(&st, &lsa, Some(from));
        st.lsas.insert(lsa.id.clone(), lsa);
        self.recompute(&mut st);
    }

    /// Dijkstra over links both ends agree on; logs every change of an address's route.
    fn recompute(&self, st: &mut State) {
        let mut dist: HashMap<String, u32> = HashMap::new();
        let mut first: HashMap<String, String> = HashMap::new();
        let mut heap = BinaryHeap::new();
        dist.insert(self.id.clone(), 0);
        heap.push(std::cmp::Reverse((0u32, self.id.clone(), String::new())));
        let mut done: BTreeSet<String> = BTreeSet::new();
        while let Some(std::cmp::Reverse((d, node, hop))) = heap.pop() {
            if !done.insert(node.clone()) {
                continue;
            }
            if node != self.id {
                first.insert(node.clone(), hop.clone());
            }
            let Some(l) = st.lsas.get(&node) else {
                continue;
            };
            // Edge routers hang off interior ones: traffic ends at an edge, never crosses it.
            if l.edge && node != self.id {
                continue;
            }
            for (nb, cost) in &l.neighbors {
                let back = st.lsas.get(nb).and_then(|o| o.neighbors.get(&node));
                if back.is_none() {
                    continue;
                }
                let nd = d + (*cost).max(*back.unwrap_or(cost));
                if dist.get(nb).is_none_or(|&x| nd < x) {
                    dist.insert(nb.clone(), nd);
                    let h = if node == self.id {
                        nb.clone()
                    } else {
                        hop.clone()
                    };
                    heap.push(std::cmp::Reverse((nd, nb.clone(), h)));
                }
            }
        }
        // Next hop router -> cheapest connection to it.
        let mut conn_of: HashMap<&str, (u32, u64)> = HashMap::new();
        for (id, n) in &st.neighbors {
            let e = conn_of.entry(n.router.as_str()).or_insert((n.cost, *id));
            if n.cost < e.0 {
                *e = (n.cost, *id);
            }
        }
        let mut next_hop = HashMap::new();
        for (node, hop) in &first {
            if let Some((_, c)) = conn_of.get(hop.as_str()) {
                next_hop.insert(node.clone(), *c);
            }
        }
        let mut addr_routes: HashMap<String, AddrRoute> = HashMap::new();
        let mut best: HashMap<String, (u32, String)> = HashMap::new();
        for l in st.lsas.values() {
            let Some(&d) = dist.get(&l.id) else { continue };
            for a in &l.addresses {
                let cand = (d, l.id.clone());
                if best.get(a).is_none_or(|b| cand < *b) {
                    best.insert(a.clone(), cand);
                }
            }
        }
        for (a, (d, rid)) in best {
            if rid == self.id {
                addr_routes.insert(a, AddrRoute::Local);
            } else if let Some(c) = next_hop.get(&rid) {
                addr_routes.insert(a, AddrRoute::Via(*c, rid, d));
            }
        }
        for (a, r) in &addr_routes {
            if st.addr_routes.get(a) != Some(r) {
                match r {
                    AddrRoute::Local => log!("address {a}: served here (tcpConnector)"),
                    AddrRoute::Via(c, rid, d) => {
                        let hop = st
                            .neighbors
                            .get(c)
                            .map(|n| n.router.as_str())
                            .unwrap_or("?");
                        log!("address {a}: reachable at router {rid}, next hop {hop}, cost {d}")
                    }
                }
            }
        }
        for a in st.addr_routes.keys() {
            if !addr_routes.contains_key(a) {
                log!("address {a}: no longer reachable");
            }
        }
        st.next_hop = next_hop;
        st.addr_routes = addr_routes;
        st.dist = dist;
        let mut seen = BTreeSet::new();
        for l in st.lsas.values() {
            if l.id == self.id || !st.next_hop.contains_key(&l.id) {
                continue;
            }
            for a in &l.consumers {
                seen.insert((a.clone(), l.id.clone()));
            }
        }
        for (a, rid) in seen.difference(&st.consumers_seen) {
            log!("consumers of address {a} at router {rid}");
        }
        for (a, rid) in st.consumers_seen.difference(&seen) {
            log!("no consumers of address {a} at router {rid} any more");
        }
        st.consumers_seen = seen;
        self.consumer_watch.send_modify(|v| *v += 1);
    }

    /// Whether a route exists for `address` (for tests and logs).
    pub fn reachable(&self, address: &str) -> bool {
        self.state.lock().unwrap().addr_routes.contains_key(address)
    }

    pub fn register_flow(&self, n: u64, tx: mpsc::UnboundedSender<FlowEvent>) {
        self.state.lock().unwrap().flows.insert(n, tx);
    }

    pub fn unregister_flow(&self, n: u64) {
        self.state.lock().unwrap().flows.remove(&n);
    }

    /// The distribution of `address`: the longest matching `address` prefix's, `balanced`
    /// when none matches. A prefix matches whole tokens (separated by `.` or `/`).
    pub fn distribution(&self, address: &str) -> Distribution {
        let cfg = self.cfg();
        let best = cfg
            .addresses
            .iter()
            .filter(|a| {
                address == a.prefix
                    || (address.starts_with(&a.prefix)
                        && matches!(address.as_bytes().get(a.prefix.len()), Some(b'.' | b'/')))
            })
            .max_by_key(|a| a.prefix.len());
        match best.map(|a| a.distribution.as_str()) {
            Some("closest") => Distribution::Closest,
            Some("multicast") => Distribution::Multicast,
            _ => Distribution::Balanced,
        }
    }

    /// Registers a local client consumer of `address`; returns its id.
    pub fn add_consumer(&self, address: &str, tx: mpsc::UnboundedSender<ClientDelivery>) -> u64 {
        let id = self.next_id();
        let mut st = self.state.lock().unwrap();
        let list = st.consumers.entry(address.to_string()).or_default();
        list.push((id, tx));
        if list.len() == 1 {
            self.advertise(&mut st);
        }
        id
    }

    pub fn remove_consumer(&self, address: &str, id: u64) {
        let mut st = self.state.lock().unwrap();
        let Some(list) = st.consumers.get_mut(address) else {
            return;
        };
        list.retain(|(i, _)| *i != id);
        if list.is_empty() {
            st.consumers.remove(address);
            self.advertise(&mut st);
        }
    }

    fn advertise(&self, st: &mut State) {
        self.refresh_own_lsa(st);
        let mine = st.lsas[&self.id].clone();
        self.flood(st, &mine, None);
        self.recompute(st);
    }

    /// A receiver that changes whenever consumers may have come or gone.
    pub fn consumer_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.consumer_watch.subscribe()
    }

    /// Routers (with their cost) that have a consumer of `address`, this one first.
    fn consumer_routers(&self, st: &State, address: &str) -> Vec<(u32, String)> {
        let mut out = vec![];
        if st.consumers.contains_key(address) {
            out.push((0, self.id.clone()));
        }
        for l in st.lsas.values() {
            if l.id == self.id || !l.consumers.contains(address) {
                continue;
            }
            if let (Some(d), true) = (st.dist.get(&l.id), st.next_hop.contains_key(&l.id)) {
                out.push((*d, l.id.clone()));
            }
        }
        out.sort();
        out
    }

    /// Whether a consumer of `address` exists anywhere this router can reach.
    pub fn has_consumer(&self, address: &str) -> bool {
        let st = self.state.lock().unwrap();
        !self.consumer_routers(&st, address).is_empty()
    }

    /// Records a client delivery awaiting its outcome; returns the address the outcome is
    /// sent to.
    pub fn begin_settlement(&self, n: u64, tx: mpsc::UnboundedSender<(u64, String)>) -> String {
        self.state
            .lock()
            .unwrap()
            .settlements
            .insert(n, (tx, String::new()));
        format!("_topo/{}/dlv.{n}", self.id)
    }

    pub fn end_settlement(&self, n: u64) {
        let mut st = self.state.lock().unwrap();
        if let Some((_, dest)) = st.settlements.remove(&n) {
            if let Some(c) = st.inflight.get_mut(&dest) {
                *c = c.saturating_sub(1);
            }
        }
    }

    /// Chooses where a client message goes and sends it there.
    fn route_message(self: &Arc<Self>, mut st: std::sync::MutexGuard<'_, State>, m: Msg) {
        let address = m.to.clone();
        let cands = self.consumer_routers(&st, &address);
        if cands.is_empty() {
            drop(st);
            self.undeliverable(m, "no consumer for the address");
            return;
        }
        let chosen: Vec<String> = match self.distribution(&address) {
            Distribution::Multicast => cands.into_iter().map(|(_, r)| r).collect(),
            Distribution::Closest => {
                let best = cands[0].0;
                let near: Vec<&String> = cands
                    .iter()
                    .filter(|(d, _)| *d == best)
                    .map(|(_, r)| r)
                    .collect();
                st.turn = st.turn.wrapping_add(1);
                vec![near[st.turn % near.len()].clone()]
            }
            Distribution::Balanced => {
                // As skupper-router weighs them: unsettled deliveries plus the path's cost,
                // so one-at-a-time senders stay local and bursts spill over to other sites.
                let score = |(d, r): &(u32, String)| st.inflight.get(r).copied().unwrap_or(0) + d;
                let min = cands.iter().map(score).min().unwrap_or(0);
                let least: Vec<String> = cands
                    .iter()
                    .filter(|c| score(c) == min)
                    .map(|(_, r)| r.clone())
                    .collect();
                st.turn = st.turn.wrapping_add(1);
                vec![least[st.turn % least.len()].clone()]
            }
        };
        let multicast = chosen.len() > 1 || self.distribution(&address) == Distribution::Multicast;
        let mut m = m;
        if multicast {
            // As skupper-router does, a multicast message is settled where it enters.
            let settle_to = std::mem::take(&mut m.reply_to);
            drop(st);
            if !settle_to.is_empty() {
                self.route(super::client::disposition(&settle_to, "accepted"));
            }
            for r in chosen {
                let mut copy = m.clone();
                copy.to = format!("_topo/{r}/deliver/{address}");
                self.route(copy);
            }
            return;
        }
        let dest = chosen.into_iter().next().unwrap_or_default();
        if let Some(n) = m
            .reply_to
            .rsplit_once("/dlv.")
            .and_then(|(_, n)| n.parse::<u64>().ok())
        {
            if let Some(e) = st.settlements.get_mut(&n) {
                e.1 = dest.clone();
                *st.inflight.entry(dest.clone()).or_default() += 1;
            }
        }
        m.to = format!("_topo/{dest}/deliver/{address}");
        drop(st);
        self.route(m);
    }

    /// Hands a client message to this router's consumer(s) of `address`.
    fn deliver_local(
        self: &Arc<Self>,
        mut st: std::sync::MutexGuard<'_, State>,
        address: &str,
        m: Msg,
    ) {
        let multicast = self.distribution(address) == Distribution::Multicast;
        st.local_turn = st.local_turn.wrapping_add(1);
        let turn = st.local_turn;
        let Some(list) = st.consumers.get(address).filter(|l| !l.is_empty()) else {
            drop(st);
            self.undeliverable(m, "the consumer left");
            return;
        };
        let targets: Vec<mpsc::UnboundedSender<ClientDelivery>> = if multicast {
            list.iter().map(|(_, t)| t.clone()).collect()
        } else {
            vec![list[turn % list.len()].1.clone()]
        };
        drop(st);
        for t in targets {
            let _ = t.send(ClientDelivery {
                message: m.body.clone(),
                settle_to: m.reply_to.clone(),
            });
        }
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

    pub fn count_address(&self, address: &str, f: impl FnOnce(&mut AddressCounters)) {
        let mut m = self.metrics.per_address.lock().unwrap();
        f(m.entry(address.to_string()).or_default());
    }

    /// Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let (links, flows, routes) = {
            let st = self.state.lock().unwrap();
            (st.neighbors.len(), st.flows.len(), st.addr_routes.len())
        };
        let mut s = String::new();
        let mut g = |name: &str, help: &str, ty: &str, v: u64| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {ty}\n{name}{{router=\"{}\"}} {v}\n",
                self.id
            ));
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        g(
            "skrouter_links",
            "Inter-router links up",
            "gauge",
            links as u64,
        );
        g(
            "skrouter_links_up_total",
            "Inter-router links established",
            "counter",
            ld(&m.links_up_total),
        );
        g(
            "skrouter_links_refused_total",
            "Inter-router connections refused (TLS or protocol)",
            "counter",
            ld(&m.links_refused),
        );
        g(
            "skrouter_addresses_reachable",
            "Service addresses with a route",
            "gauge",
            routes as u64,
        );
        g(
            "skrouter_tcp_flows",
            "TCP flow ends open on this router",
            "gauge",
            flows as u64,
        );
        g(
            "skrouter_tcp_accepted_total",
            "Connections accepted on tcpListeners",
            "counter",
            ld(&m.tcp_accepted),
        );
        g(
            "skrouter_tcp_connected_total",
            "Connections opened by tcpConnectors",
            "counter",
            ld(&m.tcp_connected),
        );
        g(
            "skrouter_tcp_refused_total",
            "Connections that could not be carried",
            "counter",
            ld(&m.tcp_refused),
        );
        g(
            "skrouter_bytes_in_total",
            "Bytes read from TCP peers",
            "counter",
            ld(&m.bytes_in),
        );
        g(
            "skrouter_bytes_out_total",
            "Bytes written to TCP peers",
            "counter",
            ld(&m.bytes_out),
        );
        g(
            "skrouter_messages_routed_total",
            "AMQP messages routed",
            "counter",
            ld(&m.messages_routed),
        );
        g(
            "skrouter_messages_dropped_total",
            "Messages without a route",
            "counter",
            ld(&m.messages_dropped),
        );
        g(
            "skrouter_client_deliveries_total",
            "Messages from AMQP clients routed by address",
            "counter",
            ld(&m.client_deliveries),
        );
        g(
            "skrouter_config_reloads_total",
            "Configuration reloads applied (SIGHUP)",
            "counter",
            ld(&m.config_reloads),
        );
        let per = m.per_address.lock().unwrap();
        s.push_str("# HELP skrouter_address_connections_total TCP connections per service address\n# TYPE skrouter_address_connections_total counter\n");
        for (a, c) in per.iter() {
            s.push_str(&format!(
                "skrouter_address_connections_total{{router=\"{}\",address=\"{a}\"}} {}\n",
                self.id, c.connections
            ));
        }
        s.push_str("# HELP skrouter_address_bytes_total Bytes per service address and direction\n# TYPE skrouter_address_bytes_total counter\n");
        for (a, c) in per.iter() {
            s.push_str(&format!(
                "skrouter_address_bytes_total{{router=\"{}\",address=\"{a}\",direction=\"in\"}} {}\n",
                self.id, c.bytes_in
            ));
            s.push_str(&format!(
                "skrouter_address_bytes_total{{router=\"{}\",address=\"{a}\",direction=\"out\"}} {}\n",
                self.id, c.bytes_out
            ));
        }
        s
    }

    pub fn mode(&self) -> Mode {
        self.cfg().router.mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(id: &str, addrs: &[&str]) -> RouterConfig {
        let mut c = RouterConfig::new(id, Mode::Interior);
        for a in addrs {
            c.tcp_connectors.push(super::super::config::TcpConnector {
                name: a.to_string(),
                address: a.to_string(),
                host: "127.0.0.1".into(),
                port: 1,
            });
        }
        c
    }

    fn lsa(id: &str, nb: &[(&str, u32)], addrs: &[&str]) -> Vec<u8> {
        lsa_of(id, nb, addrs, false)
    }

    fn lsa_of(id: &str, nb: &[(&str, u32)], addrs: &[&str], edge: bool) -> Vec<u8> {
        serde_json::to_vec(&Lsa {
            id: id.into(),
            seq: now_nanos(),
            neighbors: nb.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            addresses: addrs.iter().map(|s| s.to_string()).collect(),
            consumers: BTreeSet::new(),
            edge,
        })
        .unwrap()
    }

    #[test]
    fn an_edge_router_is_never_a_transit() {
        // A-C direct costs 10; A-E-C costs 2 but E is an edge router.
        let a = Router::new(cfg("A", &[]));
        let _re = add_nb(&a, 1, "E", 1);
        let _rc = add_nb(&a, 2, "C", 10);
        a.handle_lsa(1, &lsa_of("E", &[("A", 1), ("C", 1)], &["at-e"], true));
        a.handle_lsa(2, &lsa("C", &[("A", 10), ("E", 1)], &["svc"]));
        assert_eq!(via(&a, "svc"), Some((2, 10)), "direct, not through E");
        assert_eq!(
            via(&a, "at-e"),
            Some((1, 1)),
            "the edge itself is reachable"
        );
    }

    #[test]
    fn distribution_by_longest_whole_token_prefix() {
        let mut c = cfg("A", &[]);
        for (p, d) in [("q", "closest"), ("q.mc", "multicast")] {
            c.addresses.push(super::super::config::Address {
                prefix: p.into(),
                distribution: d.into(),
            });
        }
        let r = Router::new(c);
        assert_eq!(r.distribution("q"), Distribution::Closest);
        assert_eq!(r.distribution("q.x"), Distribution::Closest);
        assert_eq!(r.distribution("q.mc.news"), Distribution::Multicast);
        assert_eq!(
            r.distribution("qq"),
            Distribution::Balanced,
            "q is not a token of qq"
        );
        assert_eq!(r.distribution("other"), Distribution::Balanced);
    }

    fn add_nb(r: &Router, conn: u64, id: &str, cost: u32) -> mpsc::UnboundedReceiver<Msg> {
        let (tx, rx) = mpsc::unbounded_channel();
        r.neighbor_up(
            conn,
            Neighbor {
                router: id.into(),
                cost,
                tx,
                describe: "test".into(),
                auth: "test".into(),
            },
        );
        rx
    }

    fn via(r: &Router, a: &str) -> Option<(u64, u32)> {
        match r.state.lock().unwrap().addr_routes.get(a) {
            Some(AddrRoute::Via(c, _, d)) => Some((*c, *d)),
            _ => None,
        }
    }

    #[test]
    fn triangle_prefers_cheaper_path_and_fails_over() {
        // A links to B (cost 1) and C (cost 10); B links to C (cost 1); svc at C.
        let a = Router::new(cfg("A", &[]));
        let _rb = add_nb(&a, 1, "B", 1);
        let _rc = add_nb(&a, 2, "C", 10);
        a.handle_lsa(1, &lsa("B", &[("A", 1), ("C", 1)], &[]));
        a.handle_lsa(2, &lsa("C", &[("A", 10), ("B", 1)], &["svc"]));
        assert_eq!(via(&a, "svc"), Some((1, 2)), "cheaper path A-B-C");
        a.neighbor_down(1, "test");
        assert_eq!(via(&a, "svc"), Some((2, 10)), "fails over to A-C");
        a.neighbor_down(2, "test");
        assert_eq!(via(&a, "svc"), None);
        assert!(!a.reachable("svc"));
    }

    #[test]
    fn one_sided_links_do_not_count_and_lsas_flood() {
        let a = Router::new(cfg("A", &["local"]));
        let mut rb = add_nb(&a, 1, "B", 1);
        let mut rc = add_nb(&a, 2, "C", 1);
        // D claims a link to B, but B does not list D: not usable.
        a.handle_lsa(1, &lsa("B", &[("A", 1)], &[]));
        a.handle_lsa(1, &lsa("D", &[("B", 1)], &["svcd"]));
        assert!(!a.reachable("svcd"));
        assert!(a.reachable("local"));
        // The record from B was flooded to C and not back to B.
        let mut to_c = vec![];
        while let Ok(m) = rc.try_recv() {
            to_c.push(String::from_utf8_lossy(&m.body).to_string());
        }
        assert!(to_c.iter().any(|b| b.contains("\"id\":\"D\"")), "{to_c:?}");
        let mut to_b = vec![];
        while let Ok(m) = rb.try_recv() {
            to_b.push(String::from_utf8_lossy(&m.body).to_string());
        }
        assert!(!to_b.iter().any(|b| b.contains("\"id\":\"D\"")), "{to_b:?}");
    }
}
