//! `knetsim kube-proxy`: programs a worker's nftables from the Service state kept in etcd,
//! in the layout of kube-proxy's nftables mode.
//!
//! - [`model`]: Services, Endpoints, the original's static VIPs, validation.
//! - [`store`]: where they live in etcd (`/registry/services/specs/...`, see there).
//! - [`rules`]: the table as typed data and the pure state -> `nft -f -` transaction
//!   function (incremental).
//! - [`nfnl`]: the bulk path of a large first sync, balancer rules as nf_tables netlink
//!   batches (on the shared writer, [`crate::components::nft::batch`], which also writes a
//!   new node's empty table: [`create_empty_table`]). Every other change goes through
//!   `nft -f -`: one readable, atomic
//!   transaction a learner can print, and cheap when it adds a few anonymous sets; only
//!   thousands of them in one table make the kernel's per-set work add up.
//! - [`agent`]: the daemon (list + watch etcd, debounce, one atomic transaction per sync).
//! - [`counters`]: per-endpoint packet/byte counters read back from a worker.
//!
//! The sim can also program a namespace directly with [`apply_local`].
//!
//! Worker-originated traffic to a VIP: the worker needs a route for the service range so
//! the packet leaves at all (nat-output then rewrites its destination). The agent adds
//! `100.64.0.0/16 dev DEV` inside its namespace when started with `--service-route-dev DEV`
//! (the original used the flannel device, `flannel.100`); [`ensure_service_route`] does the
//! same for a namespace programmed with [`apply_local`].

pub mod agent;
pub mod counters;
pub mod model;
pub mod nfnl;
pub mod rules;
pub mod store;

use crate::components::nft;
use anyhow::{Context, Result};
use clap::Args;
use std::time::{Duration, Instant};

pub use counters::{read_counters, CounterRow};
pub use model::{
    EndpointAddress, Endpoints, Protocol, Service, ServicePort, ServiceType, State, StaticVip,
};

#[derive(Debug, Clone, Args)]
pub struct KubeProxyArgs {
    /// Comma-separated etcd client URLs.
    #[arg(long = "etcd-endpoints", default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoints: String,
    /// This node's name.
    #[arg(long = "hostname-override")]
    pub hostname_override: Option<String>,
    /// Add `100.64.0.0/16 dev DEV` in this namespace so the worker itself reaches VIPs
    /// (e.g. flannel.100 or cni0). Tried again whenever a link appears until it succeeds.
    #[arg(long = "service-route-dev")]
    pub service_route_dev: Option<String>,
    /// Without a link announcement, try the service route again this often (milliseconds):
    /// a fallback, the device's own announcement wakes the next try at once.
    #[arg(long = "service-route-retry-ms", default_value_t = 1000, hide = true)]
    pub service_route_retry_ms: u64,
    /// Wait this long for more changes before programming (milliseconds).
    #[arg(long = "debounce-ms", default_value_t = 30)]
    pub debounce_ms: u64,
}

pub fn run(args: KubeProxyArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the kube-proxy runtime")?;
    rt.block_on(agent::run(args))
}

/// `nft -j list table ip kube-proxy` in `ns`; None when the table does not exist.
pub fn list_table_json(ns: Option<&str>) -> Result<Option<String>> {
    nft::list_table_json(ns, rules::TABLE)
}

/// The kernel's current kube-proxy table in `ns`, in the form [`rules::plan`] compares.
pub fn read_current(ns: Option<&str>) -> Result<rules::Current> {
    // A new node has no table yet: one netlink question instead of an nft run that fails
    // (nft answers whatever the question could not, e.g. without nf_tables netlink).
    let exists = match ns {
        None => nfnl::table_exists(rules::TABLE),
        Some(ns) => crate::netns::run_in(ns, || nfnl::table_exists(rules::TABLE)),
    };
    if let Ok(false) = exists {
        return Ok(rules::Current::empty());
    }
    match list_table_json(ns)? {
        Some(json) => rules::Current::from_nft_json(&json),
        None => Ok(rules::Current::empty()),
    }
}

