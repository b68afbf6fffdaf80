//! From the table as it is to the table as it should be: the `nft -f` transaction (the
//! difference, chain by chain and element by element) and the split of a large first sync.

use super::current::Current;
use super::desired::{desired, Desired};
use super::skeleton::skeleton_text;
use super::table::{Balancer, Key, MapName, Rule, Statement, Verdict};
use super::table::{SET_CLUSTER_IPS, TABLE};
use crate::components::kubeproxy::model::{Endpoints, State};
use crate::components::kubeproxy::nfnl;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// What a transaction does, for the learner-readable log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanStats {
    pub setup: bool,
    pub chains_added: usize,
    pub chains_rewritten: usize,
    pub chains_deleted: usize,
    pub chains_kept: usize,
    pub elements_added: usize,
    pub elements_deleted: usize,
    /// nft transactions the sync took (1, or more for a split first sync).
    pub transactions: usize,
}

impl PlanStats {
    /// The sum of the stats of several transactions of one sync.
    pub fn total(plans: &[Plan]) -> PlanStats {
        let mut t = PlanStats::default();
        for p in plans {
            let s = &p.stats;
            t.setup |= s.setup;
            t.chains_added += s.chains_added;
            t.chains_rewritten += s.chains_rewritten;
            t.chains_deleted += s.chains_deleted;
            t.chains_kept += s.chains_kept;
            t.elements_added += s.elements_added;
            t.elements_deleted += s.elements_deleted;
        }
        t.transactions = plans.iter().filter(|p| !p.is_empty()).count();
        t
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// The `nft -f -` transaction (empty when nothing changes).
    pub text: String,
    /// Or, for the bulk part of a large first sync, balancer rules sent as one nf_tables
    /// netlink batch (see [`nfnl`]); `text` is then empty.
    pub netlink: Option<NetlinkBatch>,
    pub stats: PlanStats,
}

/// Balancer rules for one netlink transaction, their sets named `__map{first_set}`...
#[derive(Debug, Clone)]
pub struct NetlinkBatch {
    pub rules: Vec<nfnl::BalancerRule>,
    pub first_set: u32,
}

impl Plan {
    fn text(tx: Tx, stats: PlanStats) -> Plan {
        Plan {
            text: tx.0,
            netlink: None,
            stats,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.netlink.as_ref().is_none_or(|n| n.rules.is_empty())
    }
}

/// How a large first sync is written (see [`plan_sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    /// Never split: one `nft -f` transaction.
    Single,
    /// Split into `nft -f` transactions of this many Services (or VIPs) each.
    NftText(usize),
    /// Balancer rules as netlink batches of this many rules each, the rest as `nft -f`.
    Netlink(usize),
}

/// Services (and, separately, VIPs) per transaction when a first sync is split, and the
/// size from which it is split.
///
/// Measured with 10,000 Services x 2 endpoints (examples/bench_services.rs `--program`):
/// on the netlink path batches of 250, 1,000 and 2,500 all took 7.4-7.8 s, so the batch
/// size hardly matters there (the walks over the table's sets do); the `nft -f` split is
/// slower the smaller its batches (nft dumps every chain for its cache on each run).
pub const FIRST_SYNC_BATCH: usize = 250;

/// What a sync uses: the netlink bulk path in batches of [`FIRST_SYNC_BATCH`].
pub const DEFAULT_BULK: Bulk = Bulk::Netlink(FIRST_SYNC_BATCH);

/// The text of one transaction, command by command.
#[derive(Default)]
struct Tx(String);

impl Tx {
    fn line(&mut self, args: std::fmt::Arguments) {
        let _ = self.0.write_fmt(args);
        self.0.push('\n');
    }

    fn add_chain(&mut self, name: &str) {
        self.line(format_args!("add chain ip {TABLE} {name}"));
    }

    fn flush_chain(&mut self, name: &str) {
        self.line(format_args!("flush chain ip {TABLE} {name}"));
    }

    fn delete_chain(&mut self, name: &str) {
        self.line(format_args!("delete chain ip {TABLE} {name}"));
    }

    fn rules(&mut self, chain: &str, rules: &[Rule]) {
        for r in rules {
            self.line(format_args!("add rule ip {TABLE} {chain} {r}"));
        }
    }

