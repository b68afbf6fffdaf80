//! Link state: records flooded between routers, and Dijkstra over the links both ends list.

use super::{log, now_nanos, AddrRoute, Kind, Lsa, Msg, Neighbor, Router, State};
use crate::components::skupper::config::Mode;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::atomic::Ordering;

impl Router {
    fn local_addresses(&self) -> BTreeSet<String> {
        self.cfg()
            .tcp_connectors
            .iter()
            .map(|c| c.address.clone())
            .collect()
    }

    pub(super) fn refresh_own_lsa(&self, st: &mut State) {
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

    pub(super) fn flood(&self, st: &State, lsa: &Lsa, except: Option<u64>) {
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
            self.advertise(&mut st);
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
    pub(super) fn recompute(&self, st: &mut State) {
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

    pub(super) fn advertise(&self, st: &mut State) {
        self.refresh_own_lsa(st);
        let mine = st.lsas[&self.id].clone();
        self.flood(st, &mine, None);
        self.recompute(st);
    }
}
