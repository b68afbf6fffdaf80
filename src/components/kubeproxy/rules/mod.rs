//! From Service state to an nftables transaction, in the layout of kube-proxy's nftables
//! mode (table `ip kube-proxy`).
//!
//! ```text
//! nat-prerouting / nat-output (dstnat) ── jump services
//!   services:  ip daddr . meta l4proto . th dport vmap @service-ips       (ClusterIPs)
//!              ip daddr vmap @static-vips                                  (knetsim VIPs)
//!              fib daddr type local ... meta l4proto . th dport vmap @service-nodeports
//!   service-HASH-ns/name/proto/port      numgen random mod N vmap { i : goto endpoint-... }
//!                                        (one endpoint: goto endpoint-..., no map)
//!   endpoint-HASH-ns/name/proto/port__ip/port
//!                                        ip saddr IP jump mark-for-masquerade   (hairpin)
//!                                        meta l4proto P dnat to IP:PORT
//!   external-HASH-...                    (NodePort) jump mark-for-masquerade; goto service-...
//!   vip-HASH-VIP / vip-endpoint-HASH-VIP__IP   the original's all-protocol VIP
//! nat-postrouting (srcnat) ── jump masquerading (masquerade packets marked 0x4000)
//! filter-input/forward/output (dstnat-10) ── ct state new: @no-endpoint-services and
//!   @no-endpoint-nodeports send a Service without endpoints to reject-chain (refused at once)
//! ```
//!
//! HASH is the first 8 characters of base32(sha256(name)), as upstream computes it; the
//! last part of a service name is the port's name, or its number when it has none.
//!
//! Re-programming is incremental, like kube-proxy's partial sync: chains whose content is
//! unchanged are not touched (their counters keep counting), changed chains are flushed
//! and rewritten, map elements are added or deleted one by one, stale chains deleted. Each
//! chain's rules are compared as typed values ([`table::Rule`]), read back from
//! `nft -j list table` the same way, so a restarted agent can converge a table it did not
//! write without ever deleting it.
//!
//! Every change is one atomic `nft -f -` transaction. The one exception is a large first
//! sync into a table that has no Service yet ([`plan_sync`]): with one anonymous set per
//! balancer rule the kernel's cost grows with the square of the number of rules in one
//! transaction (10,000 Services: 144 s), so its balancer rules go as netlink batches
//! ([`super::nfnl`]) between an `nft -f` that creates every chain and one that adds every
//! map element, all Services appearing at once. The listing is the same either way.
//!
//! The parts: [`names`] (chain names, comments), [`table`] (rules, maps and elements as
//! typed data and their text), [`skeleton`] (the fixed part of the table), [`listing`]
//! (nft's JSON read into the same types), [`desired`] (from Services), [`current`] (from
//! the kernel), [`plan`] (the difference as transactions).

pub mod current;
pub mod desired;
pub mod listing;
pub mod names;
pub mod plan;
pub mod skeleton;
pub mod table;

pub use current::Current;
pub use desired::{desired, Desired};
pub use names::{
    endpoint_chain, external_chain, hash8, is_dynamic_chain, service_chain, service_port_name,
    vip_chain, vip_endpoint_chain,
};
pub use plan::{
    full_transaction, linear_transaction, plan, plan_sync, Bulk, NetlinkBatch, Plan, PlanStats,
    DEFAULT_BULK, FIRST_SYNC_BATCH,
};
pub use table::{MASQ_MARK, TABLE};

#[cfg(test)]
mod tests;