    /// `add/delete element` commands for `set`, up to 1,000 elements each.
    fn elements<T: Display>(&mut self, verb: &str, set: &str, elems: &[T]) {
        for chunk in elems.chunks(1000) {
            let _ = write!(self.0, "{verb} element ip {TABLE} {set} {{ ");
            for (i, e) in chunk.iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                let _ = write!(self.0, "{sep}{e}");
            }
            self.0.push_str(" }\n");
        }
    }
}

/// One element of a verdict map, as `add element` writes it.
struct Element<'a>(&'a Key, &'a Verdict);

impl Display for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} : {}", self.0, self.1)
    }
}

/// The transaction that turns `cur` into `want`. One `nft -f -` run applies it atomically.
pub fn plan(want: &Desired, cur: &Current) -> Plan {
    let mut st = PlanStats::default();
    let mut tx = Tx::default();
    if !cur.skeleton {
        st.setup = true;
        tx.0.push_str(&skeleton_text());
    }
    // 1. declare new chains, 2. (re)write their rules
    let mut to_write = Vec::new();
    for (name, rules) in &want.chains {
        match cur.chains.get(name) {
            None => {
                tx.add_chain(name);
                st.chains_added += 1;
                to_write.push((name, rules));
            }
            Some(Some(have)) if have == rules => st.chains_kept += 1,
            Some(_) => {
                tx.flush_chain(name);
                st.chains_rewritten += 1;
                to_write.push((name, rules));
            }
        }
    }
    for (name, rules) in to_write {
        tx.rules(name, rules);
    }
    // 3. map elements: delete stale or changed ones, then add missing or changed ones
    let empty = BTreeMap::new();
    let mut adds = Vec::new();
    for (map, elems) in &want.maps {
        let have = cur.maps.get(map).unwrap_or(&empty);
        let dels: Vec<&Key> = have
            .iter()
            .filter(|(k, v)| elems.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        st.elements_deleted += dels.len();
        tx.elements("delete", map.name(), &dels);
        let add: Vec<Element> = elems
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(*v))
            .map(|(k, v)| Element(k, v))
            .collect();
        st.elements_added += add.len();
        adds.push((map, add));
    }
    let dels: Vec<&Ipv4Addr> = cur.cluster_ips.difference(&want.cluster_ips).collect();
    st.elements_deleted += dels.len();
    tx.elements("delete", SET_CLUSTER_IPS, &dels);
    for (map, add) in adds {
        tx.elements("add", map.name(), &add);
    }
    let add: Vec<&Ipv4Addr> = want.cluster_ips.difference(&cur.cluster_ips).collect();
    st.elements_added += add.len();
    tx.elements("add", SET_CLUSTER_IPS, &add);
    // 4. stale chains: nothing refers to them once the above is applied and they are all
    // flushed (a stale service chain still jumps to stale endpoint chains until then).
    let stale: Vec<&String> = cur
        .chains
        .keys()
        .filter(|n| !want.chains.contains_key(*n))
        .collect();
    for name in &stale {
        tx.flush_chain(name);
    }
    for name in &stale {
        tx.delete_chain(name);
        st.chains_deleted += 1;
    }
    st.transactions = usize::from(!tx.0.is_empty());
    Plan::text(tx, st)
}

/// The netlink form of a chain's rules when they are one balancer: its anonymous set is
/// what costs the kernel in bulk (see [`nfnl`]).
fn balancer(chain: &str, rules: &[Rule]) -> Option<nfnl::BalancerRule> {
    match rules {
        [Rule {
            matches,
            counter: true,
            statement: Statement::Balance(b @ Balancer { targets }),
            comment,
        }] if matches.is_empty()
            // A very large one stays in the `nft -f` part: its set would outgrow one
            // netlink attribute's length.
            && targets.len() <= nfnl::MAX_TARGETS =>
        {
            Some(nfnl::BalancerRule {
                chain: chain.to_string(),
                comment: comment.clone(),
                balancer: b.clone(),
            })
        }
        _ => None,
    }
}

