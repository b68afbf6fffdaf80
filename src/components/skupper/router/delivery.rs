//! Client messages routed by address: consumers, distribution and settlement.

use super::{Msg, Router, State};
use crate::components::skupper::client::{self, ClientDelivery};
use std::sync::Arc;
use tokio::sync::mpsc;

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

impl Router {
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

    /// A receiver that changes whenever consumers may have come or gone.
    pub fn consumer_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.consumer_watch.subscribe()
    }

    /// Routers (with their cost) that have a consumer of `address`, this one first.
    pub(super) fn consumer_routers(&self, st: &State, address: &str) -> Vec<(u32, String)> {
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
    pub(super) fn route_message(
        self: &Arc<Self>,
        mut st: std::sync::MutexGuard<'_, State>,
        m: Msg,
    ) {
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
                self.route(client::disposition(&settle_to, "accepted"));
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
    pub(super) fn deliver_local(
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
}