/// Creates a new node's empty table (the fixed part: maps, set, base and fixed chains) in
/// `ns` as one nf_tables netlink batch, the same table the first sync's `nft -f` would
/// write, without an nft process (every new node does this at once at bring-up).
pub fn create_empty_table(ns: Option<&str>) -> Result<()> {
    nft::batch::apply(ns, rules::skeleton::skeleton_batch()?)
        .context("creating the empty table ip kube-proxy")
}

/// Applies one transaction atomically (`nft -f -`). Nothing changes when it fails.
pub fn apply_transaction(ns: Option<&str>, text: &str) -> Result<()> {
    nft::apply(ns, text, "the kube-proxy transaction")
}

/// Applies the transactions of one sync ([`rules::plan_sync`]) in order, each atomically.
/// When one is refused, the ones before it stay applied: they only ever add complete
/// Services to a table that had none (a split first sync), and the next sync reads the
/// kernel's table and continues from there.
pub fn apply_plans(ns: Option<&str>, plans: &[rules::Plan]) -> Result<()> {
    let n = plans.len();
    for (i, p) in plans.iter().enumerate() {
        let r = match &p.netlink {
            Some(b) => apply_netlink(ns, b),
            None => apply_transaction(ns, &p.text),
        };
        if n > 1 {
            r.with_context(|| {
                format!(
                    "first sync, transaction {} of {n} (the {i} before it stay applied, each with complete Services)",
                    i + 1
                )
            })?;
        } else {
            r?;
        }
    }
    Ok(())
}

/// Sends one netlink batch of balancer rules in `ns` (None: the current namespace).
fn apply_netlink(ns: Option<&str>, b: &rules::NetlinkBatch) -> Result<()> {
    nft::batch::apply(ns, nfnl::encode(rules::TABLE, &b.rules, b.first_set)?)
}

/// What one [`apply_local`] did.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    pub stats: rules::PlanStats,
    pub services: usize,
    pub endpoints: usize,
    pub vips: usize,
    pub elapsed: Duration,
}

impl ApplyReport {
    /// The learner-readable line the agent also logs.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let split = if s.transactions > 1 {
            format!(
                ", as a first sync split into {} transactions",
                s.transactions
            )
        } else {
            String::new()
        };
        format!(
            "synced {} services, {} endpoints, {} VIPs in {} ms{split} (chains: {} added, {} rewritten, {} deleted, {} kept with their counters; map elements: +{} -{})",
            self.services,
            self.endpoints,
            self.vips,
            self.elapsed.as_millis(),
            s.chains_added,
            s.chains_rewritten,
            s.chains_deleted,
            s.chains_kept,
            s.elements_added,
            s.elements_deleted
        )
    }
}

/// Programs namespace `ns` (a worker) to `state` right now, synchronously: validates,
/// reads the kernel's table, applies the difference in one atomic `nft -f -` (a large
/// first sync in several, see [`rules::plan_sync`]). A state that fails validation or a
/// change nft refuses leaves the ruleset unchanged.
pub fn apply_local(ns: &str, state: &State) -> Result<ApplyReport> {
    let start = Instant::now();
    state.validate()?;
    let want = rules::desired(state);
    let cur = read_current(Some(ns))?;
    let plans = rules::plan_sync(state, &want, &cur, rules::DEFAULT_BULK);
    apply_plans(Some(ns), &plans)
        .with_context(|| format!("programming Services in namespace '{ns}'"))?;
    Ok(ApplyReport {
        stats: rules::PlanStats::total(&plans),
        services: want.services,
        endpoints: want.endpoints,
        vips: want.vips,
        elapsed: start.elapsed(),
    })
}

/// Adds `100.64.0.0/16 dev DEV` in namespace `ns` (None: the current one), so the worker
/// itself can reach Service addresses.
pub fn ensure_service_route(ns: Option<&str>, dev: &str) -> Result<()> {
    let (net, len) = model::SERVICE_CIDR;
    let device = dev.to_string();
    crate::netns::netlink::with_in(ns, move |nl| async move {
        nl.route_dev(net, len, &device).await
    })
    .with_context(|| format!("adding route {net}/{len} dev {dev} (does '{dev}' exist yet?)"))
}