/// The transactions that turn `cur` into the table of `state` (`want` = `desired(state)`).
///
/// Normally exactly one: [`plan`], applied atomically. A first sync (the table holds no
/// Service yet, see [`Current::is_unprogrammed`]) of more than `batch` Services is split,
/// because the kernel's cost per anonymous set grows with the length of the transaction
/// and with the table (see [`nfnl`]). Every transaction leaves a consistent table:
///
/// - [`Bulk::Netlink`]: (1) `nft -f`: the fixed skeleton, every chain (in the order one
///   transaction would create them, so the listing is the same) and the rules of every
///   chain but the balancers; nothing refers to these chains yet. (2) netlink batches of
///   `batch` balancer rules with their anonymous sets. (3) `nft -f`: every map and set
///   element at once, so all Services start answering together.
/// - [`Bulk::NftText`]: (1) skeleton and every chain, empty; then per `batch` Services
///   one transaction with their rules and, in it, their map elements.
pub fn plan_sync(state: &State, want: &Desired, cur: &Current, bulk: Bulk) -> Vec<Plan> {
    let batch = match bulk {
        Bulk::Single => usize::MAX,
        Bulk::NftText(b) | Bulk::Netlink(b) => b.max(1),
    };
    if !cur.is_unprogrammed() || (state.services.len() <= batch && state.vips.len() <= batch) {
        return vec![plan(want, cur)];
    }
    let mut plans = Vec::new();
    let mut st = PlanStats::default();
    let mut tx = Tx::default();
    if !cur.skeleton {
        st.setup = true;
        tx.0.push_str(&skeleton_text());
    }
    for name in want.chains.keys() {
        tx.add_chain(name);
        st.chains_added += 1;
    }
    if let Bulk::Netlink(_) = bulk {
        let mut balancers = Vec::new();
        for (name, rules) in &want.chains {
            match balancer(name, rules) {
                Some(b) => balancers.push(b),
                None => tx.rules(name, rules),
            }
        }
        plans.push(Plan::text(tx, st));
        for (i, chunk) in balancers.chunks(batch).enumerate() {
            plans.push(Plan {
                text: String::new(),
                netlink: Some(NetlinkBatch {
                    rules: chunk.to_vec(),
                    first_set: (i * batch) as u32,
                }),
                stats: PlanStats::default(),
            });
        }
        let mut st = PlanStats::default();
        let mut tx = Tx::default();
        add_all_elements(&mut tx, &mut st, want);
        plans.push(Plan::text(tx, st));
        return plans;
    }
    plans.push(Plan::text(tx, st));
    let eps: HashMap<(&str, &str), &Endpoints> = state
        .endpoints
        .iter()
        .map(|e| ((e.namespace.as_str(), e.service.as_str()), e))
        .collect();
    let svc_chunks = state.services.chunks(batch).map(|svcs| State {
        services: svcs.to_vec(),
        endpoints: svcs
            .iter()
            .filter_map(|s| eps.get(&(s.namespace.as_str(), s.name.as_str())))
            .map(|e| (*e).clone())
            .collect(),
        vips: vec![],
    });
    let vip_chunks = state.vips.chunks(batch).map(|vips| State {
        vips: vips.to_vec(),
        ..State::default()
    });
    for sub in svc_chunks.chain(vip_chunks) {
        let d = desired(&sub);
        let mut st = PlanStats::default();
        let mut tx = Tx::default();
        for (name, rules) in &d.chains {
            tx.rules(name, rules);
        }
        add_all_elements(&mut tx, &mut st, &d);
        plans.push(Plan::text(tx, st));
    }
    plans
}

/// `add element` commands for every map and set element of `d`.
fn add_all_elements(tx: &mut Tx, st: &mut PlanStats, d: &Desired) {
    for (map, elems) in &d.maps {
        let add: Vec<Element> = elems.iter().map(|(k, v)| Element(k, v)).collect();
        st.elements_added += add.len();
        tx.elements("add", MapName::name(*map), &add);
    }
    let add: Vec<&Ipv4Addr> = d.cluster_ips.iter().collect();
    st.elements_added += add.len();
    tx.elements("add", SET_CLUSTER_IPS, &add);
}

/// The whole table from scratch (what a first sync writes).
pub fn full_transaction(state: &State) -> String {
    plan(&desired(state), &Current::empty()).text
}

/// The original simulator's layout, for comparison in the benchmark: one linear
/// `ip daddr VIP dnat to IP` rule per VIP in a prerouting chain of table `ip knetsim-linear`.
pub fn linear_transaction(vips: &[(Ipv4Addr, Ipv4Addr)]) -> String {
    let mut out = String::new();
    out.push_str("add table ip knetsim-linear\n");
    out.push_str("add chain ip knetsim-linear prerouting { type nat hook prerouting priority dstnat ; policy accept ; }\n");
    out.push_str("flush chain ip knetsim-linear prerouting\n");
    for (vip, ip) in vips {
        let _ = writeln!(
            out,
            "add rule ip knetsim-linear prerouting ip daddr {vip} counter dnat to {ip}"
        );
    }
    out
}
